"""The speed tables of README.md and docs/, from ``benchmarks/speed/results/``
(registered in :mod:`benchmarks.publish.registry`)."""

import pathlib
from collections.abc import Callable

RESULTS = pathlib.Path(__file__).parent / 'results'

# Block name -> generator (no arguments, returns Markdown).
BLOCKS: dict[str, Callable[[], str]] = {}
