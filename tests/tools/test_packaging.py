"""The sdist and wheel hold what they should, and the metadata says so.

The test builds both from a copy of the working tree, offline and without
build isolation (``python -m build --no-isolation``: the sdist, then the wheel
from the unpacked sdist, so the sdist is known to be complete), and checks
their file lists and the wheel's METADATA. It also checks that each extra
declares what the code run with it imports.
"""

import ast
import importlib.metadata
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser

import nbformat
import pytest

from tests import project
from tests.helpers import REPO

RUNTIME = {'jax', 'jaxlib', 'optax', 'numpy'}
# The Jupyter kernel's own package (a dependency of ipykernel), and Colab's
# (imported only on Colab, to mount Google Drive).
KERNEL_IMPORTS = {'IPython', 'google'}
# Whatever else lies in a checkout (virtual environments, caches, outputs) is
# not copied: the build sees what a fresh clone has.
SKIPPED_IN_COPY = shutil.ignore_patterns(
  '.*', '__pycache__', '*.egg-info', 'build', 'dist', 'results', 'data'
)


def _source_version() -> str:
  """``pnm_optax.__version__`` read from the source, without importing it."""
  tree = ast.parse((REPO / 'pnm_optax' / '__init__.py').read_text())
  for node in tree.body:
    if isinstance(node, ast.Assign) and [t.id for t in node.targets] == [
      '__version__'
    ]:
      return ast.literal_eval(node.value)
  raise AssertionError('no __version__ in pnm_optax/__init__.py')


def _copy_ignoring_venvs(src, dst):
  def ignore(folder, names):
    skipped = set(SKIPPED_IN_COPY(folder, names))
    return skipped | {
      n for n in names if (pathlib.Path(folder) / n / 'pyvenv.cfg').exists()
    }

  shutil.copytree(src, dst, ignore=ignore)


@pytest.fixture(scope='module')
def dists(tmp_path_factory):
  """Builds the sdist and wheel; returns their paths and the build log."""
  tmp = tmp_path_factory.mktemp('packaging')
  _copy_ignoring_venvs(REPO, tmp / 'src')
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'build',
      '--no-isolation',
      '--outdir',
      str(tmp / 'dist'),
      str(tmp / 'src'),
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  log = proc.stdout + proc.stderr
  assert proc.returncode == 0, log[-5000:]
  (sdist,), (wheel,) = (
    sorted((tmp / 'dist').glob(p)) for p in ('*.tar.gz', '*.whl')
  )
  return {'sdist': sdist, 'wheel': wheel, 'log': log}


def _library_files() -> set[str]:
  return {f'pnm_optax/{p.name}' for p in (REPO / 'pnm_optax').glob('*.py')} | {
    'pnm_optax/py.typed'
  }


def test_build_has_no_deprecation_warnings(dists):
  assert not re.search(r'deprecat', dists['log'], re.I), dists['log']


def test_wheel_holds_the_library_only(dists):
  version = _source_version()
  assert dists['wheel'].name == f'pnm_optax-{version}-py3-none-any.whl'
  dist_info = f'pnm_optax-{version}.dist-info/'
  with zipfile.ZipFile(dists['wheel']) as wheel:
    names = set(wheel.namelist())
    top_level = wheel.read(dist_info + 'top_level.txt').decode().split()
  assert {n for n in names if not n.startswith(dist_info)} == _library_files()
  assert {n for n in names if n.startswith(dist_info)} == {
    dist_info + f
    for f in (
      'METADATA',
      'WHEEL',
      'RECORD',
      'top_level.txt',
      'licenses/LICENSE',
    )
  }
  assert top_level == ['pnm_optax']


def test_sdist_holds_the_library_and_its_metadata(dists):
  """The library, pyproject.toml, README.md, LICENSE and setuptools' own
  files; no tests/, benchmarks/, notebooks/ or docs/ (they need each other
  and run from a checkout)."""
  version = _source_version()
  root = f'pnm_optax-{version}/'
  with tarfile.open(dists['sdist']) as sdist:
    names = {m.name[len(root) :] for m in sdist.getmembers() if m.isfile()}
  egg_info = {n for n in names if n.startswith('pnm_optax.egg-info/')}
  assert names - egg_info == _library_files() | {
    'pyproject.toml',
    'README.md',
    'LICENSE',
    'MANIFEST.in',
    'PKG-INFO',
    'setup.cfg',
  }
  assert 'pnm_optax.egg-info/SOURCES.txt' in egg_info


def _metadata(dists):
  version = _source_version()
  with zipfile.ZipFile(dists['wheel']) as wheel:
    text = wheel.read(f'pnm_optax-{version}.dist-info/METADATA').decode()
  return Parser().parsestr(text)


def test_wheel_metadata(dists):
  meta = _metadata(dists)
  assert meta['Name'] == 'pnm-optax'
  assert meta['Version'] == _source_version()
  assert meta['License-Expression'] == 'Apache-2.0'
  assert meta.get_all('License-File') == ['LICENSE']
  assert not [c for c in meta.get_all('Classifier') if c.startswith('License')]
  assert meta.get_all('Project-URL') == [
    f'Repository, {project.repository_url()}',
    f'Issues, {project.repository_url()}/issues',
  ]
  assert 'optax' in meta['Keywords'].split(',')
  runtime = [r for r in meta.get_all('Requires-Dist') if 'extra ==' not in r]
  assert {project.requirement_name(r) for r in runtime} == RUNTIME


def test_python_classifiers_agree_with_requires_python(dists):
  meta = _metadata(dists)
  floor = re.fullmatch(r'>=3\.(\d+)', meta['Requires-Python'])
  minors = sorted(
    int(m)
    for m in re.findall(
      r'Programming Language :: Python :: 3\.(\d+)$',
      '\n'.join(meta.get_all('Classifier')),
      re.M,
    )
  )
  assert floor and minors, (meta['Requires-Python'], minors)
  assert minors[0] == int(floor.group(1))
  assert minors == list(range(minors[0], minors[-1] + 1))  # no gaps
  assert sys.version_info[:2] in [(3, m) for m in minors]  # this one is tested


def test_one_version():
  """setuptools reads the version from pnm_optax.__version__ (nowhere else)."""
  config = project.pyproject()
  assert 'version' not in config['project']
  assert config['project']['dynamic'] == ['version']
  assert config['tool']['setuptools']['dynamic']['version'] == {
    'attr': 'pnm_optax.__version__'
  }
  import pnm_optax

  assert pnm_optax.__version__ == _source_version()
  assert importlib.metadata.version('pnm-optax') == pnm_optax.__version__


def test_license_file_is_apache_2():
  text = (REPO / 'LICENSE').read_text()
  assert text.split()[:4] == ['Apache', 'License', 'Version', '2.0,']
  assert 'END OF TERMS AND CONDITIONS' in text


def test_runtime_dependencies_are_the_core_only():
  deps = project.pyproject()['project']['dependencies']
  assert {project.requirement_name(r) for r in deps} == RUNTIME
  assert 'chex' in project.extra_distributions('test')


def _uncovered(modules, extra):
  """The modules that no distribution named by ``extra`` provides."""
  declared = project.extra_distributions(extra)
  return sorted(
    m for m in modules if not project.distributions_of(m) & declared
  )


def test_benchmarks_extra_covers_what_benchmarks_import():
  imported = project.benchmarks_imports()
  assert {'flax', 'matplotlib'} <= imported  # the scan sees the imports
  assert not _uncovered(imported, 'benchmarks')


def test_notebooks_extra_covers_what_notebooks_import():
  imported = set()
  for path in sorted((REPO / 'notebooks').glob('*.ipynb')):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
      if cell.cell_type == 'code':
        imported |= project.third_party_imports(cell.source)
  assert 'flax' in imported
  assert not _uncovered(imported - KERNEL_IMPORTS, 'notebooks')
  assert {'nbclient', 'nbformat', 'ipykernel'} <= project.extra_distributions(
    'notebooks'
  )


def test_test_extra_covers_what_tests_import():
  imported = set().union(
    *(
      project.third_party_imports(p.read_text())
      for p in sorted((REPO / 'tests').rglob('*.py'))
    )
  )
  assert {'chex', 'pytest', 'flax'} <= imported
  assert not _uncovered(imported - project.OPTIONAL_IMPORTS, 'test')


def test_scan_finds_a_missing_declaration():
  """The checks above can fail: a module no extra declares is reported."""
  source = 'import numpy\nimport sklearn\ntry:\n  import torch\nexcept ImportError:\n  pass\n'
  assert project.third_party_imports(source) == {'numpy', 'sklearn'}
  assert _uncovered({'numpy', 'sklearn'}, 'flax') == ['sklearn']
