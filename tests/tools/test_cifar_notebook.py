"""The CIFAR-10 notebook's Colab design, read from the committed notebook
(its install cell is checked in test_colab.py, its headless run in
test_notebooks.py)."""

import nbformat
import pytest

from tests.helpers import REPO

ROOT = REPO
NOTEBOOK = ROOT / 'notebooks' / 'cifar10_pnm_vs_sgd.ipynb'
COLAB = (
  'https://colab.research.google.com/github/pnm-optax/pnm-optax/blob/'
  'main/notebooks/cifar10_pnm_vs_sgd.ipynb'
)


@pytest.fixture(scope='module')
def cells():
  return nbformat.read(NOTEBOOK, as_version=4).cells


def test_badge_backend_print_and_accelerator_check(cells):
  text = '\n'.join(c.source for c in cells)
  assert COLAB in text and 'colab-badge.svg' in text
  assert 'jax.default_backend()' in text and 'jax.devices()' in text
  assert 'if jax.default_backend() == "cpu":' in text
  assert 'raise RuntimeError(' in text
  assert 'matplotlib.use' not in text and 'pyplot' not in text


def test_fast_mode_text_says_what_it_runs(cells):
  intro = cells[0].source
  fast_text = intro[intro.index('**FAST mode.**') :]
  assert 'digits' in fast_text and 'MLP' in fast_text
  assert '1 seed, 2 epochs of 10 steps' in fast_text
  code = '\n'.join(c.source for c in cells if c.cell_type == 'code')
  assert (
    'run = dict(model="mlp", data="digits", epochs=2, seeds=1, '
    'max_steps_per_epoch=10)'
  ) in code
  assert 'api.compare(**run)' in code  # the notebook drives the Python API
  assert 'was\nnot measured' in intro or 'was not measured' in intro
