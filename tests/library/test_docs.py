"""The examples in the public docstrings run and are correct."""

import doctest
import inspect

import pytest

import pnm_optax.alias
import pnm_optax.step_size
import pnm_optax.transform


def _prompts(module) -> int:
  """``>>>`` prompts in the docstrings of the module and of the functions
  and classes it defines, counted from the text (not by doctest)."""
  docs = [module.__doc__ or '']
  for _, obj in inspect.getmembers(module):
    if (inspect.isfunction(obj) or inspect.isclass(obj)) and (
      obj.__module__ == module.__name__
    ):
      docs.append(obj.__doc__ or '')
  return sum(
    line.lstrip().startswith('>>>') for doc in docs for line in doc.splitlines()
  )


@pytest.mark.parametrize(
  'module', [pnm_optax.alias, pnm_optax.step_size, pnm_optax.transform]
)
def test_docstring_examples(module):
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0
  # Each module has examples, and every one of them ran.
  assert result.attempted > 0
  assert result.attempted == _prompts(module), result
