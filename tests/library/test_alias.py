"""Optax-style battery for the pnm/adapnm aliases and their transforms."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pnm_optax
from tests import compat
from tests.helpers import rel_err
from tests.reference import ReferencePNM

# name -> (factory of the learning rate, lr for the parabola, for Rosenbrock)
OPTIMIZERS = {
  'pnm': (pnm_optax.pnm, 0.02, 1e-3),
  # The mask leaves the parabola's 1-D parameters out: no decay.
  'pnm_wd_mask': (
    functools.partial(
      pnm_optax.pnm,
      weight_decay=1e-3,
      mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
    ),
    0.02,
    1e-3,
  ),
  'pnm_l2': (
    functools.partial(pnm_optax.pnm, weight_decay=1e-3, weight_decay_mode='l2'),
    0.02,
    1e-3,
  ),
  'pnm_wd_schedule': (
    functools.partial(
      pnm_optax.pnm, weight_decay=optax.linear_schedule(0.0, 1e-2, 1000)
    ),
    0.02,
    None,  # the decayed Rosenbrock minimum has no closed form
  ),
  'adapnm': (pnm_optax.adapnm, 0.05, 1e-3),
  'adapnm_no_amsgrad': (
    functools.partial(pnm_optax.adapnm, amsgrad=False),
    0.05,
    1e-3,
  ),
}
ALIASES = {
  name: functools.partial(make, lr)
  for name, (make, lr, _) in OPTIMIZERS.items()
}


def _reference(name, init):
  """The float64 reference for ``ALIASES[name]()`` on 1-D parameters, and
  its learning rate and weight decay at the 0-based step count."""
  _, lr, _ = OPTIMIZERS[name]
  adaptive = name.startswith('adapnm')
  ref = ReferencePNM(
    [np.asarray(x, np.float64) for x in init],
    adaptive=adaptive,
    amsgrad=name != 'adapnm_no_amsgrad',
    decoupled=name != 'pnm_l2',
    weight_decay=1e-3 if name == 'pnm_l2' else 0.0,  # the mask: 1-D is out
  )
  if name == 'pnm_wd_schedule':
    return ref, lr, lambda count: 1e-2 * min(count, 1000) / 1000
  return ref, lr, lambda count: None


def _parabola():
  target = jnp.array([1.0, -1.0, 1.0])
  loss = lambda p: jnp.sum((p - target) ** 2)
  return jnp.array([-1.0, 10.0, 1.0]), target, loss


def _decayed_parabola_minimum(name, target):
  """Where the step on the parabola is zero with weight decay ``wd``.

  There both PN buffers equal the gradient ``g = 2 (p - target)`` and the
  direction is ``g / n`` with ``n = sqrt((1 + b0)^2 + b0^2) = sqrt(5)`` at
  ``b0 = 1``. Decoupled decay steps ``g / n + wd p``, so
  ``p = 2 target / (2 + n wd)``; L2 decay adds ``wd p`` to the gradient:
  ``g + wd p = 0``, ``p = 2 target / (2 + wd)``.
  """
  n = np.sqrt(5.0)
  wd = {'pnm_l2': 1e-3, 'pnm_wd_schedule': 1e-2}
  if name not in wd:
    return target
  if name == 'pnm_l2':
    return 2 * target / (2 + wd[name])
  return 2 * target / (2 + n * wd[name])


def _rosenbrock():
  loss = lambda p: (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2
  return jnp.zeros(2), jnp.ones(2), loss


def _minimise(opt, params, loss, steps):
  state = opt.init(params)

  def body(carry, _):
    params, state = carry
    updates, state = opt.update(jax.grad(loss)(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.jit(lambda c: jax.lax.scan(body, c, None, length=steps))(
    (params, state)
  )
  return params


@pytest.mark.parametrize(
  'name,problem',
  [(name, 'parabola') for name in ALIASES]
  + [(name, 'rosenbrock') for name, o in OPTIMIZERS.items() if o[2]],
)
def test_minimises(name, problem):
  make, lr_parabola, lr_rosenbrock = OPTIMIZERS[name]
  if problem == 'parabola':
    (params, target, loss), lr, steps, tol = (
      _parabola(),
      lr_parabola,
      10_000,
      1e-2,
    )
    minimum = _decayed_parabola_minimum(name, target)
    if name.startswith('pnm'):
      # At a tolerance far below the decay's effect (1e-3 of the target at
      # least), so that the decay and its mode are checked.
      params = _minimise(make(lr), params, loss, steps)
      effect = float(jnp.max(jnp.abs(minimum - target)))
      assert effect == 0 or effect > 4e-4
      np.testing.assert_allclose(params, minimum, rtol=0, atol=1e-5)
      return
  else:
    (params, target, loss), lr, steps, tol = (
      _rosenbrock(),
      lr_rosenbrock,
      20_000,
      5e-2,
    )
  params = _minimise(make(lr), params, loss, steps)
  np.testing.assert_allclose(params, target, atol=tol)
  assert float(loss(params)) < 1e-3


@pytest.mark.parametrize('adaptive', [False, True])
def test_inject_hyperparams_same_trajectory(adaptive):
  make = pnm_optax.adapnm if adaptive else pnm_optax.pnm
  kwargs = dict(
    learning_rate=optax.exponential_decay(0.05, 10, 0.5),
    b0=optax.linear_schedule(1.5, 0.5, 20),
    weight_decay=1e-2,
  )
  plain = make(**kwargs)
  injected = optax.inject_hyperparams(make)(**kwargs)
  params = {'w': jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), 'b': jnp.ones(3)}
  loss = lambda p: jnp.sum(jnp.sin(p['w']) ** 2) + jnp.sum(p['b'] ** 4)
  trajectories = []
  for opt in (plain, injected):

    @jax.jit
    def step(p, state, opt=opt):
      updates, state = opt.update(jax.grad(loss)(p), state, p)
      return optax.apply_updates(p, updates), state

    p, state = params, opt.init(params)
    for _ in range(25):
      p, state = step(p, state)
    trajectories.append(p)
  # Two programs (constants folded, or traced hyperparameters): equal to
  # float32 rounding over 25 steps, not bitwise.
  chex.assert_trees_all_close(*trajectories, rtol=1e-5, atol=1e-6)
  # Both follow the float64 reference (gradients sin(2 w) and 4 b^3).
  ref = ReferencePNM(
    [np.asarray(params['b']), np.asarray(params['w'])],
    adaptive=adaptive,
    weight_decay=1e-2,
  )
  for count in range(25):
    b, w = ref.params
    ref.step(
      [4 * b**3, np.sin(2 * w)],
      0.05 * 0.5 ** (count / 10),
      b0=1.5 - min(count, 20) / 20,
    )
  assert (
    rel_err([trajectories[1]['b'], trajectories[1]['w']], ref.params) < 1e-5
  )
  # The state holds the hyperparameters of the last (25th, count 24) step.
  assert float(state.hyperparams['learning_rate']) == pytest.approx(
    0.05 * 0.5**2.4, rel=1e-6
  )
  assert float(state.hyperparams['b0']) == pytest.approx(0.5)  # clamped end


@pytest.mark.parametrize('name', ALIASES)
def test_multisteps_equals_mean_gradient(name):
  k = 4
  opt = ALIASES[name]()
  multi = optax.MultiSteps(ALIASES[name](), every_k_schedule=k)
  rng = np.random.default_rng(0)
  params = jnp.asarray(rng.normal(size=(5,)), jnp.float32)
  p_multi, s_multi = params, multi.init(params)
  p_plain, s_plain = params, opt.init(params)
  ref, lr, wd_at = _reference(name, [params])
  # Jitted: MultiSteps runs a lax.cond per micro step, slow op by op.
  multi_update, plain_update = jax.jit(multi.update), jax.jit(opt.update)
  for macro in range(3):  # three macro steps: both parity slots are used
    micro = [jnp.asarray(rng.normal(size=(5,)), jnp.float32) for _ in range(k)]
    for g in micro:
      u, s_multi = multi_update(g, s_multi, p_multi)
      p_multi = optax.apply_updates(p_multi, u)
    u, s_plain = plain_update(sum(micro) / k, s_plain, p_plain)
    p_plain = optax.apply_updates(p_plain, u)
    np.testing.assert_allclose(p_multi, p_plain, rtol=1e-5, atol=1e-6)
    mean = sum(np.asarray(g, np.float64) for g in micro) / k
    ref.step([mean], lr, weight_decay=wd_at(macro))
    assert rel_err(p_multi, ref.params[0]) < 1e-5
  assert not np.allclose(p_plain, params)


@pytest.mark.parametrize('name', ALIASES)
def test_state_stable_inside_cond(name):
  """lax.cond needs identical state structure, shapes and dtypes per branch."""
  opt = ALIASES[name]()
  params = {'w': jnp.ones((3, 2), jnp.bfloat16), 'b': jnp.zeros(2)}
  initial_state = state = opt.init(params)

  @jax.jit
  def maybe_step(do_step, params, state):
    grads = jax.tree.map(jnp.ones_like, params)
    return jax.lax.cond(
      do_step,
      lambda: opt.update(grads, state, params),
      lambda: (jax.tree.map(jnp.zeros_like, grads), state),
    )

  for do_step in [True, False, True, True]:
    updates, state = maybe_step(do_step, params, state)
    params = optax.apply_updates(params, updates)
  chex.assert_trees_all_equal_shapes_and_dtypes(state, initial_state)
  pn_state = next(s for s in state if hasattr(s, 'mu_odd'))
  assert int(pn_state.count) == 3  # (a decay schedule has its own count)


@pytest.mark.parametrize('name', ALIASES)
@pytest.mark.parametrize('dtype', ['bfloat16', 'float16', 'float32'])
def test_preserves_dtype(name, dtype):
  opt = ALIASES[name]()
  params = {'w': jnp.full((4,), 0.5, dtype), 'b': jnp.ones((2, 2), dtype)}
  chex.assert_type(jax.tree.leaves(params), dtype)
  initial_params, initial_state = params, opt.init(params)
  state = initial_state
  step = jax.jit(opt.update)
  for i in range(5):
    g = 0.1 * (i + 1)
    grads = jax.tree.map(lambda p, g=g: jnp.full_like(p, g), params)
    updates, state = step(grads, state, params)
    chex.assert_trees_all_equal_dtypes(updates, initial_params)
    params = optax.apply_updates(params, updates)
    chex.assert_trees_all_equal_dtypes(state, initial_state)
  momenta = jax.tree.leaves(
    [optax.tree.get(state, 'mu_odd'), optax.tree.get(state, 'mu_even')]
  )
  assert momenta
  chex.assert_type(momenta, dtype)
  # Second moments keep float32's range for float16 parameters.
  moments = jax.tree.leaves(
    [optax.tree.get(state, 'nu', None), optax.tree.get(state, 'nu_max', None)]
  )
  assert bool(moments) == name.startswith('adapnm')
  chex.assert_type(moments, 'float32' if dtype == 'float16' else dtype)
  chex.assert_tree_all_finite(updates)


@pytest.mark.parametrize('adaptive', [False, True])
def test_float64_matches_reference(adaptive):
  with compat.enable_x64():
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(3, 2)), rng.normal(size=(4,))]
    ref = ReferencePNM(init, adaptive=adaptive, weight_decay=0.1)
    make = pnm_optax.adapnm if adaptive else pnm_optax.pnm
    opt = make(0.01, weight_decay=0.1)
    params = [jnp.asarray(p) for p in init]
    state = opt.init(params)
    for _ in range(50):
      grads = [rng.normal(size=p.shape) for p in init]
      ref.step(grads, 0.01)
      updates, state = jax.jit(opt.update)(
        [jnp.asarray(g) for g in grads], state, params
      )
      params = optax.apply_updates(params, updates)
    chex.assert_type(params, jnp.float64)
    chex.assert_trees_all_close(params, ref.params, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('name', ALIASES)
def test_no_recompilation(name):
  traces = []
  opt = ALIASES[name]()

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state, grads):
    traces.append(None)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = {'w': jnp.ones((3,)), 'b': jnp.zeros((2,))}
  state = opt.init(params)
  for i in range(4):
    grads = jax.tree.map(lambda p, i=i: p + i, params)
    params, state = step(params, state, grads)
  assert len(traces) == 1


def test_inject_hyperparams_no_recompilation():
  traces = []
  opt = optax.inject_hyperparams(pnm_optax.pnm)(learning_rate=0.1, b0=1.0)

  @jax.jit
  def step(params, state):
    traces.append(None)
    updates, state = opt.update(params, state, params)
    return optax.apply_updates(params, updates), state

  params = jnp.ones(3)
  state = opt.init(params)
  steps = []
  for b0 in [1.0, 0.5, 0.0]:
    state.hyperparams['b0'] = jnp.asarray(b0)
    new_params, state = step(params, state)
    steps.append(float(new_params[0] - params[0]))
    params = new_params
  assert len(traces) == 1
  assert len(set(steps)) == 3  # the changed b0 took effect


@pytest.mark.parametrize('adaptive', [False, True])
def test_donated_state_is_reused(adaptive):
  opt = (pnm_optax.adapnm if adaptive else pnm_optax.pnm)(0.1)
  step = jax.jit(
    lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
      *opt.update(g, s, p)
    ),
    donate_argnums=(0, 1),
  )
  params = jnp.ones((16,))
  state = opt.init(params)
  old = jax.tree.leaves((params, state))
  params, state = step(params, state, jnp.ones((16,)))
  assert all(x.is_deleted() for x in old)
  params, state = step(params, state, jnp.ones((16,)))
  assert int(optax.tree.get(state, 'count')) == 2


@pytest.mark.parametrize('adaptive', [False, True])
def test_vmap_over_independent_runs(adaptive):
  opt = (pnm_optax.adapnm if adaptive else pnm_optax.pnm)(0.05, b0=0.7)
  rng = np.random.default_rng(0)
  params = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)  # 3 runs
  grads = jnp.asarray(rng.normal(size=(6, 3, 4)), jnp.float32)

  def run(p, gs):
    s = opt.init(p)
    for g in gs:
      u, s = opt.update(g, s, p)
      p = optax.apply_updates(p, u)
    return p

  batched = jax.jit(jax.vmap(run, in_axes=(0, 1)))(params, grads)
  single = jax.jit(run)
  for i in range(3):
    np.testing.assert_allclose(
      batched[i], single(params[i], grads[:, i]), rtol=1e-5, atol=1e-6
    )
    ref = ReferencePNM([np.asarray(params[i])], adaptive=adaptive, b0=0.7)
    for g in np.asarray(grads[:, i], np.float64):
      ref.step([g], 0.05)
    assert rel_err(batched[i], ref.params[0]) < 1e-5


@pytest.mark.parametrize('name', ALIASES)
def test_eval_shape_init(name):
  opt = ALIASES[name]()
  params = {'w': jnp.ones((3, 5), jnp.bfloat16), 'b': jnp.ones((5,))}
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params
  )
  chex.assert_trees_all_equal_shapes_and_dtypes(
    jax.eval_shape(opt.init, abstract), opt.init(params)
  )


@pytest.mark.parametrize('adaptive', [False, True])
def test_none_leaves(adaptive):
  opt = (pnm_optax.adapnm if adaptive else pnm_optax.pnm)(0.1)
  params = {'w': jnp.ones((2,)), 'frozen': None}
  state = opt.init(params)
  updates, state = jax.jit(opt.update)(
    {'w': jnp.ones((2,)), 'frozen': None}, state, params
  )
  assert updates['frozen'] is None
  chex.assert_shape(updates['w'], (2,))
  assert bool(jnp.all(updates['w'] < 0))


def test_masked_transform_with_masked_nodes():
  """optax.masked: frozen leaves become MaskedNode in the inner state."""
  opt = optax.chain(
    optax.masked(pnm_optax.scale_by_pnm(), {'w': True, 'b': False}),
    optax.scale(-0.1),
  )
  params = {'w': jnp.ones((3,)), 'b': jnp.ones((2,))}
  state = opt.init(params)
  inner = state[0].inner_state
  assert isinstance(inner.mu_odd['b'], optax.MaskedNode)
  ref = ReferencePNM([np.ones(3)])
  for i in range(4):
    grads = {'w': jnp.full((3,), i + 1.0), 'b': jnp.full((2,), 2.0)}
    updates, state = jax.jit(opt.update)(grads, state, params)
    before = ref.params[0].copy()
    ref.step([np.full(3, i + 1.0)], 0.1)
    np.testing.assert_allclose(updates['w'], ref.params[0] - before, rtol=1e-6)
    np.testing.assert_allclose(updates['b'], -0.2 * np.ones(2), rtol=1e-6)


def test_apply_if_finite_skips_bad_steps():
  opt = optax.apply_if_finite(pnm_optax.pnm(0.1), max_consecutive_errors=3)
  ref = ReferencePNM([np.zeros(2)])
  params = jnp.zeros(2)
  state = opt.init(params)
  for g in [[1.0, 2.0], [np.nan, 1.0], [0.5, -1.0], [np.inf, 0.0], [1.0, 1.0]]:
    g = np.asarray(g)
    updates, state = jax.jit(opt.update)(
      jnp.asarray(g, jnp.float32), state, params
    )
    params = optax.apply_updates(params, updates)
    if np.all(np.isfinite(g)):
      ref.step([g], 0.1)
  np.testing.assert_allclose(params, ref.params[0], rtol=1e-6)
  assert int(state.total_notfinite) == 2


def test_mu_dtype_bfloat16():
  opt = pnm_optax.pnm(0.1, mu_dtype=jnp.bfloat16)
  ref = ReferencePNM([np.zeros(8)])
  params = jnp.zeros(8, jnp.float32)
  state = opt.init(params)
  rng = np.random.default_rng(0)
  for _ in range(20):
    g = rng.normal(size=8).astype(np.float32)
    updates, state = jax.jit(opt.update)(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
    ref.step([g], 0.1)
  assert state[0].mu_odd.dtype == jnp.bfloat16
  assert updates.dtype == jnp.float32
  np.testing.assert_allclose(params, ref.params[0], rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize('adaptive', [False, True])
def test_mismatched_grads_raise(adaptive):
  opt = (pnm_optax.adapnm if adaptive else pnm_optax.pnm)(0.1)
  params = {'w': jnp.ones((2, 3)), 'b': jnp.ones((3,))}
  state = opt.init(params)
  with pytest.raises(ValueError, match='does not match'):
    opt.update({'w': jnp.ones((2, 3))}, state, params)
  with pytest.raises(ValueError, match=r"\['b'\].*\(4,\).*\(3,\)"):
    opt.update({'w': jnp.ones((2, 3)), 'b': jnp.ones((4,))}, state, params)


@pytest.mark.parametrize('name', ['pnm', 'adapnm'])
@pytest.mark.parametrize(
  'kwargs',
  [
    {},
    dict(weight_decay=0.0, mask={'w': True}),
    dict(weight_decay=0, weight_decay_mode='l2'),
  ],
)
def test_update_without_params_when_decay_is_zero(name, kwargs):
  """As optax.sgd and optax.adam: no params needed without weight decay.

  Under jit and op by op, with and without params: each is the reference's
  step to float32 rounding (jit and eager need not agree bitwise: XLA may
  fuse differently on each backend)."""
  make = getattr(pnm_optax, name)
  opt = make(0.1, **kwargs)
  params = {'w': jnp.ones(3)}
  grads = {'w': jnp.asarray([1.0, -2.0, 0.5])}
  ref = ReferencePNM([np.ones(3)], adaptive=name == 'adapnm')
  ref.step([np.asarray(grads['w'], np.float64)], 0.1)
  expected = ref.params[0] - 1.0
  without, _ = jax.jit(opt.update)(grads, opt.init(params))
  with_params, _ = opt.update(grads, opt.init(params), params)
  # float32 rounding, amplified by the moments' condition numbers.
  kappa = 1 / (1 - 0.9**2) + (1 / (1 - 0.9) + 1 / (1 - 0.999)) * (
    name == 'adapnm'
  )
  for updates in (without, with_params):
    np.testing.assert_allclose(
      updates['w'], expected, rtol=16 * np.finfo(np.float32).eps * kappa
    )


@pytest.mark.parametrize('name', ['pnm', 'adapnm'])
@pytest.mark.parametrize('weight_decay', [1e-2, optax.constant_schedule(0.0)])
def test_update_without_params_with_active_decay_raises(name, weight_decay):
  opt = getattr(pnm_optax, name)(0.1, weight_decay=weight_decay)
  params = {'w': jnp.ones(3)}
  with pytest.raises(ValueError, match='requires the current value of param'):
    opt.update({'w': jnp.ones(3)}, opt.init(params))
