"""PNM and AdaPNM inside Flax: NNX ``nnx.Optimizer`` and linen ``TrainState``.

Training runs on real data (scikit-learn's bundled digits); the update rule
inside NNX is checked against the float64 NumPy reference; the weight-decay
mask is checked against the closed form ``p * (1 - lr * wd) ** k``.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import pnm_optax
from tests.helpers import kernels_only
from tests.reference import ReferencePNM

LR = {'pnm': 0.5, 'adapnm': 3e-3}


def make_tx(name, lr=None, weight_decay=0.0, mask=None):
  lr = LR[name] if lr is None else lr
  factory = pnm_optax.pnm if name == 'pnm' else pnm_optax.adapnm
  return factory(lr, weight_decay=weight_decay, mask=mask)


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class NnxMLP(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = nnx.Linear(64, 32, rngs=rngs)
    self.norm = nnx.LayerNorm(32, rngs=rngs)
    self.fc2 = nnx.Linear(32, 10, rngs=rngs)

  def __call__(self, x):
    return self.fc2(jax.nn.relu(self.norm(self.fc1(x))))


class LinenMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = jax.nn.relu(nn.LayerNorm()(nn.Dense(32)(x)))
    return nn.Dense(10)(x)


@nnx.jit
def apply_update(optimizer, model, grads):
  optimizer.update(model, grads)


def param_leaves(model):
  return [np.asarray(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param))]


# ---------------------------------------------------------------- Flax NNX


@pytest.mark.parametrize('name', ['pnm', 'adapnm'])
def test_nnx_optimizer_trains_on_digits(name, digits):
  x, y = digits
  model = NnxMLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(
    model, make_tx(name, weight_decay=1e-4), wrt=nnx.Param
  )

  @nnx.jit
  def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
    optimizer.update(model, grads)
    return loss

  initial = float(cross_entropy(model(x), y))
  for _ in range(80):
    train_step(model, optimizer, x, y)
  final = float(cross_entropy(model(x), y))
  accuracy = float(jnp.mean(jnp.argmax(model(x), -1) == y))
  assert final < 0.3 * initial, (initial, final)
  assert accuracy > 0.8, accuracy


@pytest.mark.parametrize('name', ['pnm', 'adapnm'])
def test_nnx_masked_steps_match_reference(name, digits):
  """Three NNX steps with a kernels-only decay mask equal the float64
  reference run as two groups: decayed kernels, undecayed biases/scales."""
  x, y = digits
  lr, wd = LR[name], 0.05
  model = NnxMLP(nnx.Rngs(1))
  optimizer = nnx.Optimizer(
    model, make_tx(name, lr, weight_decay=wd, mask=kernels_only), wrt=nnx.Param
  )
  leaves = param_leaves(model)
  decayed = [p.ndim > 1 for p in leaves]
  assert any(decayed) and not all(decayed)
  adaptive = name == 'adapnm'
  ref_decay = ReferencePNM(
    [p for p, d in zip(leaves, decayed) if d],
    adaptive=adaptive,
    weight_decay=wd,
  )
  ref_plain = ReferencePNM(
    [p for p, d in zip(leaves, decayed) if not d], adaptive=adaptive
  )
  grad_fn = nnx.jit(nnx.grad(lambda m, x, y: cross_entropy(m(x), y)))
  for _ in range(3):
    grads = grad_fn(model, x, y)
    g = [np.asarray(v, np.float64) for v in jax.tree.leaves(grads)]
    apply_update(optimizer, model, grads)
    expected_decay = iter(
      ref_decay.step([v for v, d in zip(g, decayed) if d], lr)
    )
    expected_plain = iter(
      ref_plain.step([v for v, d in zip(g, decayed) if not d], lr)
    )
    for got, d in zip(param_leaves(model), decayed):
      want = next(expected_decay) if d else next(expected_plain)
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize('name', ['pnm', 'adapnm'])
def test_nnx_decay_mask_excludes_biases_and_norm_scales(name):
  """Zero gradients: only weight decay moves parameters, so kernels shrink by
  exactly (1 - lr * wd) per step and every 1-D leaf stays put."""
  lr, wd, steps = LR[name], 0.1, 4
  model = NnxMLP(nnx.Rngs(2))
  optimizer = nnx.Optimizer(
    model, make_tx(name, lr, weight_decay=wd, mask=kernels_only), wrt=nnx.Param
  )
  before = nnx.state(model, nnx.Param)
  before_leaves = [np.asarray(p) for p in jax.tree.leaves(before)]
  zeros = jax.tree.map(jnp.zeros_like, before)
  for _ in range(steps):
    apply_update(optimizer, model, zeros)
  after = param_leaves(model)
  paths = [
    jax.tree_util.keystr(p)
    for p, _ in jax.tree_util.tree_flatten_with_path(before)[0]
  ]
  shrink = (1 - lr * wd) ** steps
  for path, p0, p1 in zip(paths, before_leaves, after):
    if p0.ndim > 1:
      np.testing.assert_allclose(
        p1, p0.astype(np.float64) * shrink, rtol=1e-5, err_msg=path
      )
    else:
      np.testing.assert_array_equal(p1, p0, err_msg=path)
  assert any('bias' in p for p in paths) and any('scale' in p for p in paths)


# ---------------------------------------------------------------- linen


def linen_state(name, seed, **tx_kwargs):
  module = LinenMLP()
  params = module.init(jax.random.key(seed), jnp.zeros((1, 64)))['params']
  return train_state.TrainState.create(
    apply_fn=module.apply, params=params, tx=make_tx(name, **tx_kwargs)
  )


@pytest.mark.parametrize('name', ['pnm', 'adapnm'])
def test_linen_train_state_trains_on_digits(name, digits):
  x, y = digits
  state = linen_state(name, 0, weight_decay=1e-4)

  def loss_fn(params):
    return cross_entropy(state.apply_fn({'params': params}, x), y)

  @jax.jit
  def train_step(state):
    loss, grads = jax.value_and_grad(
      lambda p: cross_entropy(state.apply_fn({'params': p}, x), y)
    )(state.params)
    return state.apply_gradients(grads=grads), loss

  initial = float(loss_fn(state.params))
  for _ in range(80):
    state, _ = train_step(state)
  final = float(loss_fn(state.params))
  assert final < 0.3 * initial, (initial, final)
  assert int(state.step) == 80


@pytest.mark.parametrize('name', ['pnm', 'adapnm'])
def test_linen_decay_mask_excludes_biases_and_norm_scales(name):
  lr, wd, steps = LR[name], 0.1, 3
  state = linen_state(name, 3, lr=lr, weight_decay=wd, mask=kernels_only)
  before = jax.tree_util.tree_flatten_with_path(state.params)[0]
  zeros = jax.tree.map(jnp.zeros_like, state.params)
  for _ in range(steps):
    state = state.apply_gradients(grads=zeros)
  after = jax.tree.leaves(state.params)
  names = set()
  for (path, p0), p1 in zip(before, after):
    key = jax.tree_util.keystr(path)
    names.add(key.split("'")[-2])
    p0, p1 = np.asarray(p0), np.asarray(p1)
    if p0.ndim > 1:
      np.testing.assert_allclose(
        p1,
        p0.astype(np.float64) * (1 - lr * wd) ** steps,
        rtol=1e-5,
        err_msg=key,
      )
    else:
      np.testing.assert_array_equal(p1, p0, err_msg=key)
  assert names == {'kernel', 'bias', 'scale'}
