"""The noise study (``python -m benchmarks.comparison --study noise``).

What PNM's ``b0`` does on MNIST-1D, as a map: the MLP and the ConvBase CNN,
at batch sizes 100 and 1000 (the same number of epochs, so ten times fewer
steps at 1000), with

- PNM at ``b0`` in 0, 1, 2, 3, every ``b0`` at the learning rate that keeps
  the mean step of ``b0 = 0`` (``pnm_optax.b0_matched_learning_rate``), the
  reference lr picked on a validation split per model and batch size;
- SGD-M (momentum 0.9), its lr picked the same way;
- SGD-M with momentum ``b1^2 = 0.81``, the decay of each of PNM's two
  buffers, its lr picked the same way: the control for the buffers.

Every arm trains the same seeds side by side (seed ``s``: same
initialisation and data order everywhere). At the end of each run the
training loss's Hessian is measured per seed (:mod:`curvature`: Hutchinson
trace, top eigenvalue). Each ``b0`` is compared seed by seed with ``b0 = 0``
and with SGD-M (paired t-test and Wilcoxon signed-rank test).

Each (model, batch size) is one results file of the comparison job, saved
configuration by configuration, so an interrupted study resumes where it
stopped. The study writes ``<out>/noise_study.md`` (tables),
``noise_study.json`` and ``noise_study.png`` (the map).
"""

import math
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np

import pnm_optax
from benchmarks.common import reporting
from benchmarks.comparison import (
  api,
  curvature,
  plots,
  protocol,
  statistics,
  summary,
)
from benchmarks.comparison import progress as progress_lib
from benchmarks.comparison import settings as settings_lib

MODELS = ('mlp', 'cnn')
BATCH_SIZES = (100, 1000)
B0_VALUES = (0.0, 1.0, 2.0, 3.0)
B1 = 0.9
EPOCHS = 30
SEEDS = 10
GRID_POINTS = 5
GRID_RATIO = 2.0
GRID_SEEDS = 2
MAX_EXTENSIONS = 3
# Centres of the lr grids: PNM at b0 = 0 (its lr is its mean step per unit
# gradient) and SGD-M 0.9. SGD-M 0.81's grid is centred on the lr with the
# mean step of SGD-M 0.9's pick. PNM's grid sits lower than SGD-M's mean
# step: at equal mean steps PNM is stable on a quadratic only up to
# lr * curvature < 2 / (1 + 2 b0), SGD-M 0.9 up to 38 (docs/noise.md).
CENTRES = {
  ('mlp', 100): {'pnm': 1.0, 'sgdm': 0.2},
  ('mlp', 1000): {'pnm': 1.0, 'sgdm': 0.2},
  ('cnn', 100): {'pnm': 0.5, 'sgdm': 0.2},
  ('cnn', 1000): {'pnm': 0.5, 'sgdm': 0.2},
}
HESSIAN = curvature.HessianMeasure(examples=512, probes=8, iterations=15)
SGDM = 'SGD-M 0.9'
SGDM_B1SQ = 'SGD-M 0.81'


def pnm_arm(b0: float) -> str:
  return f'PNM b0={b0:g}'


ARMS = (SGDM, SGDM_B1SQ) + tuple(pnm_arm(b) for b in B0_VALUES)


def paired_tests(a: Mapping, b: Mapping) -> dict:
  """``a - b`` seed by seed: :func:`statistics.paired_difference` plus the
  two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``; None
  with fewer than two seeds or when every difference is zero)."""
  out = statistics.paired_difference(a, b)
  seeds = sorted(
    s
    for s in set(a) & set(b)
    if statistics.finite([a[s]]) and statistics.finite([b[s]])
  )
  diff = np.asarray([a[s] - b[s] for s in seeds], np.float64)
  out['wilcoxon_p'] = None
  if len(seeds) >= 2 and np.any(diff != 0):
    from scipy import stats

    out['wilcoxon_p'] = float(stats.wilcoxon(diff).pvalue)
  return out


def _cell_settings(model, batch, seeds, out, overwrite, epochs, steps_cap):
  centre = CENTRES[(model, batch)]
  return settings_lib.Settings(
    data='mnist1d',
    model=model,
    optimizers=('pnm', 'sgdm'),
    hparams={
      'pnm': {'lr': centre['pnm'], 'b0': 0.0, 'b1': B1},
      'sgdm': {'lr': centre['sgdm'], 'momentum': B1},
    },
    seeds=seeds,
    epochs=epochs,
    batch_size=batch,
    max_steps_per_epoch=steps_cap,
    lr_grid=GRID_POINTS,
    lr_grid_ratio=GRID_RATIO,
    grid_seeds=GRID_SEEDS,
    max_grid_extensions=MAX_EXTENSIONS,
    out=out,
    overwrite=overwrite,
    plot=False,
  ).resolved()


def _hp(settings, arm_kind: str, lr: float) -> dict:
  if arm_kind == SGDM:
    return settings.hparams_for('sgdm', lr=lr)
  if arm_kind == SGDM_B1SQ:
    return {**settings.hparams_for('sgdm', lr=lr), 'momentum': B1**2}
  return settings.hparams_for('pnm', lr=lr, b0=0.0)


def _measure_summary(measures: Mapping) -> dict:
  out = {}
  for key in ('hessian_trace', 'top_eigenvalue', 'trace_se'):
    out[key + '_mean'], out[key + '_std'] = statistics.mean_std(
      measures.get(key, [])
    )
  return out


def run_cell(
  model: str,
  batch: int,
  *,
  seeds: int,
  out: str | None,
  overwrite: bool = False,
  epochs: int = EPOCHS,
  steps_cap: int | None = None,
  reporter: progress_lib.Progress | None = None,
) -> dict:
  """One (model, batch size): lr grids, every arm with all seeds, the
  Hessian measure, paired tests."""
  reporter = reporter or progress_lib.Progress()
  s = _cell_settings(model, batch, seeds, out, overwrite, epochs, steps_cap)
  job = api.prepare(s, reporter)
  steps = job.trainer('test').steps_per_epoch * s.epochs
  reporter.message(
    f'== noise study: MNIST-1D {model}, batch {batch} '
    f'({s.epochs} epochs = {steps} steps), {seeds} seeds'
  )
  searches, picked = {}, {}
  for kind, centre in (
    (pnm_arm(0.0), CENTRES[(model, batch)]['pnm']),
    (SGDM, CENTRES[(model, batch)]['sgdm']),
    (SGDM_B1SQ, None),
  ):
    if centre is None:  # SGD-M 0.81: SGD-M 0.9's mean step
      centre = protocol.round_lr(picked[SGDM] * (1 - B1**2) / (1 - B1))
    name = 'sgdm' if kind.startswith('SGD') else 'pnm'
    search = protocol.search(
      lambda lr, kind=kind, name=name: job.validation_error(
        name, _hp(s, kind, lr)
      ),
      centre,
      s.lr_grid,
      s.lr_grid_ratio,
      s.max_grid_extensions,
    )
    if search.at_edge:
      reporter.message(
        f'WARNING: {kind}: the best lr {search.picked:g} is at the '
        f'{search.at_edge} edge of the grid after {search.extensions} '
        'extensions; the best lr may lie beyond'
      )
    searches[kind], picked[kind] = search, search.picked
  seed_list = list(range(seeds))
  arms = {}
  for kind in ARMS:
    if kind.startswith('PNM'):
      b0 = float(kind.split('=')[1])
      lr = float(pnm_optax.b0_matched_learning_rate(picked[pnm_arm(0)], b0))
      name, hp = 'pnm', s.hparams_for('pnm', lr=lr, b0=b0)
    else:
      name, hp = 'sgdm', _hp(s, kind, picked[kind])
    history, measures = job.train_measured(name, hp, seed_list, 'test', HESSIAN)
    arms[kind] = {
      'optimizer': name,
      'hparams': hp,
      'errors': summary.final_errors(history),
      **summary.summarize(history),
      **_measure_summary(measures or {}),
      'measures': measures,
    }
  paired = []
  for b0 in B0_VALUES:
    a = pnm_arm(b0)
    for b in (pnm_arm(0.0), SGDM) if b0 else (SGDM, SGDM_B1SQ):
      paired.append(
        {'a': a, 'b': b, **paired_tests(arms[a]['errors'], arms[b]['errors'])}
      )
  paired.append(
    {
      'a': SGDM_B1SQ,
      'b': SGDM,
      **paired_tests(arms[SGDM_B1SQ]['errors'], arms[SGDM]['errors']),
    }
  )
  for arm in arms.values():
    arm['errors'] = {str(k): v for k, v in arm['errors'].items()}
  return {
    'model': model,
    'batch_size': batch,
    'epochs': s.epochs,
    'steps': steps,
    'seeds': seeds,
    'picked_lr': picked,
    'grid': {k: v.as_json() for k, v in searches.items()},
    'arms': arms,
    'paired': paired,
    'json_path': job.store.json_path,
    'environment': job.environment,
  }


def find_pair(cell: Mapping, a: str, b: str) -> dict:
  return next(p for p in cell['paired'] if p['a'] == a and p['b'] == b)


# ------------------------------------------------------------------ output


def _pct_diff(p: Mapping) -> str:
  if p['mean'] is None:
    return '-'
  return f'{100 * p["mean"]:+.2f}'


def _p(value) -> str:
  return reporting.fmt(value, '.2g')


def _stars(p) -> str:
  if p is None:
    return ''
  return '**' if p < 0.01 else '*' if p < 0.05 else ''


def results_table(cells: Sequence[Mapping]) -> str:
  """Every arm of every cell: lr, test error, differences to b0 = 0 and to
  SGD-M 0.9 with p-values, final training loss, Hessian trace and top
  eigenvalue."""
  head = [
    'model',
    'batch',
    'steps',
    'arm',
    'lr',
    'test error %',
    'vs b0=0 (points; t, W p)',
    'vs SGD-M 0.9 (points; t, W p)',
    'train loss',
    'Hessian trace',
    'top eigenvalue',
  ]
  rows = []
  for c in cells:
    for kind, arm in c['arms'].items():
      vs = []
      for ref in (pnm_arm(0.0), SGDM):
        pair = next(
          (p for p in c['paired'] if p['a'] == kind and p['b'] == ref), None
        )
        vs.append(
          '-'
          if pair is None
          else f'{_pct_diff(pair)} ({_p(pair["p_value"])}; '
          f'{_p(pair["wilcoxon_p"])})'
        )
      diverged = len(arm['diverged_seeds'])
      err = (
        f'{reporting.fmt(100 * arm["test_error_mean"], ".2f")} +- '
        f'{reporting.fmt(100 * arm["test_error_std"], ".2f")}'
        if arm['test_error_mean'] is not None
        else '-'
      )
      if diverged:
        err += f' ({diverged} diverged)'
      rows.append(
        [
          c['model'].upper(),
          c['batch_size'],
          c['steps'],
          kind,
          f'{arm["hparams"]["lr"]:.3g}',
          err,
          *vs,
          reporting.fmt(arm['train_loss_mean'], '.3f'),
          _mean_std(arm['hessian_trace_mean'], arm['hessian_trace_std']),
          _mean_std(arm['top_eigenvalue_mean'], arm['top_eigenvalue_std']),
        ]
      )
  return reporting.markdown_table(head, rows)


def _mean_std(mean, std) -> str:
  if mean is None:
    return '-'
  digits = '.3g'
  return f'{reporting.fmt(mean, digits)} +- {reporting.fmt(std, digits)}'


def best_b0(cell: Mapping) -> float:
  """The b0 with the lowest mean test error."""
  errors = {
    b0: cell['arms'][pnm_arm(b0)]['test_error_mean'] for b0 in B0_VALUES
  }
  return min(
    (b for b in errors if errors[b] is not None),
    key=lambda b: (errors[b], b),
  )


def headline_table(cells: Sequence[Mapping]) -> str:
  """Per cell: SGD-M 0.9, SGD-M 0.81, PNM at b0 = 0 and 1 and the best b0;
  PNM (b0 = 1) - SGD-M 0.9 split into the buffers (b0 = 0 - SGD-M 0.9) and
  the knob (b0 = 1 - b0 = 0)."""
  head = [
    'model',
    'batch',
    'SGD-M 0.9',
    'SGD-M 0.81',
    'PNM b0=0',
    'PNM b0=1',
    'best b0',
    'b0=1 - SGD-M 0.9',
    '= buffers (b0=0 - SGD-M 0.9)',
    '+ knob (b0=1 - b0=0)',
  ]
  rows = []
  for c in cells:
    err = lambda k, c=c: reporting.fmt(
      None
      if c['arms'][k]['test_error_mean'] is None
      else 100 * c['arms'][k]['test_error_mean'],
      '.2f',
    )
    best = best_b0(c)
    total = find_pair(c, pnm_arm(1.0), SGDM)
    buffers = find_pair(c, pnm_arm(0.0), SGDM)
    knob = find_pair(c, pnm_arm(1.0), pnm_arm(0.0))
    cellf = lambda p: f'{_pct_diff(p)}{_stars(p["p_value"])}'
    rows.append(
      [
        c['model'].upper(),
        c['batch_size'],
        err(SGDM),
        err(SGDM_B1SQ),
        err(pnm_arm(0.0)),
        err(pnm_arm(1.0)),
        f'{best:g} ({err(pnm_arm(best))})',
        cellf(total),
        cellf(buffers),
        cellf(knob),
      ]
    )
  return reporting.markdown_table(head, rows)


def map_figure(cells: Sequence[Mapping]) -> plots.Figure:
  """The map: per (model, batch) row and b0 column, the test error
  difference to b0 = 0 (points; * p < 0.05, ** p < 0.01, paired t-test)
  and the Hessian trace relative to b0 = 0; the b0 = 0 column gives its
  test error and trace."""
  fig = plots.Figure(figsize=(9.0, 0.9 + 0.5 * len(cells)), dpi=100)
  axes = fig.subplots(1, 2)
  rows = [f'{c["model"].upper()} batch {c["batch_size"]}' for c in cells]
  shape = (len(cells), len(B0_VALUES))
  diff, ratio = np.full(shape, np.nan), np.full(shape, np.nan)
  diff_text = [[''] * len(B0_VALUES) for _ in cells]
  ratio_text = [[''] * len(B0_VALUES) for _ in cells]
  for i, c in enumerate(cells):
    base = c['arms'][pnm_arm(0.0)]
    for j, b0 in enumerate(B0_VALUES):
      arm = c['arms'][pnm_arm(b0)]
      if b0:
        pair = find_pair(c, pnm_arm(b0), pnm_arm(0.0))
        if pair['mean'] is not None:
          diff[i, j] = 100 * pair['mean']
          diff_text[i][j] = f'{diff[i, j]:+.1f}{_stars(pair["p_value"])}'
        if arm['hessian_trace_mean'] and base['hessian_trace_mean']:
          ratio[i, j] = arm['hessian_trace_mean'] / base['hessian_trace_mean']
          ratio_text[i][j] = f'x{ratio[i, j]:.2f}'
      else:
        diff[i, j] = ratio[i, j] = 0.0 if b0 == 0 else np.nan
        if base['test_error_mean'] is not None:
          diff_text[i][j] = f'{100 * base["test_error_mean"]:.1f}%'
        if base['hessian_trace_mean'] is not None:
          ratio_text[i][j] = f'{base["hessian_trace_mean"]:.3g}'
        ratio[i, j] = 1.0
  finite = np.isfinite(diff)
  limit = max(float(np.max(np.abs(diff[finite]))), 0.5) if finite.any() else 1
  panels = (
    (
      axes[0],
      diff,
      diff_text,
      'test error % at b0=0; others: difference (points)',
      dict(cmap='RdBu_r', vmin=-limit, vmax=limit),
      limit,
    ),
    (
      axes[1],
      np.log2(ratio),
      ratio_text,
      'Hessian trace at b0=0; others: ratio to it',
      dict(cmap='PuOr_r', vmin=-2.5, vmax=2.5),
      2.5,
    ),
  )
  for ax, values, texts, title, style, scale in panels:
    ax.imshow(np.ma.masked_invalid(values), aspect='auto', **style)
    ax.set_xticks(range(len(B0_VALUES)), [f'b0={b:g}' for b in B0_VALUES])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title, fontsize=9)
    for i in range(len(cells)):
      for j in range(len(B0_VALUES)):
        dark = np.isfinite(values[i, j]) and abs(values[i, j]) > 0.6 * scale
        ax.text(
          j,
          i,
          texts[i][j],
          ha='center',
          va='center',
          fontsize=9,
          color='white' if dark else 'black',
        )
  axes[1].set_yticks([])
  fig.suptitle(
    'PNM on MNIST-1D, b0 at the mean step of b0=0 '
    '(* p < 0.05, ** p < 0.01, paired t-test over seeds)',
    fontsize=10,
  )
  fig.tight_layout()
  return fig


def markdown(cells: Sequence[Mapping], seconds: Mapping, total: float) -> str:
  env = cells[0]['environment']
  v = env['versions']
  parts = ', '.join(f'{k} {t:.0f} s' for k, t in seconds.items())
  lines = [
    '# Noise study: PNM b0 on MNIST-1D',
    '',
    f'Machine: {env["cpu"]}, {env["cpu_count"]} cores; JAX backend '
    f'{env["backend"]}; load average at start {env["loadavg"]}.',
    f'Versions: jax {v["jax"]}, flax {v["flax"]}, optax {v["optax"]}; '
    f'commit {env["git_commit"]}; {env["timestamp_utc"]}.',
    f'Wall time: {total:.0f} s in all ({parts}).',
    '',
    '## Headline (test error %, mean over seeds; differences in points, '
    '* p < 0.05, ** p < 0.01, paired t-test)',
    '',
    headline_table(cells),
    '',
    '## Every arm',
    '',
    results_table(cells),
    '',
    '## Learning rates picked on the validation split',
    '',
  ]
  head = ['model', 'batch', 'arm', 'validation error % at lr', 'picked']
  rows = []
  for c in cells:
    for kind, g in c['grid'].items():
      tried = ', '.join(
        f'{p["lr"]:g}: '
        + (
          'diverged'
          if math.isinf(p['validation_error'])
          else f'{100 * p["validation_error"]:.2f}'
        )
        for p in g['grid']
      )
      note = f' (at the {g["at_edge"]} edge)' if g['at_edge'] else ''
      rows.append(
        [
          c['model'].upper(),
          c['batch_size'],
          kind,
          tried,
          f'{g["picked"]:g}{note}',
        ]
      )
  lines += [reporting.markdown_table(head, rows), '']
  return '\n'.join(lines)


def run_noise_study(
  out: str,
  seeds: int = SEEDS,
  overwrite: bool = False,
  plot: bool = True,
  reporter: progress_lib.Progress | None = None,
  epochs: int = EPOCHS,
  steps_cap: int | None = None,
  models: Sequence[str] = MODELS,
  batch_sizes: Sequence[int] = BATCH_SIZES,
) -> dict:
  """Runs the study (resuming what ``out`` holds); returns ``cells``,
  ``markdown``, ``wall_seconds`` and the paths written. ``epochs``,
  ``steps_cap`` (steps per epoch), ``models`` and ``batch_sizes`` shrink it
  for smoke runs."""
  reporter = reporter or progress_lib.Progress()
  start = time.perf_counter()
  cells, seconds = [], {}
  for model in models:
    for batch in batch_sizes:
      t = time.perf_counter()
      cells.append(
        run_cell(
          model,
          batch,
          seeds=seeds,
          out=out,
          overwrite=overwrite,
          epochs=epochs,
          steps_cap=steps_cap,
          reporter=reporter,
        )
      )
      seconds[f'{model.upper()} {batch}'] = time.perf_counter() - t
  total = time.perf_counter() - start
  text = markdown(cells, seconds, total)
  paths = {
    'markdown': os.path.join(out, 'noise_study.md'),
    'json': os.path.join(out, 'noise_study.json'),
    'png': os.path.join(out, 'noise_study.png') if plot else None,
  }
  with open(paths['markdown'], 'w') as f:
    f.write(text)
  reporting.write_json(
    paths['json'],
    {
      'cells': [{k: v for k, v in c.items()} for c in cells],
      'wall_seconds': total,
      'part_seconds': seconds,
    },
  )
  if plot:
    map_figure(cells).savefig(paths['png'], dpi=100)
  elif os.path.exists(os.path.join(out, 'noise_study.png')):
    os.remove(os.path.join(out, 'noise_study.png'))
  print(text)
  print(f'wrote {", ".join(p for p in paths.values() if p)}')
  return {
    'cells': cells,
    'markdown': text,
    'wall_seconds': total,
    'paths': paths,
  }
