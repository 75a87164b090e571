"""``python -m benchmarks.generalization``: does PNM help here?

Compares PNM and AdaPNM with SGD-M, Adam and AdamW on MNIST-1D (default),
digits or CIFAR-10, or from Python on your own model and data
(:func:`benchmarks.comparison.api.compare`). See docs/generalization.md and
``--help``.
"""

import sys

from benchmarks.comparison.api import compare
from benchmarks.comparison.cli import main

__all__ = ['compare', 'main']

if __name__ == '__main__':
  sys.exit(main(compilation_cache=True))
