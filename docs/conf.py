"""Sphinx configuration of the pnm-optax documentation site.

Build it from the repository root with::

  python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import pathlib
import shutil
import sys

from docutils import nodes
from sphinx import addnodes

DOCS = pathlib.Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))

import pnm_optax  # noqa: E402

project = 'pnm-optax'
author = 'The pnm-optax authors'
copyright = '2026, The pnm-optax authors'
release = pnm_optax.__version__
version = release

extensions = [
  'sphinx.ext.autodoc',
  'sphinx.ext.autosummary',
  'sphinx.ext.napoleon',
  'sphinx.ext.mathjax',
  'sphinx.ext.viewcode',
  'myst_nb',
]

# Markdown pages and the notebooks, rendered as committed (without outputs):
# the test suite executes the notebooks, the site only shows them.
nb_execution_mode = 'off'
myst_enable_extensions = ['dollarmath', 'amsmath']
myst_heading_anchors = 3
source_suffix = {'.md': 'myst-nb', '.ipynb': 'myst-nb'}
exclude_patterns = ['_build', 'Thumbs.db', '.DS_Store']

# The API pages: Google-style docstrings, signatures in the order of the code.
autosummary_generate = True
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = 'sphinx_book_theme'
html_title = 'pnm-optax'
html_theme_options = {
  'repository_url': 'https://github.com/pnm-optax/pnm-optax',
  'use_repository_button': True,
  'show_toc_level': 2,
}
# Everything the pages need is bundled by the theme; MathJax is loaded by the
# reader's browser, so the build itself needs no network.

# The notebooks live in notebooks/ (their Colab links point there); the site
# renders copies made at build time.
_NOTEBOOKS = DOCS / '_notebooks'
shutil.rmtree(_NOTEBOOKS, ignore_errors=True)
_NOTEBOOKS.mkdir()
for _notebook in sorted((REPO / 'notebooks').glob('*.ipynb')):
  shutil.copy(_notebook, _NOTEBOOKS / _notebook.name)

# Parameter types by the names users write (optax.ScalarOrSchedule), not as
# the unions they stand for; the library's modules postpone the evaluation of
# annotations so that these names reach autodoc.
autodoc_type_aliases = {
  name: name
  for name in (
    'optax.ScalarOrSchedule',
    'optax.MaskOrFn',
    'optax.Updates',
    'optax.Params',
    'optax.OptState',
    'jax.typing.ArrayLike',
    'jax.typing.DTypeLike',
    'WeightDecayMode',
  )
}


def _alias_names_in_unions(app, doctree):
  """Sphinx writes an alias inside a union (``jax.typing.DTypeLike | None``)
  as the pieces ``TypeAliasForwardRef``, ``(``, ``'name'``, ``) ``; join them
  back into the name."""
  del app
  for paragraph in list(doctree.findall(nodes.paragraph)):
    children = paragraph.children
    for at in range(len(children) - 3, -1, -1):
      texts = [c.astext() for c in children[at : at + 4]]
      if texts[0] != 'TypeAliasForwardRef' or texts[1] != '(':
        continue
      if texts[3].strip() != ')':
        continue
      name = texts[2].strip("'") + texts[3][1:]
      for piece in children[at + 1 : at + 4]:
        paragraph.remove(piece)
      paragraph.replace(children[at], addnodes.literal_emphasis(name, name))


def setup(app):
  app.connect('doctree-read', _alias_names_in_unions)
