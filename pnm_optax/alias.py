"""Optimizer aliases in the style of ``optax.adamw``."""

from typing import Any, Callable, Optional, Union

import jax
import optax

from pnm_optax import _checks
from pnm_optax.transform import scale_by_adapnm, scale_by_pnm

_WEIGHT_DECAY_MODES = ('decoupled', 'l2')
MaskOrFn = Optional[Union[Any, Callable[[optax.Params], Any]]]


def _with_weight_decay(
    scale: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule,
    weight_decay_mode: str,
    mask: MaskOrFn,
) -> optax.GradientTransformation:
  """Chains ``scale`` with weight decay and the learning rate."""
  _checks.check_nonnegative('learning_rate', learning_rate)
  _checks.check_nonnegative('weight_decay', weight_decay)
  _checks.check_choice('weight_decay_mode', weight_decay_mode,
                       _WEIGHT_DECAY_MODES)
  decay = optax.add_decayed_weights(weight_decay, mask)
  steps = (scale, decay) if weight_decay_mode == 'decoupled' else (decay, scale)
  return optax.chain(*steps, optax.scale_by_learning_rate(learning_rate))


def pnm(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b0: optax.ScalarOrSchedule = 1.0,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mode: str = 'decoupled',
    mask: MaskOrFn = None,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
) -> optax.GradientTransformation:
  r"""Stochastic Positive-Negative Momentum (PNM) with weight decay.

  With :math:`u_t` the PN direction of :func:`pnm_optax.scale_by_pnm` and
  :math:`\eta_t` the learning rate, decoupled weight decay (the reference
  default) gives

  .. math::

    p_t = p_{t-1} - \eta_t (u_t + \lambda p_{t-1})
        = p_{t-1} (1 - \eta_t \lambda) - \eta_t u_t,

  and ``weight_decay_mode='l2'`` adds :math:`\lambda p_{t-1}` to the gradient
  before the momentum update instead.

  Examples:
    >>> import jax.numpy as jnp, optax, pnm_optax
    >>> opt = pnm_optax.pnm(optax.cosine_decay_schedule(0.1, 1000), b0=1.0,
    ...                     weight_decay=5e-4)
    >>> params = {'w': jnp.ones(3)}
    >>> state = opt.init(params)
    >>> updates, state = opt.update({'w': jnp.ones(3)}, state, params)

  Args:
    learning_rate: a scalar >= 0 or an :data:`optax.Schedule`.
    b1: momentum coefficient in [0, 1).
    b0: positive-negative coefficient >= 0, or a schedule (noise knob).
    weight_decay: decay rate :math:`\lambda` >= 0, or a schedule.
    weight_decay_mode: ``'decoupled'`` (as the reference) or ``'l2'``.
    mask: pytree of booleans (or a function of the params returning one)
      selecting the leaves that are decayed, as in :func:`optax.adamw`.
    mu_dtype: dtype of the momentum buffers; ``None`` keeps the parameters'.

  Returns:
    The corresponding :class:`optax.GradientTransformation`.

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    ICML 2021.
  """
  return _with_weight_decay(
      scale_by_pnm(b1=b1, b0=b0, mu_dtype=mu_dtype), learning_rate,
      weight_decay, weight_decay_mode, mask)


def adapnm(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    b0: optax.ScalarOrSchedule = 1.0,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    amsgrad: bool = True,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mode: str = 'decoupled',
    mask: MaskOrFn = None,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
) -> optax.GradientTransformation:
  r"""AdaPNM: PNM with Adam's (AMSGrad by default) preconditioner.

  The update is that of :func:`pnm_optax.scale_by_adapnm`, then weight decay
  as in :func:`pnm`, then scaling by :math:`-\eta_t`:

  .. math::

    p_t = p_{t-1} - \eta_t \left(\frac{1}{1 - \beta_1^t}
        \frac{u_t}{\sqrt{\hat v_t / (1 - \beta_2^t)} + \epsilon}
        + \lambda p_{t-1}\right)

  Examples:
    >>> import jax.numpy as jnp, optax, pnm_optax
    >>> opt = optax.chain(optax.clip_by_global_norm(1.0),
    ...                   pnm_optax.adapnm(1e-3, weight_decay=1e-2))
    >>> state = opt.init({'w': jnp.ones(3)})

  Args:
    learning_rate: a scalar >= 0 or an :data:`optax.Schedule`.
    b1: momentum coefficient in [0, 1).
    b2: second-moment decay in [0, 1).
    b0: positive-negative coefficient >= 0, or a schedule (noise knob).
    eps: added to the denominator outside the square root (>= 0).
    eps_root: added inside the square root (>= 0).
    amsgrad: use the running maximum of the second moment (reference default).
    weight_decay: decay rate >= 0, or a schedule.
    weight_decay_mode: ``'decoupled'`` (as the reference) or ``'l2'``.
    mask: pytree of booleans (or a function of the params) selecting the
      leaves that are decayed.
    mu_dtype: dtype of the momentum buffers; ``None`` keeps the parameters'.

  Returns:
    The corresponding :class:`optax.GradientTransformation`.

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    ICML 2021.
  """
  return _with_weight_decay(
      scale_by_adapnm(b1=b1, b2=b2, b0=b0, eps=eps, eps_root=eps_root,
                      amsgrad=amsgrad, mu_dtype=mu_dtype),
      learning_rate, weight_decay, weight_decay_mode, mask)
