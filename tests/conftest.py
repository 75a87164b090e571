"""Fixtures shared by the test modules (helpers are in ``tests/helpers.py``),
and the hypothesis profiles.

Hypothesis profiles: ``default`` (loaded here) runs a fixed, derandomized set
of 40 examples per property, so a run is repeatable and short; ``long``
(``python -m pytest tests/test_properties.py --hypothesis-profile=long``)
draws 300 fresh examples per property.
"""

import pytest
from hypothesis import HealthCheck, settings

from tests import helpers

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
  'default',
  max_examples=40,
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


# The tests of pnm_optax itself, selected by ``python -m pytest -m library``;
# the other modules test the benchmarks, notebooks, docs, packaging and
# multi-device runs.
LIBRARY_MODULES = frozenset(
  {
    'test_alias',
    'test_docs',
    'test_edge_cases',
    'test_invalid_input',
    'test_long_runs',
    'test_noise',
    'test_parity',
    'test_precision',
    'test_properties',
    'test_step_size',
  }
)


def pytest_ignore_collect(collection_path, config):
  """With ``-m library`` the other modules are not even imported (they
  import Flax, the benchmarks and the notebooks' packages)."""
  if config.getoption('markexpr') != 'library':
    return None
  name = collection_path.name
  if name.startswith('test_') and name.endswith('.py'):
    return True if collection_path.stem not in LIBRARY_MODULES else None
  return None


def pytest_collection_modifyitems(items):
  for item in items:
    if item.path.stem in LIBRARY_MODULES:
      item.add_marker(pytest.mark.library)


@pytest.fixture(scope='session')
def digits():
  """The first 512 digits images and labels (see ``helpers.digits``)."""
  return helpers.digits(512)
