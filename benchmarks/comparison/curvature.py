"""The curvature of the training loss at the end of a run, for every seed.

:class:`HessianMeasure` estimates, for each seed's final parameters, the
trace of the Hessian of the training loss (Hutchinson's estimator with
Rademacher probes) and its eigenvalue of largest magnitude (power
iteration), on a fixed subset of the training set. Hessian-vector products
are forward-over-reverse (``jax.jvp`` of ``jax.grad``); the seeds are
``jax.vmap``-ed, the probes too.
"""

import dataclasses
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def hvp(loss, params, vector):
  """The Hessian of ``loss`` at ``params`` (flat arrays) times ``vector``."""
  return jax.jvp(jax.grad(loss), (params,), (vector,))[1]


def hutchinson_trace(loss, params, key, probes: int):
  """(estimate, standard error) of ``tr H``: the mean of ``z.Hz`` over
  ``probes`` Rademacher vectors ``z`` (each term is unbiased)."""
  z = jax.random.rademacher(key, (probes, params.size), params.dtype)
  terms = jax.vmap(lambda v: v @ hvp(loss, params, v))(z)
  se = jnp.std(terms, ddof=1) / jnp.sqrt(probes) if probes > 1 else jnp.nan
  return jnp.mean(terms), se


def top_eigenvalue(loss, params, key, iterations: int):
  """The Rayleigh quotient ``v.Hv`` after ``iterations`` power iterations
  from a random unit vector: the eigenvalue of largest magnitude."""
  v = jax.random.normal(key, params.shape, params.dtype)
  v = v / jnp.linalg.norm(v)

  def step(v, _):
    w = hvp(loss, params, v)
    return w / jnp.linalg.norm(w), None

  v, _ = jax.lax.scan(step, v, None, length=iterations)
  return v @ hvp(loss, params, v)


@dataclasses.dataclass(frozen=True)
class HessianMeasure:
  """Trace and top eigenvalue of the training loss's Hessian per seed.

  Attributes:
    examples: the first ``examples`` training examples define the loss.
    probes: Rademacher probes of Hutchinson's estimator.
    iterations: power iterations.
  """

  examples: int = 1000
  probes: int = 10
  iterations: int = 20

  def describe(self) -> dict:
    return {'hessian': dataclasses.asdict(self)}

  def __call__(self, trainer, state, seeds, history) -> dict:
    params, rest, _ = state
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 7))(
      jnp.asarray(seeds)
    )
    values = jax.device_get(self._program(trainer)(params, rest, keys))
    out = {}
    for k, v in values.items():
      v = np.asarray(v, np.float64)
      out[k] = [
        None if d is not None or not np.isfinite(x) else float(x)
        for x, d in zip(v, history.diverged_at)
      ]
    return out

  def _program(self, trainer):
    """The compiled measure for ``trainer``'s model and data (one per
    trainer and measure, so every configuration reuses it)."""
    programs = _PROGRAMS.setdefault(trainer, {})
    if self not in programs:
      programs[self] = self._build(trainer)
    return programs[self]

  def _build(self, trainer):
    x, y = (a[: self.examples] for a in trainer._train_arrays)

    def one_seed(params, rest, key):
      flat, unravel = ravel_pytree(params)
      loss = lambda p: trainer._loss(unravel(p), rest, x, y)[0]
      k_trace, k_power = jax.random.split(key)
      trace, se = hutchinson_trace(loss, flat, k_trace, self.probes)
      top = top_eigenvalue(loss, flat, k_power, self.iterations)
      return {'hessian_trace': trace, 'trace_se': se, 'top_eigenvalue': top}

    return jax.jit(jax.vmap(one_seed))


_PROGRAMS = weakref.WeakKeyDictionary()
