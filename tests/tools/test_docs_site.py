"""The documentation site builds strictly (``sphinx-build -W``) and offline.

The build runs in a subprocess whose sockets refuse every non-loopback
connection, as a reader's machine without network would; a warning (a broken
link or reference, a docstring Sphinx cannot parse) fails it.
"""

import html as html_module
import re
import shutil
import subprocess
import sys

import pytest
import yaml

import pnm_optax
from tests import project
from tests.helpers import LOOPBACK_ONLY, REPO

DOCS = REPO / 'docs'


def sphinx_build(source, out, builder='html'):
  """Runs the strict build of ``source`` into ``out`` with the network off."""
  code = (
    LOOPBACK_ONLY
    + '\nimport sys\nfrom sphinx.cmd.build import main\n'
    + f'sys.exit(main(["-W", "--keep-going", "-E", "-q", "-b", {builder!r},'
    + f' {str(source)!r}, {str(out)!r}]))\n'
  )
  return subprocess.run(
    [sys.executable, '-c', code],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=REPO,
  )


@pytest.fixture(scope='module')
def site(tmp_path_factory):
  out = tmp_path_factory.mktemp('site')
  result = sphinx_build(DOCS, out)
  assert result.returncode == 0, result.stdout + result.stderr
  return out


def test_every_guide_and_notebook_has_a_page(site):
  for page in DOCS.glob('*.md'):
    assert (site / f'{page.stem}.html').is_file(), page.name
  notebooks = sorted((REPO / 'notebooks').glob('*.ipynb'))
  assert notebooks
  for notebook in notebooks:
    html = (site / '_notebooks' / f'{notebook.stem}.html').read_text()
    # Rendered from the source: the first code cell's first line is there.
    assert 'Colab' in html or 'colab' in html, notebook.name


def test_api_reference_documents_every_public_name(site):
  html = (site / 'api.html').read_text()
  for name in pnm_optax.__all__:
    assert f'id="pnm_optax.{name}"' in html, name
  # The aliases' equations are rendered as maths, not left as markup.
  assert html.count('class="math') >= 2
  assert ':math:' not in html


def _parameter_types(html: str) -> dict[str, set[str]]:
  """``{parameter: {types shown}}`` from the API page's parameter lists."""
  text = html_module.unescape(re.sub(r'<[^>]+>', '', html))
  types: dict[str, set[str]] = {}
  for name, shown in re.findall(r'\n(\w+) \(([^–\n]*)\) –', text):
    types.setdefault(name, set()).add(shown)
  return types


def test_api_reference_names_parameter_types_by_their_aliases(site):
  """Types read as users write them (``optax.ScalarOrSchedule``), not as the
  unions behind them (``float | Array | Callable[[Array | ndarray | ...``)."""
  html = (site / 'api.html').read_text()
  types = _parameter_types(html)
  assert 'optax.ScalarOrSchedule' in types['learning_rate']
  assert types['b0'] >= {'optax.ScalarOrSchedule'}
  assert types['b1'] == {'jax.typing.ArrayLike'}
  assert types['weight_decay'] == {'optax.ScalarOrSchedule | None'}
  assert types['mask'] == {'optax.MaskOrFn'}
  assert types['mu_dtype'] == {'jax.typing.DTypeLike | None'}
  assert types['weight_decay_mode'] == {'WeightDecayMode'}
  for shown in set().union(*types.values()):
    assert len(shown) < 40, shown
    assert 'ndarray' not in shown and 'TypeAliasForwardRef' not in shown


def test_home_page_is_readme(site):
  html = (site / 'index.html').read_text()
  text = html_module.unescape(re.sub(r'<[^>]+>', '', html))
  readme = (REPO / 'README.md').read_text()
  # README's code, highlighted on the page: every line of every snippet.
  for block in re.findall(r'```python\n(.*?)```', readme, re.S):
    for line in block.strip().splitlines():
      assert line.strip() in text, line
  for heading in re.findall(r'^## (.+)$', readme, re.M):
    assert heading.split('`')[0].strip() in html, heading
  # README's links into docs/ lead to the site's pages.
  for target in re.findall(r'\]\(docs/(\w+)\.md', readme):
    assert f'href="{target}.html' in html, target


def test_a_broken_reference_fails_the_build(tmp_path):
  """-W is what makes the build strict: a dangling link must fail it."""
  copy = tmp_path / 'repo'
  shutil.copytree(DOCS, copy / 'docs', ignore=shutil.ignore_patterns('_*'))
  shutil.copytree(REPO / 'notebooks', copy / 'notebooks')
  for name in ('README.md', 'CONTRIBUTING.md', 'CHANGELOG.md'):
    shutil.copy(REPO / name, copy / name)
  usage = copy / 'docs' / 'usage.md'
  usage.write_text(usage.read_text() + '\nSee [nowhere](no_such_page.md).\n')
  result = sphinx_build(copy / 'docs', tmp_path / 'out', builder='dummy')
  assert result.returncode != 0
  assert 'no_such_page' in result.stdout + result.stderr


def test_read_the_docs_runs_the_same_strict_build():
  """Where users read the site, it is built as here: strict, from
  docs/conf.py, with the package and its docs extra installed."""
  config = yaml.safe_load((REPO / '.readthedocs.yaml').read_text())
  assert config['version'] == 2
  assert config['sphinx'] == {
    'configuration': 'docs/conf.py',
    'fail_on_warning': True,
  }
  python = config['build']['tools']['python']
  assert (
    f'Programming Language :: Python :: {python}'
    in project.pyproject()['project']['classifiers']
  )
  (install,) = config['python']['install']
  assert install['method'] == 'pip' and install['path'] == '.'
  extras = project.pyproject()['project']['optional-dependencies']
  assert set(install['extra_requirements']) <= set(extras)
  assert project.extra_distributions('docs') >= {'sphinx', 'myst-nb', 'jax'}
