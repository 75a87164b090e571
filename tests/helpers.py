"""Small shared pieces for the tests: paths, a relative error, data, masks."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = pathlib.Path(__file__).resolve().parents[1]

# Python source that makes every non-loopback socket connection fail, run
# first in processes that must work offline (notebooks, the docs build).
LOOPBACK_ONLY = """
import socket

def _loopback_only(connect):
    def guarded(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
                "127.0.0.1", "::1", "localhost"):
            raise OSError(f"network access is disabled in this test: {address}")
        return connect(self, address, *args)
    return guarded

socket.socket.connect = _loopback_only(socket.socket.connect)
socket.socket.connect_ex = _loopback_only(socket.socket.connect_ex)
"""


def interruptible(module: str, *args: str) -> list[str]:
  """The command line of ``python -m module *args``, in which SIGINT raises
  ``KeyboardInterrupt`` as Ctrl-C in a terminal does.

  A process started from a background job (``pytest &`` in a script, or
  nohup) inherits SIGINT ignored, and Python then leaves it ignored; the
  tests that interrupt a job need the terminal's behaviour wherever they
  run.
  """
  code = (
    'import runpy, signal; '
    'signal.signal(signal.SIGINT, signal.default_int_handler); '
    f'runpy.run_module({module!r}, run_name="__main__", alter_sys=True)'
  )
  return [sys.executable, '-c', code, *args]


def _flat(tree) -> np.ndarray:
  """All leaves of ``tree`` raveled into one float64 (or complex128) vector."""
  flat = np.concatenate(
    [np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)]
  )
  return flat.astype(np.complex128 if np.iscomplexobj(flat) else np.float64)


def rel_err(tree, ref_tree) -> float:
  """Relative L2 distance ``|tree - ref| / |ref|`` over all leaves.

  Computed in float64; where ``ref_tree`` is all zeros it is ``|tree|``, so
  exact zeros must be matched exactly.
  """
  x, ref = _flat(tree), _flat(ref_tree)
  if x.shape != ref.shape:
    raise ValueError(f'{x.size} values against {ref.size} in the reference')
  ref_norm = np.linalg.norm(ref)
  diff = np.linalg.norm(x - ref)
  return float(diff / ref_norm if ref_norm else diff)


def kernels_only(params):
  """Weight-decay mask: matrices (kernels) only; biases and norm scales are 1-D."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def digits(n: int | None = None):
  """scikit-learn's bundled 8x8 digits (no download): ``(x, y)`` as jax arrays.

  ``x`` is float32 in [0, 1] of shape ``(n, 64)``, ``y`` int32 labels; the
  first ``n`` images (all 1797 by default).
  """
  # Imported here: the core tests need only the package's own dependencies.
  from sklearn.datasets import load_digits

  bunch = load_digits()
  x = (bunch.data[:n] / 16.0).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(bunch.target[:n].astype(np.int32))


def monte_carlo(tx, scale, key, mu, sigma, samples, steps):
  """Runs ``tx`` on ``samples`` independent coordinates with gradients
  ``mu + sigma * N(0, 1)`` for ``steps`` steps (one compiled loop):
  ``(u_{T-2}, u_{T-1}, u_T, scale * D_T)`` per coordinate in float64, ``D_T``
  the sum of the updates."""

  def body(carry, k):
    state, last, total = carry
    grads = mu + sigma * jax.random.normal(k, (samples,))
    updates, state = tx.update(grads, state)
    return (state, (last[1], last[2], updates), total + updates), None

  zeros = jnp.zeros(samples)
  init = (tx.init(zeros), (zeros, zeros, zeros), zeros)
  keys = jax.random.split(key, steps)
  (_, last, total), _ = jax.jit(lambda: jax.lax.scan(body, init, keys))()
  return [np.asarray(x, np.float64) for x in last] + [
    scale * np.asarray(total, np.float64)
  ]


def final_distance_on_quadratic(tx, steps: int = 2000) -> float:
  """``|x|`` after ``steps`` of ``tx`` on ``f(x) = x^2 / 2`` from ``x = 1``
  (one compiled ``lax.scan``): below 1 where ``tx`` is stable there."""

  def step(carry, _):
    x, state = carry
    updates, state = tx.update(x, state, x)  # the gradient of f is x
    return (optax.apply_updates(x, updates), state), None

  x = jnp.ones(1)
  (x, _), _ = jax.jit(
    lambda: jax.lax.scan(step, (x, tx.init(x)), None, length=steps)
  )()
  return abs(float(x[0]))
