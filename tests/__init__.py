"""pnm-optax's test suite: run ``python -m pytest`` from the repository root.

A package, so the shared helpers import as ``tests.<module>`` (pytest puts the
repository root on ``sys.path``, which also makes ``benchmarks`` importable).
"""
