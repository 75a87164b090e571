"""The notebooks: clean sources, and executed headless in FAST mode on CPU.

The ``.ipynb`` files are the source (edited in Jupyter or Colab, committed
without outputs). Each notebook runs once per test session in a fresh
ipykernel started with this interpreter (``sys.executable``), from
``notebooks/`` (the notebook itself puts the repository root on ``sys.path``),
with ``PNM_FAST=1``, ``JAX_PLATFORMS=cpu`` and matplotlib's headless inline
backend, so figures are rendered to PNG outputs. A cell prepended by the test
(never committed) refuses every non-loopback socket connection, and proxies
point at a dead local port, so any download fails the run. The tests then
check that no cell failed, that every figure rendered, and the results each
notebook prints in its ``summary`` cell against independent formulas.
"""

import ast
import json
import math
import os
import pathlib
import shutil
import sys

import nbclient
import nbformat
import numpy as np
import pytest
from ipykernel import kernelspec

from tests.helpers import LOOPBACK_ONLY, REPO

NOTEBOOK_DIR = REPO / 'notebooks'
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob('*.ipynb'))
KERNEL = 'pnm-optax-test'
CELL_TIMEOUT_S = 300  # generous guard against hangs; CI runs take far less
SUMMARY_PREFIX = 'PNM_NOTEBOOK_SUMMARY '

# Prepended to each notebook under test: loopback only, same interpreter.
GUARD_CELL = f"""
import sys

assert sys.executable == {sys.executable!r}, sys.executable
{LOOPBACK_ONLY}"""

# The CIFAR notebook's comparison chart calls plt.show() after the benchmark's
# plotting code has switched matplotlib to the Agg backend, so it never
# renders; this check passes once the plotting code stops doing that.


@pytest.fixture(scope='module')
def kernel_env(tmp_path_factory):
  """A kernelspec for this interpreter and the environment of a CI run."""
  tmp = tmp_path_factory.mktemp('kernel')
  kernelspec.write_kernel_spec(tmp / 'kernels' / KERNEL)
  with pytest.MonkeyPatch.context() as env:
    env.setenv('JUPYTER_PATH', str(tmp), prepend=os.pathsep)
    # Kernel files and IPython profile (startup scripts) stay out of $HOME.
    env.setenv('JUPYTER_RUNTIME_DIR', str(tmp / 'runtime'))
    env.setenv('IPYTHONDIR', str(tmp / 'ipython'))
    for name, value in {
      'PNM_FAST': '1',
      # Headless, yet every figure is rendered (to PNG outputs), so
      # plotting errors surface; plain Agg would make plt.show() a no-op.
      'MPLBACKEND': 'module://matplotlib_inline.backend_inline',
      'JAX_PLATFORMS': 'cpu',
      'HTTP_PROXY': 'http://127.0.0.1:9',
      'HTTPS_PROXY': 'http://127.0.0.1:9',
      'http_proxy': 'http://127.0.0.1:9',
      'https_proxy': 'http://127.0.0.1:9',
      'PIP_NO_INDEX': '1',
      'HF_DATASETS_OFFLINE': '1',
      'TFDS_OFFLINE': '1',
    }.items():
      env.setenv(name, value)
    for name in ('no_proxy', 'NO_PROXY', 'PYTHONPATH'):
      env.delenv(name, raising=False)
    yield tmp


def execute(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
  """Runs ``nb`` (with the guard cell first) in notebooks/; raises on error."""
  nb = nbformat.from_dict(nb)
  nb.cells.insert(0, nbformat.v4.new_code_cell(GUARD_CELL.strip()))
  client = nbclient.NotebookClient(
    nb,
    kernel_name=KERNEL,
    timeout=CELL_TIMEOUT_S,
    resources={'metadata': {'path': str(NOTEBOOK_DIR)}},
  )
  client.execute()
  return nb


@pytest.fixture(scope='module')
def executed(kernel_env):
  """``executed(name)``: the notebook after one FAST run (run once, cached)."""
  runs = {}

  def run(name):
    if name not in runs:
      try:
        runs[name] = execute(nbformat.read(NOTEBOOK_DIR / name, as_version=4))
      except nbclient.exceptions.CellExecutionError as error:
        runs[name] = error
    if isinstance(runs[name], Exception):
      pytest.fail(f'{name} failed:\n{runs[name]}')
    return runs[name]

  return run


def summary_of(nb: nbformat.NotebookNode) -> dict:
  """The JSON a notebook prints from its cell tagged ``summary``."""
  cells = [c for c in nb.cells if 'summary' in c.metadata.get('tags', ())]
  assert len(cells) == 1, 'each notebook needs exactly one summary cell'
  text = ''.join(
    o.get('text', '') for o in cells[0].outputs if o.output_type == 'stream'
  )
  lines = [l for l in text.splitlines() if l.startswith(SUMMARY_PREFIX)]
  assert lines, f'no {SUMMARY_PREFIX!r} line in:\n{text}'
  return json.loads(lines[-1][len(SUMMARY_PREFIX) :])


def figure_calls(source: str) -> int:
  """How many ``plt.show()`` and ``display(...)`` calls a cell makes.

  Every call counts once, also under a condition or in a loop: each must put
  at least one image in the cell's outputs.
  """
  calls = 0
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Call):
      func = node.func
      if isinstance(func, ast.Name) and func.id == 'display':
        calls += 1
      elif (
        isinstance(func, ast.Attribute)
        and func.attr == 'show'
        and isinstance(func.value, ast.Name)
        and func.value.id == 'plt'
      ):
        calls += 1
  return calls


def unrendered_figures(nb: nbformat.NotebookNode) -> list[str]:
  """Cells whose figures did not become ``image/png`` outputs."""
  problems = []
  for index, cell in enumerate(nb.cells):
    if cell.cell_type != 'code':
      continue
    images = sum('image/png' in o.get('data', {}) for o in cell.outputs)
    expected = figure_calls(cell.source)
    # A figure as the last expression shows up as text when it is not drawn.
    figure_texts = [
      o
      for o in cell.outputs
      if o.get('data', {}).get('text/plain', '').startswith('<Figure size')
    ]
    stderr = ''.join(
      o.get('text', '') for o in cell.outputs if o.get('name') == 'stderr'
    )
    if (
      images < expected
      or (figure_texts and not images)
      or 'cannot be shown' in stderr
    ):
      problems.append(
        f'cell {cell.get("id", index)}: {images} image(s) for {expected} '
        f'plt.show()/display() call(s):\n{cell.source[:300]}'
      )
  return problems


def check_quickstart(summary: dict) -> None:
  assert summary['fast'] is True
  # Every optimizer trained: the loss fell well below its start (ln 10).
  for name, (first, last) in summary['loss'].items():
    assert math.isfinite(last) and last < 0.5 * first, (name, first, last)
  for name, accuracy in summary['test_accuracy'].items():
    assert accuracy > 0.5, (name, accuracy)  # chance is 0.1
  # The measured noise of scale_by_pnm against the closed form, in float64.
  b0 = np.asarray(summary['b0'], np.float64)
  norm = np.sqrt((1 + b0) ** 2 + b0**2)
  b1 = 0.9
  np.testing.assert_allclose(summary['noise_growth'], norm, rtol=0.05)
  np.testing.assert_allclose(summary['update_mean'], 1.0 / norm, rtol=0.03)
  np.testing.assert_allclose(
    summary['update_std'], np.sqrt((1 - b1**2) / (1 + b1**2)), rtol=0.03
  )
  assert len(summary['b0_test_accuracy']) == 3


def check_cifar10(summary: dict) -> None:
  # FAST mode switched to the offline digits data and a tiny budget.
  assert summary['fast'] is True
  assert (summary['dataset'], summary['epochs'], summary['seeds']) == (
    'digits',
    2,
    [0],
  )
  names = ['pnm', 'adapnm', 'sgdm', 'adam', 'adamw']
  assert sorted(summary['test_error_mean']) == sorted(names)
  for name in names:
    first, last = summary['train_loss_mean'][name]
    assert math.isfinite(last) and last < first, (name, first, last)
  # The files the benchmark wrote agree with what the notebook reported:
  # final test error recomputed from the per-seed curves in the JSON.
  json_path = pathlib.Path(summary['json_path'])
  png_path = pathlib.Path(summary['png_path'])
  assert json_path.parent.name.startswith('pnm_notebook_'), json_path
  try:
    written = json.loads(json_path.read_text())
    for name in names:
      per_seed = [c[-1] for c in written['curves'][name]['test_error']]
      assert summary['test_error_mean'][name] == pytest.approx(
        np.mean(per_seed)
      ), name
      # Every optimizer learnt: it beats predicting the commonest digit by
      # a wide margin (the stratified test split has the full set's class
      # frequencies; 20 steps reach 0.12 to 0.26 against 0.90).
      assert np.mean(per_seed) < _majority_class_error() - MARGIN, name
    assert png_path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  finally:
    shutil.rmtree(json_path.parent, ignore_errors=True)  # FAST: a temp dir


# How far below the majority-class error the FAST run's test errors must be.
MARGIN = 0.4


def _majority_class_error() -> float:
  """The test error of always predicting the commonest digit (about 0.9)."""
  from sklearn.datasets import load_digits

  counts = np.bincount(load_digits().target)
  return 1.0 - counts.max() / counts.sum()


def check_noise_knob(summary: dict) -> None:
  """The toy statistics against the closed forms of tests/closed_forms.py,
  within 5 standard errors of each estimate; the tiny study's structure."""
  from tests import closed_forms as closed

  assert summary['fast'] is True
  n_samples, steps = summary['samples'], summary['steps']
  b1, mu, sigma = summary['b1'], summary['mu'], summary['sigma']
  toy = summary['toy']
  assert sorted(toy) == [
    'PNM b0=0',
    'PNM b0=1',
    'PNM b0=2',
    'PNM b0=3',
    'SGD-M 0.9',
  ]
  for label, r in toy.items():
    if label.startswith('PNM'):
      b0 = float(label.split('=')[1])
      norm = np.hypot(1 + b0, b0)
      mean = closed.steady_mean_var(b0, b1, mu, sigma)[0] * norm
      std = np.sqrt(closed.steady_mean_var(b0, b1, mu, sigma)[1]) * norm
      rho = closed.lag1_correlation(b0, b1)
      spread = norm * np.sqrt(closed.displacement_var(b0, b1, sigma, steps))
    else:
      mean = mu
      std = sigma * np.sqrt((1 - b1) / (1 + b1))
      rho = b1
      spread = np.sqrt(closed.sgdm_displacement_var(b1, sigma, steps))
    ratio = std / mean
    root_n = np.sqrt(n_samples)
    assert abs(r['mean'] - mean) < 5 * std / root_n, label
    assert abs(r['std'] / std - 1) < 5 / np.sqrt(2 * n_samples), label
    assert (
      abs(r['noise_to_signal'] / ratio - 1)
      < 5 * np.sqrt(0.5 + ratio**2) / root_n
    ), label
    assert abs(r['lag1'] - rho) < 5 * (1 - rho**2) / root_n, label
    assert abs(r['displacement_std'] / spread - 1) < 5 / np.sqrt(
      2 * n_samples
    ), label
  cells = summary['study']
  assert [(c['model'], c['batch_size']) for c in cells] == [('mlp', 100)]
  for c in cells:
    assert c['steps'] == 4
    assert len(c['arms']) == 9  # 6 tuned arms, 3 at b0 = 0's mean step
    for label, arm in c['arms'].items():
      assert len(arm['errors']) == 2 and len(arm['hessian_trace']) == 2
      if label.endswith('matched'):
        assert arm['lr'] == pytest.approx(
          c['picked_lr']['PNM b0=0'] * np.hypot(1 + arm['b0'], arm['b0'])
        )
      else:
        assert arm['lr'] == c['picked_lr'][label]  # its own pick
  png = pathlib.Path(summary['png'])
  assert png.parent.name.startswith('pnm_noise_'), png
  try:
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  finally:
    shutil.rmtree(png.parent, ignore_errors=True)  # FAST: a temp dir


CHECKS = {
  'quickstart.ipynb': check_quickstart,
  'cifar10_pnm_vs_sgd.ipynb': check_cifar10,
  'noise_knob.ipynb': check_noise_knob,
}


def test_every_notebook_is_checked():
  assert NOTEBOOKS, 'no notebooks found'
  assert sorted(CHECKS) == NOTEBOOKS


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_committed_as_clean_v4_source(name):
  """Valid nbformat 4, no outputs, no execution counts, no magics."""
  nb = nbformat.read(NOTEBOOK_DIR / name, as_version=nbformat.NO_CONVERT)
  assert nb.nbformat == 4, nb.nbformat
  nbformat.validate(nb)
  code = [cell for cell in nb.cells if cell.cell_type == 'code']
  assert code
  for cell in code:
    assert cell.outputs == [] and cell.execution_count is None, cell.source
    ast.parse(cell.source)  # plain Python: no shell escapes or magics
    # Installs only inside the Colab guard.
    if 'pip' in cell.source:
      assert '"google.colab" in sys.modules' in cell.source, cell.source


def test_figure_check_counts_calls_and_images():
  """The render check can fail: a shown figure without an image is found."""
  source = 'plt.show()\nif ok:\n    display(img)\nfig.show()'
  assert figure_calls(source) == 2
  cell = nbformat.v4.new_code_cell(source)
  cell.outputs = [
    nbformat.v4.new_output(
      'display_data', data={'image/png': 'iVBOR', 'text/plain': 'img'}
    )
  ]
  nb = nbformat.v4.new_notebook(cells=[cell])
  assert len(unrendered_figures(nb)) == 1
  cell.outputs.append(cell.outputs[0])
  assert unrendered_figures(nb) == []
  cell.outputs.append(
    nbformat.v4.new_output(
      'stream',
      name='stderr',
      text='FigureCanvasAgg is non-interactive, and thus cannot be shown',
    )
  )
  assert len(unrendered_figures(nb)) == 1


def test_guard_blocks_network(kernel_env):
  """The no-network guard itself must fail a notebook that downloads."""
  nb = nbformat.v4.new_notebook(
    cells=[
      nbformat.v4.new_code_cell(
        'import socket\nsocket.create_connection(("192.0.2.1", 443), timeout=2)'
      )
    ]
  )
  nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3'}
  with pytest.raises(
    nbclient.exceptions.CellExecutionError, match='network access is disabled'
  ):
    execute(nb)


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_fast_on_cpu(name, executed):
  nb = executed(name)
  errors = [
    o
    for c in nb.cells
    if c.cell_type == 'code'
    for o in c.outputs
    if o.output_type == 'error'
  ]
  assert not errors, errors
  CHECKS[name](summary_of(nb))


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_every_figure_renders(name, executed):
  nb = executed(name)
  assert any(
    'image/png' in o.get('data', {})
    for c in nb.cells
    if c.cell_type == 'code'
    for o in c.outputs
  ), 'no figure at all'
  problems = unrendered_figures(nb)
  assert not problems, '\n\n'.join(problems)
