"""The examples in the public docstrings run and are correct."""

import doctest

import pytest

import pnm_optax.alias
import pnm_optax.step_size
import pnm_optax.transform


@pytest.mark.parametrize(
  'module', [pnm_optax.alias, pnm_optax.step_size, pnm_optax.transform]
)
def test_docstring_examples(module):
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0
  if module is pnm_optax.alias:
    assert result.attempted >= 2
