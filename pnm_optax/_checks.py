"""Construction-time validation of hyperparameters.

Values are checked when they are concrete: traced values (e.g. under
``optax.inject_hyperparams`` and ``jax.jit``) are checked for their shape
only, and schedules (callables) are never called.
"""

from typing import Any

import jax
import jax.numpy as jnp
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


def is_traced(value: Any) -> bool:
  """Whether ``value`` is a traced (abstract) value, e.g. under ``jax.jit``."""
  return value is not None and not callable(value) and _concrete(value) is None


def check_scalar(name: str, value: Any, *, schedule: bool = False) -> None:
  """Raises ValueError unless ``value`` is a scalar (shape ``()``), or, with
  ``schedule``, a callable (a schedule of the step count).

  Arrays of any other shape would broadcast against the per-step scalars and
  silently change the update, so they are rejected rather than guessed at.
  """
  if callable(value):
    if schedule:
      return
    raise ValueError(
      f'{name} must be a number, not a schedule (got {value!r}). To change '
      f'{name} during training, wrap the optimizer in '
      f'optax.inject_hyperparams and pass the schedule there.'
    )
  shape = np.shape(value)
  if shape != ():
    raise ValueError(
      f'{name} must be a scalar (shape ()), got a value of shape {shape}.'
    )


def _rounding_hint(name: str, arr: np.ndarray) -> str:
  """A hint for values that only fail because their dtype rounded them."""
  real = jnp.issubdtype(arr.dtype, jnp.floating)
  if not real or arr.dtype.itemsize >= 8 or not np.any(arr == 1):
    return ''
  return (
    f' {name} was given in {arr.dtype.name}, in which values close to 1 round '
    'to 1 (0.999 does in bfloat16). Under optax.inject_hyperparams the '
    "hyperparameters take the parameters' dtype: pass "
    'hyperparam_dtype=jnp.float32 (jnp.float64 with jax_enable_x64 for '
    'values within 6e-8 of 1).'
  )


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
    raise ValueError(
      f'{name} must be in [0, 1), got {value!r}.' + _rounding_hint(name, arr)
    )


def check_below_one_in(name: str, value: Any, dtype) -> None:
  """Raises ValueError if a concrete ``value`` < 1 rounds to 1 in ``dtype``,
  the dtype the step computes in (e.g. ``b1 = 0.99999999`` in float32, which
  would freeze the momentum)."""
  arr = _concrete(value)
  if arr is None or not np.all(arr < 1):
    return
  if np.all(np.asarray(arr, dtype) < 1):
    return
  largest = float(np.nextafter(np.asarray(1, dtype), np.asarray(0, dtype)))
  raise ValueError(
    f'{name}={value!r} rounds to 1 in {np.dtype(dtype).name}, the dtype this '
    f'step computes in; pass {name} <= {largest!r}, or float64 parameters '
    '(with jax_enable_x64).'
  )


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
  """Raises ValueError unless ``value`` is one of ``choices``."""
  if value not in choices:
    raise ValueError(f'{name} must be one of {choices}, got {value!r}.')


def check_rounding(dtypes, **values) -> None:
  """Raises ValueError if a hyperparameter below 1 rounds to 1 in one of
  ``dtypes``, the dtypes the step computes in (checked again when the step
  is traced)."""
  for dtype in dtypes:
    for name, value in values.items():
      check_below_one_in(name, value, dtype)


def _name(path) -> str:
  return jax.tree_util.keystr(path) or '(root)'


def check_params(name: str, params) -> None:
  """Raises ValueError for integer or boolean leaves, naming them."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.inexact):
      raise ValueError(
        f'{name}: parameter {_name(path)} has '
        f'dtype {dtype}; only floating-point and complex parameters can be '
        'optimized. Leave integer and boolean leaves out, e.g. with '
        'optax.masked(optimizer, mask) or optax.multi_transform('
        "{'train': optimizer, 'frozen': optax.set_to_zero()}, labels)."
      )


def check_mu_dtype(name: str, params, mu_dtype) -> None:
  """Raises ValueError for complex leaves with a real ``mu_dtype``, naming
  them: a real buffer would drop the momentum's imaginary part."""
  if mu_dtype is None or jnp.issubdtype(mu_dtype, jnp.complexfloating):
    return
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    dtype = jnp.result_type(leaf)
    if jnp.issubdtype(dtype, jnp.complexfloating):
      raise ValueError(
        f'{name}: parameter {_name(path)} is '
        f'{dtype} but mu_dtype={mu_dtype} is real, which would drop the '
        "momentum's imaginary part. Pass a complex mu_dtype (e.g. "
        'jnp.complex64) or mu_dtype=None, or give the complex leaves their '
        'own optimizer with optax.multi_transform.'
      )


def check_matches(name: str, updates, buffers) -> None:
  """Raises ValueError if ``updates`` does not match the state's buffers."""
  if jax.tree.structure(updates) != jax.tree.structure(buffers):
    raise ValueError(
      f'{name}: the updates tree does not match the optimizer state.\n'
      f'  updates: {jax.tree.structure(updates)}\n'
      f'  state:   {jax.tree.structure(buffers)}'
    )
  for (path, g), s in zip(
    jax.tree_util.tree_flatten_with_path(updates)[0], jax.tree.leaves(buffers)
  ):
    if jnp.shape(g) != jnp.shape(s):
      raise ValueError(
        f'{name}: updates leaf {jax.tree_util.keystr(path)} has shape '
        f'{jnp.shape(g)} but its optimizer state has shape {jnp.shape(s)}.'
      )


def canonical_dtype(name: str, dtype, real: bool = False):
  """``jax.dtypes.canonicalize_dtype`` of an inexact dtype, or None."""
  if dtype is None:
    return None
  dtype = jax.dtypes.canonicalize_dtype(dtype)
  kind = jnp.floating if real else jnp.inexact
  if not jnp.issubdtype(dtype, kind):
    raise ValueError(
      f'{name} must be a {"real " if real else ""}'
      f'floating-point dtype or None, got {dtype}.'
    )
  return dtype


def check_mask(mask: Any) -> None:
  """Raises ValueError for a mask that is a single boolean or an array.

  A callable mask given to ``optax.inject_hyperparams`` without
  ``static_args=('mask',)`` is taken for a schedule and arrives here as its
  value at the step count, ``False`` (or a traced array under ``jax.jit``):
  weight decay would silently apply to no leaf.
  """
  if mask is None or callable(mask):
    return
  if isinstance(mask, (bool, np.bool_)) or isinstance(mask, jax.Array):
    raise ValueError(
      f'mask must be a tree of booleans or a function of the parameters '
      f'returning one, got {mask!r}. For weight decay on every leaf pass '
      'mask=None, for none weight_decay=None. Under optax.inject_hyperparams '
      "a callable mask needs static_args=('mask',), else it is taken for a "
      'schedule.'
    )


WEIGHT_DECAY_MODES = ('decoupled', 'l2')


def check_step_size(
  learning_rate: Any, weight_decay: Any, weight_decay_mode: Any
) -> None:
  """Raises ValueError unless the learning rate and weight decay are scalars
  or schedules >= 0 (finite) and the mode is one of
  :data:`WEIGHT_DECAY_MODES` (``weight_decay`` may be None)."""
  check_scalar('learning_rate', learning_rate, schedule=True)
  check_nonnegative('learning_rate', learning_rate, finite=True)
  if weight_decay is not None:
    check_scalar('weight_decay', weight_decay, schedule=True)
    check_nonnegative('weight_decay', weight_decay, finite=True)
  check_choice('weight_decay_mode', weight_decay_mode, WEIGHT_DECAY_MODES)
