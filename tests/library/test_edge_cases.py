"""Edge cases: each either runs exactly (against the float64 reference) or
raises a ValueError, when the optimizer is built or initialised, that names
the argument or leaf and says what to do."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pnm_optax
from tests.helpers import rel_err
from tests.reference import ReferencePNM

RTOL = 1e-5  # float32 against the float64 reference
ALIASES = {'pnm': pnm_optax.pnm, 'adapnm': pnm_optax.adapnm}
TRANSFORMS = {
  'scale_by_pnm': pnm_optax.scale_by_pnm,
  'scale_by_adapnm': pnm_optax.scale_by_adapnm,
}


def _make(name, **kwargs):
  """The optimizer ``name`` (an alias takes learning rate 0.1)."""
  if name in ALIASES:
    return ALIASES[name](0.1, **kwargs)
  return TRANSFORMS[name](**kwargs)


def _reference(name, params, **kwargs):
  adaptive = name in ('adapnm', 'scale_by_adapnm')
  return ReferencePNM(params, adaptive=adaptive, **kwargs)


def _wide(x):
  """``x`` in float64, or complex128 for complex ``x``."""
  x = np.asarray(x)
  return x.astype(np.result_type(x, np.float64))


def _check_steps(opt, name, params, grads_of, leaves_of, steps=4):
  """Runs ``opt`` under jit against the reference on the leaves that train.

  ``grads_of(rng)`` gives a gradient tree like ``params``; ``leaves_of``
  picks the trained leaves of a tree (in order). Transforms (no learning
  rate) are compared as the step ``-0.1 * direction``. Returns the last
  updates and state.
  """
  rng = np.random.default_rng(0)
  ref = _reference(name, [np.asarray(x) for x in leaves_of(params)])
  scale = -0.1 if name in TRANSFORMS else 1.0
  state = opt.init(params)
  update = jax.jit(opt.update)
  updates = None
  for _ in range(steps):
    grads = grads_of(rng)
    before = [p.copy() for p in ref.params]
    ref.step([_wide(g) for g in leaves_of(grads)], 0.1)
    updates, state = update(grads, state, params)
    delta = [a - b for a, b in zip(ref.params, before)]
    got = [scale * _wide(u) for u in leaves_of(updates)]
    assert rel_err(got, delta) <= RTOL
    params = optax.apply_updates(params, updates)
  return updates, state


# 1. Trees without leaves, or with leaves that do not train.


@pytest.mark.parametrize('name', [*ALIASES, *TRANSFORMS])
@pytest.mark.parametrize(
  'tree', [{}, [], None, {'a': None}, optax.MaskedNode(), {'a': ((), [])}]
)
def test_leafless_trees(name, tree):
  opt = _make(name)
  state = opt.init(tree)
  updates, state = jax.jit(opt.update)(tree, state, tree)
  assert jax.tree.structure(updates) == jax.tree.structure(tree)
  updates, state = opt.update(tree, state)  # no params: no weight decay
  assert int(optax.tree.get(state, 'count')) == 2


@pytest.mark.parametrize('name', ALIASES)
@pytest.mark.parametrize('weight_decay', [1e-2, optax.constant_schedule(1e-2)])
@pytest.mark.parametrize('tree', [{}, None, {'a': None}])
def test_leafless_trees_with_weight_decay(name, weight_decay, tree):
  """Nothing to decay: no params needed (a params tree may be None)."""
  opt = ALIASES[name](0.1, weight_decay=weight_decay)
  state = opt.init(tree)
  for _ in range(2):
    updates, state = jax.jit(opt.update)(tree, state, tree)
  assert jax.tree.structure(updates) == jax.tree.structure(tree)
  # The step counts (the PN state's, and a decay schedule's) moved on.
  counts = [int(c) for c in jax.tree.leaves(state)]
  assert counts == [2] * (1 + callable(weight_decay))


@pytest.mark.parametrize('name', [*ALIASES, *TRANSFORMS])
def test_none_and_masked_leaves_beside_arrays(name):
  """None and MaskedNode leaves stay as they are; the arrays train exactly."""
  params = {
    'w': jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3),
    'frozen': None,
    'masked': optax.MaskedNode(),
    'b': [jnp.ones(3, jnp.float32), None],
  }
  leaves_of = jax.tree.leaves

  def grads_of(rng):
    return jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params
    )

  updates, _ = _check_steps(_make(name), name, params, grads_of, leaves_of)
  assert updates['frozen'] is None and updates['b'][1] is None
  assert isinstance(updates['masked'], optax.MaskedNode)


@pytest.mark.parametrize('name', ALIASES)
def test_multi_transform_with_an_all_frozen_group(name):
  """Fine-tuning: every leaf frozen leaves the optimizer a leafless tree."""
  params = {'w': jnp.ones((2, 3)), 'b': jnp.ones(3)}
  opt = optax.multi_transform(
    {'train': ALIASES[name](0.1), 'frozen': optax.set_to_zero()},
    {'w': 'frozen', 'b': 'frozen'},
  )
  state = opt.init(params)
  for _ in range(3):
    updates, state = jax.jit(opt.update)(params, state, params)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))


@pytest.mark.parametrize('name', ALIASES)
def test_multi_transform_with_a_frozen_group(name):
  """The trained group follows the reference; the frozen one gets zeros."""
  params = {
    'w': jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3),
    'b': jnp.ones(3, jnp.float32),
    'emb': jnp.ones((4, 2), jnp.float32),
  }
  labels = {'w': 'train', 'b': 'train', 'emb': 'frozen'}
  opt = optax.multi_transform(
    {
      'train': ALIASES[name](0.1, weight_decay=1e-2),
      'frozen': optax.set_to_zero(),
    },
    labels,
  )
  rng = np.random.default_rng(0)
  leaves_of = lambda tree: [tree['b'], tree['w']]  # sorted keys
  ref = _reference(
    name, [np.asarray(x) for x in leaves_of(params)], weight_decay=1e-2
  )
  state = opt.init(params)
  for _ in range(4):
    grads = jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params
    )
    before = [p.copy() for p in ref.params]
    ref.step([_wide(g) for g in leaves_of(grads)], 0.1)
    updates, state = jax.jit(opt.update)(grads, state, params)
    delta = [a - b for a, b in zip(ref.params, before)]
    assert rel_err(leaves_of(updates), delta) <= RTOL
    np.testing.assert_array_equal(updates['emb'], np.zeros((4, 2)))
    params = optax.apply_updates(params, updates)


# 2. Hyperparameters that are not scalars, and schedules where numbers go.

NON_SCALARS = [
  ('pnm', 'b1', np.full(1, 0.9)),
  ('pnm', 'b0', jnp.ones(1)),
  ('pnm', 'b0', np.array([0.5, 1.0])),
  ('pnm', 'learning_rate', jnp.full(1, 0.1)),
  ('pnm', 'weight_decay', np.full((1, 1), 1e-2)),
  ('adapnm', 'b1', jnp.full(1, 0.9)),
  ('adapnm', 'b2', np.full(1, 0.999)),
  ('adapnm', 'b0', [1.0]),
  ('adapnm', 'eps', jnp.full(2, 1e-8)),
  ('adapnm', 'eps_root', np.zeros(1)),
  ('adapnm', 'learning_rate', np.full(1, 1e-3)),
  ('adapnm', 'weight_decay', jnp.zeros(3)),
  ('scale_by_pnm', 'b0', jnp.ones(1)),
  ('scale_by_adapnm', 'b2', jnp.full(1, 0.999)),
]


def _build(name, **kwargs):
  if name in ALIASES:
    kwargs.setdefault('learning_rate', 0.1)
    return ALIASES[name](**kwargs)
  return TRANSFORMS[name](**kwargs)


@pytest.mark.parametrize('name,arg,value', NON_SCALARS)
def test_non_scalar_hyperparameters_raise(name, arg, value):
  shape = np.shape(value)
  with pytest.raises(
    ValueError,
    match=rf'^{arg} must be a scalar \(shape \(\)\), got .* {re.escape(str(shape))}',
  ):
    _build(name, **{arg: value})


def test_traced_non_scalar_raises():
  @jax.jit
  def build(b0):
    return pnm_optax.pnm(0.1, b0=b0).init(jnp.ones(2))

  with pytest.raises(ValueError, match='b0 must be a scalar'):
    build(jnp.ones(1))


@pytest.mark.parametrize(
  'name,arg',
  [
    ('pnm', 'b1'),
    ('adapnm', 'b1'),
    ('adapnm', 'b2'),
    ('adapnm', 'eps'),
    ('adapnm', 'eps_root'),
    ('scale_by_pnm', 'b1'),
    ('scale_by_adapnm', 'eps'),
  ],
)
def test_schedules_for_numbers_raise(name, arg):
  schedule = optax.linear_schedule(0.5, 0.9, 10)
  with pytest.raises(
    ValueError,
    match=rf'^{arg} must be a number, not a schedule .*inject_hyperparams',
  ):
    _build(name, **{arg: schedule})


def test_inject_hyperparams_schedules_b1():
  """What the error suggests: optax.inject_hyperparams schedules b1."""
  schedule = lambda count: 0.5 + 0.1 * count
  opt = optax.inject_hyperparams(pnm_optax.pnm)(learning_rate=0.1, b1=schedule)
  state = opt.init(jnp.zeros(3))
  rng = np.random.default_rng(0)
  ref = ReferencePNM([np.zeros(3)])  # b1 set before each step
  for t in range(1, 5):
    g = rng.normal(size=3).astype(np.float32)
    ref.b1 = 0.5 + 0.1 * (t - 1)
    before = ref.params[0].copy()
    ref.step([g], 0.1)
    updates, state = jax.jit(opt.update)(jnp.asarray(g), state)
    assert rel_err(updates, ref.params[0] - before) <= RTOL


@pytest.mark.parametrize('adaptive', [False, True])
@pytest.mark.parametrize('arg', ['b0', 'learning_rate', 'weight_decay'])
def test_schedules_where_schedules_go(adaptive, arg):
  """b0, the learning rate and the weight decay take schedules (of the
  0-based step count), checked against the reference step by step."""
  sched = {
    'b0': lambda c: 2.0 - 0.25 * c,
    'learning_rate': lambda c: 0.05 * 0.8**c,
    'weight_decay': lambda c: 0.5 / (1.0 + c),
  }[arg]
  values = dict(b0=1.0, learning_rate=0.05, weight_decay=0.3)
  make = pnm_optax.adapnm if adaptive else pnm_optax.pnm
  opt = make(**(values | {arg: sched}))
  rng = np.random.default_rng(1)
  init = rng.normal(size=(3, 4)).astype(np.float32)
  ref = ReferencePNM(
    [init], adaptive=adaptive, weight_decay=values['weight_decay']
  )
  params = jnp.asarray(init)
  state = opt.init(params)
  for t in range(1, 7):
    at = values | {arg: sched(t - 1)}
    g = rng.normal(size=(3, 4)).astype(np.float32)
    before = ref.params[0].copy()
    ref.step(
      [g], at['learning_rate'], b0=at['b0'], weight_decay=at['weight_decay']
    )
    updates, state = jax.jit(opt.update)(jnp.asarray(g), state, params)
    assert rel_err(updates, ref.params[0] - before) <= RTOL
    params = optax.apply_updates(params, updates)


# 3. Complex parameters and a real mu_dtype.


@pytest.mark.parametrize('name', [*ALIASES, *TRANSFORMS])
@pytest.mark.parametrize('mu_dtype', [jnp.bfloat16, jnp.float32])
def test_complex_leaf_with_real_mu_dtype_is_named(name, mu_dtype):
  opt = _make(name, mu_dtype=mu_dtype)
  params = {
    'dense': {'w': jnp.ones((2, 2))},
    'z': jnp.ones(3, jnp.complex64),
  }
  with pytest.raises(
    ValueError,
    match=r"parameter \['z'\] is complex64 but mu_dtype=.* is real.*"
    r'complex mu_dtype',
  ):
    opt.init(params)


@pytest.mark.parametrize('name', ALIASES)
def test_complex_mu_dtype_on_complex_leaves(name):
  """A complex mu_dtype keeps the momentum's imaginary part: exact."""
  rng = np.random.default_rng(0)
  init = (rng.normal(size=5) + 1j * rng.normal(size=5)).astype(np.complex64)
  params = [jnp.asarray(init)]
  opt = _make(name, mu_dtype=jnp.complex64)

  def grads_of(rng):
    g = rng.normal(size=5) + 1j * rng.normal(size=5)
    return [jnp.asarray(g, jnp.complex64)]

  _, state = _check_steps(opt, name, params, grads_of, lambda t: t, steps=6)
  chex.assert_type(optax.tree.get(state, 'mu_odd'), jnp.complex64)


# 4. optax.inject_hyperparams under jit, without params.


@pytest.mark.parametrize('name', ALIASES)
def test_inject_hyperparams_without_params_under_jit(name):
  opt = optax.inject_hyperparams(ALIASES[name])(learning_rate=0.1)
  params = jnp.zeros(4)
  state = opt.init(params)
  ref = _reference(name, [np.zeros(4)])
  rng = np.random.default_rng(0)
  update = jax.jit(opt.update)
  for _ in range(4):
    g = rng.normal(size=4).astype(np.float32)
    before = ref.params[0].copy()
    ref.step([g], 0.1)
    updates, state = update(jnp.asarray(g), state)
    assert rel_err(updates, ref.params[0] - before) <= RTOL


@pytest.mark.parametrize('name', ALIASES)
@pytest.mark.parametrize('weight_decay', [0.0, 1e-2])
def test_traced_weight_decay_without_params_raises(name, weight_decay):
  opt = optax.inject_hyperparams(ALIASES[name])(
    learning_rate=0.1, weight_decay=weight_decay
  )
  state = opt.init(jnp.zeros(4))
  with pytest.raises(
    ValueError,
    match='weight_decay is a traced value.*pass params to update, or leave '
    'weight_decay at None',
  ):
    jax.jit(opt.update)(jnp.ones(4), state)
  # With params it runs, and a zero decay is exactly no decay.
  updates, _ = jax.jit(opt.update)(jnp.ones(4), state, jnp.ones(4))
  plain = ALIASES[name](0.1)
  expected, _ = plain.update(jnp.ones(4), plain.init(jnp.ones(4)))
  if weight_decay == 0.0:
    chex.assert_trees_all_close(updates, expected, rtol=1e-6)
  else:
    assert not np.allclose(updates, expected, rtol=1e-4)


@pytest.mark.parametrize('name', ALIASES)
def test_no_decay_and_zero_decay_have_one_state_structure(name):
  """Checkpoints carry over: no decay (None) and a decay rate share one
  state structure (a decay schedule adds its step count)."""
  params = {'w': jnp.ones((2, 3))}
  states = [
    ALIASES[name](0.1, weight_decay=wd).init(params)
    for wd in (None, 0.0, 1e-2, jnp.float32(1e-3))
  ]
  for state in states[1:]:
    chex.assert_trees_all_equal_structs(states[0], state)


# 5. optax.inject_hyperparams with half-precision parameters.


def test_inject_adapnm_bfloat16_says_what_to_do():
  opt = optax.inject_hyperparams(pnm_optax.adapnm)(learning_rate=1e-3)
  with pytest.raises(
    ValueError,
    match=r'b2 must be in \[0, 1\).*bfloat16.*hyperparam_dtype=jnp.float32',
  ):
    opt.init({'w': jnp.ones(3, jnp.bfloat16)})


def test_inject_adapnm_bfloat16_with_float32_hyperparameters():
  """The fix the error names: float32 hyperparameters."""
  opt = optax.inject_hyperparams(
    pnm_optax.adapnm, hyperparam_dtype=jnp.float32
  )(learning_rate=1e-2)
  rng = np.random.default_rng(0)
  # Values exact in bfloat16, so the reference starts from the same ones.
  round16 = lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
  init = round16(rng.normal(size=8))
  ref = ReferencePNM([init], adaptive=True)
  params = jnp.asarray(init, jnp.bfloat16)
  state = opt.init(params)
  for _ in range(4):
    g = round16(rng.normal(size=8))
    before = ref.params[0].copy()
    ref.step([g], 1e-2)
    updates, state = jax.jit(opt.update)(
      jnp.asarray(g, jnp.bfloat16), state, params
    )
    # bfloat16 buffers: 8 significant bits.
    assert rel_err(updates, ref.params[0] - before) <= 2e-2
    params = optax.apply_updates(params, updates)


@pytest.mark.parametrize(
  'name,arg', [('pnm', 'b1'), ('adapnm', 'b1'), ('adapnm', 'b2')]
)
def test_values_that_round_to_one_in_float32_raise(name, arg):
  """b < 1 that float32 rounds to 1 would freeze a moment: named at init
  (and when the step is traced), with the largest value that works."""
  opt = _build(name, **{arg: 1 - 1e-9})
  with pytest.raises(
    ValueError,
    match=rf'{arg}=0.999999999 rounds to 1 in float32.*{arg} <= 0.99999994',
  ):
    opt.init(jnp.ones(2))
  with pytest.raises(ValueError, match='rounds to 1 in float32'):
    opt.update(jnp.ones(2), _build(name).init(jnp.ones(2)))
  # The largest value that works does work.
  largest = float(np.nextafter(np.float32(1), np.float32(0)))
  _build(name, **{arg: largest}).init(jnp.ones(2))


# 6. Python numbers as leaves (as optax.adam takes them).


@pytest.mark.parametrize('name', [*ALIASES, *TRANSFORMS])
def test_python_number_leaves(name):
  opt = _make(name, weight_decay=1e-2) if name in ALIASES else _make(name)
  params = {'t': 1.0, 'w': jnp.ones(2)}
  ref = _reference(
    name, [np.ones(()), np.ones(2)], weight_decay=1e-2 * (name in ALIASES)
  )
  scale = -0.1 if name in TRANSFORMS else 1.0
  state = opt.init(params)
  for t in range(1, 4):
    grads = {'t': 0.5 * t, 'w': jnp.full(2, -0.25 * t)}
    before = [p.copy() for p in ref.params]
    ref.step([np.asarray(0.5 * t), np.full(2, -0.25 * t)], 0.1)
    updates, state = opt.update(grads, state, params)
    delta = [a - b for a, b in zip(ref.params, before)]
    got = [scale * _wide(updates['t']), scale * _wide(updates['w'])]
    assert rel_err(got, delta) <= RTOL
    params = optax.apply_updates(params, updates)


# 7. A b0 schedule that goes below zero: NaN updates, under jit or not.


@pytest.mark.parametrize('name', ALIASES)
@pytest.mark.parametrize('jit', [False, True])
def test_negative_b0_gives_nan_updates(name, jit):
  """b0 = 1 - count: steps 1 and 2 run (b0 = 1, 0), step 3 (b0 = -1) is
  NaN, op by op as under jax.jit. The buffers do not depend on b0 and stay
  finite, so optax.apply_if_finite chained after the optimizer (it checks
  what it is given) skips the step and training goes on."""
  opt = _make(name, b0=lambda count: 1.0 - count)
  params = jnp.ones(3)
  update = jax.jit(opt.update) if jit else opt.update
  state = opt.init(params)
  finite = []
  for _ in range(3):
    updates, state = update(jnp.ones(3), state, params)
    finite.append(bool(jnp.all(jnp.isfinite(updates))))
  assert finite == [True, True, False]
  chex.assert_tree_all_finite(state)
  guarded = optax.chain(opt, optax.apply_if_finite(optax.identity(), 5))
  state = guarded.init(params)
  for _ in range(3):
    updates, state = jax.jit(guarded.update)(jnp.ones(3), state, params)
  assert int(state[1].total_notfinite) == 1
  chex.assert_trees_all_equal(updates, jnp.zeros(3))


def test_a_schedule_that_ends_at_zero_b0_runs():
  """optax.linear_schedule(2, 0, n) rounds to -4.8e-8 at its end under jit;
  that is rounding, not a negative b0: the steps stay finite and match
  b0 = 0."""
  schedule = optax.linear_schedule(2.0, 0.0, 3)
  opt = pnm_optax.pnm(0.1, b0=schedule)
  ref = ReferencePNM([np.zeros(2)])
  state = opt.init(jnp.zeros(2))
  rng = np.random.default_rng(0)
  for t in range(1, 7):
    g = rng.normal(size=2).astype(np.float32)
    before = ref.params[0].copy()
    ref.step([g], 0.1, b0=max(2.0 - 2.0 * (t - 1) / 3, 0.0))
    updates, state = jax.jit(opt.update)(jnp.asarray(g), state)
    assert rel_err(updates, ref.params[0] - before) <= RTOL


@pytest.mark.parametrize('name', ALIASES)
def test_negative_injected_b0_gives_nan_updates(name):
  opt = optax.inject_hyperparams(ALIASES[name])(learning_rate=0.1)
  state = opt.init(jnp.ones(2))
  state.hyperparams['b0'] = jnp.asarray(-0.5)
  updates, _ = jax.jit(opt.update)(jnp.ones(2), state)
  assert bool(jnp.all(jnp.isnan(updates)))


# 8. Masks: a single boolean is rejected; a callable mask under
# optax.inject_hyperparams needs static_args=('mask',).


@pytest.mark.parametrize('name', ALIASES)
@pytest.mark.parametrize('mask', [True, False, jnp.asarray(True)])
def test_a_single_boolean_mask_raises(name, mask):
  with pytest.raises(
    ValueError,
    match=r"mask must be a tree of booleans.*static_args=\('mask',\)",
  ):
    ALIASES[name](0.1, weight_decay=1e-2, mask=mask)


def _kernels(p):
  return jax.tree.map(lambda x: x.ndim > 1, p)


@pytest.mark.parametrize('name', ALIASES)
def test_inject_hyperparams_with_a_callable_mask(name):
  """Without static_args the callable is taken for a schedule (its value,
  False, would silently decay nothing): a named error. With
  static_args=('mask',) it decays the kernels only, as the reference."""
  params = {'w': jnp.ones((2, 2)), 'b': jnp.ones(2)}
  plain = optax.inject_hyperparams(ALIASES[name])
  opt = plain(learning_rate=0.1, weight_decay=0.5, mask=_kernels)
  with pytest.raises(ValueError, match=r"static_args=\('mask',\)"):
    opt.init(params)
  opt = optax.inject_hyperparams(ALIASES[name], static_args=('mask',))(
    learning_rate=0.1, weight_decay=0.5, mask=_kernels
  )
  ref = _reference(
    name,
    [np.ones(2), np.ones((2, 2))],
    weight_decay=0.5,
    decay_mask=[False, True],
  )  # leaves in key order: b, w
  state = opt.init(params)
  for _ in range(3):
    before = [p.copy() for p in ref.params]
    ref.step([np.ones(2), np.ones((2, 2))], 0.1)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = jax.jit(opt.update)(grads, state, params)
    delta = [a - b for a, b in zip(ref.params, before)]
    assert rel_err([updates['b'], updates['w']], delta) <= RTOL
    params = optax.apply_updates(params, updates)
