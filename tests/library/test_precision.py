"""Half precision: float16/bfloat16 runs track float32 runs.

Each run takes the same 20 steps from the same start (values of about 1e-2,
gradients of about 3e-3, both exactly representable in every dtype tested);
the error is relative to the float32 run's displacement.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pnm_optax
from tests import helpers

STEPS = 20
# name -> (factory, learning rate giving steps the half dtypes can resolve)
OPTIMIZERS = {'pnm': (pnm_optax.pnm, 1.0), 'adapnm': (pnm_optax.adapnm, 1e-3)}
# bfloat16 keeps 8 significant bits: its parameters round every step.
TOLERANCE = {'float16': 1e-2, 'bfloat16': 5e-2}


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  start = {'w': rng.normal(0, 1e-2, (64,)), 'b': rng.normal(0, 1e-2, (8, 8))}
  grads = [
    {k: rng.normal(0, 3e-3, v.shape) for k, v in start.items()}
    for _ in range(STEPS)
  ]
  # Rounded through bfloat16 first, so every run starts from the same values.
  as_bf16 = lambda t: jax.tree.map(
    lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32), t
  )
  return as_bf16(start), [as_bf16(g) for g in grads]


def _displacement(opt, dtype):
  start, grads = _problem()
  params = jax.tree.map(lambda x: jnp.asarray(x, dtype), start)
  state = opt.init(params)
  update = jax.jit(opt.update)
  for g in grads:
    updates, state = update(
      jax.tree.map(lambda x: jnp.asarray(x, dtype), g), state, params
    )
    chex.assert_trees_all_equal_dtypes(updates, params)
    params = optax.apply_updates(params, updates)
  chex.assert_tree_all_finite(params)
  return jax.tree.map(lambda p, s: np.asarray(p, np.float64) - s, params, start)


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
@pytest.mark.parametrize('name', OPTIMIZERS)
def test_half_precision_tracks_float32(name, dtype):
  make, lr = OPTIMIZERS[name]
  reference = _displacement(make(lr), jnp.float32)
  error = helpers.rel_err(_displacement(make(lr), dtype), reference)
  assert error < TOLERANCE[dtype], error


def test_float16_second_moments_would_underflow():
  """The control: float16 second moments make the steps far too large."""
  reference = _displacement(pnm_optax.adapnm(1e-3), jnp.float32)
  squashed = _displacement(
    pnm_optax.adapnm(1e-3, nu_dtype=jnp.float16), jnp.float16
  )
  assert helpers.rel_err(squashed, reference) > 10


@pytest.mark.parametrize(
  'dtype,nu_dtype,expected',
  [
    ('float16', None, 'float32'),
    ('bfloat16', None, 'bfloat16'),
    ('float32', None, 'float32'),
    ('complex64', None, 'float32'),
    ('bfloat16', 'float32', 'float32'),
    ('float32', 'bfloat16', 'bfloat16'),
  ],
)
def test_second_moment_dtype(dtype, nu_dtype, expected):
  opt = pnm_optax.scale_by_adapnm(nu_dtype=nu_dtype)
  params = {'w': jnp.zeros((3,), dtype)}
  state = opt.init(params)
  chex.assert_type([state.nu['w'], state.nu_max['w']], expected)
  chex.assert_type([state.mu_odd['w'], state.mu_even['w']], dtype)
  updates, state = opt.update({'w': jnp.ones((3,), dtype)}, state)
  chex.assert_type([state.nu['w'], state.nu_max['w']], expected)
  chex.assert_type(updates['w'], dtype)


@pytest.mark.parametrize(
  'factory,kwargs,message',
  [
    (
      pnm_optax.scale_by_pnm,
      dict(mu_dtype=jnp.int32),
      'mu_dtype must be a floating-point dtype',
    ),
    (
      pnm_optax.pnm,
      dict(learning_rate=0.1, mu_dtype='bool'),
      'mu_dtype must be a floating-point dtype',
    ),
    (
      pnm_optax.scale_by_adapnm,
      dict(nu_dtype=jnp.complex64),
      'nu_dtype must be a real floating-point dtype',
    ),
    (
      pnm_optax.adapnm,
      dict(nu_dtype=jnp.int8),
      'nu_dtype must be a real floating-point dtype',
    ),
  ],
)
def test_non_float_buffer_dtypes_raise(factory, kwargs, message):
  with pytest.raises(ValueError, match=message):
    factory(**kwargs)
