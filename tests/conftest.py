"""Fixtures shared by the test modules (helpers are in ``tests/helpers.py``),
and the hypothesis profiles.

Hypothesis profiles: ``default`` (loaded here) runs a fixed, derandomized
set of 24 drawn examples per property, beside the explicit ``@example``
cases, so a run is repeatable and short; ``long`` (``python -m pytest
tests/library/test_properties.py --hypothesis-profile=long``) draws 300 fresh
examples per property.
"""

import os
import pathlib

# The tests run in several processes (pytest-xdist); on a GPU each would
# otherwise claim 75% of its memory when JAX starts.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from tests import helpers  # noqa: E402

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


@pytest.fixture(scope='session')
def digits():
  """The first 512 digits images and labels (see ``helpers.digits``)."""
  return helpers.digits(512)
