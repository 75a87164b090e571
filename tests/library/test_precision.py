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
from tests import compat, helpers
from tests.reference import ReferencePNM

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
  # The float32 run itself is the float64 reference's.
  start, grads = _problem()
  ref = ReferencePNM(
    [np.float64(start['b']), np.float64(start['w'])], adaptive=name == 'adapnm'
  )
  for g in grads:
    ref.step([np.float64(g['b']), np.float64(g['w'])], lr)
  moved = [p - s for p, s in zip(ref.params, (start['b'], start['w']))]
  assert helpers.rel_err([reference['b'], reference['w']], moved) < 1e-4


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


# Buffer dtypes wider than the parameters widen the computation.


def _adapnm_against_reference(opt, b1, b2, steps=6, x64_params=False):
  """Runs ``opt`` (float32 parameters) and the float64 reference on the
  same gradients; returns the worst relative error of a step's update and
  the final state."""
  rng = np.random.default_rng(0)
  init = rng.normal(size=5).astype(np.float32)
  ref = ReferencePNM([init], adaptive=True, b1=b1, b2=b2)
  params = jnp.asarray(init)
  state = opt.init(params)
  worst = 0.0
  for _ in range(steps):
    g = rng.normal(size=5).astype(np.float32)
    before = ref.params[0].copy()
    ref.step([g], 1e-2)
    updates, state = jax.jit(opt.update)(jnp.asarray(g), state, params)
    worst = max(worst, helpers.rel_err(updates, ref.params[0] - before))
    params = optax.apply_updates(params, updates)
  return worst, state


def test_float64_nu_dtype_computes_in_float64():
  """nu_dtype=jnp.float64 under float32 parameters: the second moments are
  computed (not only stored) in float64. At b2 = 0.999999, float32 rounds
  1 - b2 by 1.3%, which the first step's nu showed."""
  with compat.enable_x64():
    b2 = 0.999999
    opt = pnm_optax.adapnm(1e-2, b2=b2, nu_dtype=jnp.float64)
    worst, state = _adapnm_against_reference(opt, 0.9, b2)
    nu = optax.tree.get(state, 'nu')
    chex.assert_type(nu, jnp.float64)
    assert worst <= 1e-6, worst  # float32 updates: a few float32 ulps
    # One step's nu, exactly (1 - b2) g^2 in float64.
    g = jnp.asarray([0.3], jnp.float32)
    s = pnm_optax.scale_by_adapnm(b2=b2, nu_dtype=jnp.float64)
    _, state = s.update(g, s.init(jnp.zeros(1, jnp.float32)))
    expected = (1 - b2) * np.float64(g[0]) ** 2
    assert float(state.nu[0]) == pytest.approx(expected, rel=1e-14)


def test_a_float64_momentum_accepts_b1_that_float32_rounds_to_one():
  """PNM with mu_dtype=jnp.float64 under float32 parameters computes in
  float64: b1 within 6e-8 of 1 is valid and taken exactly."""
  with compat.enable_x64():
    b1 = 1 - 1e-9
    opt = pnm_optax.pnm(0.1, b1=b1, mu_dtype=jnp.float64)
    rng = np.random.default_rng(0)
    ref = ReferencePNM([np.zeros(4)], b1=b1)
    params = jnp.zeros(4, jnp.float32)
    state = opt.init(params)
    for _ in range(4):
      g = rng.normal(size=4).astype(np.float32)
      before = ref.params[0].copy()
      ref.step([g], 0.1)
      updates, state = jax.jit(opt.update)(jnp.asarray(g), state)
      assert helpers.rel_err(updates, ref.params[0] - before) <= 1e-6
    with pytest.raises(ValueError, match='rounds to 1 in float32'):
      pnm_optax.pnm(0.1, b1=b1).init(jnp.zeros(4, jnp.float32))


@pytest.mark.parametrize('arg', ['mu_dtype', 'nu_dtype'])
def test_a_float64_buffer_accepts_b_that_float32_rounds_to_one(arg):
  """With a float64 buffer AdaPNM computes in float64, so b1 (mu_dtype) or
  b2 (nu_dtype) within 6e-8 of 1 is valid and taken exactly."""
  with compat.enable_x64():
    b1, b2 = (1 - 1e-9, 0.99) if arg == 'mu_dtype' else (0.9, 1 - 1e-9)
    opt = pnm_optax.adapnm(1e-2, b1=b1, b2=b2, **{arg: jnp.float64})
    worst, _ = _adapnm_against_reference(opt, b1, b2)
    assert worst <= 1e-6, worst
    # Computed in float32, the same values are rejected.
    with pytest.raises(ValueError, match='rounds to 1 in float32'):
      pnm_optax.adapnm(1e-2, b1=b1, b2=b2).init(jnp.zeros(5, jnp.float32))


# A weight-decay schedule gives the dtypes a number gives.


@pytest.mark.parametrize('mode', ['decoupled', 'l2'])
@pytest.mark.parametrize('mask', ['tree', 'fn'])
@pytest.mark.parametrize('name', ['pnm', 'adapnm'])
def test_decay_schedule_keeps_the_dtypes_of_a_number(name, mask, mode):
  """bfloat16 gradients of float32 parameters: decayed leaves come back in
  the promoted dtype (float32), masked-out ones in the gradients'
  (bfloat16), with a schedule as with a number."""
  make = getattr(pnm_optax, name)
  params = {'w': jnp.ones((2, 2)), 'b': jnp.ones(2)}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5, jnp.bfloat16), params)
  flags = {'w': True, 'b': False}
  masks = {'tree': flags, 'fn': lambda p: jax.tree.map(lambda x: x.ndim > 1, p)}
  dtypes = []
  for weight_decay in (0.1, optax.constant_schedule(0.1)):
    opt = make(
      0.1, weight_decay=weight_decay, mask=masks[mask], weight_decay_mode=mode
    )
    # Traced only (the dtypes are decided there): nothing to compile.
    updates, _ = jax.eval_shape(opt.update, grads, opt.init(params), params)
    dtypes.append(jax.tree.map(lambda u: u.dtype.name, updates))
  assert dtypes[0] == dtypes[1] == {'w': 'float32', 'b': 'bfloat16'}
