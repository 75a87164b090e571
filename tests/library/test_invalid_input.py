"""Invalid hyperparameters raise ValueError naming the argument and range."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pnm_optax
from tests.reference import ReferencePNM

INVALID = [
  (pnm_optax.pnm, dict(learning_rate=-0.1), 'learning_rate must be >= 0'),
  (pnm_optax.pnm, dict(learning_rate=0.1, b1=1.0), r'b1 must be in \[0, 1\)'),
  (pnm_optax.pnm, dict(learning_rate=0.1, b1=-0.1), r'b1 must be in \[0, 1\)'),
  (pnm_optax.pnm, dict(learning_rate=0.1, b0=-1.0), 'b0 must be >= 0'),
  (pnm_optax.pnm, dict(learning_rate=0.1, b0=float('nan')), 'b0 must be'),
  (
    pnm_optax.pnm,
    dict(learning_rate=0.1, weight_decay=-1e-4),
    'weight_decay must be >= 0',
  ),
  (
    pnm_optax.pnm,
    dict(learning_rate=0.1, weight_decay_mode='adamw'),
    "weight_decay_mode must be one of \\('decoupled', 'l2'\\)",
  ),
  (pnm_optax.adapnm, dict(learning_rate=-1e-3), 'learning_rate must be >= 0'),
  (pnm_optax.adapnm, dict(b1=1.5), r'b1 must be in \[0, 1\)'),
  (pnm_optax.adapnm, dict(b2=1.0), r'b2 must be in \[0, 1\)'),
  (pnm_optax.adapnm, dict(b2=-0.5), r'b2 must be in \[0, 1\)'),
  (pnm_optax.adapnm, dict(b0=-0.5), 'b0 must be >= 0'),
  (pnm_optax.adapnm, dict(eps=-1e-8), 'eps must be >= 0'),
  (pnm_optax.adapnm, dict(eps_root=-1.0), 'eps_root must be >= 0'),
  (pnm_optax.adapnm, dict(weight_decay=-1.0), 'weight_decay must be >= 0'),
  (pnm_optax.adapnm, dict(weight_decay_mode='L2'), 'weight_decay_mode'),
  (pnm_optax.scale_by_pnm, dict(b1=jnp.float32(1.0)), 'b1 must be in'),
  (pnm_optax.scale_by_adapnm, dict(eps=-1.0), 'eps must be >= 0'),
]


@pytest.mark.parametrize('factory,kwargs,message', INVALID)
def test_invalid_hyperparameters_raise(factory, kwargs, message):
  with pytest.raises(ValueError, match=message):
    factory(**kwargs)


@pytest.mark.parametrize('factory', [pnm_optax.pnm, pnm_optax.adapnm])
def test_boundary_values_are_valid(factory):
  """b1 = 0, b0 = 0 and weight_decay = 0 run, as the reference does."""
  opt = factory(learning_rate=0.1, b1=0.0, b0=0.0, weight_decay=0.0)
  adaptive = factory is pnm_optax.adapnm
  ref = ReferencePNM([np.ones(2)], adaptive=adaptive, b1=0.0, b0=0.0)
  # float32 rounding, amplified by b2's condition number 1 / (1 - b2).
  rtol = 16 * np.finfo(np.float32).eps * (1000 if adaptive else 1)
  params = jnp.ones(2)
  state = opt.init(params)
  for g in ([1.0, -2.0], [0.5, 3.0], [-1.0, 1.0]):
    before = ref.params[0].copy()
    ref.step([np.asarray(g)], 0.1)
    updates, state = opt.update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(updates, ref.params[0] - before, rtol=rtol)


def test_schedules_are_not_called_at_construction():
  calls = []
  schedule = lambda count: calls.append(count) or -1.0
  pnm_optax.pnm(schedule, b0=schedule, weight_decay=schedule)
  assert not calls


def test_traced_hyperparameters_are_not_checked():
  """Under inject_hyperparams and jit the values are tracers: no error."""
  opt = optax.inject_hyperparams(pnm_optax.adapnm)(
    learning_rate=1e-3, b1=0.9, b2=0.999, b0=1.0, eps=1e-8, weight_decay=1e-2
  )
  params = jnp.ones(3)
  state = opt.init(params)
  updates, state = jax.jit(opt.update)(jnp.ones(3), state, params)
  assert bool(jnp.all(updates < 0))

  @jax.jit
  def build_and_step(b1, b0):
    inner = pnm_optax.pnm(0.1, b1=b1, b0=b0)
    return inner.update(jnp.ones(3), inner.init(params), params)[0]

  assert bool(jnp.all(build_and_step(0.9, 1.0) < 0))


@pytest.mark.parametrize(
  'factory,kwargs,message',
  [
    (
      pnm_optax.pnm,
      dict(learning_rate=float('inf')),
      'learning_rate must be >= 0 and finite, got inf',
    ),
    (
      pnm_optax.pnm,
      dict(learning_rate=0.1, b0=float('inf')),
      'b0 must be >= 0 and finite',
    ),
    (
      pnm_optax.pnm,
      dict(learning_rate=0.1, weight_decay=float('inf')),
      'weight_decay must be >= 0 and finite',
    ),
    (pnm_optax.adapnm, dict(learning_rate=jnp.inf), 'learning_rate must be'),
    (pnm_optax.adapnm, dict(b0=jnp.array([1.0, jnp.inf])), 'b0 must be'),
    (pnm_optax.scale_by_adapnm, dict(b0=float('inf')), 'b0 must be'),
  ],
)
def test_infinities_that_give_non_finite_updates_raise(
  factory, kwargs, message
):
  with pytest.raises(ValueError, match=message):
    factory(**kwargs)


@pytest.mark.parametrize(
  'kwargs',
  [
    dict(learning_rate=float('inf')),
    dict(b0=float('inf')),
    dict(weight_decay=float('inf')),
  ],
)
def test_the_rejected_infinities_would_give_non_finite_updates(kwargs):
  """Why they are rejected: traced past the check, they poison the step."""
  hparams = dict(learning_rate=0.1, b0=1.0, weight_decay=1e-2) | kwargs
  params = jnp.ones(3)

  @jax.jit
  def first_update(hparams):
    opt = pnm_optax.pnm(**hparams)
    return opt.update(jnp.ones(3), opt.init(params), params)[0]

  assert not bool(jnp.any(jnp.isfinite(first_update(hparams))))


@pytest.mark.parametrize(
  'factory',
  [
    pnm_optax.pnm,
    pnm_optax.adapnm,
    pnm_optax.scale_by_pnm,
    pnm_optax.scale_by_adapnm,
  ],
)
@pytest.mark.parametrize('dtype', ['int32', 'uint8', 'bool'])
def test_integer_and_boolean_leaves_are_named(factory, dtype):
  make = (
    (lambda: factory(0.1))
    if factory in (pnm_optax.pnm, pnm_optax.adapnm)
    else factory
  )
  params = {
    'dense': {'kernel': jnp.ones((2, 2))},
    'steps': jnp.zeros((), dtype),
  }
  with pytest.raises(
    ValueError,
    match=(rf"parameter \['steps'\] has dtype {dtype}.*optax.masked"),
  ):
    make().init(params)


def test_masked_integer_leaves_train():
  """What the error suggests works: the integer leaf is left out."""
  params = {'w': jnp.ones(2), 'steps': jnp.zeros((), jnp.int32)}
  opt = optax.masked(pnm_optax.pnm(0.1), {'w': True, 'steps': False})
  state = opt.init(params)
  grads = {'w': jnp.ones(2), 'steps': jnp.zeros((), jnp.int32)}
  updates, state = opt.update(grads, state, params)
  assert bool(jnp.all(updates['w'] < 0))
  assert int(updates['steps']) == 0
