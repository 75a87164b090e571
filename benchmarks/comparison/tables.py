"""Markdown tables of a comparison (errors in %, as the plots)."""

from collections.abc import Mapping, Sequence

from benchmarks.common import reporting
from benchmarks.comparison import optimizers as opt_lib
from benchmarks.comparison import protocol


def pct(mean, std=None) -> str:
  """``mean +- std`` in percent, ``-`` for a missing value."""
  if mean is None:
    return '-'
  text = reporting.fmt(100 * mean, '.2f')
  return text if std is None else f'{text} +- {reporting.fmt(100 * std, ".2f")}'


def pct_ci(low, high) -> str:
  """A 95% interval ``[low, high]`` in percent (``-`` when missing)."""
  if low is None or high is None:
    return '-'
  return f'[{100 * low:.2f}, {100 * high:.2f}]'


def moved(s: Mapping) -> str:
  """``yes``/``no``: whether training loss or held-out error still moved
  over the last epochs (see :func:`summary.convergence`)."""
  moved = (s.get('convergence') or {}).get('moved')
  if moved is None:
    return '-'
  return 'yes' if moved else 'no'


def _diverged(s: Mapping) -> str:
  n = len(s['diverged_seeds'])
  return f'{n}/{len(s["seeds"])} diverged' if n else ''


def results_table(
  summary: Mapping[str, Mapping], hparams: Mapping[str, Mapping], split: str
) -> str:
  """One row per optimizer: lr, weight decay, final and best-epoch error,
  final training loss, diverged seeds, wall time of the configuration."""
  head = [
    'optimizer',
    'lr',
    'weight decay',
    f'final {split} error %',
    '95% CI',
    f'best-epoch {split} error %',
    'final train loss',
    'still moving',
    'diverged',
    's (all seeds)',
  ]
  rows = []
  for name, s in summary.items():
    hp = hparams[name]
    rows.append(
      [
        opt_lib.label(name),
        f'{hp["lr"]:g}',
        f'{hp["weight_decay"]:g}',
        pct(s['test_error_mean'], s['test_error_std']),
        pct_ci(*s.get('test_error_ci', (None, None))),
        pct(s['best_test_error_mean'], s['best_test_error_std']),
        reporting.fmt(s['train_loss_mean'], '.4f'),
        moved(s),
        _diverged(s) or '-',
        reporting.fmt(s['wall_seconds'], '.1f'),
      ]
    )
  return reporting.markdown_table(head, rows)


def paired_table(paired: Sequence[Mapping]) -> str:
  """Per pair: mean +- std of the per-seed difference (points) and its 95%
  interval, the paired t-test p-value raw and Holm-adjusted over the table,
  the smallest difference the seeds could detect, and the win counts."""
  head = [
    'comparison',
    'difference (points)',
    '95% CI',
    'paired t-test p',
    'Holm p',
    'detectable (points)',
    'wins / losses / ties',
    'seeds',
  ]
  rows = []
  for p in paired:
    label = f'{opt_lib.label(p["a"])} - {opt_lib.label(p["b"])}'
    diff = (
      '-'
      if p['mean'] is None
      else (f'{100 * p["mean"]:+.2f} +- {100 * p["std"]:.2f}')
    )
    rows.append(
      [
        label,
        diff,
        pct_ci(p.get('ci_low'), p.get('ci_high')),
        reporting.fmt(p['p_value'], '.3g'),
        reporting.fmt(p.get('p_holm'), '.3g'),
        reporting.fmt(
          None if p.get('detectable') is None else 100 * p['detectable'], '.2f'
        ),
        f'{p["a_wins"]} / {p["b_wins"]} / {p["ties"]}',
        p['n'],
      ]
    )
  return reporting.markdown_table(head, rows)


def grid_table(searches: Mapping[str, protocol.GridSearch]) -> str:
  """Per optimizer: validation error at every lr tried (mean over the grid
  seeds), the pick, and whether the pick is still at an edge of the grid or
  a neighbour scored within one standard error of it."""
  head = [
    'optimizer',
    'validation error % at lr',
    'picked lr',
    'extensions',
    'note',
  ]
  rows = []
  for name, s in searches.items():
    cells = ', '.join(
      f'{lr:g}: {"diverged" if s.scores[lr] == float("inf") else pct(s.scores[lr])}'
      for lr in s.grid
    )
    notes = [f'best at the {s.at_edge} edge'] if s.at_edge else []
    if s.close_neighbours:
      notes.append(
        'within 1 SE: ' + ', '.join(f'{lr:g}' for lr in s.close_neighbours)
      )
    note = '; '.join(notes)
    rows.append(
      [opt_lib.label(name), cells, f'{s.picked:g}', s.extensions, note]
    )
  return reporting.markdown_table(head, rows)


def b0_table(sweep: Sequence[Mapping]) -> str:
  """b0 side by side: the fixed-lr sweep and the matched-mean-step sweep."""
  head = [
    'optimizer',
    'b0',
    'fixed lr',
    'test error % (fixed lr)',
    'matched lr',
    'test error % (matched mean step)',
  ]
  tuned = any('tuned' in e for e in sweep)
  if tuned:
    head += ['tuned lr', 'test error % (own lr)']
  rows = []
  for e in sweep:
    row = [
      opt_lib.label(e['optimizer']),
      f'{e["b0"]:g}',
      f'{e["fixed"]["lr"]:g}',
      pct(e['fixed']['test_error_mean'], e['fixed']['test_error_std']),
      f'{e["matched"]["lr"]:.4g}',
      pct(e['matched']['test_error_mean'], e['matched']['test_error_std']),
    ]
    if tuned and 'tuned' in e:
      row += [
        f'{e["tuned"]["lr"]:.4g}',
        pct(e['tuned']['test_error_mean'], e['tuned']['test_error_std']),
      ]
    rows.append(row)
  return reporting.markdown_table(head, rows)
