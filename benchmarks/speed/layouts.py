"""PNM state layouts and kernel forms, timed side by side.

Run ``python -m benchmarks.speed.layouts`` (or ``python -m benchmarks.speed
--layouts``).
PNM keeps two momentum buffers and writes only one per step, chosen by the
step parity. How the state holds the pair, and how the step expression is
written, decides whether XLA updates the buffers in place and fuses the step:

* ``swapped``: state ``(newest, previous)``; each step returns the pair
  swapped, so every donated buffer changes slot and XLA copies.
* ``stacked_dus``: one ``(2, n)`` buffer; the parity row is written with
  ``dynamic_update_slice`` while the other row is read, which XLA cannot
  prove disjoint, so it copies the buffer.
* ``cond``: ``lax.cond`` on the parity, each branch updating one slot.
* ``select_update``: select current/other slot with ``where``, update,
  write back with ``where``.
* ``where_pos_neg``: fixed slots, each slot ``where(odd, update(a), a)``,
  then positive/negative momentum selected with ``where`` (an earlier core).
* ``where_coef``: fixed slots as above, the PN combination done with scalar
  coefficients picked by parity.
* ``core``: :func:`pnm_optax.scale_by_pnm` as it is now: fixed slots, each
  ``select(odd, update(mu), mu)`` (with the parity the same for every
  element the compiled loop skips the untouched slot's arithmetic and its
  read of the gradient; ``keep * mu + gain * g`` with per-step scalars was
  40% slower on CPU), and the PN combination with two per-step coefficients,
  all parity-dependent scalars computed once per step.

AdaPNM (AMSGrad) is timed with the two fixed-slot PN forms and in its core
form next to ``optax.amsgrad`` and ``optax.adam``. Every alternative is
checked to give the core's updates.
"""

import argparse
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pnm_optax
from benchmarks.common import argtypes, environment, reporting
from benchmarks.common.reporting import fmt
from benchmarks.speed import contenders, timing, trees, xla_probes

PROG = 'python -m benchmarks.speed.layouts'

B1, B0 = 0.9, 1.0
BETA = B1**2
_NORM = float(np.sqrt((1 + B0) ** 2 + B0**2))
POS, NEG = (1 + B0) / _NORM, B0 / _NORM


class LayoutState(NamedTuple):
  # A NamedTuple field named like tuple.count, as in optax's states.
  count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
  slots: list[tuple]  # per leaf, a tuple of buffers


def _layout(
  init_leaf: Callable, step_leaf: Callable
) -> optax.GradientTransformation:
  """A PNM scale transform from a per-leaf state layout and step kernel."""

  def init_fn(params):
    return LayoutState(
      jnp.zeros([], jnp.int32), [init_leaf(p) for p in jax.tree.leaves(params)]
    )

  def update_fn(updates, state, params=None):
    del params
    grads, treedef = jax.tree.flatten(updates)
    odd = state.count % 2 == 0  # step t = count + 1 is odd
    out = [
      step_leaf(g, s, odd, state.count) for g, s in zip(grads, state.slots)
    ]
    return (
      jax.tree.unflatten(treedef, [d for d, _ in out]),
      LayoutState(
        jnp.asarray(optax.safe_increment(state.count)), [s for _, s in out]
      ),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def _pair(p):
  return (jnp.zeros_like(p), jnp.zeros_like(p))


def _ema(m, g):
  return BETA * m + (1 - BETA) * g


def _swapped(g, s, odd, count):
  del odd, count
  newest, previous = s
  new = _ema(previous, g)
  return POS * new - NEG * newest, (new, newest)


def _stacked_dus(g, s, odd, count):
  del odd
  (buf,) = s
  i = count % 2
  new = _ema(buf[i], g)
  other = buf[1 - i]
  buf = jax.lax.dynamic_update_index_in_dim(buf, new, i, 0)
  return POS * new - NEG * other, (buf,)


def _cond(g, s, odd, count):
  del count

  def odd_step(a, b):
    a = _ema(a, g)
    return POS * a - NEG * b, a, b

  def even_step(a, b):
    b = _ema(b, g)
    return POS * b - NEG * a, a, b

  d, a, b = jax.lax.cond(odd, odd_step, even_step, *s)
  return d, (a, b)


def _select_update(g, s, odd, count):
  del count
  a, b = s
  current, other = jnp.where(odd, a, b), jnp.where(odd, b, a)
  new = _ema(current, g)
  a, b = jnp.where(odd, new, a), jnp.where(odd, b, new)
  return POS * new - NEG * other, (a, b)


def _write_parity_slot(g, s, odd):
  """Fixed slots: the EMA goes into the parity's slot, the other is kept."""
  a, b = s
  return jnp.where(odd, _ema(a, g), a), jnp.where(odd, b, _ema(b, g))


def _where_pos_neg(g, s, odd, count):
  del count
  a, b = _write_parity_slot(g, s, odd)
  pos, neg = jnp.where(odd, a, b), jnp.where(odd, b, a)
  return POS * pos - NEG * neg, (a, b)


def _where_coef(g, s, odd, count):
  del count
  a, b = _write_parity_slot(g, s, odd)
  coef_a, coef_b = jnp.where(odd, POS, -NEG), jnp.where(odd, -NEG, POS)
  return coef_a * a + coef_b * b, (a, b)


PNM_LAYOUTS = {
  'swapped': (_pair, _swapped),
  'stacked_dus': (
    lambda p: (jnp.zeros((2,) + p.shape, p.dtype),),
    _stacked_dus,
  ),
  'cond': (_pair, _cond),
  'select_update': (_pair, _select_update),
  'where_pos_neg': (_pair, _where_pos_neg),
  'where_coef': (_pair, _where_coef),
}


B2, EPS = 0.999, 1e-8


def _adapnm(pn_step: Callable) -> Callable:
  """An AdaPNM (AMSGrad) leaf step around a PN kernel on fixed slots."""

  def step_leaf(g, s, odd, count):
    a, b, v, v_max = s
    direction, (a, b) = pn_step(g, (a, b), odd, count)
    t = (count + 1).astype(jnp.float32)
    inv_bc1 = 1 / (1 - B1**t)
    inv_sqrt_bc2 = 1 / jnp.sqrt(1 - B2**t)
    v = B2 * v + (1 - B2) * g * g
    v_max = jnp.maximum(v_max, v)
    denom = jnp.sqrt(v_max) * inv_sqrt_bc2 + EPS
    return direction / denom * inv_bc1, (a, b, v, v_max)

  return step_leaf


def _four(p):
  return tuple(jnp.zeros_like(p) for _ in range(4))


ADAPNM_LAYOUTS = {
  'where_pos_neg': (_four, _adapnm(_where_pos_neg)),
  'where_coef': (_four, _adapnm(_where_coef)),
}


def layout_optimizers(learning_rate: float = contenders.LEARNING_RATE) -> dict:
  """``name -> (GradientTransformation, reference name or None)``."""
  lr = optax.scale_by_learning_rate(learning_rate)
  opts: dict[str, tuple[optax.GradientTransformation, str | None]] = {
    'sgdm': (optax.sgd(learning_rate, momentum=0.9), None)
  }
  for name, (init_leaf, step_leaf) in PNM_LAYOUTS.items():
    opts[f'pnm {name}'] = (
      optax.chain(_layout(init_leaf, step_leaf), lr),
      'pnm core',
    )
  opts['pnm core'] = (pnm_optax.pnm(learning_rate, b1=B1, b0=B0), None)
  opts['amsgrad'] = (optax.amsgrad(learning_rate), None)
  opts['adam'] = (optax.adam(learning_rate), None)
  for name, (init_leaf, step_leaf) in ADAPNM_LAYOUTS.items():
    opts[f'adapnm {name}'] = (
      optax.chain(_layout(init_leaf, step_leaf), lr),
      'adapnm core',
    )
  opts['adapnm core'] = (
    pnm_optax.adapnm(learning_rate, b1=B1, b2=B2, b0=B0, eps=EPS),
    None,
  )
  return opts


def max_deviation(opt, reference, steps: int = 6) -> float:
  """Largest relative difference of the parameters after ``steps`` steps."""
  key = jax.random.key(1)
  params = {
    'w': jax.random.normal(key, (257,)),
    'b': jax.random.normal(key, (3, 5)),
  }
  ps: list[Any] = [params, params]
  states = [opt.init(params), reference.init(params)]
  for i in range(steps):
    grads = jax.tree.map(
      lambda p, i=i: jax.random.normal(jax.random.fold_in(key, i), p.shape),
      params,
    )
    for j, o in enumerate((opt, reference)):
      updates, states[j] = o.update(grads, states[j], ps[j])
      ps[j] = optax.apply_updates(ps[j], updates)
  diffs = jax.tree.map(
    lambda x, y: float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y))), *ps
  )
  return max(jax.tree.leaves(diffs))


def run(
  num_params: int,
  repeats: int,
  target_s: float,
  names: list[str] | None = None,
  progress: bool = True,
  opts: dict | None = None,
) -> dict:
  """Times each layout on one float32 leaf; prints and returns a table.

  ``opts`` maps names to ``(transformation, reference name or None)``
  (default :func:`layout_optimizers`); ``names`` picks some, ``sgdm`` first.
  """
  from tqdm import tqdm

  opts = opts or layout_optimizers()
  names = names or list(opts)
  shapes = trees.single_leaf_shapes(num_params)
  params = trees.abstract_tree(shapes)
  # One cold compile each, for XLA's traffic, copies and compile time.
  probes = xla_probes.compile_rounds(
    {n: (lambda o=opts[n][0]: timing.make_train_step(o)) for n in names},
    {
      n: (params, jax.eval_shape(opts[n][0].init, params), params)
      for n in names
    },
    (0, 1),
    1,
    num_params,
    1,
  )
  key_p, key_g = jax.random.split(jax.random.key(0))
  params = trees.make_tree(shapes, key_p)
  grads = trees.make_tree(shapes, key_g, scale=1e-2)
  runners = [timing.JaxRunner(n, opts[n][0], params, grads) for n in names]
  del params
  bar = tqdm(
    total=repeats, desc='layout rounds', file=sys.stderr, disable=not progress
  )
  samples, _ = timing.run_rounds(
    runners, repeats, target_s, lambda: bar.update(1)
  )
  bar.close()

  rows, lines = [], []
  for name in names:
    ref = opts[name][1]
    dev = max_deviation(opts[name][0], opts[ref][0]) if ref else None
    probe = probes[name]
    row: dict[str, Any] = dict(
      layout=name,
      num_params=num_params,
      device_s=timing.median(samples[name]['device']),
      dispatched_s=timing.median(samples[name]['dispatched']),
      hlo_words=probe['hlo_words'],
      hlo_array_copies=probe['hlo_array_copies'],
      compile_s=probe['compile_s'],
      trace_lower_s=probe['trace_lower_s'],
      max_rel_dev_from_core=dev,
      samples=samples[name],
    )
    for kind in ('device', 'dispatched'):
      for ref_name in ('sgdm', 'amsgrad'):
        row[f'{kind}_x_{ref_name}'] = timing.per_round_ratio(
          samples, name, ref_name, kind
        )
    rows.append(row)
    lines.append(
      (
        name,
        f'{1e3 * row["device_s"]:.2f}',
        fmt(row['device_x_sgdm'], '.2f'),
        f'{1e3 * row["dispatched_s"]:.2f}',
        fmt(row['dispatched_x_sgdm'], '.2f'),
        fmt(row['dispatched_x_amsgrad'], '.2f'),
        fmt(row['hlo_words'], '.1f'),
        str(row['hlo_array_copies']),
        fmt(dev, '.1e'),
      )
    )
  table = reporting.markdown_table(
    (
      'layout',
      'device ms',
      'x sgdm',
      'dispatch ms',
      'x sgdm',
      'x amsgrad',
      'XLA w',
      'copies',
      'vs core',
    ),
    lines,
  )
  print(
    f'# PNM/AdaPNM layouts, one float32 leaf of '
    f'{reporting.size_label(num_params)} ({num_params:,}) params; medians '
    f'of {repeats} round(s); ratios per round. XLA w = bytes accessed per '
    'step (XLA cost analysis) / 4 / params; copies = array copy '
    'instructions in the optimized HLO; vs core = max relative parameter '
    'difference from pnm_optax after 6 steps.'
  )
  print(table)
  return dict(num_params=num_params, repeats=repeats, rows=rows, table=table)


def parse_args(argv=None) -> argparse.Namespace:
  names = list(layout_optimizers())
  parser = argparse.ArgumentParser(
    prog=PROG, description=(__doc__ or '').split('\n')[0]
  )
  parser.add_argument(
    '--size',
    type=argtypes.size,
    default=2**24,
    help='parameters in the leaf (default 2^24)',
  )
  parser.add_argument('--repeats', type=argtypes.positive_int, default=7)
  parser.add_argument(
    '--target-time',
    type=argtypes.positive_float,
    default=0.25,
    help='seconds per timed sample',
  )
  parser.add_argument(
    '--layouts',
    type=argtypes.name_list(names),
    default=None,
    help='comma list of '
    + ','.join(f"'{n}'" for n in names)
    + ' (default: all)',
  )
  parser.add_argument('--no-progress', action='store_true')
  parser.add_argument(
    '--out', default=None, help='also write the result as JSON to this file'
  )
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  chosen = None
  if args.layouts:
    chosen = ['sgdm'] + [n for n in args.layouts if n != 'sgdm']
  info = environment.collect()
  for line in environment.header_lines(info):
    print(line)
  result = run(
    args.size, args.repeats, args.target_time, chosen, not args.no_progress
  )
  result['meta'] = info
  if args.out:
    try:
      reporting.write_json(args.out, result)
    except OSError as e:
      argtypes.fail(PROG, f'cannot write {args.out}: {e}')
  return result


if __name__ == '__main__':
  main()
