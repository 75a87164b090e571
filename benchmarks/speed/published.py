"""The speed tables of README.md and docs/, from ``benchmarks/speed/results/``
(registered in :mod:`benchmarks.publish.registry`).

GPU results come in two formats, both read here: the measurement file of
the first GPU run (``h200_2026-12-04.json``: ``environment``,
``speed_rows``, ``layout_rows``, ``whole_train_step_ms``, ...) and the file
``benchmarks/speed/gpu_check.sh`` writes (``"kind": "gpu_check"``: ``meta``,
``whole_step``, ``step_time``). The GPU blocks use the newest GPU file by its
timestamp; files from a toy run (``"tiny": true``) or without a GPU are
ignored. CPU blocks read ``cpu_step_time.json`` (``python -m
benchmarks.speed``) and ``cpu_whole_step.json`` (``python -m
benchmarks.speed.whole_step``).
"""

import json
import pathlib
from collections.abc import Callable
from typing import Any

from benchmarks.common import reporting
from benchmarks.common.reporting import fmt

RESULTS = pathlib.Path(__file__).parent / 'results'
CPU_STEP_TIME = 'cpu_step_time.json'
CPU_WHOLE_STEP = 'cpu_whole_step.json'

LABELS = {
  'sgdm': 'optax sgd(momentum=0.9)',
  'pnm': '**pnm_optax.pnm**',
  'pnm_static': '**pnm_optax.pnm_train_step**',
  'adam': 'optax adam',
  'amsgrad': 'optax amsgrad',
  'adapnm': '**pnm_optax.adapnm**',
  'torch_sgd_foreach': 'torch SGD (foreach)',
  'torch_sgd_fused': 'torch SGD (fused)',
  'torch_pnm': 'PyTorch PNM as the authors wrote it',
  'pytorch_optimizer_pnm': 'pytorch_optimizer PNM',
  'pytorch_optimizer_adapnm': 'pytorch_optimizer AdaPNM',
}
MODEL_LABELS = {
  'resnet18': 'ResNet-18',
  'transformer': 'transformer LM',
}
HEADLINE_CONFIG = 'leaf 2^28'


def _label(name: str) -> str:
  return LABELS.get(name, name)


def _read(path: pathlib.Path) -> dict:
  with open(path) as f:
    return json.load(f)


def _ratio(row: dict | None, key: str) -> str:
  return fmt(None if row is None else row.get(key), '.3f')


class GPURun:
  """One GPU result file, in the terms the blocks use.

  Attributes:
    source: the file's name under ``benchmarks/speed/results/``.
    meta: machine and versions (``benchmarks.common.environment.collect``).
    whole: ``model -> {'settings', 'num_params', 'rounds', 'steps',
      'rows': {optimizer -> row}}``; a row has ``step_s`` and ``x_sgdm``,
      ``x_amsgrad``, ``x_adam`` (ratios within rounds where measured so).
    whole_method: how the whole step was timed, in words.
    steps: the optimizer-step rows (``benchmarks.speed.step_time``'s rows).
    layouts: the state-layout rows, where the run has them.
  """

  def __init__(self, source: str, data: dict):
    self.source = source
    self.whole: dict[str, dict[str, Any]] = {}
    self.layouts: list[dict] = []
    if data.get('kind') == 'gpu_check':
      self.meta = data['meta']
      whole = data.get('whole_step') or {}
      for m in whole.get('models', []):
        self.whole[m['model']] = dict(
          settings=m['settings'],
          num_params=m['num_params'],
          rounds=m['rounds'],
          steps=m['steps_per_round'],
          rows={r['optimizer']: r for r in m['rows'] if 'error' not in r},
        )
      self.whole_method = (
        'one jitted step (forward + backward + update, parameters and '
        'optimizer state donated) per optimizer, interleaved in rounds; '
        'median time per step, ratios taken within each round'
      )
      self.steps = (data.get('step_time') or {}).get('rows', [])
      self.layouts = data.get('layouts') or []
    else:  # the first GPU run's measurement file
      self.meta = data['environment']
      ms = data.get('whole_train_step_ms') or {}
      base = ms.get('sgdm')
      rows = {}
      for name, value in ms.items():
        rows[name] = dict(
          step_s=value / 1e3,
          x_sgdm=value / base if base else None,
          x_amsgrad=value / ms['amsgrad'] if ms.get('amsgrad') else None,
          x_adam=value / ms['adam'] if ms.get('adam') else None,
        )
      if rows:
        self.whole['resnet18'] = dict(
          settings=dict(width=64, batch=256, image=32),
          num_params=None,
          rounds=3,
          steps=30,
          rows=rows,
        )
      self.whole_method = data.get('how', {}).get('whole_train_step', '')
      self.steps = list(data.get('speed_rows', []))
      probe = data.get('static_parity_probe_2^28')
      if probe:
        base = probe['sgdm_ms_same_run_of_speed_report']
        self.steps.append(
          dict(
            config=HEADLINE_CONFIG,
            num_params=2**28,
            optimizer='pnm_static',
            device_s=None,
            dispatched_s=probe['pnm_static_parity_ms'] / 1e3,
            dispatched_x_sgdm=probe['pnm_static_parity_ms'] / base,
            floor_words=6,
            hlo_words=probe['xla_words_per_param'],
            note='probe',
          )
        )
      self.layouts = data.get('layout_rows', [])

  @property
  def timestamp(self) -> str:
    return self.meta.get('timestamp_utc', '')

  def step_row(self, config: str, name: str) -> dict | None:
    return next(
      (
        r
        for r in self.steps
        if r.get('config') == config
        and r.get('optimizer') == name
        and 'error' not in r
      ),
      None,
    )

  def machine_line(self) -> str:
    """Device, versions and date, one sentence."""
    v = self.meta.get('versions', {})
    libs = ', '.join(
      f'{k} {v[k]}'
      for k in ('jax', 'optax', 'flax', 'torch', 'pytorch_optimizer')
      if v.get(k)
    )
    date = self.timestamp.split(' ')[0]
    return (
      f'Measured on one {self.meta.get("device", "GPU")} on {date} '
      f'(Python {v.get("python", "?")}, {libs}); data: '
      f'`benchmarks/speed/results/{self.source}`.'
    )


def gpu_runs(folder: pathlib.Path | None = None) -> list[GPURun]:
  """Every GPU result file in ``folder``, oldest first."""
  folder = RESULTS if folder is None else folder
  runs = []
  for path in sorted(folder.glob('*.json')):
    if path.name in (CPU_STEP_TIME, CPU_WHOLE_STEP):
      continue
    data = _read(path)
    if data.get('kind') == 'gpu_check':
      if data.get('tiny') or data['meta'].get('backend') != 'gpu':
        continue
    elif 'environment' not in data or 'speed_rows' not in data:
      continue
    runs.append(GPURun(path.name, data))
  return sorted(runs, key=lambda r: r.timestamp)


def latest_gpu_run(
  folder: pathlib.Path | None = None, need: str | None = None
) -> GPURun:
  """The newest GPU run, or the newest that has ``need`` (``'whole'``,
  ``'steps'`` or ``'layouts'``): a run whose optimizer-step part did not
  finish leaves that table to the run before it."""
  runs = [r for r in gpu_runs(folder) if need is None or getattr(r, need)]
  if not runs:
    raise FileNotFoundError(
      f'no GPU result{" with " + need if need else ""} in {folder or RESULTS}'
    )
  return runs[-1]


def headline(run: GPURun | None = None) -> str:
  """Whole-step ratios first, then the optimizer step alone at 2^28 (each
  from the newest run that measured it)."""
  whole_run = latest_gpu_run(need='whole') if run is None else run
  step_run = latest_gpu_run(need='steps') if run is None else run
  lines = []
  for model, m in whole_run.whole.items():
    rows = m['rows']
    s = m['settings']
    what = f'whole train step, {MODEL_LABELS.get(model, model)} ' + (
      f'(batch {s["batch"]})'
      if model == 'resnet18'
      else f'(batch {s["batch"]} x {s["seq"]} tokens)'
    )
    lines.append(
      (
        what,
        _ratio(rows.get('pnm'), 'x_sgdm'),
        _ratio(rows.get('pnm_static'), 'x_sgdm'),
        _ratio(rows.get('adapnm'), 'x_amsgrad'),
      )
    )
  pnm = step_run.step_row(HEADLINE_CONFIG, 'pnm')
  static = step_run.step_row(HEADLINE_CONFIG, 'pnm_static')
  adapnm = step_run.step_row(HEADLINE_CONFIG, 'adapnm')
  probe = static is not None and static.get('note') == 'probe'

  def device_ratio(row, ref):
    if row is None:
      return '-'
    value = row.get(f'device_x_{ref}')
    if value is None:  # a probe timed per call only
      value = row.get(f'dispatched_x_{ref}')
    return fmt(value, '.3f')

  lines.append(
    (
      'optimizer step alone, one 2^28 float32 leaf',
      device_ratio(pnm, 'sgdm'),
      device_ratio(static, 'sgdm') + ('*' if probe else ''),
      device_ratio(adapnm, 'amsgrad'),
    )
  )
  table = reporting.markdown_table(
    (
      'time per step, same GPU',
      'PNM / SGD-M',
      'PNM (pnm_train_step) / SGD-M',
      'AdaPNM / AMSGrad',
    ),
    lines,
  )
  machine = whole_run.machine_line()
  if step_run is not whole_run:
    machine = (
      f'Whole steps: {machine} Optimizer step alone: {step_run.machine_line()}'
    )
  if probe:
    machine += (
      ' *A hand-written step of the same form (parity fixed when compiling,'
      ' only the touched buffer written), timed per call.'
    )
  return (
    table
    + '\n\n'
    + machine
    + ' SGD-M, AMSGrad: `optax.sgd(momentum=0.9)`, `optax.amsgrad`; '
    'float32, every optimizer with its default hyperparameters.'
  )


def gpu_whole_step(run: GPURun | None = None) -> str:
  """Whole train step per model and optimizer: ms and ratios."""
  run = latest_gpu_run(need='whole') if run is None else run
  lines = []
  for model, m in run.whole.items():
    for name, row in m['rows'].items():
      lines.append(
        (
          MODEL_LABELS.get(model, model),
          _label(name),
          fmt(1e3 * row['step_s'], '.3f') if row.get('step_s') else '-',
          _ratio(row, 'x_sgdm'),
          _ratio(row, 'x_amsgrad'),
          _ratio(row, 'x_adam'),
        )
      )
  settings = '; '.join(
    f'{MODEL_LABELS.get(k, k)}: '
    + ', '.join(f'{a} {b}' for a, b in m['settings'].items())
    + f', {m["rounds"]} rounds of {m["steps"]} steps'
    for k, m in run.whole.items()
  )
  return (
    reporting.markdown_table(
      ('model', 'optimizer', 'ms/step', 'x sgd-m', 'x amsgrad', 'x adam'),
      lines,
    )
    + f'\n\n{run.machine_line()} Settings: {settings}. Method: '
    f'{run.whole_method}.'
  )


def _step_lines(rows: list[dict], configs=None) -> list[tuple]:
  lines = []
  for row in rows:
    if 'error' in row or (configs and row['config'] not in configs):
      continue
    lines.append(
      (
        row['config'],
        _label(row['optimizer']),
        fmt(_ms(row.get('device_s')), '.3f'),
        fmt(row.get('device_x_sgdm'), '.2f'),
        fmt(row.get('device_x_amsgrad'), '.2f'),
        fmt(_ms(row.get('dispatched_s')), '.3f'),
        fmt(row.get('dispatched_x_sgdm'), '.2f'),
        fmt(row.get('dispatched_x_amsgrad'), '.2f'),
        str(row.get('floor_words', '-')),
        fmt(row.get('hlo_words'), '.1f'),
      )
    )
  return lines


def _ms(seconds: float | None) -> float | None:
  return None if seconds is None else 1e3 * seconds


STEP_HEAD = (
  'config',
  'optimizer',
  'device ms',
  'x sgd-m',
  'x amsgrad',
  'dispatch ms',
  'x sgd-m',
  'x amsgrad',
  'floor w',
  'XLA w',
)


def gpu_optimizer_step(run: GPURun | None = None) -> str:
  """The optimizer step alone on the GPU, every configuration measured."""
  run = latest_gpu_run(need='steps') if run is None else run
  table = reporting.markdown_table(STEP_HEAD, _step_lines(run.steps))
  probe = any(r.get('note') == 'probe' for r in run.steps)
  return (
    table
    + f'\n\n{run.machine_line()}'
    + (
      ' The pnm_train_step row is a probe of the same step (one compiled '
      'step with the parity a constant), timed per call against the sgd-m '
      'row of the same table.'
      if probe
      else ''
    )
  )


def gpu_layouts(run: GPURun | None = None) -> str:
  """The state-layout study on the GPU (where the run has one)."""
  for candidate in reversed(gpu_runs()) if run is None else [run]:
    if candidate.layouts:
      run = candidate
      break
  else:
    return 'No GPU run of the layout study is committed.'
  lines = [
    (
      r['layout'],
      fmt(_ms(r.get('device_s')), '.3f'),
      fmt(r.get('device_x_sgdm'), '.2f'),
      fmt(_ms(r.get('dispatched_s')), '.3f'),
      fmt(r.get('dispatched_x_sgdm'), '.2f'),
      fmt(r.get('dispatched_x_amsgrad'), '.2f'),
      fmt(r.get('hlo_words'), '.1f'),
      str(r.get('hlo_array_copies', '-')),
      fmt(r.get('max_rel_dev_from_core'), '.1e'),
    )
    for r in run.layouts
  ]
  n = run.layouts[0].get('num_params')
  return (
    reporting.markdown_table(
      (
        'layout',
        'device ms',
        'x sgd-m',
        'dispatch ms',
        'x sgd-m',
        'x amsgrad',
        'XLA w',
        'copies',
        'vs core',
      ),
      lines,
    )
    + f'\n\nOne float32 leaf of {reporting.size_label(n) if n else "?"} '
    f'parameters. {run.machine_line()}'
  )


def _cpu(name: str) -> dict:
  return _read(RESULTS / name)


def _cpu_line(meta: dict, what: str) -> str:
  v = meta.get('versions', {})
  libs = ', '.join(
    f'{k} {v[k]}' for k in ('jax', 'optax', 'flax', 'torch') if v.get(k)
  )
  return (
    f'{what} Measured on {meta["timestamp_utc"].split(" ")[0]} on a shared '
    f'{meta["cpu_count"]}-core VM ({meta["cpu"]}, {meta["mem_total_gib"]} '
    f'GiB; load average {meta["loadavg"][0]} at the start) running other '
    f'work at the same time, under `nice`: Python {v.get("python")}, '
    f'{libs}; command `{meta["command"]}`.'
  )


def cpu_optimizer_step() -> str:
  """The optimizer step alone on the CPU (the committed small run)."""
  data = _cpu(CPU_STEP_TIME)
  table = reporting.markdown_table(STEP_HEAD, _step_lines(data['rows']))
  skipped = '; '.join(
    s['config']
    + (f' {s["optimizer"]}' if 'optimizer' in s else '')
    + f': {s["reason"]}'
    for s in data.get('skipped', [])
  )
  return (
    table
    + '\n\n'
    + _cpu_line(
      data['meta'],
      f'Medians of {data["repeats"]} rounds, '
      f'{data["target_time_s"]:g} s per sample.',
    )
    + (f' Skipped: {skipped}.' if skipped else '')
  )


def cpu_compile() -> str:
  """Cold compile costs on the CPU (the committed small run)."""
  data = _cpu(CPU_STEP_TIME)
  lines = [
    (
      r['config'],
      str(r['num_leaves']),
      _label(r['optimizer']),
      fmt(r['trace_lower_s'] + r['compile_s'], '.2f'),
      fmt(r.get('total_x_sgdm'), '.2f'),
      fmt(r.get('total_x_adam'), '.2f'),
      fmt(r.get('total_x_amsgrad'), '.2f'),
      fmt(r.get('hlo_instructions_per_leaf'), '.0f'),
    )
    for r in data['compile_rows']
    if not r['config'].startswith('leaf ')
  ]
  return (
    reporting.markdown_table(
      (
        'tree',
        'leaves',
        'optimizer',
        'trace + lower + compile s',
        'x sgd-m',
        'x adam',
        'x amsgrad',
        'HLO instr/leaf',
      ),
      lines,
    )
    + '\n\n'
    + _cpu_line(
      data['meta'],
      f'Cold compiles, medians of {data["compile_repeats"]}.',
    )
  )


def cpu_whole_step() -> str:
  """Whole train steps on the CPU at the small size."""
  data = _cpu(CPU_WHOLE_STEP)
  lines = []
  for m in data['models']:
    for row in m['rows']:
      if 'error' in row:
        continue
      lines.append(
        (
          MODEL_LABELS.get(m['model'], m['model']),
          _label(row['optimizer']),
          fmt(_ms(row.get('step_s')), '.2f'),
          _ratio(row, 'x_sgdm'),
          _ratio(row, 'x_amsgrad'),
          _ratio(row, 'x_adam'),
        )
      )
  settings = '; '.join(
    f'{MODEL_LABELS.get(m["model"], m["model"])}: '
    + ', '.join(f'{a} {b}' for a, b in m['settings'].items())
    + f' ({m["num_params"]:,} parameters), {m["rounds"]} rounds of '
    f'{m["steps_per_round"]} steps'
    for m in data['models']
  )
  return (
    reporting.markdown_table(
      ('model', 'optimizer', 'ms/step', 'x sgd-m', 'x amsgrad', 'x adam'),
      lines,
    )
    + '\n\n'
    + _cpu_line(data['meta'], f'Small models: {settings}.')
  )


# Block name -> generator (no arguments, returns Markdown).
BLOCKS: dict[str, Callable[[], str]] = {
  'speed-headline': headline,
  'speed-gpu-whole-step': gpu_whole_step,
  'speed-gpu-optimizer-step': gpu_optimizer_step,
  'speed-gpu-layouts': gpu_layouts,
  'speed-cpu-whole-step': cpu_whole_step,
  'speed-cpu-optimizer-step': cpu_optimizer_step,
  'speed-cpu-compile': cpu_compile,
}
