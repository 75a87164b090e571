"""What ``pyproject.toml`` declares, and what the repository's code imports.

Shared by the packaging and notebook tests: the repository URL (written once,
in ``project.urls``), the requirements of an extra with the package's own
extras resolved, and the third-party modules a piece of Python imports.
"""

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib

from tests.helpers import REPO

# Modules of this repository, not installed distributions.
LOCAL_MODULES = frozenset({'pnm_optax', 'benchmarks', 'examples', 'tests'})
# Imported by benchmarks/ (and its tests) only where installed: the PyTorch
# rows of the speed report and alternative CIFAR-10 loaders.
OPTIONAL_IMPORTS = frozenset(
  {'torch', 'pytorch_optimizer', 'datasets', 'tensorflow_datasets'}
)


@functools.cache
def pyproject() -> dict:
  return tomllib.loads((REPO / 'pyproject.toml').read_text())


def repository_url() -> str:
  return pyproject()['project']['urls']['Repository']


def requirement_name(requirement: str) -> str:
  """The normalised distribution name of a PEP 508 requirement string."""
  name = re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)', requirement).group(1)
  return re.sub(r'[-_.]+', '-', name).lower()


def extra_distributions(extra: str) -> set[str]:
  """Distributions that ``pip install "pnm-optax[extra]"`` asks for by name,
  with ``pnm-optax[...]`` self-references and the runtime dependencies
  resolved."""
  project = pyproject()['project']
  names = {requirement_name(r) for r in project['dependencies']}
  pending, seen = [extra], set()
  while pending:
    current = pending.pop()
    if current in seen:
      continue
    seen.add(current)
    for requirement in project['optional-dependencies'][current]:
      self_ref = re.fullmatch(r'pnm-optax\[([\w,\s-]+)\]', requirement.strip())
      if self_ref:
        pending.extend(e.strip() for e in self_ref.group(1).split(','))
      else:
        names.add(requirement_name(requirement))
  return names


def _is_optional(node: ast.AST, parents: dict) -> bool:
  """Whether an import sits in a ``try`` that handles ``ImportError``."""
  while node in parents:
    node, child = parents[node], node
    if isinstance(node, ast.Try) and child in node.body:
      for handler in node.handlers:
        names = (
          [handler.type]
          if not isinstance(handler.type, ast.Tuple)
          else (handler.type.elts)
        )
        if any(
          isinstance(n, ast.Name)
          and n.id in ('ImportError', 'ModuleNotFoundError')
          for n in names
        ):
          return True
  return False


def third_party_imports(source: str) -> set[str]:
  """Top-level names of the modules ``source`` imports unconditionally.

  Standard library, relative and repository imports are left out, and so are
  imports guarded by ``try: ... except ImportError``.
  """
  tree = ast.parse(source)
  parents = {
    child: node
    for node in ast.walk(tree)
    for child in ast.iter_child_nodes(node)
  }
  modules = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level:
      names = [node.module]
    else:
      continue
    if not _is_optional(node, parents):
      modules.update(name.split('.')[0] for name in names)
  return {
    m
    for m in modules
    if m not in sys.stdlib_module_names and m not in LOCAL_MODULES
  }


def benchmarks_imports() -> set[str]:
  """Third-party modules that running benchmarks/ and examples/ needs
  (optional ones left out)."""
  sources = sorted(
    [*(REPO / 'benchmarks').rglob('*.py'), *(REPO / 'examples').rglob('*.py')]
  )
  return (
    set().union(*(third_party_imports(p.read_text()) for p in sources))
    - OPTIONAL_IMPORTS
  )


@functools.cache
def _packages_distributions() -> dict:
  return importlib.metadata.packages_distributions()  # reads every RECORD


def distributions_of(module: str) -> set[str]:
  """Normalised names of the installed distributions providing ``module``."""
  return {
    requirement_name(d) for d in _packages_distributions().get(module, ())
  }
