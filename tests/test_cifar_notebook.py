"""The CIFAR-10 notebook's Colab design, read from the committed notebook
(its headless run is in test_notebooks.py)."""

import pathlib
import re
import tomllib

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / 'notebooks' / 'cifar10_pnm_vs_sgd.ipynb'
COLAB = ('https://colab.research.google.com/github/pnm-optax/pnm-optax/blob/'
         'main/notebooks/cifar10_pnm_vs_sgd.ipynb')


@pytest.fixture(scope='module')
def cells():
  return nbformat.read(NOTEBOOK, as_version=4).cells


def test_first_code_cell_installs_from_the_repository_on_colab_only(cells):
  code = [c.source for c in cells if c.cell_type == 'code']
  install = code[0]
  assert 'if IN_COLAB:' in install and (
      'IN_COLAB = "google.colab" in sys.modules') in install
  assert not any('pip' in c for c in code[1:])
  assert '"git", "clone", "--depth", "1", REPO_URL, CLONE' in install
  assert 'CLONE = "/content/pnm-optax"' in install
  assert '"install", "-q", "--no-deps", "-e", CLONE' in install
  # only missing modules, under a constraints file pinning the jax Colab has
  assert '"-c", "/content/constraints.txt"' in install
  for module in ('optax', 'flax', 'orbax.checkpoint', 'sklearn', 'scipy',
                 'matplotlib', 'tqdm', 'mnist1d'):
    assert f'"{module}":' in install, module
  assert 'name in ("jax", "jaxlib")' in install
  assert 'startswith(("jax-cuda", "libtpu"))' in install
  assert 'sys.path.insert(0, CLONE)' in install


def test_repository_url_is_the_one_in_pyproject(cells):
  install = next(c.source for c in cells if c.cell_type == 'code')
  (url,) = re.findall(r'^REPO_URL = "([^"]+)"$', install, re.M)
  with open(ROOT / 'pyproject.toml', 'rb') as f:
    urls = tomllib.load(f)['project'].get('urls', {})
  if 'Repository' not in urls:
    pytest.skip('pyproject.toml has no project.urls Repository yet')
  assert url == urls['Repository']


def test_badge_backend_print_and_accelerator_check(cells):
  text = '\n'.join(c.source for c in cells)
  assert COLAB in text and 'colab-badge.svg' in text
  assert 'jax.default_backend()' in text and 'jax.devices()' in text
  assert 'if jax.default_backend() == "cpu":' in text
  assert 'raise RuntimeError(' in text
  assert 'matplotlib.use' not in text and 'pyplot' not in text


def test_fast_mode_text_says_what_it_runs(cells):
  intro = cells[0].source
  fast_text = intro[intro.index('**FAST mode.**'):]
  assert 'digits' in fast_text and 'MLP' in fast_text
  assert '1 seed, 2 epochs of 10 steps' in fast_text
  code = '\n'.join(c.source for c in cells if c.cell_type == 'code')
  assert ('run = dict(model="mlp", data="digits", epochs=2, seeds=1, '
          'max_steps_per_epoch=10)') in code
  assert 'api.compare(**run)' in code  # the notebook drives the Python API
  assert 'was\nnot measured' in intro or 'was not measured' in intro
