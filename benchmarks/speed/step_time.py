"""Speed of one train step: pnm-optax against Optax (and PyTorch if present).

Run ``python -m benchmarks.speed`` (``--quick`` for a few seconds,
``--help`` for options). A train step is ``update`` + ``apply_updates`` in one
jitted function with the parameters and optimizer state donated. For each
parameter tree (single leaves of several sizes, and trees shaped like
ResNet-18, a transformer and a deep network of 1000 small leaves) it
measures, interleaving the optimizers in rounds and taking medians:

* device and dispatched time per step, and their ratios to
  ``optax.sgd(momentum=0.9)``, ``optax.amsgrad`` and ``optax.adam`` taken
  within each round (``benchmarks/speed/timing.py``);
* achieved bandwidth: the optimizer's traffic floor over the faster time,
  against a measured copy bandwidth, and XLA's own count of bytes accessed;
* compile cost: cold trace+lower and compile seconds, HLO instructions and
  StableHLO size per leaf (``benchmarks/speed/xla_probes.py``);
* state memory per parameter with and without ``mu_dtype=bfloat16``.

The report and each configuration have a time budget (``--budget``,
``--config-budget``): what they do not reach is listed as skipped, so the
default report ends in minutes even where compiling a tree of many leaves
is slow. ``--whole-step`` runs ``benchmarks.speed.whole_step`` instead.

``--compile-only`` measures the compile cost alone (no arrays are
allocated), e.g. ``--trees many_leaves --sizes none --compile-only``.
Writes the tables to stdout and ``step_time.json`` (after every
configuration, so an interrupted run keeps what it finished) and
``step_time.png`` to ``--out`` (default ``results/speed``).
"""

import argparse
import os
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp

import pnm_optax
from benchmarks.common import argtypes, environment, reporting
from benchmarks.speed import (
  contenders,
  memory,
  report,
  timing,
  trees,
  xla_probes,
)

PROG = 'python -m benchmarks.speed'
DEFAULT_SIZES = '1e5,1e6,2^22,2^24,2^26,2^28'
QUICK_SIZES = '1e4,1e5'
RATIO_REFS = ('sgdm', 'amsgrad', 'adam')  # every ratio is to one of these
# Compiling dominates the trees with many leaves (a cold compile per round
# and optimizer, and the step and loop forms each timed optimizer needs):
# each configuration gets a share of the report's time, and what is not
# reached in it is listed as skipped.
DEFAULT_BUDGET_S = 240.0
# Above this many leaves no device time (fori_loop) is measured: its compile
# costs about twice the step's, and per-call dispatch is what such trees see.
LOOP_MAX_LEAVES = 200
DEFAULT_CONFIG_BUDGET_S = 60.0


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog=PROG, description=(__doc__ or '').split('\n')[0]
  )
  parser.add_argument(
    '--sizes',
    type=argtypes.size_list,
    default=None,
    help='single-leaf parameter counts, e.g. 1e6,2^24, or '
    f"'none' (default {DEFAULT_SIZES}; --quick: "
    f'{QUICK_SIZES})',
  )
  parser.add_argument(
    '--trees',
    type=argtypes.name_list(trees.TREES, True),
    default=None,
    help='comma list of '
    + ','.join(trees.TREES)
    + " or 'none' (default: all; --quick: none)",
  )
  parser.add_argument(
    '--optimizers',
    type=argtypes.name_list(contenders.ALL),
    default=list(contenders.ALL),
    help='comma list of '
    + ','.join(contenders.ALL)
    + f' ({contenders.BASELINE}, the baseline, is always '
    'run; default: all)',
  )
  parser.add_argument(
    '--no-torch', action='store_true', help='skip the PyTorch optimizers'
  )
  parser.add_argument(
    '--torch-threads',
    type=argtypes.positive_int,
    default=None,
    help="torch.set_num_threads (default: torch's own)",
  )
  parser.add_argument(
    '--repeats',
    type=argtypes.positive_int,
    default=None,
    help='timing rounds per tree (default 5; --quick: 3)',
  )
  parser.add_argument(
    '--compile-repeats',
    type=argtypes.positive_int,
    default=None,
    help='cold compiles per optimizer and tree (default 3; --quick: 1)',
  )
  parser.add_argument(
    '--compile-only',
    action='store_true',
    help='measure the compile cost only, no step times',
  )
  parser.add_argument(
    '--target-time',
    type=argtypes.positive_float,
    default=None,
    help='seconds per timed sample (default 0.25; --quick: 0.02)',
  )
  parser.add_argument(
    '--mem-fraction',
    type=argtypes.fraction,
    default=0.6,
    help='share of available memory a tree may use',
  )
  parser.add_argument(
    '--layouts',
    action='store_true',
    help='also time the PNM state-layout alternatives (benchmarks/speed/layouts.py)',
  )
  parser.add_argument(
    '--layout-size',
    type=argtypes.size,
    default=2**24,
    help='leaf size for --layouts (default 2^24)',
  )
  parser.add_argument(
    '--whole-step',
    action='store_true',
    help='time whole Flax train steps instead (python -m '
    'benchmarks.speed.whole_step; its options follow, see its --help)',
  )
  parser.add_argument(
    '--quick',
    action='store_true',
    help='tiny sizes, few repeats: a few seconds',
  )
  parser.add_argument(
    '--budget',
    type=argtypes.positive_float,
    default=None,
    help='seconds for the whole report: no configuration starts after '
    f'them (default {DEFAULT_BUDGET_S:g}; --quick: 60)',
  )
  parser.add_argument(
    '--config-budget',
    type=argtypes.positive_float,
    default=None,
    help='seconds per configuration: no compile, optimizer or timing round '
    f'starts after them (default {DEFAULT_CONFIG_BUDGET_S:g}; --quick: 20)',
  )
  parser.add_argument('--no-progress', action='store_true')
  parser.add_argument(
    '--out',
    default='results/speed',
    help='folder for step_time.json and step_time.png',
  )
  parser.add_argument('--no-plot', action='store_true')
  args = parser.parse_args(argv)
  if args.sizes is None:
    args.sizes = argtypes.size_list(
      QUICK_SIZES if args.quick else DEFAULT_SIZES
    )
  if args.trees is None:
    args.trees = [] if args.quick else list(trees.TREES)
  if args.repeats is None:
    args.repeats = 3 if args.quick else 5
  if args.compile_repeats is None:
    args.compile_repeats = 1 if args.quick else 3
  if args.target_time is None:
    args.target_time = 0.02 if args.quick else 0.25
  if args.budget is None:
    args.budget = 60.0 if args.quick else DEFAULT_BUDGET_S
  if args.config_budget is None:
    args.config_budget = 20.0 if args.quick else DEFAULT_CONFIG_BUDGET_S
  return args


def select_optimizers(
  names: list[str], no_torch: bool, compile_only: bool
) -> tuple[list[str], list[str]]:
  """The baseline first, then ``names`` that can run here; and why others
  cannot (one note per reason)."""
  names = [contenders.BASELINE] + [n for n in names if n != contenders.BASELINE]
  notes, skipped = [], {}
  for name in names:
    if not contenders.is_torch(name):
      continue
    if compile_only:
      reason = 'no compile step (--compile-only)'
    elif no_torch:
      reason = '--no-torch'
    else:
      missing = contenders.missing_module(name)
      reason = missing and f'{missing} is not installed' + (
        ' (pip install pytorch_optimizer)'
        if missing == 'pytorch_optimizer'
        else ''
      )
    if reason:
      skipped.setdefault(reason, []).append(name)
  for reason, which in skipped.items():
    notes.append(f'{", ".join(which)} skipped: {reason}')
  dropped = {n for which in skipped.values() for n in which}
  return [n for n in names if n not in dropped], notes


def build_configs(sizes: list[int], tree_names: list[str]):
  """``(label, shapes)`` per single-leaf size and per named tree."""
  configs = [
    (f'leaf {reporting.size_label(n)}', trees.single_leaf_shapes(n))
    for n in sizes
  ]
  for name in tree_names:
    shapes = trees.TREES[name]()
    configs.append((f'{name} ({len(shapes)} leaves)', shapes))
  return configs


def _static_parity_step():
  """A fresh ``(params, state, grads) -> (params, state)``: the odd step of
  :func:`pnm_optax.pnm_train_step`."""
  update = pnm_optax.pnm_train_step(contenders.LEARNING_RATE).update
  return lambda params, state, grads: update(params, state, grads, True)


def measure_compile(
  label: str,
  shapes,
  names: list[str],
  repeats: int,
  on_round,
  deadline: float = float('inf'),
) -> list[dict]:
  """Cold compile costs of the JAX optimizers' train step on one tree (no
  compile starts after ``deadline``, a ``time.monotonic()`` value)."""
  params = trees.abstract_tree(shapes)
  makers, args = {}, {}
  for name in names:
    if name == contenders.STATIC_PARITY:
      # The odd step; the even one is its mirror image.
      makers[name] = _static_parity_step
      init = pnm_optax.pnm_train_step(contenders.LEARNING_RATE).init
      args[name] = (params, jax.eval_shape(init, params), params)
      continue
    # A fresh optimizer and closure per compile: nothing cached can answer.
    makers[name] = lambda name=name: timing.make_train_step(
      contenders.make(name)
    )
    args[name] = (
      params,
      jax.eval_shape(contenders.make(name).init, params),
      params,
    )
  measured = xla_probes.compile_rounds(
    makers,
    args,
    (0, 1),
    repeats,
    trees.num_params(shapes),
    len(shapes),
    on_round,
    deadline,
  )
  samples = {n: m['samples'] for n, m in measured.items()}
  rows = []
  for name, m in measured.items():
    row: dict[str, Any] = dict(
      config=label,
      num_params=trees.num_params(shapes),
      num_leaves=len(shapes),
      optimizer=name,
      **m,
    )
    for ref in RATIO_REFS:
      row[f'total_x_{ref}'] = timing.per_round_ratio(
        samples, name, ref, 'total_s'
      )
    rows.append(row)
  return rows


def measure_steps(
  label: str,
  shapes,
  names: list[str],
  repeats: int,
  target_s: float,
  on_round,
  deadline: float = float('inf'),
  on_build=lambda name: None,
) -> tuple[list[dict], list[str]]:
  """Step times of ``names`` side by side on one tree; a row per optimizer
  (a row with ``error`` for one that failed to build or run), and the names
  not built because ``deadline`` (``time.monotonic()``) had passed (the
  baseline is always built; ``on_build(name)`` is called before each)."""
  n = trees.num_params(shapes)
  key_p, key_g = jax.random.split(jax.random.key(0))
  params = trees.make_tree(shapes, key_p)
  grads = trees.make_tree(shapes, key_g, scale=1e-2)
  runners, errors, late = [], {}, []
  loop = len(shapes) <= LOOP_MAX_LEAVES
  for name in names:
    if name != contenders.BASELINE and time.monotonic() > deadline:
      late.append(name)
      continue
    on_build(name)
    try:
      if contenders.is_torch(name):
        runners.append(timing.TorchRunner(name, shapes))
      elif name == contenders.STATIC_PARITY:
        runners.append(timing.StaticParityRunner(name, params, grads, loop))
      else:
        runners.append(
          timing.JaxRunner(
            name,
            contenders.make(name),
            params,
            grads,
            loop,
          )
        )
    except Exception as e:
      errors[name] = f'{type(e).__name__}: {e}'.splitlines()[0][:160]
  del params
  samples, steps = timing.run_rounds(
    runners, repeats, target_s, on_round, deadline
  )
  rows = []
  for r in runners:
    row: dict[str, Any] = dict(
      config=label,
      num_params=n,
      num_leaves=len(shapes),
      optimizer=r.name,
      steps_per_sample=steps[r.name],
      device_s=timing.median(samples[r.name]['device']),
      dispatched_s=timing.median(samples[r.name]['dispatched']),
    )
    for kind in ('device', 'dispatched'):
      for ref in RATIO_REFS:
        row[f'{kind}_x_{ref}'] = timing.per_round_ratio(
          samples, r.name, ref, kind
        )
    row.update(
      floor_words=contenders.ALL[r.name].floor_words, samples=samples[r.name]
    )
    if contenders.is_torch(r.name):
      row['torch_device'] = r.device
    rows.append(row)
  for name, err in errors.items():
    rows.append(
      dict(
        config=label,
        num_params=n,
        num_leaves=len(shapes),
        optimizer=name,
        error=err,
      )
    )
  return rows, late


def plan(configs, names: list[str], budget: float, budget_text: str):
  """Memory plan per configuration: ``(label, shapes, groups)`` to run, and
  what is skipped and why, and notes on configurations run in groups."""
  planned, skipped, notes = [], [], []
  baseline = [contenders.BASELINE]
  for label, shapes in configs:
    n = trees.num_params(shapes)
    if memory.bytes_needed(n, baseline) > budget:
      skipped.append(
        dict(
          config=label,
          num_params=n,
          reason=(
            f'needs ~{memory.bytes_needed(n, names) / 2**30:.1f} GiB for all '
            'optimizers side by side, '
            f'{memory.bytes_needed(n, baseline) / 2**30:.1f} GiB for the '
            f'baseline alone, {budget_text}'
          ),
        )
      )
      continue
    groups, too_big = memory.plan_groups(n, names, budget)
    for name in too_big:
      need = memory.bytes_needed(n, baseline + [name])
      skipped.append(
        dict(
          config=label,
          num_params=n,
          optimizer=name,
          reason=f'{name} needs ~{need / 2**30:.1f} GiB next '
          f'to the baseline, {budget_text}',
        )
      )
    if len(groups) > 1:
      notes.append(
        f'{label}: all optimizers side by side need '
        f'~{memory.bytes_needed(n, names) / 2**30:.1f} GiB, '
        f'{budget_text}; measured in groups, ratios within each '
        'group: ' + ' '.join('(' + ', '.join(g) + ')' for g in groups)
      )
    if groups:
      planned.append((label, shapes, groups))
  return planned, skipped, notes


def main(argv=None) -> dict:
  argv = sys.argv[1:] if argv is None else list(argv)
  if '--whole-step' in argv:
    from benchmarks.speed import whole_step

    argv.remove('--whole-step')
    return whole_step.main(argv)
  args = parse_args(argv)
  names, notes = select_optimizers(
    args.optimizers, args.no_torch, args.compile_only
  )
  jax_names = [n for n in names if not contenders.is_torch(n)]
  cache_dir = getattr(jax.config, 'jax_compilation_cache_dir', None)
  if cache_dir:
    # A persistent cache would answer the second compile of the same step.
    jax.config.update('jax_enable_compilation_cache', False)
    notes.append(
      f'persistent compilation cache ({cache_dir}) switched off for this run'
    )
  uses_torch = any(contenders.is_torch(n) for n in names)
  if uses_torch and args.torch_threads:
    import torch  # pyright: ignore[reportMissingImports]  (optional)

    torch.set_num_threads(args.torch_threads)
  info = environment.collect()
  if uses_torch:
    import torch  # pyright: ignore[reportMissingImports]  (optional)

    info['torch_threads'] = torch.get_num_threads()
  for line in environment.header_lines(info):
    print(line)
  if uses_torch:
    print(f'# torch threads: {info["torch_threads"]}')

  configs = build_configs(args.sizes, args.trees)
  skipped = []
  if args.compile_only:
    planned = [(label, shapes, []) for label, shapes in configs]
  else:
    budget = args.mem_fraction * memory.available_bytes()
    planned, skipped, plan_notes = plan(
      configs,
      names,
      budget,
      f'budget {budget / 2**30:.1f} GiB '
      f'({args.mem_fraction:.0%} of available memory)',
    )
    notes += plan_notes
  for s in skipped:
    what = s['config'] + (f' {s["optimizer"]}' if 'optimizer' in s else '')
    print(f'# skipped {what}: {s["reason"]}')
  for note in notes:
    print(f'# {note}')

  result = dict(
    meta=info,
    complete=False,
    budget_s=args.budget,
    config_budget_s=args.config_budget,
    repeats=args.repeats,
    compile_repeats=args.compile_repeats,
    target_time_s=args.target_time,
    skipped=skipped,
    notes=notes,
    rows=[],
    compile_rows=[],
  )
  json_path = os.path.join(args.out, 'step_time.json')
  save = lambda: _write(json_path, result)
  copy_n = min(
    2**25, max([trees.num_params(s) for _, s, _ in planned] + [2**16])
  )
  copy_gbps = []
  if not args.compile_only:
    copy_gbps.append(timing.measure_copy_bandwidth(copy_n, 5, args.target_time))

  from tqdm import tqdm

  total = sum(
    args.compile_repeats + len(groups) * args.repeats
    for _, _, groups in planned
  )
  progress = tqdm(
    total=total, desc='rounds', disable=args.no_progress, file=sys.stderr
  )
  tick = lambda: progress.update(1)
  started = time.monotonic()
  for index, (label, shapes, groups) in enumerate(planned):
    now = time.monotonic()
    if index > 0 and now - started > args.budget:
      skipped.append(
        dict(
          config=label,
          num_params=trees.num_params(shapes),
          reason=f"not started: the report's {args.budget:g} s budget "
          'was spent',
        )
      )
      print(f'# skipped {label}: over the {args.budget:g} s budget')
      continue
    deadline = min(now + args.config_budget, started + args.budget)
    progress.set_postfix_str(f'{label}: compile')
    too_big = {s.get('optimizer') for s in skipped if s['config'] == label}
    wanted = [n for n in jax_names if n not in too_big]
    compile_rows = measure_compile(
      label,
      shapes,
      wanted,
      args.compile_repeats,
      tick,
      # Half the configuration's time at most: step times matter more.
      min(deadline, now + args.config_budget / 2),
    )
    result['compile_rows'] += compile_rows
    compiled = {r['optimizer'] for r in compile_rows}
    words = {r['optimizer']: r['hlo_words'] for r in compile_rows}
    late = [f'{n} (compile)' for n in wanted if n not in compiled]
    for i, group in enumerate(groups):
      group_rows, group_late = measure_steps(
        label,
        shapes,
        group,
        args.repeats,
        args.target_time,
        tick,
        deadline,
        lambda name, label=label: progress.set_postfix_str(f'{label}: {name}'),
      )
      late += [f'{n} (step time)' for n in group_late]
      for row in group_rows:
        row['hlo_words'] = words.get(row['optimizer'])
      # The baseline's row from the first group stands for the config.
      result['rows'] += [
        r for r in group_rows if i == 0 or r['optimizer'] != contenders.BASELINE
      ]
    if late:
      reason = (
        f"not reached in the configuration's {args.config_budget:g} s "
        'budget (compiling dominates)'
      )
      skipped.append(
        dict(
          config=label,
          num_params=trees.num_params(shapes),
          optimizer=', '.join(late),
          reason=reason,
        )
      )
      print(f'# skipped {label} {", ".join(late)}: {reason}')
    print(
      f'# {label}: {time.monotonic() - now:.0f} s',
      file=sys.stderr,
      flush=True,
    )
    save()
  progress.close()
  result['seconds'] = time.monotonic() - started
  print(
    f'# measured in {result["seconds"]:.0f} s; skipped: '
    + (
      '; '.join(
        s['config'] + (f' {s["optimizer"]}' if 'optimizer' in s else '')
        for s in skipped
      )
      or 'nothing'
    )
  )
  rows, compile_rows = result['rows'], result['compile_rows']

  if not args.compile_only:
    copy_gbps.append(timing.measure_copy_bandwidth(copy_n, 5, args.target_time))
    copy = statistics.median(copy_gbps)
    report.add_bandwidth(rows, copy)
    result.update(
      copy_gbps=copy, copy_gbps_samples=copy_gbps, copy_num_params=copy_n
    )
    print(
      f'# copy bandwidth (donated jitted x * s, faster of calls and '
      f'loop, {reporting.size_label(copy_n)} float32, read + write): '
      f'{copy:.1f} GB/s (before/after: {copy_gbps[0]:.1f}/'
      f'{copy_gbps[1]:.1f})'
    )
    print('# ' + report.STEP_NOTE.format(repeats=args.repeats))
    print()
    result['table'] = report.step_table(rows)
    print(result['table'])
    print()
    result['state_bytes_per_param'] = {
      n: dict(
        f32=memory.state_bytes_per_param(n, None),
        bf16_mu=memory.state_bytes_per_param(n, jnp.bfloat16),
      )
      for n in jax_names
      if n in contenders.JAX_OPTIMIZERS
    }
    result['memory_table'] = report.memory_table(
      result['state_bytes_per_param']
    )
    print(result['memory_table'])
    print()
  if compile_rows:
    print('# ' + report.COMPILE_NOTE.format(repeats=args.compile_repeats))
    print()
    result['compile_table'] = report.compile_table(compile_rows)
    print(result['compile_table'])
    print()
  result['key_ratios'] = report.key_ratios(rows, compile_rows)
  for line in result['key_ratios']:
    print('# ' + line)
  info['loadavg_end'] = [round(x, 2) for x in os.getloadavg()]
  print(f'# load average at end (1, 5, 15 min): {info["loadavg_end"]}')

  if args.layouts:
    from benchmarks.speed import layouts

    print()
    result['layouts'] = layouts.run(
      args.layout_size,
      args.repeats,
      args.target_time,
      progress=not args.no_progress,
    )
  result['complete'] = True
  save()
  wrote = [json_path]
  if not args.no_plot and any('error' not in r for r in rows):
    png = os.path.join(args.out, 'step_time.png')
    report.plot(rows, png)
    wrote.append(png)
  print('# wrote ' + ' and '.join(wrote))
  return result


def _write(path: str, result: dict) -> None:
  try:
    reporting.write_json(path, result)
  except OSError as e:
    argtypes.fail(PROG, f'cannot write {path}: {e}')


if __name__ == '__main__':
  main()
