"""Colab: each notebook's install cell and badge, and every Colab or GitHub
link in README.md, docs/ and notebooks/, use the repository URL written once
in pyproject.toml.

The install cell is run here twice: as on any machine (it defines its helpers
and reports jax), and as on a fresh Colab runtime with ``subprocess.run``
recorded instead of executed, so the clone, the ``--no-deps`` install and the
constraints that pin jax are checked without network.
"""

import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import types

import jax
import nbformat
import pytest

from tests import project
from tests.helpers import REPO

URL = project.repository_url()
CLONE_DIR = '/content/pnm-optax'
COLAB_PREFIX = 'https://colab.research.google.com/github/'
BADGE_IMAGE = 'https://colab.research.google.com/assets/colab-badge.svg'
NOTEBOOKS = sorted(p.name for p in (REPO / 'notebooks').glob('*.ipynb'))
# What every install cell defines (the quickstart's is the model).
INSTALL_NAMES = {
  'REPO_URL',
  'CLONE_DIR',
  'IN_COLAB',
  'NEEDED',
  'jax_pins',
  'missing',
}
# Provided by any runtime the notebooks run on (and pinned, for jax);
# google.colab is imported on Colab only.
RUNTIME_MODULES = {'jax', 'jaxlib', 'numpy', 'IPython', 'google'}
PIP = [sys.executable, '-m', 'pip', 'install', '-q']


def colab_url(name: str) -> str:
  return (
    COLAB_PREFIX
    + URL.removeprefix('https://github.com/')
    + (f'/blob/main/notebooks/{name}')
  )


def read(name: str) -> nbformat.NotebookNode:
  return nbformat.read(REPO / 'notebooks' / name, as_version=4)


def install_cell(name: str) -> str:
  return next(c.source for c in read(name).cells if c.cell_type == 'code')


def run_install_cell(name: str) -> dict:
  """Executes the install cell here; returns the names it defined."""
  namespace = {'__name__': '__main__'}
  exec(compile(install_cell(name), name, 'exec'), namespace)
  missing_names = INSTALL_NAMES - namespace.keys()
  assert not missing_names, f'the install cell does not define {missing_names}'
  return namespace


def installed_jax_pins() -> list[str]:
  """The pins the cell must write, from this environment's versions."""
  pins = {
    f'jax=={jax.__version__}',
    f'jaxlib=={importlib.metadata.version("jaxlib")}',
  }
  for dist in importlib.metadata.distributions():
    name = (dist.metadata['Name'] or '').lower().replace('_', '-')
    if name.startswith(('jax-cuda', 'libtpu')):
      pins.add(f'{name}=={dist.version}')
  return sorted(pins)


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_install_cell_text(name):
  source = install_cell(name)
  assert '"google.colab" in sys.modules' in source
  assigned = {
    t.id: node.value
    for node in ast.parse(source).body
    if isinstance(node, ast.Assign)
    for t in node.targets
    if isinstance(t, ast.Name)
  }
  assert 'REPO_URL' in assigned, 'no REPO_URL = ... in the install cell'
  assert ast.literal_eval(assigned['REPO_URL']) == URL
  for fragment in (
    '"git", "clone", "--depth", "1", REPO_URL, CLONE_DIR',
    '"--no-deps", "-e", CLONE_DIR',
    '"-c", constraints.name',
    'sys.path.insert(0, CLONE_DIR)',
    'jax.default_backend()',
    'jax.devices()',
  ):
    assert fragment in source, fragment


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_install_cell_reports_jax_and_pins_it(name, capsys):
  namespace = run_install_cell(name)
  assert namespace['IN_COLAB'] is False
  assert namespace['REPO_URL'] == URL and namespace['CLONE_DIR'] == CLONE_DIR
  assert namespace['jax_pins']() == installed_jax_pins()
  printed = capsys.readouterr().out
  assert jax.__version__ in printed and jax.default_backend() in printed


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_install_cell_pins_colab_accelerator_packages(name, monkeypatch):
  """On a GPU/TPU runtime the CUDA plugins and libtpu are pinned too."""
  namespace = run_install_cell(name)
  installed = {
    'jax': '0.7.2',
    'jaxlib': '0.7.2',
    'jax-cuda12-plugin': '0.7.2',
    'jax_cuda12_pjrt': '0.7.2',
    'libtpu': '0.0.21',
    'optax': '0.2.5',
    'numpy': '2.0.2',
    'torch': '2.8.0',
  }
  fake = [
    types.SimpleNamespace(metadata={'Name': n}, version=v)
    for n, v in installed.items()
  ]
  monkeypatch.setattr(importlib.metadata, 'distributions', lambda: fake)
  assert namespace['jax_pins']() == [
    'jax-cuda12-pjrt==0.7.2',
    'jax-cuda12-plugin==0.7.2',
    'jax==0.7.2',
    'jaxlib==0.7.2',
    'libtpu==0.0.21',
  ]


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_install_cell_needs_what_the_notebook_imports(name):
  namespace = run_install_cell(name)
  needed = namespace['NEEDED']
  imported = set()
  for cell in read(name).cells:
    if cell.cell_type == 'code':
      imported |= project.third_party_imports(cell.source)
      if re.search(r'^\s*(from|import) benchmarks\b', cell.source, re.M):
        imported |= project.benchmarks_imports()
  covered = {module.split('.')[0] for module in needed}
  assert imported - RUNTIME_MODULES <= covered, imported - covered
  for module, package in needed.items():  # the right pip package per module
    top = module.split('.')[0]
    assert project.requirement_name(package) in project.distributions_of(top), (
      module,
      package,
    )


@pytest.mark.parametrize('missing_here', [True, False])
@pytest.mark.parametrize('name', NOTEBOOKS)
def test_install_cell_on_a_fresh_colab(name, missing_here, monkeypatch, capsys):
  """Clone, ``--no-deps`` install, then only the missing packages, with the
  installed jax and jaxlib pinned; the clone goes on ``sys.path``."""
  namespace = run_install_cell(name)
  needed = namespace['NEEDED']
  commands, constraints = [], []

  def record(command, **kwargs):
    commands.append(list(command))
    if '-c' in command:
      path = command[command.index('-c') + 1]
      with open(path) as f:
        constraints.append(f.read().split())
      os.remove(path)
    return subprocess.CompletedProcess(command, 0)

  find_spec, isdir = importlib.util.find_spec, os.path.isdir
  monkeypatch.setattr(subprocess, 'run', record)
  monkeypatch.setattr(os.path, 'isdir', lambda p: p != CLONE_DIR and isdir(p))
  if missing_here:  # a runtime that has none of the needed modules
    monkeypatch.setattr(
      importlib.util,
      'find_spec',
      lambda module, *a: None if module in needed else find_spec(module, *a),
    )
  monkeypatch.setitem(
    sys.modules, 'google.colab', types.ModuleType('google.colab')
  )
  monkeypatch.setattr(sys, 'path', list(sys.path))

  run_install_cell(name)
  assert commands[:2] == [
    ['git', 'clone', '--depth', '1', URL, CLONE_DIR],
    PIP + ['--no-deps', '-e', CLONE_DIR],
  ]
  if missing_here:
    assert len(commands) == 3
    assert commands[2][: len(PIP) + 1] == PIP + ['-c']
    packages = commands[2][len(PIP) + 2 :]
    assert packages == list(needed.values())
    assert not {'jax', 'jaxlib'} & {
      project.requirement_name(p) for p in packages
    }
    assert constraints == [installed_jax_pins()]
  else:
    assert len(commands) == 2
  assert sys.path[0] == CLONE_DIR
  assert jax.default_backend() in capsys.readouterr().out


def test_missing_reports_absent_modules():
  namespace = run_install_cell('quickstart.ipynb')
  assert namespace['missing'](
    {
      'json': 'stdlib',
      'optax': 'optax',
      'no_such_module_pnm': 'absent',
      'no_such_parent_pnm.child': 'absent-parent',
    }
  ) == ['absent', 'absent-parent']


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_has_its_colab_badge(name):
  badge = f'[![Open In Colab]({BADGE_IMAGE})]({colab_url(name)})'
  top = read(name).cells[:2]
  assert any(c.cell_type == 'markdown' and badge in c.source for c in top), (
    f'no {badge} in the first markdown cells'
  )


def _documents() -> dict:
  """README.md, docs/*.md and every notebook cell's text, by file."""
  texts = {REPO / 'README.md': (REPO / 'README.md').read_text()}
  texts.update((p, p.read_text()) for p in sorted((REPO / 'docs').glob('*.md')))
  texts.update(
    (REPO / 'notebooks' / n, '\n'.join(c.source for c in read(n).cells))
    for n in NOTEBOOKS
  )
  return texts


def test_links_use_the_repository_url():
  owner = URL.removeprefix('https://github.com/').split('/')[0]
  allowed = {colab_url(n) for n in NOTEBOOKS}
  colab_links = 0
  for path, text in _documents().items():
    where = path.relative_to(REPO)
    for link in re.findall(
      r'https://colab\.research\.google\.com/github/'
      r"""[^\s)\]"'<>`]+""",
      text,
    ):
      assert link in allowed, f'{where}: {link} (allowed: {sorted(allowed)})'
      colab_links += 1
    for found in re.findall(r'github\.com/([\w.-]+)/pnm-optax\b', text):
      assert found == owner, f'{where}: github.com/{found}/pnm-optax'
  assert colab_links >= 1
