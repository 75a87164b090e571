"""The MNIST-1D study (``python -m benchmarks.comparison --study full``).

Two comparisons under the protocol for noisy training (docs/comparison.md),
each resumable like any other run: the ConvBase CNN and the 40-100-100-10
MLP, every optimizer's lr picked from a grid of 5 (ratio 2, extended at the
edges) on a validation split with 4 grid seeds, then 20 seeds at the picked
lrs on the full training set. Each mean comes with its 95% t interval; each
of the paired comparisons (PNM - SGD-M, AdaPNM - Adam, AdaPNM - AdamW per
model) with its interval, its raw p-value and its Holm-adjusted p over the
table (six comparisons), and the smallest difference the seeds could have
detected.

It prints Markdown (machine, versions, wall time per part), writes it to
``<out>/mnist1d_study.md``, and writes the numbers the docs are generated
from to ``<out>/full_study.json``.
"""

import json
import os
import time

import numpy as np

from benchmarks.common import reporting
from benchmarks.comparison import api, statistics, tables
from benchmarks.comparison import progress as progress_lib
from benchmarks.comparison import settings as settings_lib

MODELS = ('cnn', 'mlp')
GRID_POINTS = 5
GRID_SEEDS = 4
MAX_EXTENSIONS = 2
SEEDS = 20
EPOCHS = 30


def run_study(
  out: str,
  seeds: int = SEEDS,
  overwrite: bool = False,
  plot: bool = True,
  reporter: progress_lib.Progress | None = None,
  epochs: int = EPOCHS,
  steps_cap: int | None = None,
) -> dict:
  """Runs the study; returns ``{'cnn', 'mlp': results, 'markdown',
  'published', 'wall_seconds'}``. ``epochs`` and ``steps_cap`` (steps per
  epoch) shrink it for smoke runs."""
  reporter = reporter or progress_lib.Progress()
  start = time.perf_counter()
  parts, seconds = {}, {}
  for model in MODELS:
    t = time.perf_counter()
    reporter.message(
      f'== MNIST-1D {model}: lr grids on validation ({GRID_SEEDS} seeds per '
      f'point), then {seeds} seeds'
    )
    parts[model] = api.prepare(
      settings_lib.Settings(
        data='mnist1d',
        model=model,
        lr_grid=GRID_POINTS,
        grid_seeds=GRID_SEEDS,
        max_grid_extensions=MAX_EXTENSIONS,
        seeds=seeds,
        epochs=epochs,
        max_steps_per_epoch=steps_cap,
        out=out,
        overwrite=overwrite,
        plot=plot,
      ).resolved(),
      reporter,
    ).run()
    seconds[model] = time.perf_counter() - t
  # Holm over the whole table: both models' comparisons are one family.
  pairs = [p for m in MODELS for p in parts[m]['paired']]
  for pair, adjusted in zip(
    pairs, statistics.holm([p['p_value'] for p in pairs])
  ):
    pair['p_holm'] = adjusted
  total = time.perf_counter() - start
  data = published(parts, seconds, total, _seed_costs(parts))
  markdown = _markdown(data)
  path = os.path.join(out, 'mnist1d_study.md')
  with open(path, 'w') as f:
    f.write(markdown)
  json_path = os.path.join(out, 'full_study.json')
  reporting.write_json(json_path, data)
  print(markdown)
  print(f'wrote {path} and {json_path}')
  return {
    **parts,
    'markdown': markdown,
    'published': data,
    'wall_seconds': total,
  }


def published(
  parts: dict, seconds: dict, total: float, seed_costs: dict
) -> dict:
  """What ``full_study.json`` keeps: per model the settings, picked
  hyperparameters, summaries (per-seed errors, intervals, convergence),
  paired comparisons and grids; no curves."""
  models = {}
  for model in MODELS:
    r = parts[model]
    s = r['settings']
    models[model] = {
      'epochs': s.epochs,
      'batch_size': s.batch_size,
      'seeds': s.seeds,
      'grid_seeds': s.grid_seeds,
      'grid_points': s.lr_grid,
      'hparams': r['hparams'],
      'summary': r['summary'],
      'paired': r['paired'],
      'grid': r['grid'],
      'tables': r['tables'],
    }
  return {
    'study': 'full',
    'environment': parts[MODELS[0]]['environment'],
    'models': models,
    'wall_seconds': total,
    'part_seconds': seconds,
    'seed_costs_ms': seed_costs,
  }


def _seed_costs(parts: dict) -> dict:
  """Median milliseconds per seed and step of the CNN's configurations, by
  the number of seeds trained side by side, compile epochs left out."""
  with open(parts['cnn']['json_path']) as f:
    configurations = json.load(f)['configurations'].values()
  costs: dict[int, list[float]] = {}
  for c in configurations:
    steps = c['steps_per_epoch']
    per_step = [
      1e3 * s / len(c['seeds']) / steps for s in c['epoch_seconds'][1:]
    ]
    costs.setdefault(len(c['seeds']), []).extend(per_step)
  return {str(n): float(np.median(v)) for n, v in sorted(costs.items()) if v}


def _markdown(data: dict) -> str:
  env = data['environment']
  v = env['versions']
  seconds = data['part_seconds']
  lines = [
    '# MNIST-1D study',
    '',
    f'Machine: {env["cpu"]}, {env["cpu_count"]} cores, '
    f'{env["mem_total_gib"]} GiB; JAX backend {env["backend"]} '
    f'({env["device"]}); load average at start {env["loadavg"]}.',
    f'Versions: Python {v["python"]}, jax {v["jax"]}, flax {v["flax"]}, '
    f'optax {v["optax"]}, numpy {v["numpy"]}, pnm_optax {v["pnm_optax"]}; '
    f'commit {env["git_commit"]}; {env["timestamp_utc"]}.',
    f'Wall time: {data["wall_seconds"]:.0f} s in all (CNN '
    f'{seconds["cnn"]:.0f} s, MLP {seconds["mlp"]:.0f} s).',
  ]
  for model, title in (
    ('cnn', 'ConvBase CNN (5,210 parameters)'),
    ('mlp', 'MLP 40-100-100-10 (15,210 parameters)'),
  ):
    m = data['models'][model]
    lines += [
      '',
      f'## {title}',
      '',
      f'Test error % after {m["epochs"]} epochs over {m["seeds"]} seeds, at '
      'the learning rates picked on the validation split:',
      '',
      m['tables']['results'],
      '',
      'Paired by seed (difference in points; negative: PNM/AdaPNM lower '
      'error; Holm over both models):',
      '',
      tables.paired_table(m['paired']),
      '',
      f'Validation error % per learning rate ({m["grid_seeds"]} seeds each):',
      '',
      m['tables']['grid'],
    ]
  return '\n'.join(lines) + '\n'
