"""The noise study (``python -m benchmarks.comparison --study noise``).

What PNM's ``b0`` does on MNIST-1D, as a map over the MLP and the ConvBase
CNN, under the protocol for noisy training (docs/noise.md):

- every arm gets its own learning rate, picked on a validation split from a
  grid of 5 (ratio 2, extended at the edges) with 4 grid seeds: SGD-M
  (momentum 0.9), SGD-M with momentum ``b1^2 = 0.81`` (the decay of each of
  PNM's two buffers: the control for the buffers) and PNM at each ``b0`` in
  0, 1, 2, 3 (each ``b0``'s grid centred on the lr that keeps the mean step
  of ``b0 = 0``, ``pnm_optax.b0_matched_learning_rate``);
- a secondary arm per ``b0 > 0`` runs at exactly that matched lr (only the
  noise changes, not the mean step);
- every arm then trains 20 seeds on the full training set (seed ``s``: same
  initialisation and data order everywhere); each mean comes with its 95%
  t interval, each paired difference with its interval, its raw and
  Holm-adjusted p-value (Holm-Bonferroni over the comparisons of one table)
  and, where not significant, the smallest difference the seeds could have
  detected;
- each arm reports whether its training loss or test error still moved over
  the last 20% of the epochs; every cell runs the same number of steps
  (a larger batch gets more epochs).

At the end of each run the training loss's Hessian is measured per seed
(:mod:`curvature`: Hutchinson trace, top eigenvalue).

Each (model, batch size) is one results file of the comparison job, saved
configuration by configuration, so an interrupted study resumes where it
stopped. The study writes ``<out>/noise_study.md`` (tables),
``noise_study.json`` (the numbers the docs are generated from) and
``noise_study.png`` (the map).
"""

import math
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np

from benchmarks.common import reporting
from benchmarks.comparison import (
  api,
  curvature,
  plots,
  protocol,
  statistics,
  summary,
  tables,
)
from benchmarks.comparison import progress as progress_lib
from benchmarks.comparison import settings as settings_lib

MODELS = ('mlp', 'cnn')
BATCH_SIZES = (100,)
REFERENCE_BATCH = 100  # every cell runs the steps of this batch size
B0_VALUES = (0.0, 1.0, 2.0, 3.0)
B1 = 0.9
EPOCHS = 30
SEEDS = 20
GRID_POINTS = 5
GRID_RATIO = 2.0
GRID_SEEDS = 4
MAX_EXTENSIONS = 2
# Centres of the lr grids: PNM at b0 = 0 (its lr is its mean step per unit
# gradient) and SGD-M 0.9. SGD-M 0.81's grid is centred on the lr with the
# mean step of SGD-M 0.9's pick, each b0 > 0 on the lr with the mean step of
# b0 = 0's pick. PNM's grid sits lower than SGD-M's mean step: at equal mean
# steps PNM is stable on a quadratic only up to lr * curvature < 2 / (1 + 2
# b0), SGD-M 0.9 up to 38 (docs/noise.md).
CENTRES = {
  'mlp': {'pnm': 1.0, 'sgdm': 0.2},
  'cnn': {'pnm': 0.5, 'sgdm': 0.2},
}
HESSIAN = curvature.HessianMeasure(examples=512, probes=8, iterations=15)
SGDM = 'SGD-M 0.9'
SGDM_B1SQ = 'SGD-M 0.81'
HEADLINE = 'headline'
MATCHED = 'matched'


def pnm_arm(b0: float) -> str:
  """The PNM arm at ``b0`` with its own tuned lr."""
  return f'PNM b0={b0:g}'


def matched_arm(b0: float) -> str:
  """The secondary PNM arm at ``b0`` with b0 = 0's mean step."""
  return f'PNM b0={b0:g} matched'


TUNED_ARMS = (SGDM, SGDM_B1SQ) + tuple(pnm_arm(b) for b in B0_VALUES)
ARMS = TUNED_ARMS + tuple(matched_arm(b) for b in B0_VALUES if b)


def comparisons() -> list[tuple[str, str, str]]:
  """``(a, b, family)`` of every paired comparison in a cell: each b0 > 0
  against b0 = 0 and the decomposition of PNM - SGD-M into buffers and knob
  (the headline family), and each matched b0 against b0 = 0."""
  out = [(pnm_arm(b0), pnm_arm(0.0), HEADLINE) for b0 in B0_VALUES if b0]
  out += [
    (pnm_arm(0.0), SGDM, HEADLINE),
    (pnm_arm(1.0), SGDM, HEADLINE),
    (SGDM_B1SQ, SGDM, HEADLINE),
  ]
  out += [(matched_arm(b0), pnm_arm(0.0), MATCHED) for b0 in B0_VALUES if b0]
  return out


def paired_tests(a: Mapping, b: Mapping) -> dict:
  """``a - b`` seed by seed: :func:`statistics.paired_summary` plus the
  two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``; None
  with fewer than two seeds or when every difference is zero)."""
  out = statistics.paired_summary(a, b)
  seeds = sorted(
    s
    for s in set(a) & set(b)
    if statistics.finite([a[s]]) and statistics.finite([b[s]])
  )
  diff = np.asarray([a[s] - b[s] for s in seeds], np.float64)
  out['wilcoxon_p'] = None
  if len(seeds) >= 2 and np.any(diff != 0):
    from scipy import stats

    out['wilcoxon_p'] = float(np.asarray(stats.wilcoxon(diff)[1], np.float64))
  return out


def cell_epochs(
  n_train: int, batch: int, epochs: int, steps_cap: int | None
) -> int:
  """The epochs that give batch size ``batch`` the steps of ``epochs``
  epochs at :data:`REFERENCE_BATCH` (at least ``epochs``' worth)."""

  def steps(b: int) -> int:
    return max(1, min(n_train // b, steps_cap or n_train))

  return max(1, math.ceil(epochs * steps(REFERENCE_BATCH) / steps(batch)))


def _cell_settings(model, batch, seeds, out, overwrite, epochs, steps_cap):
  centre = CENTRES[model]
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


def _hp(settings, arm: str, lr: float) -> dict:
  if arm == SGDM:
    return settings.hparams_for('sgdm', lr=lr)
  if arm == SGDM_B1SQ:
    return {**settings.hparams_for('sgdm', lr=lr), 'momentum': B1**2}
  return settings.hparams_for('pnm', lr=lr, b0=_b0(arm))


def _b0(arm: str) -> float:
  return float(arm.split('=')[1].split()[0])


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
  """One (model, batch size): an lr grid per arm, every arm with all seeds,
  the Hessian measure, paired tests (raw p; Holm across cells is
  :func:`adjust`'s)."""
  reporter = reporter or progress_lib.Progress()
  n_train = api.load_data(
    _cell_settings(model, batch, seeds, None, False, epochs, steps_cap)
  ).x_train.shape[0]
  cell_epoch_count = cell_epochs(n_train, batch, epochs, steps_cap)
  s = _cell_settings(
    model, batch, seeds, out, overwrite, cell_epoch_count, steps_cap
  )
  job = api.prepare(s, reporter)
  steps = job.trainer('test').steps_per_epoch * s.epoch_count
  reporter.message(
    f'== noise study: MNIST-1D {model}, batch {batch} '
    f'({s.epochs} epochs = {steps} steps), {seeds} seeds, lr grids of '
    f'{s.lr_grid} x {s.grid_seeds} seeds'
  )
  searches, picked = {}, {}
  for arm in TUNED_ARMS:
    if arm == SGDM_B1SQ:  # SGD-M 0.9's mean step
      centre = protocol.round_lr(picked[SGDM] * (1 - B1**2) / (1 - B1))
    elif arm == SGDM:
      centre = CENTRES[model]['sgdm']
    elif _b0(arm) == 0:
      centre = CENTRES[model]['pnm']
    else:
      centre = protocol.round_lr(
        statistics.matched_learning_rate(picked[pnm_arm(0.0)], _b0(arm))
      )
    name = 'sgdm' if arm.startswith('SGD') else 'pnm'
    search = job.tune(arm, name, lambda lr, arm=arm: _hp(s, arm, lr), centre)
    searches[arm], picked[arm] = search, search.picked
  seed_list = list(range(seeds))
  arms = {}
  for arm in ARMS:
    name = 'sgdm' if arm.startswith('SGD') else 'pnm'
    if arm in picked:
      lr = picked[arm]
    else:
      lr = statistics.matched_learning_rate(picked[pnm_arm(0.0)], _b0(arm))
    hp = _hp(s, arm, lr)
    history, measures = job.train_measured(name, hp, seed_list, 'test', HESSIAN)
    arms[arm] = {
      'optimizer': name,
      'hparams': hp,
      'tuned': arm in picked,
      'errors': summary.final_errors(history),
      **summary.summarize(history),
      **_measure_summary(measures or {}),
      'measures': measures,
    }
  paired = [
    {
      'a': a,
      'b': b,
      'family': family,
      **paired_tests(arms[a]['errors'], arms[b]['errors']),
    }
    for a, b, family in comparisons()
  ]
  for arm in arms.values():
    arm['errors'] = {str(k): v for k, v in arm['errors'].items()}
  return {
    'model': model,
    'batch_size': batch,
    'epochs': s.epochs,
    'steps': steps,
    'seeds': seeds,
    'grid_seeds': s.grid_seeds,
    'picked_lr': picked,
    'grid': {k: v.as_json() for k, v in searches.items()},
    'arms': arms,
    'paired': paired,
    'json_path': job.store.json_path,
    'environment': job.environment,
  }


def adjust(cells: Sequence[dict]) -> None:
  """Adds ``p_holm`` to every comparison: Holm-Bonferroni over all the
  comparisons of one family (one table) across the cells."""
  for family in (HEADLINE, MATCHED):
    pairs = [p for c in cells for p in c['paired'] if p['family'] == family]
    adjusted = statistics.holm([p['p_value'] for p in pairs])
    for pair, p_holm in zip(pairs, adjusted):
      pair['p_holm'] = p_holm


def find_pair(cell: Mapping, a: str, b: str) -> dict:
  return next(p for p in cell['paired'] if p['a'] == a and p['b'] == b)


# ------------------------------------------------------------------ output


def _p(value) -> str:
  return reporting.fmt(value, '.2g')


def _stars(p) -> str:
  if p is None:
    return ''
  return '**' if p < 0.01 else '*' if p < 0.05 else ''


def error_ci(arm: Mapping) -> str:
  """Mean test error % with its 95% interval."""
  if arm['test_error_mean'] is None:
    return '-'
  low, high = arm['test_error_ci']
  text = f'{100 * arm["test_error_mean"]:.2f}'
  if low is not None and high is not None:
    text += f' [{100 * low:.2f}, {100 * high:.2f}]'
  diverged = len(arm['diverged_seeds'])
  if diverged:
    text += f' ({diverged} diverged)'
  return text


def difference_ci(pair: Mapping) -> str:
  """Mean paired difference in points with its 95% interval."""
  if pair['mean'] is None:
    return '-'
  text = f'{100 * pair["mean"]:+.2f}'
  if pair.get('ci_low') is not None:
    text += f' [{100 * pair["ci_low"]:+.2f}, {100 * pair["ci_high"]:+.2f}]'
  return text


def detectable(pair: Mapping) -> str:
  """The smallest detectable difference (points) where the adjusted p is
  0.05 or more, else ``-``."""
  p = pair.get('p_holm')
  if pair.get('detectable') is None or (p is not None and p < 0.05):
    return '-'
  return f'{100 * pair["detectable"]:.2f}'


def _cell_name(c: Mapping) -> str:
  return f'{c["model"].upper()} (batch {c["batch_size"]}, {c["steps"]} steps)'


def headline_table(cells: Sequence[Mapping]) -> str:
  """Per cell: SGD-M 0.9 and PNM at each b0 at its own lr, test error with
  95% interval, and each b0 against b0 = 0 (difference, interval, raw and
  Holm-adjusted p)."""
  head = [
    'model',
    'arm',
    'lr',
    'test error % [95% CI]',
    'vs PNM b0=0 (points [95% CI])',
    'p',
    'Holm p',
  ]
  rows = []
  for c in cells:
    for arm in (SGDM,) + tuple(pnm_arm(b) for b in B0_VALUES):
      a = c['arms'][arm]
      pair = next(
        (p for p in c['paired'] if p['a'] == arm and p['b'] == pnm_arm(0.0)),
        None,
      )
      rows.append(
        [
          c['model'].upper(),
          arm,
          f'{a["hparams"]["lr"]:.3g}',
          error_ci(a),
          '-' if pair is None else difference_ci(pair),
          '-' if pair is None else _p(pair['p_value']),
          '-' if pair is None else _p(pair.get('p_holm')),
        ]
      )
  return reporting.markdown_table(head, rows)


def paired_table(cells: Sequence[Mapping], family: str) -> str:
  """Every comparison of ``family``: difference with interval, t-test p
  (raw, Holm-adjusted over the table), Wilcoxon p, the smallest detectable
  difference where not significant, and wins."""
  head = [
    'model',
    'comparison',
    'difference (points [95% CI])',
    't-test p',
    'Holm p',
    'Wilcoxon p',
    'detectable (points)',
    'wins / losses',
    'seeds',
  ]
  rows = [
    [
      c['model'].upper(),
      f'{p["a"]} - {p["b"]}',
      difference_ci(p),
      _p(p['p_value']),
      _p(p.get('p_holm')),
      _p(p['wilcoxon_p']),
      detectable(p),
      f'{p["a_wins"]} / {p["b_wins"]}',
      p['n'],
    ]
    for c in cells
    for p in c['paired']
    if p['family'] == family
  ]
  return reporting.markdown_table(head, rows)


def results_table(cells: Sequence[Mapping]) -> str:
  """Every arm of every cell: lr, test error with interval, final training
  loss, whether it was still moving, Hessian trace and top eigenvalue."""
  head = [
    'model',
    'arm',
    'lr',
    'test error % [95% CI]',
    'train loss',
    'still moving',
    'Hessian trace',
    'top eigenvalue',
  ]
  rows = []
  for c in cells:
    for arm_name, arm in c['arms'].items():
      rows.append(
        [
          _cell_name(c),
          arm_name,
          f'{arm["hparams"]["lr"]:.3g}',
          error_ci(arm),
          reporting.fmt(arm['train_loss_mean'], '.3f'),
          tables.moved(arm),
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


def grid_table(cells: Sequence[Mapping]) -> str:
  """Each arm's validation curve over its lr grid (mean over the grid
  seeds +- standard error), the pick, and a note when the pick is at an
  edge or a neighbour scored within one standard error."""
  head = ['model', 'arm', 'validation error % at lr (+- SE)', 'picked', 'note']
  rows = []
  for c in cells:
    for arm, g in c['grid'].items():
      rows.append(
        [
          c['model'].upper(),
          arm,
          grid_curve(g),
          f'{g["picked"]:.3g}',
          grid_note(g),
        ]
      )
  return reporting.markdown_table(head, rows)


def grid_curve(g: Mapping) -> str:
  parts = []
  for p in g['grid']:
    if p['validation_error'] is None or math.isinf(p['validation_error']):
      parts.append(f'{p["lr"]:g}: diverged')
      continue
    text = f'{p["lr"]:.3g}: {100 * p["validation_error"]:.2f}'
    if p.get('standard_error') is not None:
      text += f' +- {100 * p["standard_error"]:.2f}'
    parts.append(text)
  return ', '.join(parts)


def grid_note(g: Mapping) -> str:
  notes = []
  if g['at_edge']:
    notes.append(f'at the {g["at_edge"]} edge')
  if g.get('close_neighbours'):
    notes.append(
      'within 1 SE: ' + ', '.join(f'{lr:g}' for lr in g['close_neighbours'])
    )
  return '; '.join(notes)


def best_b0(cell: Mapping) -> float:
  """The b0 with the lowest mean test error (each at its own lr)."""
  errors = {
    b0: cell['arms'][pnm_arm(b0)]['test_error_mean'] for b0 in B0_VALUES
  }
  return min(
    (b for b in errors if errors[b] is not None),
    key=lambda b: (errors[b], b),
  )


def map_figure(cells: Sequence[Mapping]) -> plots.Figure:
  """The map: per (model, batch) row and b0 column, the test error
  difference to b0 = 0, each b0 at its own lr (points; * Holm-adjusted
  p < 0.05, ** p < 0.01, paired t-test)
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
          diff_text[i][j] = f'{diff[i, j]:+.1f}{_stars(pair.get("p_holm"))}'
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
    'PNM on MNIST-1D, each b0 at its own lr '
    '(* Holm p < 0.05, ** < 0.01, paired t-test over seeds)',
    fontsize=10,
  )
  fig.tight_layout()
  return fig


def markdown(cells: Sequence[Mapping], seconds: Mapping, total: float) -> str:
  env = cells[0]['environment']
  v = env['versions']
  parts = ', '.join(f'{k} {t:.0f} s' for k, t in seconds.items())
  c0 = cells[0]
  lines = [
    '# Noise study: PNM b0 on MNIST-1D',
    '',
    f'Machine: {env["cpu"]}, {env["cpu_count"]} cores; JAX backend '
    f'{env["backend"]}; load average at start {env["loadavg"]}.',
    f'Versions: jax {v["jax"]}, flax {v["flax"]}, optax {v["optax"]}; '
    f'commit {env["git_commit"]}; {env["timestamp_utc"]}.',
    f'Wall time: {total:.0f} s in all ({parts}).',
    f'Protocol: every arm its own lr from a grid on validation '
    f'({c0["grid_seeds"]} seeds per point), then {c0["seeds"]} seeds; '
    '95% t intervals; Holm-Bonferroni within each table.',
    '',
    '## Headline: each b0 at its own learning rate',
    '',
    headline_table(cells),
    '',
    '## Paired comparisons (headline family)',
    '',
    paired_table(cells, HEADLINE),
    '',
    '## b0 at the mean step of b0 = 0 (secondary arms)',
    '',
    paired_table(cells, MATCHED),
    '',
    '## Every arm',
    '',
    results_table(cells),
    '',
    '## Learning rates picked on the validation split',
    '',
    grid_table(cells),
    '',
  ]
  return '\n'.join(lines)


def published(cells: Sequence[Mapping], seconds: Mapping, total: float) -> dict:
  """What ``noise_study.json`` keeps: every cell without its per-seed
  Hessian measures and paths, and the wall times."""
  keep = []
  for c in cells:
    cell = {k: v for k, v in c.items() if k != 'json_path'}
    cell['arms'] = {
      name: {k: v for k, v in arm.items() if k != 'measures'}
      for name, arm in c['arms'].items()
    }
    keep.append(cell)
  return {
    'study': 'noise',
    'cells': keep,
    'wall_seconds': total,
    'part_seconds': dict(seconds),
  }


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
  ``markdown``, ``wall_seconds`` and the paths written. ``epochs`` (at
  batch :data:`REFERENCE_BATCH`; larger batches get the same steps),
  ``steps_cap`` (steps per epoch), ``models`` and ``batch_sizes`` shrink or
  widen it."""
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
  adjust(cells)
  total = time.perf_counter() - start
  text = markdown(cells, seconds, total)
  paths = {
    'markdown': os.path.join(out, 'noise_study.md'),
    'json': os.path.join(out, 'noise_study.json'),
    'png': os.path.join(out, 'noise_study.png') if plot else None,
  }
  with open(paths['markdown'], 'w') as f:
    f.write(text)
  reporting.write_json(paths['json'], published(cells, seconds, total))
  if plot:
    map_figure(cells).savefig(os.path.join(out, 'noise_study.png'), dpi=100)
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
