"""``python -m benchmarks.comparison``: the comparison job's command line."""

import sys

from benchmarks.comparison.cli import main

if __name__ == '__main__':
  sys.exit(main(compilation_cache=True))
