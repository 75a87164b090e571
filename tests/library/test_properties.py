"""Property-based parity: random trees, dtypes and hyperparameters against
the float64 NumPy reference (``tests/reference.py``), step by step.

Each example draws a tree (nested dicts, lists and tuples of scalars and
arrays, with ``None`` and ``optax.MaskedNode`` leaves and empty containers,
always beside two array leaves that train: a matrix and a vector or scalar),
a dtype, every hyperparameter over its range (numbers or schedules where
schedules are allowed, both weight-decay modes, masks as trees and as
functions, amsgrad, buffer dtypes) and a way to run it (op by op,
``jax.jit``, ``optax.inject_hyperparams`` under ``jax.jit``, or
``optax.multi_transform`` with a frozen group, op by op), then checks every step's update, element by element,
against the reference. The learning rate is never zero and weight decay
comes with a mask in most examples, so a decay applied to the wrong leaves
changes the update by far more than the tolerance.

Before each step the reference takes the optimizer's parameters and buffers
(exactly, widened to float64), so the comparison measures one step's
rounding, not the drift of two trajectories. The tolerance follows from
floating-point error analysis, not from what the code happens to give:
rounding errors of a correct implementation are relative to the size of the
terms that make up the update (the reference's ``scale``: the buffers'
contributions and the decay, before they cancel), and come from

* the arithmetic in the compute dtype (at least float32), where rounding
  ``b1`` and ``b2`` amplifies by their condition numbers ``1 / (1 - b)``:
  ``16 eps_compute kappa``;
* the gradients' and the output dtype, in which the direction is returned
  and optax adds the decay and scales by the learning rate (three
  roundings): ``4 eps_out``;

plus the float64 reference's own rounding and, for half-precision outputs,
subnormal spacing.

Profiles (``tests/conftest.py``): the default runs a fixed set of examples;
``--hypothesis-profile=long`` draws many more.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import event, example, given
from hypothesis import strategies as st

import pnm_optax
from tests import compat
from tests.reference import ReferencePNM

STEPS = 4  # both parities twice, four bias corrections
DTYPES = ['float32', 'float32', 'float64', 'bfloat16', 'float16', 'complex64']


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
  """``{'w': matrix, 'b': vector or scalar, 'rest': anything}``: two array
  leaves that train (one with ``ndim > 1``, one without, so a mask function
  ``ndim > 1`` always decays one and leaves the other), beside a nested part
  that may have more arrays, ``None``, ``MaskedNode`` and empty containers."""
  array = st.sampled_from([(), (1,), (3,), (2, 3), (2, 1, 2)]).map(_Leaf)
  leaf = st.one_of(array, array, st.just(None), st.just(optax.MaskedNode()))
  keys = st.sampled_from(['a', 'c', 'kernel', 'bias'])
  nested = st.recursive(
    leaf,
    lambda children: st.one_of(
      st.dictionaries(keys, children, max_size=3),
      st.lists(children, max_size=2),
      st.lists(children, max_size=2).map(tuple),
    ),
    max_leaves=4,
  )
  return st.builds(
    lambda w, b, rest: {'b': b, 'rest': rest, 'w': w},
    st.sampled_from([(2, 3), (3, 1, 2)]).map(_Leaf),
    st.sampled_from([(), (1,), (4,)]).map(_Leaf),
    nested,
  )


def _log_uniform(low, high):
  return st.floats(math.log10(low), math.log10(high)).map(lambda e: 10.0**e)


def _rates(low, high):
  """A number in [low, high] (log-uniform) or a schedule that stays in it."""
  number = _log_uniform(low, high)
  linear = st.builds(
    lambda a, b, n: _Schedule('linear', a, b, n),
    number,
    number,
    st.integers(1, 4),
  )
  exponential = st.builds(
    lambda a, b: _Schedule('exponential', a, b, 0),
    _log_uniform(low / 0.5**STEPS, high),
    st.floats(0.5, 1.0),
  )
  return st.one_of(number, number, linear, exponential)


@st.composite
def _cases(draw):
  dtype = draw(st.sampled_from(DTYPES))
  half = dtype in ('float16', 'bfloat16')
  adaptive = draw(st.booleans())
  # b1, b2 over [0, 1). Half the draws stay where float32 resolves the
  # moments' decay to about 1e-4 (the error bound grows as 1 / (1 - b) near
  # 1); values that round to 1 in float32 are rejected by init (tested in
  # test_edge_cases.py). float16 keeps b1 <= 0.99, so that 1 / (1 - b1^t)
  # times the learning rate stays in its range.
  top = 1 - 1e-9 if dtype == 'float64' else 1 - 1e-6
  unit = st.one_of(st.floats(0.0, 0.99), st.floats(0.0, 0.99 if half else top))
  complex_dtype = dtype == 'complex64'
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
    learning_rate=draw(_rates(1e-2 if half else 1e-4, 1.0 if half else 3.0)),
    # Large enough, mostly, that a decay on the wrong leaves shows.
    weight_decay=draw(
      st.one_of(st.none(), _rates(1e-3, 1.0), _rates(1e-3, 1.0))
    ),
    weight_decay_mode=draw(st.sampled_from(['decoupled', 'l2'])),
    mask=draw(st.sampled_from([None, 'tree', 'fn', 'tree', 'fn'])),
    mask_bits=draw(st.integers(0, 63)),
    mu_dtype=draw(
      st.sampled_from(
        [None, 'complex64']
        if complex_dtype
        else [None, 'float32', 'bfloat16']
        + (['float64'] if dtype == 'float64' else [])
      )
    ),
    run=draw(st.sampled_from(['eager', 'eager', 'jit', 'inject', 'multi'])),
    frozen_bits=draw(st.integers(0, 63)),
    seed=draw(st.integers(0, 2**16)),
  )
  if adaptive:
    case |= dict(
      b2=draw(unit),
      # eps and eps_root both zero, either, or both, large enough to change
      # the step measurably or tiny.
      eps=draw(st.one_of(st.just(0.0), _log_uniform(1e-12, 10.0))),
      eps_root=draw(
        st.one_of(
          st.just(0.0), _log_uniform(1e-3, 10.0), _log_uniform(1e-12, 1e-3)
        )
      ),
      amsgrad=draw(st.booleans()),
      nu_dtype=draw(
        st.sampled_from(
          [None, 'float32', 'bfloat16']
          + (['float64'] if dtype == 'float64' else [])
        )
      ),
    )
  return case


def _eps(dtype) -> float:
  return float(jnp.finfo(dtype).eps)


def _tolerance(case, out_dtype):
  """(relative to the reference's scale, absolute) error bounds of one
  step; see the module docstring."""
  dtype = jnp.dtype(case['dtype'])
  buffers = [case['mu_dtype'], case.get('nu_dtype')]
  compute = jnp.result_type(
    jnp.float32, dtype, *[jnp.dtype(d) for d in buffers if d]
  )
  b1 = case['b1']
  kappa = 4 + 1 / (1 - b1**2)
  if case['adaptive']:
    kappa += 1 / (1 - b1) + 1 / (1 - case['b2'])
  # The direction has the gradients' dtype; the update may be wider (e.g.
  # promoted by float32 hyperparameters under inject_hyperparams).
  out = max(_eps(out_dtype), _eps(dtype))
  rel = 4 * out + 16 * _eps(compute) * kappa
  return rel, 4 * float(jnp.finfo(out_dtype).smallest_subnormal)


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
  """The optimizer's factory and arguments for ``case`` and, per array
  leaf, whether it trains and whether it is decayed."""
  adaptive = case['adaptive']
  n = len(leaves)
  # Leaf 0 ('b') always trains.
  trained = [
    case['run'] != 'multi' or i == 0 or not (case['frozen_bits'] >> i) & 1
    for i in range(n)
  ]
  if case['mask'] == 'tree':
    decayed = [bool((case['mask_bits'] >> i) & 1) for i in range(n)]
  elif case['mask'] == 'fn':
    decayed = [leaf.ndim > 1 for leaf in leaves]
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
      return lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
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


def _sync(ref, state, params, ref_leaves):
  """Gives the reference the optimizer's parameters and buffers, widened to
  float64 (exactly)."""
  leaves = jax.tree.leaves(params)
  ref.params = [_wide(leaves[i]).copy() for i in ref_leaves]
  has_buffers = lambda x: hasattr(x, 'mu_odd')
  (pn_state,) = [
    s for s in jax.tree.leaves(state, is_leaf=has_buffers) if has_buffers(s)
  ]
  names = {'mu_odd': 'pos', 'mu_even': 'neg', 'nu': 'sq', 'nu_max': 'max_sq'}
  for name, key in names.items():
    if not hasattr(pn_state, name):
      continue
    buffers = jax.tree.leaves(getattr(pn_state, name))
    assert len(buffers) == len(ref.buffers)
    for buf, x in zip(ref.buffers, buffers):
      buf[key] = _wide(x).copy()


def _check(case):
  dtype = jnp.dtype(case['dtype'])
  rng = np.random.default_rng(case['seed'])
  params = _materialise(case['tree'], dtype, rng)
  leaves = jax.tree.leaves(params)
  make, kwargs, trained, decayed, with_mask = _build(case, leaves)
  opt = _optimizer(case, params, make, kwargs, trained, with_mask)
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
  # Op by op, the primitives compiled for one example serve the next (a
  # jitted step compiles anew for every example's constants).
  jit = case['run'] in ('jit', 'inject')
  update = jax.jit(opt.update) if jit else opt.update
  for t in range(1, STEPS + 1):
    grads = _materialise(case['tree'], dtype, rng)
    _sync(ref, state, params, ref_leaves)
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
    moved = False
    for k, i in enumerate(ref_leaves):
      rel, tiny = _tolerance(case, got[i].dtype)
      expected = ref.params[k] - before[k]
      moved |= bool(np.any(expected != 0))
      # The reference's step is a difference of parameters, rounded in
      # float64.
      ref_rounding = 2 * np.finfo(np.float64).eps * np.abs(before[k])
      bound = rel * ref.scale[k] + tiny + ref_rounding
      error = np.abs(_wide(got[i]) - expected)
      assert np.all(error <= bound), (t, i, error, bound, expected)
    assert moved  # every example compares a non-zero update
    params = optax.apply_updates(params, updates)


def _example(**changes):
  """A case that every run checks, whatever hypothesis draws."""
  tree = {'b': _Leaf((4,)), 'rest': [_Leaf((3,)), None], 'w': _Leaf((2, 3))}
  case = dict(
    dtype='float32',
    adaptive=False,
    tree=tree,
    b1=0.9,
    b0=1.0,
    learning_rate=0.1,
    weight_decay=0.3,
    weight_decay_mode='decoupled',
    mask='tree',
    mask_bits=0b101,
    mu_dtype=None,
    run='eager',
    frozen_bits=0,
    seed=0,
  )
  if changes.get('adaptive'):
    case |= dict(b2=0.99, eps=1e-8, eps_root=0.0, amsgrad=True, nu_dtype=None)
  return example(case=case | changes)


# Weight decay with a mask (a tree, a function), in both modes, for both
# optimizers, with a schedule; eps_root without eps; and bfloat16 leaves
# with float32 buffers.
@_example(weight_decay_mode='l2', run='jit')
@_example(mask='fn', adaptive=True)
@_example(mask='fn', weight_decay_mode='l2', adaptive=True, run='inject')
@_example(weight_decay=_Schedule('linear', 0.5, 0.1, 3), run='multi')
@_example(adaptive=True, eps=0.0, eps_root=0.5, amsgrad=False)
@_example(dtype='bfloat16', mu_dtype='float32', adaptive=True, eps_root=1e-3)
@given(_cases())
def test_matches_reference(case):
  # Shown by --hypothesis-show-statistics: what the examples covered.
  decay = case['weight_decay'] not in (None, 0.0)
  event(f'{case["dtype"]} {case["run"]}')
  event(f'decay: {decay}, mask: {case["mask"]}, {case["weight_decay_mode"]}')
  if case['adaptive']:
    event(f'eps 0: {case["eps"] == 0}, eps_root 0: {case["eps_root"] == 0}')
  if case['dtype'] == 'float64':
    with compat.enable_x64():
      _check(case)
  else:
    _check(case)
