"""``python -m benchmarks.publish [--check]``: see :mod:`benchmarks.publish`."""

import argparse
import pathlib
import sys

from benchmarks.publish import blocks
from benchmarks.publish.registry import generators

REPO = pathlib.Path(__file__).resolve().parents[2]


def pages(root: pathlib.Path = REPO) -> list[pathlib.Path]:
  """README.md and the docs' Markdown pages, the files that carry blocks."""
  return [root / 'README.md', *sorted((root / 'docs').glob('*.md'))]


def rendered(root: pathlib.Path = REPO) -> dict[pathlib.Path, tuple[str, str]]:
  """``{page: (text now, text from the data)}`` for the pages with blocks.

  Raises ValueError for a block whose name has no generator.
  """
  known = generators()
  out = {}
  for page in pages(root):
    text = page.read_text()
    unknown = sorted(set(blocks.names(text)) - set(known))
    if unknown:
      raise ValueError(f'{page.name}: no generator for blocks {unknown}')
    new = blocks.render(text, lambda name: known[name]())
    out[page] = (text, new)
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m benchmarks.publish',
    description='Write the tables of README.md and docs/ from the committed '
    'results.',
  )
  parser.add_argument(
    '--check',
    action='store_true',
    help='change nothing; exit 1 if a block differs from the data',
  )
  args = parser.parse_args(argv)
  try:
    pages_text = rendered()
  except ValueError as e:
    parser.exit(2, f'python -m benchmarks.publish: {e}\n')
  stale = [p for p, (old, new) in pages_text.items() if old != new]
  for page in stale:
    rel = page.relative_to(REPO)
    if args.check:
      print(f'{rel}: generated blocks differ from the committed results')
    else:
      page.write_text(pages_text[page][1])
      print(f'{rel}: rewritten')
  if args.check and stale:
    print('run `python -m benchmarks.publish` and commit the result')
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
