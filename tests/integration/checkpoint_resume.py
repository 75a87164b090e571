"""A deterministic NNX training run that checkpoints with Orbax and resumes.

Imported by ``test_checkpoint.py`` (the uninterrupted run and the save) and
run in a fresh process from the repository root (restore and continue)::

  python -m tests.integration.checkpoint_resume CKPT_DIR OUT.npz OPTIMIZER STOP_STEP

The script restores the checkpoint into an abstract state built from scratch,
writes the restored leaves (``restored_*``), trains up to ``STOP_STEP`` and
writes the final leaves (``final_*``) to ``OUT.npz``.
"""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

import pnm_optax
from tests import helpers

BATCH = 32
TOTAL_STEPS = 12


class Net(nnx.Module):
  """Linear - BatchNorm - ReLU - Linear: parameters plus batch statistics."""

  def __init__(self, rngs):
    self.fc1 = nnx.Linear(64, 32, rngs=rngs)
    self.bn = nnx.BatchNorm(32, momentum=0.9, rngs=rngs)
    self.fc2 = nnx.Linear(32, 10, rngs=rngs)

  def __call__(self, x, train):
    x = self.bn(self.fc1(x), use_running_average=not train)
    return self.fc2(jax.nn.relu(x))


def make_tx(name: str) -> optax.GradientTransformation:
  """Schedules on lr and b0 make the restored step count matter."""
  lr = optax.cosine_decay_schedule(0.5 if name == 'pnm' else 3e-3, TOTAL_STEPS)
  b0 = optax.linear_schedule(1.0, 0.5, TOTAL_STEPS)
  factory = pnm_optax.pnm if name == 'pnm' else pnm_optax.adapnm
  return factory(lr, b0=b0, weight_decay=1e-2)


def initial_state(name: str):
  """Returns ``(graphdef, state)`` with state a dict of pytrees."""
  graphdef, params, batch_stats = nnx.split(Net(nnx.Rngs(0)), nnx.Param, ...)
  state = {
    'params': params,
    'batch_stats': batch_stats,
    'opt_state': make_tx(name).init(params),
    'step': jnp.zeros([], jnp.int32),
  }
  return graphdef, state


@functools.cache
def make_train_step(graphdef, name: str):
  """One jitted step per optimizer, reused across calls in a process."""
  tx = make_tx(name)
  x_all, y_all = helpers.digits()

  @jax.jit
  def train_step(state):
    step = state['step']
    idx = jax.random.randint(
      jax.random.fold_in(jax.random.key(42), step), (BATCH,), 0, x_all.shape[0]
    )

    def loss_fn(model):
      logits = model(x_all[idx], train=True)
      return optax.softmax_cross_entropy_with_integer_labels(
        logits, y_all[idx]
      ).mean()

    # nnx.grad differentiates the Params and carries the BatchNorm
    # statistics the forward pass updates back into ``model``.
    model = nnx.merge(graphdef, state['params'], state['batch_stats'])
    grads = nnx.grad(loss_fn)(model)
    batch_stats = nnx.split(model, nnx.Param, ...)[2]
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    return {
      'params': optax.apply_updates(state['params'], updates),
      'batch_stats': batch_stats,
      'opt_state': opt_state,
      'step': step + 1,
    }

  return train_step


def train(graphdef, name: str, state, stop: int):
  train_step = make_train_step(graphdef, name)
  while int(state['step']) < stop:
    state = train_step(state)
  return state


def save(directory: str, state) -> None:
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory, state)
  checkpointer.wait_until_finished()
  checkpointer.close()


def restore(directory: str, name: str):
  """Restores into the structure of a freshly built state."""
  graphdef, fresh = initial_state(name)
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh
  )
  checkpointer = ocp.StandardCheckpointer()
  state = checkpointer.restore(directory, abstract)
  checkpointer.close()
  return graphdef, state


def leaves(state) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def main(argv: list[str]) -> None:
  ckpt_dir, out_path, name, stop = argv[1], argv[2], argv[3], int(argv[4])
  graphdef, state = restore(ckpt_dir, name)
  restored = leaves(state)
  final = leaves(train(graphdef, name, state, stop))
  np.savez(
    out_path,
    **{f'restored_{i}': x for i, x in enumerate(restored)},
    **{f'final_{i}': x for i, x in enumerate(final)},
  )


if __name__ == '__main__':
  main(sys.argv)
