"""An opt-in PNM train step that writes only the momentum buffer it updates.

:func:`pnm_optax.pnm` follows the Optax contract: ``update`` returns the whole
state, so a compiled step whose parity is only known at run time writes both
momentum buffers (7 float32 words moved per parameter, where 6 suffice: the
parameters read and written, the gradient, both buffers read and one
written). :func:`pnm_train_step` steps outside that contract: it compiles one
step per parity, each donating the parameters and the buffer it updates and
only reading the other one, and alternates between the two. Its results are
those of :func:`pnm_optax.pnm` with the same hyperparameters (up to float
rounding), and its state is a :class:`pnm_optax.ScaleByPNMState`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pnm_optax import _checks
from pnm_optax.alias import WeightDecayMode
from pnm_optax.step_size import noise_norm
from pnm_optax.transform import ScaleByPNMState, _next_count


class PNMTrainStep(NamedTuple):
  """What :func:`pnm_train_step` returns.

  Attributes:
    init: ``params -> ScaleByPNMState`` (zero buffers, count 0).
    step: ``(params, state, *args) -> (params, state)``, or
      ``(params, state, aux)`` with a ``grad_fn``: one train step, the
      compiled step of the state's parity. The parameters and the buffer it
      updates are donated; do not use them after the call.
    update: ``(params, state, grads, odd) -> (params, state)``, the step as a
      pure function with the parity ``odd`` (whether step ``count + 1`` is
      odd) a Python bool, for use inside your own :func:`jax.jit`,
      :func:`jax.pmap` or :func:`jax.lax.scan` (e.g. two steps, odd then
      even, per loop iteration).
  """

  init: Callable[[Any], ScaleByPNMState]
  step: Callable[..., tuple]
  update: Callable[..., tuple]


def _value(value, count):
  return value(count) if callable(value) else value


def pnm_train_step(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b0: optax.ScalarOrSchedule = 1.0,
  weight_decay: optax.ScalarOrSchedule | None = None,
  weight_decay_mode: WeightDecayMode = 'decoupled',
  grad_fn: Callable[..., tuple] | None = None,
) -> PNMTrainStep:
  r"""A PNM train step that writes only the buffer of the step's parity.

  Opt-in, outside the Optax contract: instead of ``update`` and
  ``apply_updates``, call ``step(params, state, grads)``, which runs one of
  two compiled steps (odd or even) and donates only the parameters and the
  momentum buffer it writes. The other buffer is read, not rewritten, so a
  step moves 6 float32 words per parameter instead of 7. Steps follow
  :func:`pnm_optax.pnm` with the same arguments.

  The parity is tracked in Python: ``step`` reads ``state.count`` from the
  device only when it is given a state it did not return itself (the first
  call, or after a checkpoint restore), so the loop does not wait on the
  device.

  Args:
    learning_rate: a scalar >= 0 (finite) or a schedule of the 0-based count.
    b1: momentum coefficient in [0, 1).
    b0: positive-negative coefficient >= 0 (finite), or a schedule.
    weight_decay: decay rate >= 0 (finite), a schedule, or ``None``.
    weight_decay_mode: ``'decoupled'`` or ``'l2'``, as in
      :func:`pnm_optax.pnm`.
    grad_fn: optional ``(params, *args) -> (grads, aux)``; then
      ``step(params, state, *args)`` computes the gradients in the same
      compiled step and returns ``(params, state, aux)``. Without it,
      ``step(params, state, grads)`` returns ``(params, state)``.

  Returns:
    A :class:`PNMTrainStep` ``(init, step, update)``.

  Raises:
    ValueError: for a hyperparameter out of its range.

  Examples:
    >>> import jax.numpy as jnp, pnm_optax
    >>> train = pnm_optax.pnm_train_step(learning_rate=0.1)
    >>> params = jnp.array([1., 2., 3.])
    >>> state = train.init(params)
    >>> for _ in range(3):
    ...   params, state = train.step(params, state, 2 * params)
    >>> print(f'{jnp.sum(params ** 2):.4f}')
    11.5111
  """
  _checks.check_step_size(learning_rate, weight_decay, weight_decay_mode)
  _checks.check_scalar('b1', b1)
  _checks.check_unit_interval('b1', b1)
  _checks.check_scalar('b0', b0, schedule=True)
  _checks.check_nonnegative('b0', b0, finite=True)
  decoupled = weight_decay_mode == 'decoupled'

  def init(params) -> ScaleByPNMState:
    return ScaleByPNMState(
      count=jnp.zeros([], jnp.int32),
      mu_odd=optax.tree.zeros_like(params),
      mu_even=optax.tree.zeros_like(params),
    )

  def core(params, touched, other, grads, count):
    """One step: ``(params, touched)`` new; ``other`` is only read."""
    lr = _value(learning_rate, count)
    wd = _value(weight_decay, count) if weight_decay is not None else None
    pn = _value(b0, count)
    beta = jnp.float32(b1) ** 2
    inv = 1 / noise_norm(jnp.asarray(pn, jnp.float32))
    pos, neg = (1 + pn) * inv, pn * inv

    def leaf(p, m, o, g):
      dtype = jnp.result_type(jnp.float32, p.dtype, g.dtype)
      pc, gc = p.astype(dtype), g.astype(dtype)
      if wd is not None and not decoupled:
        gc = gc + wd * pc
      m_new = beta * m.astype(dtype) + (1 - beta) * gc
      direction = pos * m_new - neg * o.astype(dtype)
      step = direction
      if wd is not None and decoupled:
        step = direction + wd * pc
      return (pc - lr * step).astype(p.dtype), m_new.astype(m.dtype)

    out = jax.tree.map(leaf, params, touched, other, grads)
    treedef = jax.tree.structure(params)
    new_params, new_touched = (
      jax.tree.unflatten(treedef, [x[i] for x in treedef.flatten_up_to(out)])
      for i in range(2)
    )
    return new_params, new_touched

  def update(params, state: ScaleByPNMState, grads, odd: bool):
    touched, other = (
      (state.mu_odd, state.mu_even) if odd else (state.mu_even, state.mu_odd)
    )
    params, touched = core(params, touched, other, grads, state.count)
    mu_odd, mu_even = (touched, other) if odd else (other, touched)
    return params, ScaleByPNMState(_next_count(state.count), mu_odd, mu_even)

  def compiled(odd: bool):
    def fn(params, touched, other, count, *args):
      if grad_fn is None:
        (grads,) = args
        aux = None
      else:
        grads, aux = grad_fn(params, *args)
      params, touched = core(params, touched, other, grads, count)
      return params, touched, _next_count(count), aux

    return jax.jit(fn, donate_argnums=(0, 1))

  steps = {True: compiled(True), False: compiled(False)}
  tracked: dict[str, Any] = {'state': None, 'odd': True}

  def step(params, state: ScaleByPNMState, *args):
    if state is tracked['state']:
      odd = tracked['odd']
    else:
      odd = int(state.count) % 2 == 0  # one device read, then tracked
    touched, other = (
      (state.mu_odd, state.mu_even) if odd else (state.mu_even, state.mu_odd)
    )
    params, touched, count, aux = steps[odd](
      params, touched, other, state.count, *args
    )
    mu_odd, mu_even = (touched, other) if odd else (other, touched)
    state = ScaleByPNMState(count, mu_odd, mu_even)
    tracked['state'], tracked['odd'] = state, not odd
    return (params, state) if grad_fn is None else (params, state, aux)

  return PNMTrainStep(init, step, update)
