"""``python -m benchmarks.publish``: the tables and numbers of README.md and
docs/, written from the committed results of the benchmark jobs.

Every table of numbers in README.md and docs/*.md sits in a generated block::

  <!-- begin generated: NAME -->
  ...
  <!-- end generated: NAME -->

whose text is what the generator registered under NAME returns (see
:mod:`benchmarks.publish.registry`); nothing between the markers is typed by
hand. ``python -m benchmarks.publish`` rewrites the blocks,
``python -m benchmarks.publish --check`` exits 1 when one differs from the
data (the tests run it).
"""
