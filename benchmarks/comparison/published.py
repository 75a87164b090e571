"""The comparison tables and conclusions of README.md and docs/, from
``benchmarks/comparison/results/`` (registered in
:mod:`benchmarks.publish.registry`).

``full_study.json`` is what ``python -m benchmarks.comparison --study full``
writes as ``<out>/full_study.json``; ``noise_study.json`` is ``--study
noise``'s ``<out>/noise_study.json``. Every number and every conclusion
below is computed from them: a conclusion names its evidence (difference,
95% interval, Holm-adjusted p, seeds) and calls a difference significant
only where its Holm-adjusted p is below :data:`ALPHA`.
"""

import functools
import json
import pathlib
from collections.abc import Callable, Mapping

from benchmarks.common import reporting
from benchmarks.comparison import noise, statistics, tables
from benchmarks.comparison import optimizers as opt_lib

RESULTS = pathlib.Path(__file__).parent / 'results'
ALPHA = 0.05
MODEL_NAMES = {'cnn': 'CNN', 'mlp': 'MLP'}


@functools.cache
def load(name: str) -> dict:
  """A committed results file (``full_study`` or ``noise_study``)."""
  path = RESULTS / f'{name}.json'
  if not path.exists():
    raise FileNotFoundError(
      f'{path} is missing: run the study and copy its {path.name} there'
    )
  with open(path) as f:
    return json.load(f)


def _pts(x: float | None, sign: bool = True) -> str:
  if x is None:
    return '-'
  return f'{100 * x:+.2f}' if sign else f'{100 * x:.2f}'


def _ci(low: float | None, high: float | None, sign: bool = True) -> str:
  if low is None or high is None:
    return '-'
  return f'[{_pts(low, sign)}, {_pts(high, sign)}]'


def _p(p: float | None) -> str:
  if p is None:
    return '-'
  return f'{p:.2g}' if p >= 1e-3 else f'{p:.1e}'


def evidence(pair: Mapping) -> str:
  """``d points (95% CI [..], Holm p = .., n seeds)``."""
  return (
    f'{_pts(pair["mean"])} points (95% CI {_ci(pair["ci_low"], pair["ci_high"])}, '
    f'Holm p = {_p(pair.get("p_holm"))}, {pair["n"]} seeds)'
  )


def significant(pair: Mapping) -> bool:
  p = pair.get('p_holm')
  return p is not None and p < ALPHA


# ------------------------------------------------------------ full study


def _full_models() -> dict:
  return load('full_study')['models']


def comparison_headline() -> str:
  """Test error % per optimizer and model with its 95% interval."""
  models = _full_models()
  names = [n for n in opt_lib.OPTIMIZERS if n in models['cnn']['summary']]
  head = ['optimizer'] + [
    f'MNIST-1D {MODEL_NAMES[m]}: test error % [95% CI]' for m in models
  ]
  rows = []
  for name in names:
    row = [opt_lib.label(name)]
    for m in models.values():
      s = m['summary'][name]
      row.append(
        f'{_pts(s["test_error_mean"], False)} '
        f'{_ci(*s["test_error_ci"], sign=False)}'
      )
    rows.append(row)
  m0 = next(iter(models.values()))
  note = (
    f'\n\n{m0["seeds"]} seeds per optimizer, {m0["epochs"]} epochs of batch '
    f'{m0["batch_size"]}; each lr picked on a validation split '
    f'({m0["grid_seeds"]} seeds per grid point).'
  )
  return reporting.markdown_table(head, rows) + note


def _describe_pair(model: str, pair: Mapping) -> str:
  a, b = opt_lib.label(pair['a']), opt_lib.label(pair['b'])
  return f'{a} - {b} on the {MODEL_NAMES[model]}: {evidence(pair)}'


def _direction(model: str, pair: Mapping) -> str:
  a, b = opt_lib.label(pair['a']), opt_lib.label(pair['b'])
  word = 'lower' if pair['mean'] < 0 else 'higher'
  return (
    f'{a} had {word} error than {b} on the {MODEL_NAMES[model]}, '
    f'{evidence(pair)}'
  )


def comparison_conclusion() -> str:
  """What survives the Holm correction in the full study, and what not."""
  found, none = [], []
  for model, m in _full_models().items():
    for pair in m['paired']:
      (found if significant(pair) else none).append((model, pair))
  parts = []
  if found:
    parts.append(
      'Differences that survive the Holm correction over the '
      f'{len(found) + len(none)} paired comparisons (difference in test '
      'error, first minus second): '
      + '; '.join(_direction(m, p) for m, p in found)
      + '.'
    )
  if none:
    parts.append(
      'No detectable difference for '
      + '; '.join(
        f'{_describe_pair(m, p)}; these seeds detect about '
        f'{_pts(p["detectable"], False)} points'
        for m, p in none
      )
      + '.'
    )
  return '\n\n'.join(parts)


def comparison_paired() -> str:
  """Every paired comparison of the full study (both models, one Holm
  family)."""
  head = [
    'model',
    'comparison',
    'difference (points)',
    '95% CI',
    'p',
    'Holm p',
    'detectable (points)',
    'wins / losses',
  ]
  rows = []
  for model, m in _full_models().items():
    for p in m['paired']:
      rows.append(
        [
          MODEL_NAMES[model],
          f'{opt_lib.label(p["a"])} - {opt_lib.label(p["b"])}',
          _pts(p['mean']),
          _ci(p['ci_low'], p['ci_high']),
          _p(p['p_value']),
          _p(p.get('p_holm')),
          '-' if significant(p) else _pts(p['detectable'], False),
          f'{p["a_wins"]} / {p["b_wins"]}',
        ]
      )
  return reporting.markdown_table(head, rows)


def _results(model: str) -> Callable[[], str]:
  def generate() -> str:
    m = _full_models()[model]
    return tables.results_table(m['summary'], m['hparams'], 'test')

  return generate


def comparison_grids() -> str:
  """Each optimizer's validation curve over its lr grid, both models."""
  head = [
    'model',
    'optimizer',
    'validation error % at lr (+- SE)',
    'picked',
    'note',
  ]
  rows = []
  for model, m in _full_models().items():
    for name, g in m['grid'].items():
      rows.append(
        [
          MODEL_NAMES[model],
          opt_lib.label(name),
          noise.grid_curve(g),
          f'{g["picked"]:g}',
          noise.grid_note(g),
        ]
      )
  return reporting.markdown_table(head, rows)


def _machine(data: Mapping, parts: Mapping[str, float]) -> str:
  env = data['environment']
  v = env['versions']
  split = ', '.join(f'{k} {s:.0f} s' for k, s in parts.items())
  return (
    f'Measured on {env["cpu"]} ({env["cpu_count"]} cores, shared with other '
    f'work; load average {env["loadavg"]} at the start), JAX '
    f'{v["jax"]} on {env["backend"]}, Python {v["python"]}: '
    f'{data["wall_seconds"] / 60:.1f} minutes of wall time ({split}).'
  )


def comparison_machine() -> str:
  data = load('full_study')
  parts = {MODEL_NAMES[k]: s for k, s in data['part_seconds'].items()}
  return _machine(data, parts)


# ----------------------------------------------------------- noise study


def _cells() -> list:
  return load('noise_study')['cells']


def noise_headline() -> str:
  cells = _cells()
  c0 = cells[0]
  return (
    noise.headline_table(cells)
    + f'\n\n{c0["seeds"]} seeds per arm, {c0["steps"]} steps of batch '
    f'{c0["batch_size"]}; every arm its own lr, picked on a validation split '
    f'({c0["grid_seeds"]} seeds per grid point); Holm over the '
    f'{sum(1 for c in cells for p in c["paired"] if p["family"] == noise.HEADLINE)}'
    ' comparisons of the headline family.'
  )


def _b0_sentence(cell: Mapping) -> str:
  model = MODEL_NAMES[cell['model']]
  found, none = [], []
  for b0 in noise.B0_VALUES[1:]:
    pair = noise.find_pair(cell, noise.pnm_arm(b0), noise.pnm_arm(0.0))
    (found if significant(pair) else none).append((b0, pair))
  parts = []
  for b0, pair in found:
    direction = 'raised' if pair['mean'] > 0 else 'lowered'
    parts.append(f'b0 = {b0:g} {direction} the error by {evidence(pair)}')
  if none:
    parts.append(
      'no detectable difference for '
      + ', '.join(
        f'b0 = {b0:g} ({evidence(p)}; these seeds detect about '
        f'{_pts(p["detectable"], False)} points)'
        for b0, p in none
      )
    )
  return (
    f'On the {model}, against b0 = 0 (each b0 at its own lr): '
    + '; '.join(parts)
    + '.'
  )


def _verdict(label: str, pair: Mapping) -> str:
  if significant(pair):
    word = 'lower' if pair['mean'] < 0 else 'higher'
    return f'{label}: {word} error, {evidence(pair)}'
  return f'{label}: no detectable difference, {evidence(pair)}'


def _buffers_sentence(cell: Mapping) -> str:
  model = MODEL_NAMES[cell['model']]
  b0_0, b0_1 = noise.pnm_arm(0.0), noise.pnm_arm(1.0)
  parts = [
    _verdict(
      'PNM (b0 = 1) - SGD-M 0.9', noise.find_pair(cell, b0_1, noise.SGDM)
    ),
    _verdict(
      'its two buffers alone, PNM (b0 = 0) - SGD-M 0.9',
      noise.find_pair(cell, b0_0, noise.SGDM),
    ),
    _verdict(
      "the buffers' shorter memory, SGD-M 0.81 - SGD-M 0.9",
      noise.find_pair(cell, noise.SGDM_B1SQ, noise.SGDM),
    ),
  ]
  return f'Against SGD-M on the {model}: ' + '; '.join(parts) + '.'


def _b0_summary(cell: Mapping) -> str:
  """One short sentence per model: which b0 > 0 moved the error against
  b0 = 0 after the correction, and the size the others could have shown."""
  model = MODEL_NAMES[cell['model']]
  found, none = [], []
  for b0 in noise.B0_VALUES[1:]:
    pair = noise.find_pair(cell, noise.pnm_arm(b0), noise.pnm_arm(0.0))
    (found if significant(pair) else none).append((b0, pair))
  parts = [
    f'b0 = {b0:g}: {_pts(pair["mean"])} points '
    f'{_ci(pair["ci_low"], pair["ci_high"])}, Holm p = {_p(pair["p_holm"])}'
    for b0, pair in found
  ]
  if none:
    detect = max(pair['detectable'] for _, pair in none)
    parts.append(
      'no detectable difference for b0 = '
      + ', '.join(f'{b0:g}' for b0, _ in none)
      + f' (these seeds detect about {_pts(detect, False)} points)'
    )
  return f'{model}: ' + '; '.join(parts) + '.'


def noise_summary() -> str:
  """README's short form of :func:`noise_conclusion`."""
  cells = _cells()
  seeds = cells[0]['paired'][0]['n']
  return (
    'On MNIST-1D (each b0 at its own learning rate, '
    f'{seeds} seeds, test error against b0 = 0 with 95% CI): '
    + ' '.join(_b0_summary(c) for c in cells)
  )


def noise_conclusion() -> str:
  cells = _cells()
  lines = [_b0_sentence(c) for c in cells]
  return ' '.join(lines)


def noise_decomposition() -> str:
  """PNM - SGD-M per model, split into PNM's buffers (b0 = 0 - SGD-M) and
  the buffers' memory (SGD-M 0.81 - SGD-M 0.9), with their evidence."""
  return '\n\n'.join(_buffers_sentence(c) for c in _cells())


def noise_paired() -> str:
  return noise.paired_table(_cells(), noise.HEADLINE)


def noise_matched() -> str:
  return noise.paired_table(_cells(), noise.MATCHED)


def noise_arms() -> str:
  return noise.results_table(_cells())


def noise_grids() -> str:
  return noise.grid_table(_cells())


def noise_machine() -> str:
  data = load('noise_study')
  data = {**data, 'environment': data['cells'][0]['environment']}
  return _machine(data, data['part_seconds'])


# ------------------------------------------------------------ the guide


def tuning_lr() -> str:
  """The learning rates the studies picked, per model, with the neighbours
  that scored within one standard error."""
  head = ['model', 'optimizer', 'picked lr', 'also within 1 SE', 'study']
  rows = []
  for model, m in _full_models().items():
    for name, g in m['grid'].items():
      rows.append(
        [
          MODEL_NAMES[model],
          opt_lib.label(name) + (' (b0 = 1)' if opt_lib.spec(name).pn else ''),
          f'{g["picked"]:g}',
          ', '.join(f'{lr:g}' for lr in g['close_neighbours']) or '-',
          'full',
        ]
      )
  for c in _cells():
    for arm, g in c['grid'].items():
      if not arm.startswith('PNM'):
        continue
      rows.append(
        [
          MODEL_NAMES[c['model']],
          arm.replace('PNM b0=', 'PNM (b0 = ') + ')',
          f'{g["picked"]:.3g}',
          ', '.join(f'{lr:.3g}' for lr in g['close_neighbours']) or '-',
          'noise',
        ]
      )
  return reporting.markdown_table(head, rows)


def _seed_rows(label: str, pair: Mapping) -> list:
  std = pair['std']
  need = lambda d: (
    statistics.seeds_to_detect(d, std) if std is not None and std > 0 else None
  )
  return [
    label,
    _pts(std, False),
    reporting.fmt(need(0.01), 'd'),
    reporting.fmt(need(0.005), 'd'),
  ]


def tuning_seeds() -> str:
  """How many seeds a paired comparison needs to find a 1-point and a
  0.5-point difference (two-sided paired t-test, 5%, 80% power), from the
  spread of the per-seed differences these studies measured."""
  head = [
    'comparison',
    'std of the per-seed difference (points)',
    'seeds for 1 point',
    'seeds for 0.5 points',
  ]
  rows = []
  for model, m in _full_models().items():
    for p in m['paired']:
      rows.append(
        _seed_rows(
          f'{MODEL_NAMES[model]}: {opt_lib.label(p["a"])} - '
          f'{opt_lib.label(p["b"])}',
          p,
        )
      )
  for c in _cells():
    for b0 in noise.B0_VALUES[1:]:
      p = noise.find_pair(c, noise.pnm_arm(b0), noise.pnm_arm(0.0))
      rows.append(
        _seed_rows(f'{MODEL_NAMES[c["model"]]}: PNM b0 = {b0:g} - b0 = 0', p)
      )
  return reporting.markdown_table(head, rows)


def paper_cifar() -> str:
  """The paper's CIFAR test errors (quoted, not measured), best in bold."""
  data = load('paper_cifar')
  names = list(data['rows'][0]['test_error'])
  head = ['data', 'model'] + [opt_lib.label(n) for n in names]
  rows = []
  for r in data['rows']:
    errors = r['test_error']
    best = min(errors[n]['mean'] for n in names)
    cells = []
    for n in names:
      text = f'{errors[n]["mean"]:.2f}'
      if errors[n]['mean'] == best:
        text = f'**{text}**'
      cells.append(f'{text} ({errors[n]["std"]:.2f})')
    rows.append([r['data'], r['model'], *cells])
  return reporting.markdown_table(head, rows)


# Block name -> generator (no arguments, returns Markdown).
BLOCKS: dict[str, Callable[[], str]] = {
  'comparison-headline': comparison_headline,
  'comparison-conclusion': comparison_conclusion,
  'comparison-paired': comparison_paired,
  'comparison-results-cnn': _results('cnn'),
  'comparison-results-mlp': _results('mlp'),
  'comparison-grids': comparison_grids,
  'comparison-machine': comparison_machine,
  'noise-headline': noise_headline,
  'noise-conclusion': noise_conclusion,
  'noise-summary': noise_summary,
  'noise-decomposition': noise_decomposition,
  'noise-paired': noise_paired,
  'noise-matched': noise_matched,
  'noise-arms': noise_arms,
  'noise-grids': noise_grids,
  'noise-machine': noise_machine,
  'tuning-lr': tuning_lr,
  'tuning-seeds': tuning_seeds,
  'comparison-paper-cifar': paper_cifar,
}
