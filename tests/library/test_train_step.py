"""pnm_optax.pnm_train_step against the float64 reference (tests/reference.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pnm_optax
from tests.helpers import rel_err
from tests.reference import ReferencePNM

SHAPES = [(7,), (3, 4), ()]
STEPS = 60
RTOL = 2e-5


def _grads(rng):
  return [rng.normal(size=s).astype(np.float32) for s in SHAPES]


def _params(seed=1):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=s).astype(np.float32) for s in SHAPES]


@pytest.mark.parametrize(
  'weight_decay, mode',
  [(None, 'decoupled'), (0.05, 'decoupled'), (0.05, 'l2')],
)
@pytest.mark.parametrize('b0', [1.0, 0.3])
def test_matches_reference_over_many_steps(weight_decay, mode, b0):
  lr = 0.03
  train = pnm_optax.pnm_train_step(
    lr, b0=b0, weight_decay=weight_decay, weight_decay_mode=mode
  )
  params = [jnp.asarray(p) for p in _params()]
  state = train.init(params)
  ref = ReferencePNM(
    _params(),
    b0=b0,
    weight_decay=weight_decay or 0.0,
    decoupled=mode == 'decoupled',
  )
  rng = np.random.default_rng(0)
  for t in range(STEPS):
    g = _grads(rng)
    params, state = train.step(params, state, [jnp.asarray(x) for x in g])
    ref.step(g, lr)
    assert rel_err(params, ref.params) < RTOL, t
  assert int(state.count) == STEPS


def test_schedules_follow_the_count():
  lr = optax.linear_schedule(0.05, 0.01, 20)
  b0 = lambda count: 1.0 / (1.0 + count)
  train = pnm_optax.pnm_train_step(lr, b0=b0, weight_decay=0.02)
  params = [jnp.asarray(p) for p in _params()]
  state = train.init(params)
  ref = ReferencePNM(_params(), weight_decay=0.02)
  rng = np.random.default_rng(3)
  for t in range(25):
    g = _grads(rng)
    params, state = train.step(params, state, [jnp.asarray(x) for x in g])
    ref.step(g, float(lr(t)), b0=1.0 / (1.0 + t))
  assert rel_err(params, ref.params) < RTOL


@pytest.mark.parametrize('first_steps', [1, 2, 3])
def test_continues_pnm_state_of_either_parity(first_steps):
  """A state it did not make (here pnm's, after an odd or even number of
  steps) is continued with the right parity."""
  lr = 0.05
  opt = pnm_optax.pnm(lr)
  train = pnm_optax.pnm_train_step(lr)
  params = [jnp.asarray(p) for p in _params()]
  opt_state = opt.init(params)
  ref = ReferencePNM(_params())
  rng = np.random.default_rng(5)
  for _ in range(first_steps):
    g = _grads(rng)
    updates, opt_state = opt.update([jnp.asarray(x) for x in g], opt_state)
    params = optax.apply_updates(params, updates)
    ref.step(g, lr)
  state = opt_state[0]  # ScaleByPNMState, first in pnm's chain
  assert isinstance(state, pnm_optax.ScaleByPNMState)
  for _ in range(9):
    g = _grads(rng)
    params, state = train.step(params, state, [jnp.asarray(x) for x in g])
    ref.step(g, lr)
  assert rel_err(params, ref.params) < RTOL


def test_matches_pnm_update_for_update():
  """Same steps as the Optax form: only the buffer of the parity changes."""
  lr, wd = 0.02, 0.1
  opt = pnm_optax.pnm(lr, weight_decay=wd)
  train = pnm_optax.pnm_train_step(lr, weight_decay=wd)
  p_opt = [jnp.asarray(p) for p in _params()]
  p_train = [jnp.asarray(p) for p in _params()]
  opt_state, state = opt.init(p_opt), train.init(p_train)
  rng = np.random.default_rng(7)
  for t in range(10):
    g = [jnp.asarray(x) for x in _grads(rng)]
    untouched = [
      np.asarray(x) for x in (state.mu_even if t % 2 == 0 else state.mu_odd)
    ]
    updates, opt_state = opt.update(g, opt_state, p_opt)
    p_opt = optax.apply_updates(p_opt, updates)
    p_train, state = train.step(p_train, state, g)
    after = state.mu_even if t % 2 == 0 else state.mu_odd
    for a, b in zip(after, untouched):
      np.testing.assert_array_equal(np.asarray(a), b)
    assert rel_err(p_train, p_opt) < 1e-6
    assert rel_err(state.mu_odd, opt_state[0].mu_odd) < 1e-6
    assert rel_err(state.mu_even, opt_state[0].mu_even) < 1e-6


def test_donates_params_and_the_touched_buffer_only():
  train = pnm_optax.pnm_train_step(0.1)
  params = jnp.ones(1024)
  state = train.init(params)
  grads = jnp.full(1024, 0.5)
  old_odd, old_even = state.mu_odd, state.mu_even
  params_new, state = train.step(params, state, grads)  # step 1: odd
  if not params.is_deleted():
    pytest.skip('this backend does not donate buffers')
  assert old_odd.is_deleted()
  assert not old_even.is_deleted()
  assert state.mu_even is old_even
  old_odd = state.mu_odd
  _, state = train.step(params_new, state, grads)  # step 2: even
  assert old_even.is_deleted() and not old_odd.is_deleted()


def _words(fn, *args):
  cost = jax.jit(fn, donate_argnums=(0, 1)).lower(*args).compile()
  cost = cost.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'bytes accessed' not in cost:
    pytest.skip('no cost analysis on this backend')
  return float(cost['bytes accessed']) / (4 * args[0].size)


def test_moves_one_word_more_than_sgd_momentum():
  """XLA's byte count: the floor's 6 words against SGD-M's 5 (the Optax
  form writes both buffers: 7)."""
  n = 2**16
  params, grads = jnp.ones(n), jnp.ones(n)
  train = pnm_optax.pnm_train_step(0.1)
  sgdm = optax.sgd(0.1, momentum=0.9)

  def sgdm_step(params, state, grads):
    updates, state = sgdm.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  def static_step(params, state, grads):
    return train.update(params, state, grads, True)

  def pnm_step(params, state, grads):
    updates, state = pnm_opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  pnm_opt = pnm_optax.pnm(0.1)
  base = _words(sgdm_step, params, sgdm.init(params), grads)
  static = _words(static_step, params, train.init(params), grads)
  core = _words(pnm_step, params, pnm_opt.init(params), grads)
  assert static == pytest.approx(base + 1, abs=0.01)
  assert static < core


def test_scan_and_jit_of_pairs_match_steps():
  """Inside one jitted scan, two steps (odd, then even) per iteration."""
  lr = 0.04
  train = pnm_optax.pnm_train_step(lr, weight_decay=0.01)
  rng = np.random.default_rng(11)
  grads = [[jnp.asarray(x) for x in _grads(rng)] for _ in range(2 * 8)]
  stacked = jax.tree.map(
    lambda *x: jnp.stack(x).reshape(8, 2, *x[0].shape), *grads
  )

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def run(params, state, stacked):
    def pair(carry, g):
      params, state = carry
      first = jax.tree.map(lambda x: x[0], g)
      second = jax.tree.map(lambda x: x[1], g)
      params, state = train.update(params, state, first, True)
      return train.update(params, state, second, False), None

    return jax.lax.scan(pair, (params, state), stacked)[0]

  params = [jnp.asarray(p) for p in _params()]
  params, state = run(params, train.init(params), stacked)
  ref = ReferencePNM(_params(), weight_decay=0.01)
  for g in grads:
    ref.step([np.asarray(x) for x in g], lr)
  assert rel_err(params, ref.params) < RTOL
  assert int(state.count) == 16


def test_pmap_step_matches_reference():
  lr = 0.05
  train = pnm_optax.pnm_train_step(lr, weight_decay=0.1, weight_decay_mode='l2')
  devices = jax.local_devices()
  n = len(devices)
  steps = {
    odd: jax.pmap(
      functools.partial(train.update, odd=odd),
      donate_argnums=(0, 1),
    )
    for odd in (True, False)
  }
  replicate = lambda tree: jax.tree.map(lambda x: jnp.stack([x] * n), tree)
  params = replicate([jnp.asarray(p) for p in _params()])
  state = replicate(train.init([jnp.asarray(p) for p in _params()]))
  ref = ReferencePNM(_params(), weight_decay=0.1, decoupled=False)
  rng = np.random.default_rng(13)
  for t in range(12):
    g = _grads(rng)
    params, state = steps[t % 2 == 0](
      params, state, replicate([jnp.asarray(x) for x in g])
    )
    ref.step(g, lr)
  for i in range(n):
    assert rel_err([x[i] for x in params], ref.params) < RTOL


@pytest.mark.parametrize(
  'kwargs, name',
  [
    (dict(learning_rate=-1.0), 'learning_rate'),
    (dict(learning_rate=0.1, b1=1.0), 'b1'),
    (dict(learning_rate=0.1, b0=-0.5), 'b0'),
    (dict(learning_rate=0.1, weight_decay=-1.0), 'weight_decay'),
    (dict(learning_rate=0.1, weight_decay_mode='l1'), 'weight_decay_mode'),
  ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, name):
  with pytest.raises(ValueError, match=name):
    pnm_optax.pnm_train_step(**kwargs)


def test_grad_fn_step_returns_aux():
  def grad_fn(params, x):
    loss, grads = jax.value_and_grad(lambda p: jnp.sum((p * x) ** 2))(params)
    return grads, loss

  train = pnm_optax.pnm_train_step(0.1, grad_fn=grad_fn)
  params = jnp.array([1.0, -2.0])
  state = train.init(params)
  ref = ReferencePNM([np.array([1.0, -2.0])])
  x = jnp.array([0.5, 1.5])
  for _ in range(4):
    expected = float(np.sum((ref.params[0] * np.asarray(x)) ** 2))
    ref.step([2 * ref.params[0] * np.asarray(x) ** 2], 0.1)
    params, state, loss = train.step(params, state, x)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert rel_err(params, ref.params) < RTOL


def test_docstring_example_runs():
  import doctest

  import pnm_optax.train_step

  result = doctest.testmod(pnm_optax.train_step, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0 and result.attempted >= 6
