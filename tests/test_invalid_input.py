"""Invalid hyperparameters raise ValueError naming the argument and range."""

import jax
import jax.numpy as jnp
import optax
import pytest

import pnm_optax

INVALID = [
    (pnm_optax.pnm, dict(learning_rate=-0.1), 'learning_rate must be >= 0'),
    (pnm_optax.pnm, dict(learning_rate=0.1, b1=1.0), r'b1 must be in \[0, 1\)'),
    (pnm_optax.pnm, dict(learning_rate=0.1, b1=-0.1), r'b1 must be in \[0, 1\)'),
    (pnm_optax.pnm, dict(learning_rate=0.1, b0=-1.0), 'b0 must be >= 0'),
    (pnm_optax.pnm, dict(learning_rate=0.1, b0=float('nan')), 'b0 must be'),
    (pnm_optax.pnm, dict(learning_rate=0.1, weight_decay=-1e-4),
     'weight_decay must be >= 0'),
    (pnm_optax.pnm, dict(learning_rate=0.1, weight_decay_mode='adamw'),
     "weight_decay_mode must be one of \\('decoupled', 'l2'\\)"),
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
  opt = factory(learning_rate=0.0, b1=0.0, b0=0.0, weight_decay=0.0)
  params = jnp.ones(2)
  updates, _ = opt.update(jnp.ones(2), opt.init(params), params)
  assert float(jnp.sum(jnp.abs(updates))) == 0.0


def test_schedules_are_not_called_at_construction():
  calls = []
  schedule = lambda count: calls.append(count) or -1.0
  pnm_optax.pnm(schedule, b0=schedule, weight_decay=schedule)
  assert not calls


def test_traced_hyperparameters_are_not_checked():
  """Under inject_hyperparams and jit the values are tracers: no error."""
  opt = optax.inject_hyperparams(pnm_optax.adapnm)(
      learning_rate=1e-3, b1=0.9, b2=0.999, b0=1.0, eps=1e-8,
      weight_decay=1e-2)
  params = jnp.ones(3)
  state = opt.init(params)
  updates, state = jax.jit(opt.update)(jnp.ones(3), state, params)
  assert bool(jnp.all(updates < 0))

  @jax.jit
  def build_and_step(b1, b0):
    inner = pnm_optax.pnm(0.1, b1=b1, b0=b0)
    return inner.update(jnp.ones(3), inner.init(params), params)[0]

  assert bool(jnp.all(build_and_step(0.9, 1.0) < 0))
