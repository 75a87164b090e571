"""The numbers in README.md and docs/ are the committed results' numbers."""

import shutil

import pytest

from benchmarks.publish import __main__ as publish
from benchmarks.publish import blocks
from benchmarks.publish.registry import generators
from tests.helpers import REPO


def test_every_block_matches_the_committed_data():
  stale = [
    page.relative_to(REPO)
    for page, (old, new) in publish.rendered().items()
    if old != new
  ]
  assert not stale, f'run `python -m benchmarks.publish`: {stale}'


def test_every_generator_is_published_somewhere():
  used = {
    name for page in publish.pages() for name in blocks.names(page.read_text())
  }
  assert set(generators()) <= used, set(generators()) - used


def test_an_edited_number_is_caught(tmp_path):
  """A block edited by hand fails the check; rewriting restores it."""
  shutil.copy(REPO / 'README.md', tmp_path / 'README.md')
  (tmp_path / 'docs').mkdir()
  known = generators()
  name = next(iter(known), None)
  if name is None:
    pytest.fail('no generated blocks are registered')
  page = tmp_path / 'docs' / 'page.md'
  page.write_text(
    f'<!-- begin generated: {name} -->\n1.23\n<!-- end generated: {name} -->\n'
  )
  ((old, new),) = [
    v for p, v in publish.rendered(tmp_path).items() if p == page
  ]
  assert old != new
  assert blocks.render(new, lambda n: known[n]()) == new


def test_an_unknown_block_is_an_error(tmp_path):
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'README.md').write_text(
    '<!-- begin generated: no-such-table -->\n<!-- end generated: no-such-table -->\n'
  )
  with pytest.raises(ValueError, match='no-such-table'):
    publish.rendered(tmp_path)
