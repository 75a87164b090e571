"""Fixtures shared by the test modules (helpers are in ``tests/helpers.py``)."""

import pytest

from tests import helpers

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


def pytest_collection_modifyitems(items):
  for item in items:
    if item.path.stem in LIBRARY_MODULES:
      item.add_marker(pytest.mark.library)


@pytest.fixture(scope='session')
def digits():
  """The first 512 digits images and labels (see ``helpers.digits``)."""
  return helpers.digits(512)
