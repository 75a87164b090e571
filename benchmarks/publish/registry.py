"""The generators of the published blocks, by name.

Each job keeps its own generators beside its results (``published.py`` in
its folder); a generator takes no arguments and returns Markdown built from
committed JSON files only, so the same checkout always gives the same text.
"""

from collections.abc import Callable

from benchmarks.comparison import published as comparison
from benchmarks.speed import published as speed


def generators() -> dict[str, Callable[[], str]]:
  """Every registered generator; a name used by two jobs is an error."""
  found: dict[str, Callable[[], str]] = {}
  for module in (comparison, speed):
    for name, generator in module.BLOCKS.items():
      if name in found:
        raise ValueError(f'two generators for the block {name!r}')
      found[name] = generator
  return found
