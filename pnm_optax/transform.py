"""Positive-Negative Momentum gradient transformations.

Both transforms keep two momentum buffers in fixed slots: ``mu_odd`` is
written on odd steps and ``mu_even`` on even steps. Each step selects its slot
with ``jnp.where`` on the step parity, leaf by leaf, so the state keeps one
structure and every buffer keeps its own slot (aliasing cleanly under buffer
donation); returning the pair swapped would force XLA to copy both buffers
every step (see ``benchmarks/step_time.py``).
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from pnm_optax import _checks


class ScaleByPNMState(NamedTuple):
  """State of :func:`scale_by_pnm`.

  Attributes:
    count: number of steps taken so far (int32 scalar).
    mu_odd: momentum buffer written on odd steps ``t = 1, 3, 5, ...``.
    mu_even: momentum buffer written on even steps ``t = 2, 4, 6, ...``.
  """

  count: jax.Array
  mu_odd: optax.Updates
  mu_even: optax.Updates


class ScaleByAdaPNMState(NamedTuple):
  """State of :func:`scale_by_adapnm`.

  Attributes:
    count: number of steps taken so far (int32 scalar).
    mu_odd: momentum buffer written on odd steps.
    mu_even: momentum buffer written on even steps.
    nu: EMA of squared gradient magnitudes (real dtype).
    nu_max: running maximum of ``nu`` with ``amsgrad=True``, else ``None``.
  """

  count: jax.Array
  mu_odd: optax.Updates
  mu_even: optax.Updates
  nu: optax.Updates
  nu_max: Optional[optax.Updates]


def _compute_dtype(*dtypes) -> jnp.dtype:
  """At least float32, so half-precision buffers do not lose the EMA."""
  return jnp.result_type(jnp.float32, *dtypes)


def _real_dtype(dtype) -> jnp.dtype:
  return jnp.finfo(dtype).dtype


def _zeros(params, dtype=None, real=False):
  def zeros(p):
    d = p.dtype if dtype is None else dtype
    return jnp.zeros_like(p, dtype=_real_dtype(d) if real else d)
  return jax.tree.map(zeros, params)


def _flatten_matching(name: str, updates, state_tree):
  """Flattens ``updates`` and ``state_tree``; raises if they do not match."""
  paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(updates)
  state_leaves, state_def = jax.tree.flatten(state_tree)
  if treedef != state_def:
    raise ValueError(
        f'{name}: the updates tree does not match the optimizer state.\n'
        f'  updates: {treedef}\n  state:   {state_def}')
  for (path, g), s in zip(paths_leaves, state_leaves):
    if jnp.shape(g) != jnp.shape(s):
      raise ValueError(
          f'{name}: updates leaf {jax.tree_util.keystr(path)} has shape '
          f'{jnp.shape(g)} but its optimizer state has shape {jnp.shape(s)}.')
  return [g for _, g in paths_leaves], treedef


def _pn_coefficients(b0):
  """``(1 + b0) / n`` and ``b0 / n`` with ``n = sqrt((1 + b0)^2 + b0^2)``."""
  inv_norm = 1 / jnp.sqrt((1 + b0) ** 2 + b0 ** 2)
  return (1 + b0) * inv_norm, b0 * inv_norm


def _pn_step(g, m_odd, m_even, odd, beta, pos_coef, neg_coef):
  """One PNM step on a leaf, in the compute dtype.

  Returns the PN direction and both slots (the untouched one unchanged). The
  two ``where`` selections per slot are written so XLA fuses the whole step
  into one pass; rewriting them as "select, update, scatter back" makes the
  CPU backend materialise intermediates (5x slower).
  """
  dtype = _compute_dtype(g.dtype, m_odd.dtype)
  real = _real_dtype(dtype)
  beta = jnp.asarray(beta, real)
  g, a, b = g.astype(dtype), m_odd.astype(dtype), m_even.astype(dtype)
  a = jnp.where(odd, beta * a + (1 - beta) * g, a)
  b = jnp.where(odd, b, beta * b + (1 - beta) * g)
  pos = jnp.where(odd, a, b)
  neg = jnp.where(odd, b, a)
  direction = (jnp.asarray(pos_coef, real) * pos
               - jnp.asarray(neg_coef, real) * neg)
  return direction, a.astype(m_odd.dtype), b.astype(m_even.dtype)


def _b0_at(b0, count):
  return b0(count) if callable(b0) else b0


def scale_by_pnm(
    b1: jax.typing.ArrayLike = 0.9,
    b0: optax.ScalarOrSchedule = 1.0,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
) -> optax.GradientTransformation:
  r"""Rescales updates by stochastic Positive-Negative Momentum (PNM).

  Two momentum buffers alternate; step :math:`t = 1, 2, \dots` updates only
  the buffer of its parity (the "positive" one) and combines it with the
  other ("negative") buffer:

  .. math::

    m_t &= \beta_1^2 m_{t-2} + (1 - \beta_1^2) g_t,
        \qquad m_{-1} = m_0 = 0 \\
    u_t &= \frac{(1 + \beta_0) m_t - \beta_0 m_{t-1}}
               {\sqrt{(1 + \beta_0)^2 + \beta_0^2}}

  The buffers average disjoint (odd/even) gradients, so they are independent:
  the normalisation keeps the noise variance of one EMA buffer while the mean
  direction shrinks by :math:`1/\sqrt{(1 + \beta_0)^2 + \beta_0^2}`, i.e. the
  noise-to-signal ratio grows with :math:`\beta_0`, the knob that manipulates
  stochastic gradient noise. :math:`\beta_0 = 0` is an EMA momentum with
  decay :math:`\beta_1^2`. Multiply by ``-learning_rate``
  (e.g. with :func:`optax.scale_by_learning_rate`) to get the parameter step.

  Args:
    b1: momentum coefficient :math:`\beta_1` in [0, 1); each buffer decays
      with :math:`\beta_1^2` because it is written every other step.
    b0: positive-negative coefficient :math:`\beta_0 \geq 0`, or a schedule
      ``step -> b0`` (evaluated at the 0-based step count) to anneal the noise.
    mu_dtype: dtype of the momentum buffers; ``None`` keeps each parameter's
      dtype. Arithmetic runs in at least float32 either way.

  Returns:
    A :class:`optax.GradientTransformation` with state
    :class:`ScaleByPNMState`.

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    ICML 2021.
  """
  _checks.check_unit_interval('b1', b1)
  _checks.check_nonnegative('b0', b0)
  mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

  def init_fn(params):
    return ScaleByPNMState(
        count=jnp.zeros([], jnp.int32),
        mu_odd=_zeros(params, mu_dtype),
        mu_even=_zeros(params, mu_dtype))

  def update_fn(updates, state, params=None):
    del params
    grads, treedef = _flatten_matching('scale_by_pnm', updates, state.mu_odd)
    odd = state.count % 2 == 0  # this step is t = count + 1
    pos_coef, neg_coef = _pn_coefficients(_b0_at(b0, state.count))
    out = [
        _pn_step(g, a, b, odd, b1 ** 2, pos_coef, neg_coef)
        for g, a, b in zip(grads, jax.tree.leaves(state.mu_odd),
                           jax.tree.leaves(state.mu_even))
    ]
    new_updates = [d.astype(g.dtype) for (d, _, _), g in zip(out, grads)]
    unflatten = lambda xs: jax.tree.unflatten(treedef, xs)
    return unflatten(new_updates), ScaleByPNMState(
        count=optax.safe_increment(state.count),
        mu_odd=unflatten([a for _, a, _ in out]),
        mu_even=unflatten([b for _, _, b in out]))

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_adapnm(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    b0: optax.ScalarOrSchedule = 1.0,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    amsgrad: bool = True,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
) -> optax.GradientTransformation:
  r"""Rescales updates by AdaPNM: PNM with Adam's (AMSGrad) preconditioner.

  With :math:`u_t` the PN direction of :func:`scale_by_pnm`:

  .. math::

    v_t &= \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2 \\
    \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(amsgrad)}
        \quad \text{else} \quad \hat v_t = v_t \\
    \text{update}_t &= \frac{1}{1 - \beta_1^t} \cdot
        \frac{u_t}{\sqrt{\hat v_t / (1 - \beta_2^t) + \epsilon_{root}}
        + \epsilon}

  As in the authors' reference code, the first moment is bias-corrected with
  :math:`1 - \beta_1^t` although each buffer's EMA decays with
  :math:`\beta_1^2` every other step (the paper's typeset algorithm differs;
  the code is the reference semantics).

  Args:
    b1: momentum coefficient in [0, 1).
    b2: second-moment decay in [0, 1).
    b0: positive-negative coefficient >= 0, or a schedule of the step count.
    eps: added to the denominator outside the square root (>= 0).
    eps_root: added inside the square root (>= 0), as in :func:`optax.adam`.
    amsgrad: use the running maximum of the second moment (reference default).
    mu_dtype: dtype of the momentum buffers; ``None`` keeps the parameters'.
      The second moment uses the parameters' real dtype.

  Returns:
    A :class:`optax.GradientTransformation` with state
    :class:`ScaleByAdaPNMState`.

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    ICML 2021.
  """
  _checks.check_unit_interval('b1', b1)
  _checks.check_unit_interval('b2', b2)
  _checks.check_nonnegative('b0', b0)
  _checks.check_nonnegative('eps', eps)
  _checks.check_nonnegative('eps_root', eps_root)
  mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

  def init_fn(params):
    return ScaleByAdaPNMState(
        count=jnp.zeros([], jnp.int32),
        mu_odd=_zeros(params, mu_dtype),
        mu_even=_zeros(params, mu_dtype),
        nu=_zeros(params, real=True),
        nu_max=_zeros(params, real=True) if amsgrad else None)

  def update_fn(updates, state, params=None):
    del params
    grads, treedef = _flatten_matching('scale_by_adapnm', updates, state.nu)
    count = optax.safe_increment(state.count)
    odd = state.count % 2 == 0
    pos_coef, neg_coef = _pn_coefficients(_b0_at(b0, state.count))
    nu_maxes = (jax.tree.leaves(state.nu_max) if amsgrad
                else [None] * len(grads))

    def leaf(g, a, b, v, v_max):
      direction, a, b = _pn_step(g, a, b, odd, b1 ** 2, pos_coef, neg_coef)
      real = _real_dtype(direction.dtype)
      t = count.astype(real)  # bias corrections in the leaf's precision
      bc2 = 1 - jnp.asarray(b2, real) ** t
      inv_bc1 = 1 / (1 - jnp.asarray(b1, real) ** t)
      g = g.astype(direction.dtype)
      sq = jnp.real(g * jnp.conj(g)) if jnp.iscomplexobj(g) else g * g
      v_new = jnp.asarray(b2, real) * v.astype(real) + (
          1 - jnp.asarray(b2, real)) * sq
      v_hat = v_new
      if v_max is not None:
        v_hat = jnp.maximum(v_max.astype(real), v_new)
        v_max = v_hat.astype(v_max.dtype)
      denom = (jnp.sqrt(v_hat + jnp.asarray(eps_root, real) * bc2)
               / jnp.sqrt(bc2) + jnp.asarray(eps, real))
      upd = direction / denom * inv_bc1
      return upd, a, b, v_new.astype(v.dtype), v_max

    out = [
        leaf(g, a, b, v, vm) for g, a, b, v, vm in zip(
            grads, jax.tree.leaves(state.mu_odd),
            jax.tree.leaves(state.mu_even), jax.tree.leaves(state.nu),
            nu_maxes)
    ]
    unflatten = lambda i: jax.tree.unflatten(treedef, [o[i] for o in out])
    new_updates = jax.tree.unflatten(
        treedef, [o[0].astype(g.dtype) for o, g in zip(out, grads)])
    return new_updates, ScaleByAdaPNMState(
        count=count,
        mu_odd=unflatten(1),
        mu_even=unflatten(2),
        nu=unflatten(3),
        nu_max=unflatten(4) if amsgrad else None)

  return optax.GradientTransformation(init_fn, update_fn)


__all__ = [
    'ScaleByPNMState', 'ScaleByAdaPNMState', 'scale_by_pnm', 'scale_by_adapnm'
]
