"""Construction-time validation of hyperparameters.

Only concrete values are checked: schedules (callables) and traced values
(e.g. under ``optax.inject_hyperparams``) pass through untouched.
"""

from typing import Any

import jax
import numpy as np


def _concrete(value: Any):
  """Returns ``value`` as a NumPy array, or None if it is traced or callable."""
  if value is None or callable(value):
    return None
  try:
    return np.asarray(value)
  except (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
  ):
    return None


def is_zero(value: Any) -> bool:
  """Whether ``value`` is a concrete zero (not a schedule, not traced)."""
  arr = _concrete(value)
  return arr is not None and not np.any(arr)


def check_nonnegative(name: str, value: Any, *, finite: bool = False) -> None:
  """Raises ValueError unless ``value`` >= 0 (NaN fails; inf too if
  ``finite``, for values where infinity can only give non-finite updates)."""
  arr = _concrete(value)
  if arr is None:
    return
  ok = arr >= 0
  if finite:
    ok &= np.isfinite(arr)
  if not np.all(ok):
    raise ValueError(
      f'{name} must be >= 0{" and finite" if finite else ""}, got {value!r}.'
    )


def check_unit_interval(name: str, value: Any) -> None:
  """Raises ValueError unless 0 <= ``value`` < 1 (NaN fails)."""
  arr = _concrete(value)
  if arr is not None and not np.all((arr >= 0) & (arr < 1)):
    raise ValueError(f'{name} must be in [0, 1), got {value!r}.')


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
  """Raises ValueError unless ``value`` is one of ``choices``."""
  if value not in choices:
    raise ValueError(f'{name} must be one of {choices}, got {value!r}.')
