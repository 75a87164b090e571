"""The comparison job: PNM and AdaPNM against SGD-M, Adam and AdamW.

Run ``python -m benchmarks.comparison`` (``--help`` for the flags), or from
Python ``from benchmarks.comparison import compare`` on your own model and
data. See docs/comparison.md.

Files, one job each: ``data`` (data sets), ``models`` (Flax NNX models),
``optimizers`` (the optimizers, defaults, schedule), ``settings`` (what a
comparison is, checked), ``training`` (one compiled program per optimizer,
seeds in parallel), ``checkpoints`` (in-progress state), ``protocol`` (lr
grids picked on validation), ``statistics`` (mean +- std, paired tests),
``summary`` (numbers of a configuration), ``tables``, ``plots``,
``progress``, ``results`` (the results file), ``api`` (:func:`compare`),
``cli`` (the command line), ``study`` (the MNIST-1D study).
"""

from benchmarks.comparison.api import compare

__all__ = ['compare']
