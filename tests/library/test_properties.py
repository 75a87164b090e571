"""Property-based parity: random trees, dtypes and hyperparameters against
the float64 NumPy reference (``tests/reference.py``), step by step.

Each example draws a tree (nested dicts, lists and tuples of scalars and
arrays, with ``None`` and ``optax.MaskedNode`` leaves and empty containers),
a dtype, every hyperparameter over its range (numbers or schedules where
schedules are allowed, both weight-decay modes, masks, amsgrad, buffer
dtypes) and a way to run it (``jax.jit``, ``optax.inject_hyperparams`` under
``jax.jit``, or ``optax.multi_transform`` with a frozen group), then checks
every step's update against the reference.

The tolerance follows from floating-point error analysis, not from what the
code happens to give: rounding errors of a correct implementation are
relative to the size of the terms that make up the update (the reference's
``scale``: the momentum buffers' contributions and the decay, before they
cancel), grow at most linearly with the steps, and come from storage
(parameters and buffers rounded to their dtypes) and from the arithmetic in
the compute dtype, where rounding ``b1`` and ``b2`` amplifies by their
condition numbers ``1 / (1 - b)``.

Profiles (``tests/conftest.py``): the default runs a fixed set of examples in
well under a minute; ``--hypothesis-profile=long`` draws many more.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import pnm_optax
from tests import compat
from tests.reference import ReferencePNM

STEPS = 5
DTYPES = ['float32', 'float64', 'bfloat16', 'float16', 'complex64']


class _Leaf:
  """An array leaf of a drawn tree: its shape (not a pytree node)."""

  def __init__(self, shape):
    self.shape = shape

  def __repr__(self):
    return f'Leaf{self.shape}'


class _Schedule:
  """A schedule of the 0-based step count, with its float64 values.

  ``kind`` 'linear' goes from ``a`` to ``b`` over ``n`` steps, then stays;
  'exponential' is ``a * b**count``. The optimizer calls it with a traced
  int32 count; the reference reads ``at(count)`` in float64.
  """

  def __init__(self, kind, a, b, n):
    self.kind, self.a, self.b, self.n = kind, a, b, n

  def __call__(self, count):
    if self.kind == 'linear':
      return self.a + (self.b - self.a) * jnp.minimum(count, self.n) / self.n
    return self.a * self.b**count

  def at(self, count):
    if self.kind == 'linear':
      return self.a + (self.b - self.a) * min(count, self.n) / self.n
    return self.a * self.b**count

  def size_at(self, count):
    """The size float32 rounds this step's value relative to."""
    if self.kind == 'linear':
      return max(abs(self.a), abs(self.b))
    return abs(self.at(count))

  def __repr__(self):
    return f'{self.kind}({self.a}, {self.b}, {self.n})'


def _value_at(value, count):
  if value is None:
    return 0.0
  return value.at(count) if isinstance(value, _Schedule) else value


def _size_at(value, count):
  if isinstance(value, _Schedule):
    return value.size_at(count)
  return abs(_value_at(value, count))


def _trees():
  shapes = st.sampled_from([(), (1,), (3,), (2, 3), (2, 1, 2)])
  array = shapes.map(_Leaf)
  leaf = st.one_of(
    array, array, array, st.just(None), st.just(optax.MaskedNode())
  )
  keys = st.sampled_from(['a', 'b', 'c', 'kernel', 'bias'])
  nested = st.recursive(
    leaf,
    lambda children: st.one_of(
      st.dictionaries(keys, children, max_size=3),
      st.lists(children, max_size=3),
      st.lists(children, max_size=3).map(tuple),
    ),
    max_leaves=6,
  )
  # Mostly with an array leaf beside the nested part; sometimes only that
  # part, which may have no array leaf at all.
  return st.one_of(
    st.tuples(array, nested).map(lambda t: {'w': t[0], 'rest': t[1]}),
    st.tuples(nested, array).map(list),
    nested,
  )


def _log_uniform(low, high):
  return st.floats(math.log10(low), math.log10(high)).map(lambda e: 10.0**e)


def _rates(low, high, schedules=True):
  """0, a number in [low, high] (log-uniform), or a schedule of such."""
  number = st.one_of(st.just(0.0), _log_uniform(low, high))
  if not schedules:
    return number
  schedule = st.builds(
    _Schedule,
    st.sampled_from(['linear', 'exponential']),
    _log_uniform(low, high),
    st.floats(0.0, 1.0),
    st.integers(1, 4),
  ).map(
    # A linear schedule's end is a rate too, in [0, high].
    lambda s: (
      s
      if s.kind == 'exponential'
      else _Schedule('linear', s.a, s.b * high, s.n)
    )
  )
  return st.one_of(number, schedule)


_large = _log_uniform(1e-3, 10.0)


@st.composite
def _cases(draw):
  dtype = draw(st.sampled_from(DTYPES))
  half = dtype == 'float16'
  adaptive = draw(st.booleans())
  # b1, b2 over [0, 1). float16 keeps its precision only for values it
  # represents as normal numbers: there b1 <= 0.99 (buffers of at least
  # 2e-2 g) and a learning rate of at least 1e-2.
  # Half the draws stay where float32 resolves the moments' decay to about
  # 1e-4 (the error bound grows as 1 / (1 - b) near 1).
  unit = st.one_of(
    st.floats(0.0, 0.99),
    st.floats(0.0, 0.99 if half else 1.0, exclude_max=not half),
  )
  case = dict(
    dtype=dtype,
    adaptive=adaptive,
    tree=draw(_trees()),
    b1=draw(unit),
    b0=draw(
      st.one_of(
        st.floats(0.0, 20.0),
        st.builds(
          _Schedule,
          st.just('linear'),
          st.floats(0.0, 5.0),
          st.floats(0.0, 5.0),
          st.integers(1, 4),
        ),
      )
    ),
    learning_rate=draw(_rates(1e-2 if half else 1e-6, 3.0)),
    weight_decay=draw(st.one_of(st.none(), _rates(1e-6, 1.0))),
    weight_decay_mode=draw(st.sampled_from(['decoupled', 'l2'])),
    mask=draw(st.sampled_from([None, 'tree', 'fn'])),
    mask_bits=draw(st.integers(0, 63)),
    mu_dtype=draw(
      st.sampled_from(
        [None, 'float32', 'bfloat16']
        + (['float64'] if dtype == 'float64' else [])
        + (['complex64'] if dtype == 'complex64' else [])
      )
    ),
    run=draw(st.sampled_from(['jit', 'inject', 'multi'])),
    frozen_bits=draw(st.integers(0, 63)),
    seed=draw(st.integers(0, 2**16)),
  )
  if adaptive:
    case |= dict(
      b2=draw(unit),
      # Also often large enough to change the step measurably.
      eps=draw(st.one_of(st.just(0.0), _log_uniform(1e-12, 10.0), _large)),
      eps_root=draw(st.one_of(st.just(0.0), _log_uniform(1e-12, 10.0), _large)),
      amsgrad=draw(st.booleans()),
      nu_dtype=draw(st.sampled_from([None, 'float32', 'bfloat16'])),
    )
  return case


def _eps(dtype) -> float:
  return float(jnp.finfo(dtype).eps)


def _tolerances(case, out_dtype):
  """(relative to the reference's scale, absolute) error bounds."""
  dtype = jnp.dtype(case['dtype'])
  stored = [dtype, jnp.dtype(case['mu_dtype'] or dtype)]
  compute = jnp.result_type(jnp.float32, *stored)
  b1 = case['b1']
  kappa = 1 + 1 / (1 - b1**2)
  if case['adaptive']:
    real = jnp.finfo(dtype).dtype
    nu = case['nu_dtype'] or (jnp.float32 if real == jnp.float16 else real)
    stored.append(jnp.dtype(nu))
    kappa += 1 / (1 - b1) + 1 / (1 - case['b2'])
  storage = max(_eps(d) for d in stored)
  rel = 4 * STEPS * (storage + _eps(compute) * kappa)
  tiny = float(jnp.finfo(out_dtype).smallest_subnormal)
  return rel, 4 * tiny


def _materialise(tree, dtype, rng, scale=1.0):
  def leaf(spec):
    x = rng.normal(size=spec.shape)
    if jnp.issubdtype(dtype, jnp.complexfloating):
      x = x + 1j * rng.normal(size=spec.shape)
    return jnp.asarray(scale * x, dtype)

  return jax.tree.map(leaf, tree, is_leaf=lambda x: isinstance(x, _Leaf))


def _wide(x):
  x = np.asarray(x)
  return x.astype(np.result_type(x, np.float64))


def _build(case, leaves):
  """The optimizer for ``case`` and, per array leaf, (trained, decayed)."""
  adaptive = case['adaptive']
  n = len(leaves)
  trained = [
    case['run'] != 'multi' or not (case['frozen_bits'] >> i) & 1
    for i in range(n)
  ]
  if case['mask'] == 'tree':
    decayed = [bool((case['mask_bits'] >> i) & 1) for i in range(n)]
  elif case['mask'] == 'fn':
    decayed = [leaf.ndim > 0 for leaf in leaves]
  else:
    decayed = [True] * n
  kwargs = dict(
    learning_rate=case['learning_rate'],
    b1=case['b1'],
    b0=case['b0'],
    weight_decay=case['weight_decay'],
    weight_decay_mode=case['weight_decay_mode'],
    mu_dtype=case['mu_dtype'],
  )
  if adaptive:
    kwargs |= {
      k: case[k] for k in ('b2', 'eps', 'eps_root', 'amsgrad', 'nu_dtype')
    }
  make = pnm_optax.adapnm if adaptive else pnm_optax.pnm

  def with_mask(tree_of_leaves):
    if case['mask'] == 'tree':
      flags = iter(decayed)
      return jax.tree.map(lambda _: next(flags), tree_of_leaves)
    if case['mask'] == 'fn':
      return lambda p: jax.tree.map(lambda x: x.ndim > 0, p)
    return None

  return make, kwargs, trained, decayed, with_mask


def _optimizer(case, params, make, kwargs, trained, with_mask):
  kwargs = kwargs | {'mask': with_mask(params)}
  if case['run'] == 'inject':
    hyperparam_dtype = (
      jnp.float64 if case['dtype'] == 'float64' else jnp.float32
    )
    return optax.inject_hyperparams(
      make, static_args=('mask',), hyperparam_dtype=hyperparam_dtype
    )(**kwargs)
  if case['run'] == 'multi':
    flags = iter(trained)
    labels = jax.tree.map(
      lambda _: 'train' if next(flags) else 'frozen', params
    )
    # The mask keeps the full tree's structure (the group's parameters hold
    # optax.MaskedNode for the frozen leaves).
    return optax.multi_transform(
      {'train': make(**kwargs), 'frozen': optax.set_to_zero()}, labels
    )
  return make(**kwargs)


def _check(case):
  dtype = jnp.dtype(case['dtype'])
  rng = np.random.default_rng(case['seed'])
  params = _materialise(case['tree'], dtype, rng)
  leaves = jax.tree.leaves(params)
  make, kwargs, trained, decayed, with_mask = _build(case, leaves)
  complex_leaves = dtype.kind == 'c' and leaves
  if complex_leaves and case['mu_dtype'] not in (None, 'complex64'):
    with pytest.raises(ValueError, match='is complex64 but mu_dtype='):
      make(**kwargs).init(params)
    return
  opt = _optimizer(case, params, make, kwargs, trained, with_mask)
  if dtype != jnp.float64 and leaves:
    # Computed in float32, b1 or b2 within 6e-8 of 1 would be 1.
    b = [case['b1'], case.get('b2', 0.0)]
    if np.any(np.float32(b) == 1):
      with pytest.raises(ValueError, match='round(s)? to 1'):
        opt.init(params)
      return
  ref_leaves = [i for i in range(len(leaves)) if trained[i]]
  ref = ReferencePNM(
    [_wide(leaves[i]) for i in ref_leaves],
    adaptive=case['adaptive'],
    b1=case['b1'],
    b2=case.get('b2', 0.999),
    eps=case.get('eps', 0.0),
    eps_root=case.get('eps_root', 0.0),
    amsgrad=case.get('amsgrad', True),
    decoupled=case['weight_decay_mode'] == 'decoupled',
    weight_decay=1.0,  # set per step below
    decay_mask=[decayed[i] for i in ref_leaves],
  )
  state = opt.init(params)
  update = jax.jit(opt.update)
  for t in range(1, STEPS + 1):
    grads = _materialise(case['tree'], dtype, rng)
    lr = _value_at(case['learning_rate'], t - 1)
    before = [p.copy() for p in ref.params]
    ref.step(
      [_wide(jax.tree.leaves(grads)[i]) for i in ref_leaves],
      lr,
      b0=_value_at(case['b0'], t - 1),
      weight_decay=_value_at(case['weight_decay'], t - 1),
      scale_lr=_size_at(case['learning_rate'], t - 1),
      scale_wd=_size_at(case['weight_decay'], t - 1),
    )
    updates, state = update(grads, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    got = jax.tree.leaves(updates)
    for i, u in enumerate(got):
      if not trained[i]:
        np.testing.assert_array_equal(u, np.zeros_like(u))
    if not ref_leaves:
      params = optax.apply_updates(params, updates)
      continue
    out_dtype = got[ref_leaves[0]].dtype
    rel, tiny = _tolerances(case, out_dtype)
    error = np.sqrt(
      sum(
        np.sum(np.abs(_wide(got[i]) - (after - b)) ** 2)
        for i, after, b in zip(ref_leaves, ref.params, before)
      )
    )
    scale = np.sqrt(sum(np.sum(s**2) for s in ref.scale))
    size = sum(s.size for s in ref.scale)
    # The reference's step is a difference of parameters, rounded in float64.
    ref_rounding = (
      2
      * np.finfo(np.float64).eps
      * np.sqrt(sum(np.sum(np.abs(b) ** 2) for b in before))
    )
    bound = rel * scale + tiny * math.sqrt(size) + ref_rounding
    assert error <= bound, (t, error, scale, rel)
    params = optax.apply_updates(params, updates)


@given(_cases())
def test_matches_reference(case):
  # Shown by --hypothesis-show-statistics: what the examples covered.
  arrays = jax.tree.leaves(case['tree'], is_leaf=lambda x: isinstance(x, _Leaf))
  event(f'{case["dtype"]} {case["run"]} array leaves: {min(len(arrays), 2)}')
  if case['dtype'] == 'float64':
    with compat.enable_x64():
      _check(case)
  else:
    _check(case)
