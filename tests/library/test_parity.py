"""Parity of pnm_optax against the float64 NumPy reference (tests/reference.py)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pnm_optax
from tests.helpers import rel_err
from tests.reference import ReferencePNM

SHAPES = [(7,), (3, 4), (2, 3, 5), ()]
STEPS = 200
RTOL = 1e-5


def _grads(rng, dtype=np.float32):
  if np.dtype(dtype).kind == 'c':
    return [
      (rng.normal(size=s) + 1j * rng.normal(size=s)).astype(dtype)
      for s in SHAPES
    ]
  return [rng.normal(size=s).astype(dtype) for s in SHAPES]


@functools.partial(jax.jit, static_argnames=('make', 'static'))
def _trajectory(make, static, hyper, params, grads):
  """All steps of ``make(**static, **hyper)`` in one compiled loop: the
  final parameters and state, and every step's updates.

  The numbers in ``hyper`` are traced, so the parametrizations of a test
  that differ only in them share one compiled program.
  """
  opt = make(**dict(static), **hyper)

  def body(carry, grads):
    params, state = carry
    updates, state = opt.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), updates

  (params, state), updates = jax.lax.scan(
    body, (params, opt.init(params)), grads
  )
  return params, state, updates


def _run(
  make,
  ref,
  lr_at,
  b0_at=lambda t: None,
  dtype=np.float32,
  seed=0,
  wd_at=lambda t: None,
  static=None,
  **hyper,
):
  """Runs ``make(**static, **hyper)`` and the reference on the same
  gradients for STEPS steps; ``static`` holds what is not a number (modes,
  flags, schedules).

  Returns the relative error of the final parameters, the largest relative
  error of one step's update (the optimizer's output against the reference's
  parameter change) and the final optimizer state.
  """
  rng = np.random.default_rng(seed)
  grads = [_grads(rng, dtype) for _ in range(STEPS)]
  params = [jnp.asarray(p, dtype) for p in ref.params]
  stacked = [np.stack(g) for g in zip(*grads)]
  params, state, updates = _trajectory(
    make, tuple(sorted((static or {}).items())), hyper, params, stacked
  )
  updates = [np.asarray(u) for u in updates]
  worst_step = 0.0
  for t in range(1, STEPS + 1):
    before = [p.copy() for p in ref.params]
    ref.step(grads[t - 1], lr_at(t), b0_at(t), wd_at(t))
    ref_delta = [a - b for a, b in zip(ref.params, before)]
    worst_step = max(
      worst_step, rel_err([u[t - 1] for u in updates], ref_delta)
    )
  return rel_err(params, ref.params), worst_step, state


def _init_params(seed=1, dtype=np.float32):
  """Small initial values, so the final error measures the trajectory."""
  return [0.1 * a for a in _grads(np.random.default_rng(seed), dtype)]


def _find(state, cls):
  return next(s for s in state if isinstance(s, cls))


@pytest.mark.parametrize('b0', [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize('mode', ['decoupled', 'l2'])
def test_pnm_matches_reference(b0, mode):
  lr, wd = 0.05, 0.1
  ref = ReferencePNM(
    _init_params(),
    b1=0.9,
    b0=b0,
    weight_decay=wd,
    decoupled=mode == 'decoupled',
  )
  total, worst, state = _run(
    pnm_optax.pnm,
    ref,
    lambda t: lr,
    static=dict(weight_decay_mode=mode),
    learning_rate=lr,
    b1=0.9,
    b0=b0,
    weight_decay=wd,
  )
  assert total <= RTOL, total
  assert worst <= RTOL, worst
  assert int(_find(state, pnm_optax.ScaleByPNMState).count) == STEPS


@pytest.mark.parametrize('amsgrad', [True, False])
@pytest.mark.parametrize('mode', ['decoupled', 'l2'])
def test_adapnm_matches_reference(amsgrad, mode):
  lr, wd = 1e-2, 0.05
  ref = ReferencePNM(
    _init_params(),
    adaptive=True,
    b0=1.0,
    weight_decay=wd,
    decoupled=mode == 'decoupled',
    amsgrad=amsgrad,
  )
  total, worst, _ = _run(
    pnm_optax.adapnm,
    ref,
    lambda t: lr,
    static=dict(amsgrad=amsgrad, weight_decay_mode=mode),
    learning_rate=lr,
    weight_decay=wd,
  )
  assert total <= RTOL, total
  assert worst <= RTOL, worst


@pytest.mark.parametrize('adaptive', [False, True])
def test_schedules_match_reference(adaptive):
  """The paper's step lr schedule and a linearly annealed b0, at step t - 1."""
  peak = 0.1 if not adaptive else 3e-3

  def lr_ref(t):
    return peak * (0.1 if t - 1 >= 60 else 1.0) * (0.1 if t - 1 >= 120 else 1.0)

  def b0_ref(t):
    return 2.0 - 2.0 * min(t - 1, 150) / 150

  lr = optax.piecewise_constant_schedule(peak, {60: 0.1, 120: 0.1})
  b0 = optax.linear_schedule(2.0, 0.0, 150)
  make = pnm_optax.adapnm if adaptive else pnm_optax.pnm
  ref = ReferencePNM(_init_params(), adaptive=adaptive, weight_decay=1e-2)
  total, worst, _ = _run(
    make,
    ref,
    lr_ref,
    b0_ref,
    static=dict(learning_rate=lr, b0=b0),
    weight_decay=1e-2,
  )
  assert total <= RTOL, total
  assert worst <= RTOL, worst


@pytest.mark.parametrize('adaptive', [False, True])
def test_complex_params_match_reference(adaptive):
  """Complex leaves: AdaPNM's second moment uses |g|^2."""
  init = _init_params(dtype=np.complex64)
  ref = ReferencePNM(init, adaptive=adaptive)
  make = pnm_optax.adapnm if adaptive else pnm_optax.pnm
  total, worst, state = _run(
    make, ref, lambda t: 1e-2, dtype=np.complex64, learning_rate=1e-2
  )
  assert total <= RTOL, total
  assert worst <= RTOL, worst
  if adaptive:
    nu = jax.tree.leaves(_find(state, pnm_optax.ScaleByAdaPNMState).nu)
    assert len(nu) == len(SHAPES)
    chex.assert_type(nu, jnp.float32)


def test_clip_then_pnm_matches_reference():
  """optax.chain(clip_by_global_norm, pnm) against clipping in NumPy."""
  max_norm, lr = 1.0, 0.05
  opt = optax.chain(optax.clip_by_global_norm(max_norm), pnm_optax.pnm(lr))
  rng = np.random.default_rng(3)
  ref = ReferencePNM(_init_params())
  params = [jnp.asarray(p) for p in ref.params]
  state = opt.init(params)
  update = jax.jit(opt.update)
  for _ in range(30):
    grads = [3 * g for g in _grads(rng)]
    norm = np.sqrt(sum(np.sum(np.float64(g) ** 2) for g in grads))
    scale = min(1.0, max_norm / norm)
    ref.step([np.float64(g) * scale for g in grads], lr)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert rel_err([np.float64(p) for p in params], ref.params) <= RTOL


@pytest.mark.parametrize(
  'adaptive,amsgrad', [(False, True), (True, True), (True, False)]
)
@pytest.mark.parametrize('mode', ['decoupled', 'l2'])
def test_non_default_hyperparameters_match_reference(adaptive, amsgrad, mode):
  """b1, b2, b0, eps and eps_root all away from their defaults."""
  hp = dict(b1=0.6, b0=0.7)
  if adaptive:
    hp |= dict(b2=0.95, eps=1e-3, eps_root=1e-4)
  lr, wd = (3e-3 if adaptive else 0.05), 0.05
  ref = ReferencePNM(
    _init_params(),
    adaptive=adaptive,
    weight_decay=wd,
    decoupled=mode == 'decoupled',
    amsgrad=amsgrad,
    **hp,
  )
  make = pnm_optax.adapnm if adaptive else pnm_optax.pnm
  static = dict(weight_decay_mode=mode)
  if adaptive:
    static |= dict(amsgrad=amsgrad)
  total, worst, _ = _run(
    make,
    ref,
    lambda t: lr,
    static=static,
    learning_rate=lr,
    weight_decay=wd,
    **hp,
  )
  assert total <= RTOL, total
  assert worst <= RTOL, worst


@pytest.mark.parametrize('adaptive', [False, True])
@pytest.mark.parametrize('mode', ['decoupled', 'l2'])
def test_weight_decay_schedule_matches_reference(adaptive, mode):
  """A weight-decay schedule, read at the 0-based step count."""
  lr = 3e-3 if adaptive else 0.05
  schedule = optax.linear_schedule(0.3, 0.0, 150)
  ref = ReferencePNM(
    _init_params(),
    adaptive=adaptive,
    weight_decay=1.0,  # replaced at every step
    decoupled=mode == 'decoupled',
  )
  make = pnm_optax.adapnm if adaptive else pnm_optax.pnm
  total, worst, _ = _run(
    make,
    ref,
    lambda t: lr,
    wd_at=lambda t: 0.3 - 0.3 * min(t - 1, 150) / 150,
    static=dict(weight_decay=schedule, weight_decay_mode=mode),
    learning_rate=lr,
  )
  assert total <= RTOL, total
  assert worst <= RTOL, worst


@pytest.mark.parametrize('amsgrad', [True, False])
def test_adapnm_mu_dtype_bfloat16_tracks_reference(amsgrad):
  """bfloat16 momentum buffers (8 significant bits) under float32
  parameters: the updates stay float32 and within bfloat16's rounding."""
  opt = pnm_optax.adapnm(1e-2, mu_dtype=jnp.bfloat16, amsgrad=amsgrad)
  ref = ReferencePNM(_init_params(), adaptive=True, amsgrad=amsgrad)
  rng = np.random.default_rng(0)
  params = [jnp.asarray(p, jnp.float32) for p in ref.params]
  state = opt.init(params)
  update = jax.jit(opt.update)
  for _ in range(20):
    grads = _grads(rng)
    before = [p.copy() for p in ref.params]
    ref.step(grads, 1e-2)
    updates, state = update(grads, state, params)
    delta = [a - b for a, b in zip(ref.params, before)]
    assert rel_err(updates, delta) <= 2e-2
    params = optax.apply_updates(params, updates)
  chex.assert_type(jax.tree.leaves(updates), jnp.float32)
  scale = _find(
    state,
    pnm_optax.ScaleByAdaPNMState
    if amsgrad
    else (pnm_optax.ScaleByAdaPNMNoAmsgradState),
  )
  chex.assert_type(jax.tree.leaves(scale.mu_odd), jnp.bfloat16)
