"""The MNIST-1D study (``python -m benchmarks.comparison --study full``).

Three comparisons, each resumable like any other run:

1. the ConvBase CNN: every optimizer's lr picked from a grid of 5 (ratio 2,
   extended at the edges) on a validation split with 5 seeds, then 25 seeds
   at the picked lrs on the full training set, paired statistics;
2. the same for the 40-100-100-10 MLP;
3. PNM on the CNN at its picked lr: b0 in 0, 1, 2, 3 at a fixed lr and at
   the lr that keeps the mean step (``pnm_optax.b0_matched_learning_rate``).

It prints README-ready Markdown (machine, versions, wall time per part) and
writes it to ``<out>/mnist1d_study.md``.
"""

import json
import os
import time

import numpy as np

from benchmarks.comparison import api
from benchmarks.comparison import progress as progress_lib
from benchmarks.comparison import settings as settings_lib

GRID_POINTS = 5
GRID_SEEDS = 5
B0_VALUES = (0.0, 1.0, 2.0, 3.0)


def run_study(
  out: str,
  seeds: int = 25,
  overwrite: bool = False,
  plot: bool = True,
  reporter: progress_lib.Progress | None = None,
) -> dict:
  """Runs the study; returns ``{'cnn', 'mlp', 'b0': results, 'markdown'}``."""
  reporter = reporter or progress_lib.Progress()
  start = time.perf_counter()
  common = dict(
    data='mnist1d', seeds=seeds, out=out, overwrite=overwrite, plot=plot
  )
  parts, seconds = {}, {}
  for model in ('cnn', 'mlp'):
    t = time.perf_counter()
    reporter.message(
      f'== MNIST-1D {model}: lr grids on validation, then {seeds} seeds'
    )
    parts[model] = api.prepare(
      settings_lib.Settings(
        model=model, lr_grid=GRID_POINTS, grid_seeds=GRID_SEEDS, **common
      ).resolved(),
      reporter,
    ).run()
    seconds[model] = time.perf_counter() - t
  t = time.perf_counter()
  reporter.message(f'== MNIST-1D cnn: PNM b0 sweep, {seeds} seeds')
  picked = parts['cnn']['hparams']['pnm']['lr']
  parts['b0'] = api.prepare(
    settings_lib.Settings(
      model='cnn',
      optimizers=('pnm',),
      hparams={'pnm': {'lr': picked}},
      b0_sweep=B0_VALUES,
      **common,
    ).resolved(),
    reporter,
  ).run()
  seconds['b0'] = time.perf_counter() - t
  total = time.perf_counter() - start
  markdown = _markdown(parts, seconds, total, seeds, _seed_costs(out, parts))
  path = os.path.join(out, 'mnist1d_study.md')
  with open(path, 'w') as f:
    f.write(markdown)
  print(markdown)
  print(f'wrote {path}')
  return {**parts, 'markdown': markdown, 'wall_seconds': total}


def _seed_costs(out: str, parts: dict) -> str:
  """Median milliseconds per seed and step of the CNN's configurations with
  few seeds (the grid) and with all seeds (the final runs), compile epochs
  left out: what training the seeds side by side costs."""
  with open(parts['cnn']['json_path']) as f:
    configurations = json.load(f)['configurations'].values()
  del out
  costs = {}
  for c in configurations:
    steps = c['steps_per_epoch']
    per_step = [
      1e3 * s / len(c['seeds']) / steps for s in c['epoch_seconds'][1:]
    ]
    costs.setdefault(len(c['seeds']), []).extend(per_step)
  return '; '.join(
    f'{n} seeds side by side: {np.median(v):.3f} ms per seed and step'
    for n, v in sorted(costs.items())
  )


def _markdown(
  parts: dict, seconds: dict, total: float, seeds: int, seed_costs: str
) -> str:
  env = parts['cnn']['environment']
  v = env['versions']
  lines = [
    '# MNIST-1D study',
    '',
    f'Machine: {env["cpu"]}, {env["cpu_count"]} cores, '
    f'{env["mem_total_gib"]} GiB; JAX backend {env["backend"]} '
    f'({env["device"]}); load average at start {env["loadavg"]}.',
    f'Versions: Python {v["python"]}, jax {v["jax"]}, flax {v["flax"]}, '
    f'optax {v["optax"]}, numpy {v["numpy"]}, pnm_optax {v["pnm_optax"]}; '
    f'commit {env["git_commit"]}; {env["timestamp_utc"]}.',
    f'Wall time: {total:.0f} s in all (CNN {seconds["cnn"]:.0f} s, MLP '
    f'{seconds["mlp"]:.0f} s, b0 sweep {seconds["b0"]:.0f} s).',
    f'CNN, batch 100 (median over epochs after the first): {seed_costs}.',
  ]
  for model, title in (
    ('cnn', 'ConvBase CNN (5,210 parameters)'),
    ('mlp', 'MLP 40-100-100-10 (15,210 parameters)'),
  ):
    r = parts[model]
    epochs = r['settings'].epochs
    lines += [
      '',
      f'## {title}',
      '',
      f'Test error % after {epochs} epochs, mean +- std over {seeds} '
      'seeds, at the learning rates picked on the validation split:',
      '',
      r['tables']['results'],
      '',
      'Paired by seed (difference in points; negative: PNM/AdaPNM lower '
      'error):',
      '',
      r['tables']['paired'],
      '',
      'Validation error % per learning rate (5 seeds each):',
      '',
      r['tables']['grid'],
    ]
  lines += [
    '',
    '## b0: noise at a fixed lr and at a matched mean step',
    '',
    'PNM on the CNN; the matched lr is the picked lr times '
    'n(b0)/n(1), n(b0) = sqrt((1+b0)^2+b0^2), so the mean step stays '
    'that of b0 = 1 and only the noise changes:',
    '',
    parts['b0']['tables']['b0'],
    '',
  ]
  return '\n'.join(lines)
