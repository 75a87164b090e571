"""Fixtures shared by the test modules (helpers are in ``tests/helpers.py``),
and the hypothesis profiles.

Hypothesis profiles: ``default`` (loaded here) runs a fixed, derandomized
set of 24 drawn examples per property, beside the explicit ``@example``
cases, so a run is repeatable and short; ``long`` (``python -m pytest
tests/library/test_properties.py --hypothesis-profile=long``) draws 300 fresh
examples per property.
"""

import importlib.metadata
import os
import pathlib
import shutil
import tempfile

# The tests run in several processes (pytest-xdist); on a GPU each would
# otherwise claim 75% of its memory when JAX starts.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')


_XLA_DEFAULTS = 'PNM_OPTAX_TESTS_XLA_DEFAULTS'


def _classic_cpu_emitters() -> None:
  """Compiles for the CPU with XLA's classic emitters.

  The tests compile some 700 small programs and run each briefly; XLA's
  newer CPU fusion emitters (its default) take about twice as long to
  compile them, which was most of the tests' time on two cores. Both
  emitters compute the same operations in IEEE arithmetic, and every
  comparison here has a tolerance from rounding, so the results hold for
  either. ``PNM_OPTAX_TESTS_XLA_DEFAULTS=1`` keeps XLA's defaults. The flag
  is set only for the jaxlib versions it was checked on: XLA aborts the
  process on a flag it does not know.
  """
  if os.environ.get(_XLA_DEFAULTS) == '1':
    return
  version = importlib.metadata.version('jaxlib')
  if not version.startswith('0.10.'):
    return
  flag = '--xla_cpu_use_fusion_emitters'
  flags = os.environ.get('XLA_FLAGS', '')
  if flag not in flags:  # a choice made outside the tests stays
    os.environ['XLA_FLAGS'] = f'{flags} {flag}=false'.strip()


_classic_cpu_emitters()  # before JAX starts, in this process and the workers

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
  'default',
  max_examples=24,
  deadline=None,  # each example compiles its own step
  derandomize=True,
  database=None,
  suppress_health_check=_SLOW_IS_FINE,
)
settings.register_profile(
  'long',
  max_examples=300,
  deadline=None,
  suppress_health_check=_SLOW_IS_FINE,
)
settings.load_profile('default')


# Many tests build the same small programs (the same optimizer on the same
# tree): each is compiled once per run, in a cache that all test processes
# share and that starts empty and is removed at the end, so a run never
# depends on an earlier one. Subprocesses (the notebooks, the command-line
# tests) do not inherit it.
_CACHE_VARIABLE = 'PNM_OPTAX_TESTS_COMPILATION_CACHE'
_CACHE_OWNER = pytest.StashKey[str]()


def pytest_configure(config):
  folder = os.environ.get(_CACHE_VARIABLE)
  if folder is None:  # the main process; the xdist workers inherit it
    folder = tempfile.mkdtemp(prefix='pnm-optax-tests-xla-')
    os.environ[_CACHE_VARIABLE] = folder
    config.stash[_CACHE_OWNER] = folder
  if config.getoption('numprocesses', None) and not hasattr(
    config, 'workerinput'
  ):
    return  # pytest-xdist's controller runs no test: spare it JAX's start
  import jax

  jax.config.update('jax_compilation_cache_dir', folder)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def pytest_unconfigure(config):
  folder = config.stash.get(_CACHE_OWNER, None)
  if folder is not None:
    shutil.rmtree(folder, ignore_errors=True)
    del os.environ[_CACHE_VARIABLE]


# ``tests/library`` holds the tests of pnm_optax itself; they are also
# selected by ``python -m pytest -m library``, which then does not even import
# the other folders (they import Flax, the benchmarks and the notebooks'
# packages).
LIBRARY = pathlib.Path(__file__).parent / 'library'


def pytest_ignore_collect(collection_path, config):
  if config.getoption('markexpr') != 'library':
    return None
  path = pathlib.Path(collection_path)
  if path.is_relative_to(LIBRARY) or LIBRARY.is_relative_to(path):
    return None
  return True if path.suffix == '.py' or path.is_dir() else None


def pytest_collection_modifyitems(items):
  for item in items:
    if item.path.is_relative_to(LIBRARY):
      item.add_marker(pytest.mark.library)


@pytest.fixture(autouse=True)
def _compile_effort(request):
  """Compiles the library's tests without LLVM's optimisation passes.

  They compile some 700 small programs and run each for microseconds; the
  passes took a fifth of the compile time. They do not change IEEE results
  (XLA's own simplifications still run). Tests marked ``long_compute`` and
  the other folders (notebooks, benchmarks) run long enough to keep them.
  ``PNM_OPTAX_TESTS_XLA_DEFAULTS=1`` or ``JAX_DISABLE_MOST_OPTIMIZATIONS``
  set outside the tests keeps that choice.
  """
  keep = os.environ.get(_XLA_DEFAULTS) == '1'
  if keep or 'JAX_DISABLE_MOST_OPTIMIZATIONS' in os.environ:
    yield
    return
  import jax

  quick = request.node.path.is_relative_to(LIBRARY) and (
    request.node.get_closest_marker('long_compute') is None
  )
  jax.config.update('jax_disable_most_optimizations', quick)
  yield
  jax.config.update('jax_disable_most_optimizations', False)


@pytest.fixture(scope='session')
def digits():
  """The first 512 digits images and labels (see ``helpers.digits``)."""
  from tests import helpers

  return helpers.digits(512)
