"""A small MLP regression problem shared by the multi-device checks.

Everything here is plain host data and pure functions, so the same problem
runs on one device (the reference), under ``pmap``, under ``jit`` with
shardings and across processes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pnm_optax

IN, HIDDEN, OUT = 16, 32, 8
GLOBAL_BATCH = 32
STEPS = 6  # even, so both momentum slots are written three times

# Optimizers under test: learning rates large enough that parameters move.
OPTIMIZERS = {
  'pnm': lambda: pnm_optax.pnm(0.05, b0=1.0, weight_decay=1e-3),
  'adapnm': lambda: pnm_optax.adapnm(1e-2, b0=1.0, weight_decay=1e-3),
}


def init_params(seed: int = 0) -> dict:
  """float32 MLP parameters as NumPy arrays."""
  rng = np.random.default_rng(seed)
  return {
    'w1': (rng.normal(size=(IN, HIDDEN)) / np.sqrt(IN)).astype(np.float32),
    'b1': (0.1 * rng.normal(size=(HIDDEN,))).astype(np.float32),
    'w2': (rng.normal(size=(HIDDEN, OUT)) / np.sqrt(HIDDEN)).astype(np.float32),
    'b2': (0.1 * rng.normal(size=(OUT,))).astype(np.float32),
  }


def batches(seed: int = 1, steps: int = STEPS, batch: int = GLOBAL_BATCH):
  """``steps`` global batches ``(x, y)`` of a noisy random teacher."""
  rng = np.random.default_rng(seed)
  teacher = rng.normal(size=(IN, OUT)).astype(np.float32)
  xs = rng.normal(size=(steps, batch, IN)).astype(np.float32)
  ys = np.tanh(xs @ teacher) + 0.1 * rng.normal(size=(steps, batch, OUT))
  return xs, ys.astype(np.float32)


def loss_fn(params, x, y):
  """Mean squared error; a mean over the batch, so shard means average."""
  hidden = jnp.tanh(x @ params['w1'] + params['b1'])
  pred = hidden @ params['w2'] + params['b2']
  return jnp.mean((pred - y) ** 2)


def train_step_fn(opt: optax.GradientTransformation):
  """Un-jitted ``(params, state, x, y) -> (params, state, loss)``."""

  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  return step


def single_device_run(opt: optax.GradientTransformation, params, xs, ys):
  """Reference: plain ``jit`` on one device over the whole global batch.

  Returns the parameters after every step (NumPy) and the final state.
  """
  device = jax.devices()[0]
  params = jax.device_put(params, device)
  state = opt.init(params)
  step = jax.jit(train_step_fn(opt))
  trajectory = []
  for x, y in zip(xs, ys):
    params, state, _ = step(params, state, x, y)
    trajectory.append(jax.tree.map(np.asarray, params))
  return trajectory, jax.tree.map(np.asarray, state)
