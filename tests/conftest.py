"""Fixtures shared by the test modules (helpers are in ``tests/helpers.py``)."""

import pytest

from tests import helpers


@pytest.fixture(scope='session')
def digits():
  """The first 512 digits images and labels (see ``helpers.digits``)."""
  return helpers.digits(512)
