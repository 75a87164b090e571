"""The numbers in README.md and docs/ are the committed results' numbers."""

import json
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


# ------------------------------------------- the comparison's generators


@pytest.fixture
def results_copy(tmp_path, monkeypatch):
  """The comparison's committed results, copied where a test may edit them."""
  from benchmarks.comparison import published

  for path in published.RESULTS.glob('*.json'):
    shutil.copy(path, tmp_path / path.name)
  monkeypatch.setattr(published, 'RESULTS', tmp_path)
  published.load.cache_clear()
  yield tmp_path
  published.load.cache_clear()


def _edit(path, change):
  data = json.loads(path.read_text())
  change(data)
  path.write_text(json.dumps(data))


def test_headline_numbers_come_from_the_results_file(results_copy):
  from benchmarks.comparison import published

  def change(data):
    s = data['models']['cnn']['summary']['pnm']
    s['test_error_mean'], s['test_error_ci'] = 0.12345, [0.11111, 0.13579]

  _edit(results_copy / 'full_study.json', change)
  assert '12.35 [11.11, 13.58]' in published.comparison_headline()


def _pair(p_holm, mean=-0.01):
  return {
    'a': 'pnm',
    'b': 'sgdm',
    'n': 20,
    'mean': mean,
    'std': 0.02,
    'ci_low': mean - 0.009,
    'ci_high': mean + 0.009,
    'p_value': p_holm / 3,
    'p_holm': p_holm,
    'detectable': 0.0133,
    'a_wins': 15,
    'b_wins': 5,
  }


@pytest.mark.parametrize(
  'p_holm, found', [(0.01, True), (0.049, True), (0.05, False), (0.3, False)]
)
def test_a_conclusion_claims_only_what_survives_holm(
  results_copy, p_holm, found
):
  from benchmarks.comparison import published

  def change(data):
    for model in data['models'].values():
      model['paired'] = [_pair(p_holm)]

  _edit(results_copy / 'full_study.json', change)
  text = published.comparison_conclusion()
  assert ('survive the Holm correction' in text) is found
  assert ('No detectable difference' in text) is not found
  assert f'Holm p = {p_holm:.2g}' in text and '20 seeds' in text
  assert '[-1.90, -0.10]' in text  # the interval, in points
  if not found:
    assert 'detect about 1.33 points' in text


def test_b0_conclusion_names_direction_and_evidence(results_copy):
  from benchmarks.comparison import noise, published

  def change(data):
    for cell in data['cells']:
      for pair in cell['paired']:
        if pair['a'] == noise.pnm_arm(2.0) and pair['b'] == noise.pnm_arm(0.0):
          evidence = _pair(0.001, mean=0.02)
          pair.update({k: evidence[k] for k in evidence if k not in 'ab'})
        elif pair['family'] == noise.HEADLINE:
          pair.update(p_holm=0.5)

  _edit(results_copy / 'noise_study.json', change)
  text = published.noise_conclusion()
  assert text.count('b0 = 2 raised the error by +2.00 points') == 2
  assert 'no detectable difference for b0 = 1' in text
