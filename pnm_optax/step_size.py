r"""Learning rates that give PNM the mean step of another optimizer.

The PN direction of :func:`pnm_optax.scale_by_pnm` is
:math:`u_t = ((1 + \beta_0) m_t - \beta_0 m_{t-1}) / n(\beta_0)` with the
noise norm :math:`n(\beta_0) = \sqrt{(1 + \beta_0)^2 + \beta_0^2}`. Its two
buffers average disjoint gradients (odd and even steps), so for gradients of
mean :math:`\bar g` the direction has mean :math:`\bar g / n(\beta_0)` in
steady state, and the noise variance of one buffer (an EMA with decay
:math:`\beta_1^2`). Per step, changing :math:`\beta_0` at a fixed learning
rate therefore changes two things at once: the mean step (by :math:`1/n`)
and the noise-to-signal ratio (by :math:`n`). Scaling the learning rate by
:math:`n(\beta_0)` keeps the mean step and changes only the per-step noise;
these helpers give that learning rate.

Over many steps the extra noise cancels: it is anti-correlated from one step
to the next (lag-1 correlation
:math:`-(1 + \beta_0)\beta_0(1 + \beta_1^2)/n^2`, -0.72 at
:math:`\beta_0 = 1, \beta_1 = 0.9`), and

.. math::

  \sum_{t=1}^{T} u_t = \frac{1}{n}\Big(\sum_{t=1}^{T} m_t
    + \beta_0 (m_T - m_0)\Big),

so at the matched learning rate :math:`\eta_0 n(\beta_0)` PNM moves by
:math:`\eta_0 \sum_t m_t` (what :math:`\beta_0 = 0` moves, for the same
gradients) plus the bounded :math:`\eta_0 \beta_0 m_T`. Where gradients do
not depend on the parameters, :math:`\beta_0` changes nothing that lasts;
it acts through the curvature of the loss, which sees the gradients at
points jittered by :math:`\eta_0 \beta_0 m_t` (docs/noise.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pnm_optax import _checks


def _sqrt(x):
  return jnp.sqrt(x) if isinstance(x, jax.Array) else np.sqrt(x)


def noise_norm(b0: jax.typing.ArrayLike) -> jax.typing.ArrayLike:
  r"""The PN normaliser :math:`n(\beta_0) = \sqrt{(1 + \beta_0)^2 + \beta_0^2}`.

  :math:`n(0) = 1`, :math:`n(1) = \sqrt 5 \approx 2.236`,
  :math:`n(2) = \sqrt{13} \approx 3.606`.

  Args:
    b0: positive-negative coefficient :math:`\beta_0 \geq 0` (finite).

  Returns:
    :math:`n(\beta_0)`, with the type and shape of ``b0``.

  Examples:
    >>> import pnm_optax
    >>> print(f'{pnm_optax.noise_norm(1.0):.4f}')
    2.2361
  """
  _checks.check_nonnegative('b0', b0, finite=True)
  return _sqrt((1 + b0) ** 2 + b0**2)


def b0_matched_learning_rate(
  learning_rate: jax.typing.ArrayLike,
  b0: jax.typing.ArrayLike,
  reference_b0: jax.typing.ArrayLike = 0.0,
) -> jax.typing.ArrayLike:
  r"""The learning rate at ``b0`` whose mean step equals ``learning_rate``'s
  at ``reference_b0``.

  .. math::

    \eta(\beta_0) = \eta_{ref} \, \frac{n(\beta_0)}{n(\beta_{0,ref})}

  With the default ``reference_b0=0`` (plain EMA momentum with decay
  :math:`\beta_1^2`), a sweep over ``b0`` at these learning rates keeps the
  mean step and changes only the per-step noise (its variance relative to
  the mean step grows by :math:`n(\beta_0)^2`). Summed over steps, the
  trajectory is that of ``reference_b0=0`` plus the bounded term
  :math:`\eta_{ref} \beta_0 m_T` (see the module docstring): the spread of
  the displacement after many steps is the same. The same scaling holds for
  :func:`pnm_optax.adapnm` at a fixed preconditioner.

  Args:
    learning_rate: learning rate at ``reference_b0`` (>= 0, finite).
    b0: the positive-negative coefficient to run at (>= 0, finite).
    reference_b0: the coefficient ``learning_rate`` was chosen for.

  Returns:
    The learning rate for ``b0``.

  Examples:
    >>> import pnm_optax
    >>> for b0 in (0.0, 1.0, 2.0):
    ...   print(f'{pnm_optax.b0_matched_learning_rate(0.1, b0):.4f}')
    0.1000
    0.2236
    0.3606
  """
  _checks.check_nonnegative('learning_rate', learning_rate, finite=True)
  _checks.check_nonnegative('reference_b0', reference_b0, finite=True)
  return learning_rate * noise_norm(b0) / noise_norm(reference_b0)


def sgdm_equivalent_learning_rate(
  sgd_learning_rate: jax.typing.ArrayLike,
  b0: jax.typing.ArrayLike = 1.0,
  momentum: jax.typing.ArrayLike = 0.9,
) -> jax.typing.ArrayLike:
  r"""The PNM learning rate whose mean step equals ``optax.sgd``'s.

  ``optax.sgd(lr, momentum)`` accumulates gradients without dampening, so its
  mean step is :math:`\eta_{sgd} \bar g / (1 - \mu)`; PNM's is
  :math:`\eta \bar g / n(\beta_0)`. Equal mean steps need

  .. math::

    \eta = \eta_{sgd} \, \frac{n(\beta_0)}{1 - \mu}

  (22.4x at :math:`\mu = 0.9, \beta_0 = 1`; the paper's CIFAR runs use PNM at
  10x SGD-M's learning rate, i.e. a mean step 0.45x SGD-M's).

  Per step, the noise-to-signal ratio (std over mean of the step, for
  i.i.d. gradients) of PNM with :math:`\beta_1 = \mu` is

  .. math::

    n(\beta_0) \, \frac{1 + \mu}{\sqrt{1 + \mu^2}}

  times SGD-M's, whatever the learning rates: 1.41x at :math:`\beta_0 = 0`
  (each PNM buffer decays with :math:`\mu^2` and sees every other gradient,
  so it averages fewer gradients than SGD-M's one buffer), 3.16x at
  :math:`\beta_0 = 1`, 5.09x at 2, for :math:`\mu = 0.9`. Summed over many
  steps at equal mean steps, both move the same: the displacement after 400
  steps has a standard deviation within 0.7% of SGD-M's for
  :math:`\beta_0 \leq 3`.

  Args:
    sgd_learning_rate: learning rate of ``optax.sgd`` (>= 0, finite).
    b0: PNM's positive-negative coefficient (>= 0, finite).
    momentum: ``optax.sgd``'s momentum :math:`\mu` in [0, 1) (not Nesterov).

  Returns:
    PNM's learning rate.

  Examples:
    >>> import pnm_optax
    >>> print(f'{pnm_optax.sgdm_equivalent_learning_rate(0.1):.3f}')
    2.236
  """
  _checks.check_nonnegative('sgd_learning_rate', sgd_learning_rate, finite=True)
  _checks.check_unit_interval('momentum', momentum)
  return sgd_learning_rate * noise_norm(b0) / (1 - momentum)
