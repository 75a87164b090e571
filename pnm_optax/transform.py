"""Positive-Negative Momentum gradient transformations.

The update equations are written once, in the docstrings of the aliases
:func:`pnm_optax.pnm` and :func:`pnm_optax.adapnm`.

Both transforms keep the two momentum buffers in fixed slots: ``mu_odd`` is
written on odd steps and ``mu_even`` on even steps. Each step selects its
slot on the step parity, leaf by leaf, so the state keeps one structure and
every buffer keeps its own slot, which aliases cleanly under buffer donation;
returning the pair swapped would make XLA copy both buffers every step
(``benchmarks/speed/layouts.py`` times the alternatives). Everything that does not
depend on a leaf (parity, coefficients, bias corrections) is computed once
per step (see :func:`_pn_coefficients`), so the compiled step grows by only
a few instructions per leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pnm_optax import _checks

_INT32_MAX = jnp.iinfo(jnp.int32).max
# A b0 below -_B0_ROUNDING epsilons of the compute dtype (-7.6e-6 in float32)
# gives NaN updates: more negative than rounding a schedule's 0 can give.
_B0_ROUNDING = 64


class ScaleByPNMState(NamedTuple):
  """State of :func:`scale_by_pnm`.

  Attributes:
    count: number of steps taken (int32 scalar). Past ``2**31 - 1`` it
      alternates between its last two values, so the step parity (and with it
      the slot written) keeps alternating.
    mu_odd: momentum buffer written on odd steps ``t = 1, 3, 5, ...``.
    mu_even: momentum buffer written on even steps ``t = 2, 4, 6, ...``.
  """

  # A NamedTuple field named like tuple.count, as in optax's states.
  count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
  mu_odd: optax.Updates
  mu_even: optax.Updates


class ScaleByAdaPNMState(NamedTuple):
  """State of :func:`scale_by_adapnm` with ``amsgrad=True`` (the default).

  Attributes:
    count: number of steps taken (int32 scalar), as in
      :class:`ScaleByPNMState`.
    mu_odd: momentum buffer written on odd steps.
    mu_even: momentum buffer written on even steps.
    nu: EMA of squared gradient magnitudes (a real dtype).
    nu_max: running maximum of ``nu``.
  """

  count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
  mu_odd: optax.Updates
  mu_even: optax.Updates
  nu: optax.Updates
  nu_max: optax.Updates


class ScaleByAdaPNMNoAmsgradState(NamedTuple):
  """State of :func:`scale_by_adapnm` with ``amsgrad=False``.

  As :class:`ScaleByAdaPNMState` without ``nu_max`` (as optax keeps
  ``ScaleByAdamState`` and ``ScaleByAmsgradState`` apart).

  Attributes:
    count: number of steps taken (int32 scalar), as in
      :class:`ScaleByPNMState`.
    mu_odd: momentum buffer written on odd steps.
    mu_even: momentum buffer written on even steps.
    nu: EMA of squared gradient magnitudes (a real dtype).
  """

  count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
  mu_odd: optax.Updates
  mu_even: optax.Updates
  nu: optax.Updates


def _next_count(count: jax.Array) -> jax.Array:
  """``count + 1``; at int32's maximum, one less instead.

  Once saturated the count alternates between ``2**31 - 2`` and
  ``2**31 - 1``, so its parity keeps alternating (``optax.safe_increment``
  would freeze it and write one slot forever).
  """
  return jnp.where(count == _INT32_MAX, count - 1, count + 1)


def _compute_dtype(*dtypes) -> jnp.dtype:
  """At least float32, so half-precision buffers do not lose the EMA."""
  return jnp.result_type(jnp.float32, *dtypes)


def _real(dtype) -> jnp.dtype:
  return jnp.finfo(dtype).dtype


def _compute_dtypes(params, *buffer_dtypes) -> set:
  """The real dtypes the step computes in for these parameters: each leaf's
  dtype with the buffers' (``None`` for a buffer that keeps the leaf's),
  at least float32."""
  return {
    _real(_compute_dtype(dtype, *(d or dtype for d in buffer_dtypes)))
    for dtype in map(jnp.result_type, jax.tree.leaves(params))
  }


def _per_dtype(fn: Callable[[jnp.dtype], tuple]) -> Callable:
  """Memoises ``fn(real dtype)`` for one trace: scalars computed once."""
  cache = {}

  def get(dtype):
    dtype = _real(dtype)
    if dtype not in cache:
      cache[dtype] = fn(dtype)
    return cache[dtype]

  return get


def _unzip(updates, out, n: int) -> tuple:
  """Splits ``out``, a tree of ``n``-tuples with ``updates``' structure, into
  ``n`` trees. Unlike ``jax.tree.transpose`` it accepts trees without leaves
  (``{}``, ``None``, ``optax.MaskedNode``), e.g. a frozen group of
  ``optax.multi_transform``. Python only: the compiled step is unchanged."""
  treedef = jax.tree.structure(updates)
  rows = treedef.flatten_up_to(out)
  return tuple(treedef.unflatten([row[i] for row in rows]) for i in range(n))


class _PNCoefficients(NamedTuple):
  """Per-step scalars of the PN step, in one dtype.

  Attributes:
    odd: whether step ``t = count + 1`` is odd (writes ``mu_odd``).
    beta: the buffers' decay ``b1**2``.
    one_minus_beta: ``1 - b1**2``.
    coef_odd: ``mu_odd``'s coefficient in the direction: ``pos`` on odd
      steps, ``-neg`` on even ones.
    coef_even: ``mu_even``'s: ``-neg`` on odd steps, ``pos`` on even ones.
  """

  odd: jax.Array
  beta: jax.Array
  one_minus_beta: jax.Array
  coef_odd: jax.Array
  coef_even: jax.Array


def _pn_coefficients(count, b1, b0, dtype, scale=1.0) -> _PNCoefficients:
  """The scalars of step ``t = count + 1``, the direction times ``scale``.

  ``pos = (1 + b0) / n`` and ``neg = b0 / n`` with
  ``n = sqrt((1 + b0)^2 + b0^2)``.
  """
  _checks.check_below_one_in('b1', b1, dtype)
  b0 = jnp.asarray(b0(count) if callable(b0) else b0, dtype)
  beta = jnp.asarray(b1, dtype) ** 2
  # A b0 (a schedule's value, or a traced one) below 0 or not finite makes
  # the step NaN, under jax.jit and op by op alike, so that
  # optax.apply_if_finite can skip it (b0 = inf would give NaN anyway).
  # Rounding may take a schedule that ends at 0 slightly below it (optax's
  # linear_schedule gives -4.8e-8 under jit): that is _B0_ROUNDING.
  b0_rounding = _B0_ROUNDING * jnp.finfo(dtype).eps
  inv_norm = jnp.where(
    b0 >= -b0_rounding, scale / jnp.sqrt((1 + b0) ** 2 + b0**2), jnp.nan
  )
  pos, neg = (1 + b0) * inv_norm, b0 * inv_norm
  # The parity-dependent scalars are exact sums weighted by the one-hot
  # parity (one term times 1, the other times 0). XLA computes such a
  # reduction once per step; selects on the parity would be re-derived
  # inside each of every leaf's fused kernels, and compile time would grow
  # about twice as fast with the number of leaves.
  is_even = jnp.bitwise_and(count, 1).astype(dtype)  # count >= 0
  weights = jnp.stack([1 - is_even, is_even])

  def pick(odd_step, even_step):
    return jnp.sum(weights * jnp.stack([odd_step, even_step]))

  return _PNCoefficients(
    odd=pick(1, 0).astype(bool),
    beta=beta,
    one_minus_beta=1 - beta,
    coef_odd=pick(pos, -neg),
    coef_even=pick(-neg, pos),
  )


def _pn_leaf(g, mu_odd, mu_even, coefficients, *wider):
  """One PN step on a leaf: ``(direction, mu_odd, mu_even)``.

  Runs in at least float32, widened to the dtypes ``wider`` (e.g. a second
  moment's), and stores each buffer in its own dtype. Each slot
  is ``select(odd, updated, unchanged)``, which leaves the untouched slot
  bitwise unchanged and, with the parity the same for every element, lets
  the compiled loop skip its arithmetic (``keep * mu + gain * g`` with
  per-step scalars costs 40% more time per step on CPU).
  """
  g = jnp.asarray(g)  # a Python number is a leaf too
  dtype = _compute_dtype(g.dtype, mu_odd.dtype, *wider)
  c = coefficients(dtype)
  g, a, b = g.astype(dtype), mu_odd.astype(dtype), mu_even.astype(dtype)
  a = jax.lax.select_n(c.odd, a, c.beta * a + c.one_minus_beta * g)
  b = jax.lax.select_n(c.odd, c.beta * b + c.one_minus_beta * g, b)
  direction = c.coef_odd * a + c.coef_even * b
  return direction, a.astype(mu_odd.dtype), b.astype(mu_even.dtype)


def _nu_dtype_for(param_dtype, nu_dtype):
  """The second moment's dtype: ``nu_dtype``, else the parameter's real dtype
  widened to float32 for float16 (whose range loses ``(1 - b2) g^2``)."""
  if nu_dtype is not None:
    return nu_dtype
  real = _real(jnp.result_type(param_dtype))
  return jnp.dtype(jnp.float32) if real == jnp.float16 else real


class _AdaPNMScalars(NamedTuple):
  """Per-step scalars of the AdaPNM step, in one dtype.

  Attributes:
    pn: the PN coefficients, with the bias corrections folded into the
      direction's scale (``sqrt(1 - b2**t) / (1 - b1**t)``).
    beta2: the second moment's decay ``b2``.
    one_minus_beta2: ``1 - b2``.
    eps_root_bc2: ``eps_root * (1 - b2**t)``, added to the second moment.
    eps_sqrt_bc2: ``eps * sqrt(1 - b2**t)``, added to its square root.
  """

  pn: _PNCoefficients
  beta2: jax.Array
  one_minus_beta2: jax.Array
  eps_root_bc2: jax.Array
  eps_sqrt_bc2: jax.Array


def scale_by_pnm(
  b1: jax.typing.ArrayLike = 0.9,
  b0: optax.ScalarOrSchedule = 1.0,
  mu_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformation:
  r"""Rescales updates by stochastic Positive-Negative Momentum.

  Gives the direction :math:`u_t` of :func:`pnm_optax.pnm` (see there for the
  equations); multiply by ``-learning_rate`` (e.g. with
  :func:`optax.scale_by_learning_rate`) for the parameter step.

  Args:
    b1: momentum coefficient :math:`\beta_1` in [0, 1), a scalar; each
      buffer decays with :math:`\beta_1^2` because it is written every other
      step.
    b0: positive-negative coefficient :math:`\beta_0 \geq 0` (finite), a
      scalar or a schedule ``count -> b0`` (evaluated at the 0-based step
      count) to anneal the noise. A schedule's value below 0 gives NaN
      directions (the buffers stay finite).
    mu_dtype: dtype of the momentum buffers; ``None`` keeps each parameter's
      dtype. Arithmetic runs in at least float32 either way. Complex
      parameters need a complex ``mu_dtype`` (or ``None``).

  Returns:
    A :class:`optax.GradientTransformation` with state
    :class:`ScaleByPNMState`. The direction has each gradient's dtype; trees
    without leaves (``{}``, ``None``, ``optax.MaskedNode``) pass through.

  Examples:
    >>> import jax.numpy as jnp, pnm_optax
    >>> tx = pnm_optax.scale_by_pnm(b1=0.9, b0=1.0)
    >>> state = tx.init(jnp.zeros(2))
    >>> direction, state = tx.update(jnp.ones(2), state)
    >>> print(f'{direction[0]:.6f}')  # (1 + b0)(1 - b1^2) / sqrt(5) at t = 1
    0.169941

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    ICML 2021.
  """
  _checks.check_scalar('b1', b1)
  _checks.check_scalar('b0', b0, schedule=True)
  _checks.check_unit_interval('b1', b1)
  _checks.check_nonnegative('b0', b0, finite=True)
  mu_dtype = _checks.canonical_dtype('mu_dtype', mu_dtype)

  def init_fn(params):
    _checks.check_params('scale_by_pnm', params)
    _checks.check_mu_dtype('scale_by_pnm', params, mu_dtype)
    _checks.check_rounding(_compute_dtypes(params, mu_dtype), b1=b1)
    return ScaleByPNMState(
      count=jnp.zeros([], jnp.int32),
      mu_odd=optax.tree.zeros_like(params, dtype=mu_dtype),
      mu_even=optax.tree.zeros_like(params, dtype=mu_dtype),
    )

  def update_fn(updates, state, params=None):
    del params
    _checks.check_matches('scale_by_pnm', updates, state.mu_odd)
    coefficients = _per_dtype(
      lambda dtype: _pn_coefficients(state.count, b1, b0, dtype)
    )
    out = jax.tree.map(
      lambda g, a, b: _pn_leaf(g, a, b, coefficients),
      updates,
      state.mu_odd,
      state.mu_even,
    )
    direction, mu_odd, mu_even = _unzip(updates, out, 3)
    direction = optax.tree.cast_like(direction, updates)
    return direction, ScaleByPNMState(
      count=_next_count(state.count), mu_odd=mu_odd, mu_even=mu_even
    )

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_adapnm(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  b0: optax.ScalarOrSchedule = 1.0,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  amsgrad: bool = True,
  mu_dtype: jax.typing.DTypeLike | None = None,
  nu_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformation:
  r"""Rescales updates by AdaPNM: the PN direction with Adam's preconditioner.

  Gives the update of :func:`pnm_optax.adapnm` before weight decay and the
  learning rate (see there for the equations).

  Args:
    b1: momentum coefficient in [0, 1), a scalar.
    b2: second-moment decay in [0, 1), a scalar.
    b0: positive-negative coefficient >= 0 (finite), a scalar or a schedule
      of the step count.
    eps: added to the denominator outside the square root (a scalar >= 0).
    eps_root: added inside the square root (a scalar >= 0), as in
      :func:`optax.adam`.
    amsgrad: use the running maximum of the second moment (the reference
      default).
    mu_dtype: dtype of the momentum buffers; ``None`` keeps the parameters'.
      Complex parameters need a complex ``mu_dtype`` (or ``None``).
    nu_dtype: real dtype of the second moments ``nu`` and ``nu_max``, which
      also widens the arithmetic (as ``mu_dtype`` does); ``None`` keeps the parameters' real dtype, except float16, which gets
      float32: in float16 ``(1 - b2) g^2`` underflows for gradients below
      about 1e-2 and the steps grow far too large. bfloat16 has float32's
      range and is kept.

  Returns:
    A :class:`optax.GradientTransformation` with state
    :class:`ScaleByAdaPNMState` (:class:`ScaleByAdaPNMNoAmsgradState` with
    ``amsgrad=False``). The update has each gradient's dtype.

  Examples:
    >>> import jax.numpy as jnp, pnm_optax
    >>> tx = pnm_optax.scale_by_adapnm()
    >>> state = tx.init(jnp.zeros(2, jnp.float16))
    >>> state.nu.dtype  # float16 parameters: float32 second moments
    dtype('float32')

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    ICML 2021.
  """
  for name, value in (
    ('b1', b1),
    ('b2', b2),
    ('eps', eps),
    ('eps_root', eps_root),
  ):
    _checks.check_scalar(name, value)
  _checks.check_scalar('b0', b0, schedule=True)
  _checks.check_unit_interval('b1', b1)
  _checks.check_unit_interval('b2', b2)
  _checks.check_nonnegative('b0', b0, finite=True)
  _checks.check_nonnegative('eps', eps)
  _checks.check_nonnegative('eps_root', eps_root)
  mu_dtype = _checks.canonical_dtype('mu_dtype', mu_dtype)
  nu_dtype = _checks.canonical_dtype('nu_dtype', nu_dtype, real=True)
  eps_root_is_zero = _checks.is_zero(eps_root)

  def make_state(count, mu_odd, mu_even, nu, nu_max):
    if amsgrad:
      return ScaleByAdaPNMState(count, mu_odd, mu_even, nu, nu_max)
    return ScaleByAdaPNMNoAmsgradState(count, mu_odd, mu_even, nu)

  def init_fn(params):
    _checks.check_params('scale_by_adapnm', params)
    _checks.check_mu_dtype('scale_by_adapnm', params, mu_dtype)
    _checks.check_rounding(
      _compute_dtypes(params, mu_dtype, nu_dtype), b1=b1, b2=b2
    )
    nu = lambda: jax.tree.map(  # zeros_like keeps each leaf's sharding
      lambda p: jnp.zeros_like(p, _nu_dtype_for(p, nu_dtype)), params
    )
    return make_state(
      count=jnp.zeros([], jnp.int32),
      mu_odd=optax.tree.zeros_like(params, dtype=mu_dtype),
      mu_even=optax.tree.zeros_like(params, dtype=mu_dtype),
      nu=nu(),
      nu_max=nu() if amsgrad else None,
    )

  def update_fn(updates, state, params=None):
    del params
    _checks.check_matches('scale_by_adapnm', updates, state.nu)

    def scalars(dtype):
      """Per-step scalars. The bias corrections fold into the PN
      coefficients: ``u / (sqrt(v / bc2) + eps) / bc1`` equals
      ``u sqrt(bc2) / bc1 / (sqrt(v) + eps sqrt(bc2))``, two multiplications
      per leaf fewer."""
      _checks.check_below_one_in('b2', b2, dtype)
      t = state.count.astype(dtype) + 1  # step t, exact past int32 too
      beta2 = jnp.asarray(b2, dtype)
      bc2 = 1 - beta2**t
      scale = jnp.sqrt(bc2) / (1 - jnp.asarray(b1, dtype) ** t)
      return _AdaPNMScalars(
        pn=_pn_coefficients(state.count, b1, b0, dtype, scale),
        beta2=beta2,
        one_minus_beta2=1 - beta2,
        eps_root_bc2=jnp.asarray(eps_root, dtype) * bc2,
        eps_sqrt_bc2=jnp.asarray(eps, dtype) * jnp.sqrt(bc2),
      )

    scalars = _per_dtype(scalars)

    def leaf(g, mu_odd, mu_even, nu, nu_max=None):
      # The second moments widen the computation as the momentum's dtype
      # does (e.g. nu_dtype=jnp.float64 under float32 parameters).
      scaled_direction, mu_odd, mu_even = _pn_leaf(
        g, mu_odd, mu_even, lambda dtype: scalars(dtype).pn, nu.dtype
      )
      dtype = scaled_direction.dtype
      s = scalars(dtype)
      real = _real(dtype)
      g = jnp.asarray(g).astype(dtype)
      sq = jnp.real(g * jnp.conj(g)) if jnp.iscomplexobj(g) else g * g
      nu_new = s.beta2 * nu.astype(real) + s.one_minus_beta2 * sq
      nu_hat = nu_new
      if nu_max is not None:
        nu_hat = jnp.maximum(nu_max.astype(real), nu_new)
        nu_max = nu_hat.astype(nu_max.dtype)
      if not eps_root_is_zero:  # skip `+ 0`, which XLA cannot fold here
        nu_hat = nu_hat + s.eps_root_bc2
      update = scaled_direction / (jnp.sqrt(nu_hat) + s.eps_sqrt_bc2)
      new = (update, mu_odd, mu_even, nu_new.astype(nu.dtype))
      return new + (nu_max,) if nu_max is not None else new

    buffers = (state.mu_odd, state.mu_even, state.nu)
    buffers += (state.nu_max,) if amsgrad else ()
    out = jax.tree.map(leaf, updates, *buffers)
    new_updates, mu_odd, mu_even, nu, *nu_max = _unzip(
      updates, out, 1 + len(buffers)
    )
    return optax.tree.cast_like(new_updates, updates), make_state(
      count=_next_count(state.count),
      mu_odd=mu_odd,
      mu_even=mu_even,
      nu=nu,
      nu_max=nu_max[0] if amsgrad else None,
    )

  return optax.GradientTransformation(init_fn, update_fn)


__all__ = [
  'ScaleByPNMState',
  'ScaleByAdaPNMState',
  'ScaleByAdaPNMNoAmsgradState',
  'scale_by_pnm',
  'scale_by_adapnm',
]
