"""Executes every notebook headless in FAST mode on CPU, without network.

Each notebook runs in a fresh ipykernel started with this interpreter
(``sys.executable``), from ``notebooks/`` with the repository root on
``PYTHONPATH``, ``PNM_FAST=1``, ``JAX_PLATFORMS=cpu`` and matplotlib's
headless inline backend (figures are rendered to PNG outputs).
A cell prepended by the test (never committed) refuses every non-loopback
socket connection, and proxies point at a dead local port, so any download
fails the run. Any cell error fails the test; the results each notebook
prints in its ``summary`` cell are then checked against independent formulas.
"""

import json
import math
import os
import pathlib
import shutil
import sys

from ipykernel import kernelspec
import nbclient
import nbformat
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / 'notebooks'
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob('*.ipynb'))
KERNEL = 'pnm-optax-test'
CELL_TIMEOUT_S = 300  # generous guard against hangs; CI runs take far less
SUMMARY_PREFIX = 'PNM_NOTEBOOK_SUMMARY '

# Prepended to each notebook under test: loopback only, same interpreter.
GUARD_CELL = f'''
import socket, sys

assert sys.executable == {sys.executable!r}, sys.executable

def _loopback_only(connect):
    def guarded(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
                "127.0.0.1", "::1", "localhost"):
            raise OSError(f"network access is disabled in the notebook test: {{address}}")
        return connect(self, address, *args)
    return guarded

socket.socket.connect = _loopback_only(socket.socket.connect)
socket.socket.connect_ex = _loopback_only(socket.socket.connect_ex)
'''


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
  """A kernelspec for this interpreter and the environment of a CI run."""
  kernelspec.write_kernel_spec(tmp_path / 'kernels' / KERNEL)
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path), prepend=os.pathsep)
  monkeypatch.setenv('PYTHONPATH', str(ROOT), prepend=os.pathsep)
  # Kernel files and IPython profile (startup scripts) stay out of $HOME.
  monkeypatch.setenv('JUPYTER_RUNTIME_DIR', str(tmp_path / 'runtime'))
  monkeypatch.setenv('IPYTHONDIR', str(tmp_path / 'ipython'))
  for name, value in {
      'PNM_FAST': '1',
      # Headless, yet every figure is rendered (to PNG outputs), so plotting
      # errors surface; plain Agg would make plt.show() a no-op.
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
    monkeypatch.setenv(name, value)
  monkeypatch.delenv('no_proxy', raising=False)
  monkeypatch.delenv('NO_PROXY', raising=False)
  return tmp_path


def execute(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
  """Runs ``nb`` (with the guard cell first) in notebooks/; raises on error."""
  nb = nbformat.from_dict(nb)
  nb.cells.insert(0, nbformat.v4.new_code_cell(GUARD_CELL.strip()))
  client = nbclient.NotebookClient(
      nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
      resources={'metadata': {'path': str(NOTEBOOK_DIR)}})
  client.execute()
  return nb


def summary_of(nb: nbformat.NotebookNode) -> dict:
  """The JSON a notebook prints from its cell tagged ``summary``."""
  cells = [c for c in nb.cells if 'summary' in c.metadata.get('tags', ())]
  assert len(cells) == 1, 'each notebook needs exactly one summary cell'
  text = ''.join(o.get('text', '') for o in cells[0].outputs
                 if o.output_type == 'stream')
  lines = [l for l in text.splitlines() if l.startswith(SUMMARY_PREFIX)]
  assert lines, f'no {SUMMARY_PREFIX!r} line in:\n{text}'
  return json.loads(lines[-1][len(SUMMARY_PREFIX):])


def check_quickstart(summary: dict) -> None:
  assert summary['fast'] is True
  # Every optimizer trained: the loss fell well below its start (ln 10).
  for name, (first, last) in summary['loss'].items():
    assert math.isfinite(last) and last < 0.5 * first, (name, first, last)
  for name, accuracy in summary['test_accuracy'].items():
    assert accuracy > 0.5, (name, accuracy)  # chance is 0.1
  # The measured noise of scale_by_pnm against the closed form, in float64.
  b0 = np.asarray(summary['b0'], np.float64)
  norm = np.sqrt((1 + b0) ** 2 + b0 ** 2)
  b1 = 0.9
  np.testing.assert_allclose(summary['noise_growth'], norm, rtol=0.05)
  np.testing.assert_allclose(summary['update_mean'], 1.0 / norm, rtol=0.03)
  np.testing.assert_allclose(summary['update_std'],
                             np.sqrt((1 - b1 ** 2) / (1 + b1 ** 2)),
                             rtol=0.03)
  assert len(summary['b0_test_accuracy']) == 3


def check_cifar10(summary: dict) -> None:
  # FAST mode switched to the offline digits data and a tiny budget.
  assert summary['fast'] is True
  assert (summary['dataset'], summary['epochs'], summary['seeds']) == (
      'digits', 2, [0])
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
          np.mean(per_seed)), name
      assert 0.0 <= np.mean(per_seed) <= 1.0
    assert png_path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  finally:
    shutil.rmtree(json_path.parent, ignore_errors=True)  # FAST: a temp dir


CHECKS = {
    'quickstart.ipynb': check_quickstart,
    'cifar10_pnm_vs_sgd.ipynb': check_cifar10,
}


def test_every_notebook_is_checked():
  assert NOTEBOOKS, 'no notebooks found'
  assert sorted(CHECKS) == NOTEBOOKS


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_committed_without_outputs(name):
  nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == 'code':
      assert cell.outputs == [] and cell.execution_count is None, name
      # Installs only inside the Colab guard; no shell/pip magics.
      for line in cell.source.splitlines():
        assert not line.lstrip().startswith(('!', '%pip', '%%')), line
      if 'pip' in cell.source:
        assert '"google.colab" in sys.modules' in cell.source, cell.source


def test_notebooks_match_their_generator():
  sys.path.insert(0, str(NOTEBOOK_DIR))
  try:
    import make_notebooks  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.remove(str(NOTEBOOK_DIR))
  assert make_notebooks.main(['--check']) == 0


def test_guard_blocks_network(kernel_env):
  """The no-network guard itself must fail a notebook that downloads."""
  nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
      'import socket\n'
      'socket.create_connection(("192.0.2.1", 443), timeout=2)')])
  nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3'}
  with pytest.raises(nbclient.exceptions.CellExecutionError,
                     match='network access is disabled'):
    execute(nb)


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_fast_on_cpu(name, kernel_env):
  nb = execute(nbformat.read(NOTEBOOK_DIR / name, as_version=4))
  images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
            if 'image/png' in o.get('data', {})]
  assert images, 'no figure was rendered'
  CHECKS[name](summary_of(nb))
