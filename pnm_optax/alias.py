"""The PNM and AdaPNM optimizers, in the style of ``optax.adamw``."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import optax

from pnm_optax import _checks
from pnm_optax.transform import scale_by_adapnm, scale_by_pnm

WeightDecayMode = Literal['decoupled', 'l2']  # _checks.WEIGHT_DECAY_MODES


def _add_decayed_weights(
  weight_decay: optax.ScalarOrSchedule | None, mask: optax.MaskOrFn
) -> optax.GradientTransformation:
  """``optax.add_decayed_weights`` that needs no ``params`` when there is no
  decay (``None`` or a concrete zero), as ``optax.sgd`` and ``optax.adam``
  need none.

  The state is ``optax.add_decayed_weights``' in every case, so the chain
  keeps one structure whether the decay is None, zero, a number, a schedule
  or a traced value under ``optax.inject_hyperparams``.
  """
  no_decay = weight_decay is None or _checks.is_zero(weight_decay)
  decay = optax.add_decayed_weights(
    0.0 if weight_decay is None else weight_decay, mask
  )

  def update_fn(updates, state, params=None):
    if params is None and not jax.tree.leaves(updates):
      # Nothing to decay (e.g. a params tree that is None): only a
      # schedule's step count (the state's one leaf) moves on.
      return updates, jax.tree.map(optax.safe_increment, state)
    if weight_decay is None or (params is None and no_decay):
      return updates, state
    if params is None and _checks.is_traced(weight_decay):
      raise ValueError(
        'weight_decay is a traced value (e.g. a hyperparameter of '
        'optax.inject_hyperparams under jax.jit), so update needs params '
        'even if it is zero: pass params to update, or leave weight_decay '
        'at None for no weight decay.'
      )
    decayed, state = decay.update(updates, state, params)
    if callable(weight_decay) and params is not None:
      # A schedule's value is a float32 array, which would promote half
      # precision updates; keep the dtype a number gives: the gradient's
      # promoted with the parameter's where decayed, the gradient's where
      # the mask leaves the leaf out.
      flags = mask(params) if callable(mask) else mask
      if flags is None:
        flags = jax.tree.map(lambda _: True, updates)
      decayed = jax.tree.map(
        lambda m, u, g, p: jax.tree.map(
          lambda u, g, p: u.astype(jnp.result_type(g, p)) if m else u,
          u,
          g,
          p,
        ),
        flags,
        decayed,
        updates,
        params,
      )
    return decayed, state

  return optax.GradientTransformation(decay.init, update_fn)


def _with_weight_decay(
  scale: optax.GradientTransformation,
  learning_rate: optax.ScalarOrSchedule,
  weight_decay: optax.ScalarOrSchedule | None,
  weight_decay_mode: WeightDecayMode,
  mask: optax.MaskOrFn,
) -> optax.GradientTransformation:
  """Chains ``scale`` with weight decay and the learning rate."""
  _checks.check_step_size(learning_rate, weight_decay, weight_decay_mode)
  _checks.check_mask(mask)
  decay = _add_decayed_weights(weight_decay, mask)
  steps = (scale, decay) if weight_decay_mode == 'decoupled' else (decay, scale)
  return optax.chain(*steps, optax.scale_by_learning_rate(learning_rate))


def pnm(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b0: optax.ScalarOrSchedule = 1.0,
  weight_decay: optax.ScalarOrSchedule | None = None,
  weight_decay_mode: WeightDecayMode = 'decoupled',
  mask: optax.MaskOrFn = None,
  mu_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformation:
  r"""Stochastic Positive-Negative Momentum (PNM).

  PNM keeps two momentum buffers, one fed by the gradients of odd steps and
  one by those of even steps, and steps along a positive-negative
  combination of them. Because the buffers average disjoint gradients they
  are independent, and the combination enlarges the gradient noise relative
  to the mean direction by a factor set with :math:`\beta_0`, which the paper
  shows improves generalization.

  Let :math:`\eta_t` be the learning rate, :math:`g_t` the gradient and
  :math:`\lambda` the weight decay. Step :math:`t = 1, 2, \dots` updates only
  the buffer of its parity (the "positive" one) and reads the other as the
  "negative" one:

  .. math::

    \begin{align*}
      m_t &\leftarrow \beta_1^2 \, m_{t-2} + (1 - \beta_1^2) \, g_t,
          \qquad m_{-1} = m_0 = 0 \\
      u_t &\leftarrow \frac{(1 + \beta_0) \, m_t - \beta_0 \, m_{t-1}}
                          {\sqrt{(1 + \beta_0)^2 + \beta_0^2}} \\
      \theta_t &\leftarrow \theta_{t-1} - \eta_t \left(u_t + \lambda \,
          \theta_{t-1}\right)
    \end{align*}

  With ``weight_decay_mode='l2'``, :math:`\lambda \theta_{t-1}` is added to
  :math:`g_t` before the momentum update instead (coupled L2).

  In steady state the direction has mean :math:`E[g] / n` with
  :math:`n = \sqrt{(1 + \beta_0)^2 + \beta_0^2}` and the noise variance of one
  EMA buffer, so the noise-to-signal ratio grows by :math:`n` (2.24 at
  :math:`\beta_0 = 1`); :math:`\beta_0 = 0` is EMA momentum with decay
  :math:`\beta_1^2`. :func:`pnm_optax.b0_matched_learning_rate` and
  :func:`pnm_optax.sgdm_equivalent_learning_rate` give learning rates with a
  matched mean step.

  Args:
    learning_rate: a scalar >= 0 (finite) or an :data:`optax.Schedule`.
    b1: momentum coefficient :math:`\beta_1` in [0, 1), a scalar; each buffer
      decays with :math:`\beta_1^2` because it is written every other step.
      To schedule it, use :func:`optax.inject_hyperparams`.
    b0: positive-negative coefficient :math:`\beta_0 \geq 0` (finite), a
      scalar or a schedule of the 0-based step count (the noise knob). A
      schedule's value below 0 gives NaN updates, under :func:`jax.jit` and
      op by op alike.
    weight_decay: decay rate :math:`\lambda` >= 0 (finite), a schedule, or
      ``None`` (the default) for no weight decay.
    weight_decay_mode: ``'decoupled'`` (the reference's default) or
      ``'l2'``.
    mask: a tree of booleans with the structure of (or a prefix of) the
      parameters, or a function of the parameters returning one, selecting
      the leaves that are decayed, as in :func:`optax.adamw`. Under
      :func:`optax.inject_hyperparams` a function needs
      ``static_args=('mask',)``; a single boolean is rejected.
    mu_dtype: dtype of the momentum buffers; ``None`` keeps the parameters'.
      Arithmetic runs in at least float32 either way. A real ``mu_dtype``
      with complex parameters is rejected by ``init``.

  Returns:
    The corresponding :class:`optax.GradientTransformation`, a chain of
    :func:`pnm_optax.scale_by_pnm`, :func:`optax.add_decayed_weights` and
    :func:`optax.scale_by_learning_rate`. Updates have the gradients' dtype
    (promoted with the parameters' when weight decay is on). ``update``
    needs ``params`` only with weight decay: not when ``weight_decay`` is
    ``None`` or a concrete zero. Under :func:`optax.inject_hyperparams`
    every hyperparameter but ``weight_decay_mode``, ``mask`` and
    ``mu_dtype`` can be changed between steps without recompiling; a
    ``weight_decay`` given to it is a traced value under :func:`jax.jit`, so
    ``update`` then needs ``params`` even if it is zero.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, pnm_optax
    >>> def f(x): return jnp.sum(x ** 2)
    >>> solver = pnm_optax.pnm(learning_rate=0.1)
    >>> params = jnp.array([1., 2., 3.])
    >>> opt_state = solver.init(params)
    >>> for _ in range(3):
    ...   grad = jax.grad(f)(params)
    ...   updates, opt_state = solver.update(grad, opt_state, params)
    ...   params = optax.apply_updates(params, updates)
    ...   print(f'{f(params):.4f}')
    13.0645
    12.6396
    11.5111

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    ICML 2021.
  """
  return _with_weight_decay(
    scale_by_pnm(b1=b1, b0=b0, mu_dtype=mu_dtype),
    learning_rate,
    weight_decay,
    weight_decay_mode,
    mask,
  )


def adapnm(
  learning_rate: optax.ScalarOrSchedule = 1e-3,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  b0: optax.ScalarOrSchedule = 1.0,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  amsgrad: bool = True,
  weight_decay: optax.ScalarOrSchedule | None = None,
  weight_decay_mode: WeightDecayMode = 'decoupled',
  mask: optax.MaskOrFn = None,
  mu_dtype: jax.typing.DTypeLike | None = None,
  nu_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformation:
  r"""AdaPNM: the PN direction with Adam's (AMSGrad by default) preconditioner.

  With :math:`u_t` the positive-negative direction of :func:`pnm`:

  .. math::

    \begin{align*}
      v_t &\leftarrow \beta_2 \, v_{t-1} + (1 - \beta_2) \, |g_t|^2 \\
      \hat v_t &\leftarrow \max(\hat v_{t-1}, v_t)
          \quad \text{(amsgrad; else } \hat v_t = v_t \text{)} \\
      \theta_t &\leftarrow \theta_{t-1} - \eta_t \left(
          \frac{1}{1 - \beta_1^t} \cdot
          \frac{u_t}{\sqrt{\hat v_t / (1 - \beta_2^t) + \bar\epsilon}
          + \epsilon} + \lambda \, \theta_{t-1}\right)
    \end{align*}

  As in the authors' reference code, the first moment is bias-corrected with
  :math:`1 - \beta_1^t` although each buffer decays with :math:`\beta_1^2`
  every other step (the paper's typeset algorithm differs).

  Args:
    learning_rate: a scalar >= 0 (finite) or an :data:`optax.Schedule`.
    b1: momentum coefficient in [0, 1), a scalar.
    b2: second-moment decay in [0, 1), a scalar.
    b0: positive-negative coefficient >= 0 (finite), a scalar or a schedule
      (whose values below 0 give NaN updates).
    eps: :math:`\epsilon`, added to the denominator outside the square root
      (a scalar >= 0).
    eps_root: :math:`\bar\epsilon`, added inside the square root (a scalar
      >= 0).
    amsgrad: use the running maximum of the second moment (the reference
      default).
    weight_decay: decay rate :math:`\lambda` >= 0 (finite), a schedule, or
      ``None`` (the default) for no weight decay.
    weight_decay_mode: ``'decoupled'`` (the reference's default) or
      ``'l2'``.
    mask: a tree of booleans (or a function of the parameters returning one)
      selecting the leaves that are decayed (a function needs
      ``static_args=('mask',)`` under :func:`optax.inject_hyperparams`).
    mu_dtype: dtype of the momentum buffers; ``None`` keeps the parameters'.
      A real ``mu_dtype`` with complex parameters is rejected by ``init``.
    nu_dtype: real dtype of the second moments; ``None`` keeps the
      parameters' real dtype, widened to float32 for float16 parameters.

  Returns:
    The corresponding :class:`optax.GradientTransformation`, a chain of
    :func:`pnm_optax.scale_by_adapnm`, :func:`optax.add_decayed_weights` and
    :func:`optax.scale_by_learning_rate`. Updates, ``params`` and
    :func:`optax.inject_hyperparams` as for :func:`pnm`; to schedule ``b1``,
    ``b2``, ``eps`` or ``eps_root``, use :func:`optax.inject_hyperparams`.
    There, with bfloat16 parameters, pass ``hyperparam_dtype=jnp.float32``:
    the hyperparameters take the parameters' dtype by default, and ``b2 =
    0.999`` rounds to 1 in bfloat16 (``init`` raises a ValueError).

  Examples:
    >>> import jax, jax.numpy as jnp, optax, pnm_optax
    >>> def f(x): return jnp.sum(x ** 2)
    >>> solver = optax.chain(optax.clip_by_global_norm(1.0),
    ...                      pnm_optax.adapnm(1e-2, weight_decay=1e-2))
    >>> params = jnp.array([1., 2., 3.])
    >>> opt_state = solver.init(params)
    >>> for _ in range(3):
    ...   grad = jax.grad(f)(params)
    ...   updates, opt_state = solver.update(grad, opt_state, params)
    ...   params = optax.apply_updates(params, updates)
    ...   print(f'{f(params):.4f}')
    13.7942
    13.7384
    13.6383

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    ICML 2021.
  """
  return _with_weight_decay(
    scale_by_adapnm(
      b1=b1,
      b2=b2,
      b0=b0,
      eps=eps,
      eps_root=eps_root,
      amsgrad=amsgrad,
      mu_dtype=mu_dtype,
      nu_dtype=nu_dtype,
    ),
    learning_rate,
    weight_decay,
    weight_decay_mode,
    mask,
  )
