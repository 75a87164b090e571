"""The speed report's tables, summary lines and plot.

Rows are the dicts made by ``benchmarks/speed/step_time.py``: one per optimizer and
configuration for the step times (``rows``) and for the compile costs
(``compile_rows``). Everything here only formats what was measured.
"""

from benchmarks.common import reporting
from benchmarks.common.reporting import fmt
from benchmarks.speed import contenders

STEP_NOTE = (
  'device = K steps in one jitted fori_loop / K (not measured on trees of '
  'more than 200 leaves, where compiling the loop dominates); dispatch = K '
  'donated '
  'jitted calls / K; medians of {repeats} round(s), ratios per round. floor '
  'w = words/param a fused step must move; XLA w = bytes accessed by the '
  'compiled step (XLA cost analysis) / 4 / params; GB/s = floor bytes / '
  'the faster of device and dispatch time; % copy = GB/s over the copy '
  'bandwidth.'
)
COMPILE_NOTE = (
  'cold compiles of the jitted, donated train step (update + '
  'apply_updates), caches cleared before each; medians of {repeats} '
  'round(s), ratios per round. trace+lower s = jit(step).trace(...).lower(); '
  'compile s = lowered.compile(); x = (trace+lower+compile) over the same '
  "round's; HLO instr/leaf = instruction lines in all computations of the "
  'optimized HLO / leaves; StableHLO B/leaf = bytes of lowered.as_text() / '
  'leaves.'
)


def add_bandwidth(rows: list[dict], copy_gbps: float) -> None:
  """Adds ``floor_gbps`` (traffic floor over the faster of the device and
  dispatched times) and ``floor_pct_copy`` (that over the copy bandwidth)."""
  for row in rows:
    times = [t for t in (row.get('device_s'), row.get('dispatched_s')) if t]
    if not times:
      continue
    floor = row['floor_words'] * contenders.WORD_BYTES * row['num_params']
    row['floor_gbps'] = floor / min(times) / 1e9
    row['floor_pct_copy'] = 100 * row['floor_gbps'] / copy_gbps


def _ms(seconds: float | None) -> str:
  return fmt(None if seconds is None else 1e3 * seconds, '.3f')


def step_table(rows: list[dict]) -> str:
  """Step times, same-round ratios and bandwidth, one line per row."""
  head = (
    'config',
    'params',
    'optimizer',
    'device ms',
    'x sgdm',
    'x amsgrad',
    'dispatch ms',
    'x sgdm',
    'x amsgrad',
    'floor w',
    'XLA w',
    'GB/s',
    '% copy',
  )
  lines = []
  for row in rows:
    if 'error' in row:
      lines.append(
        (
          row['config'],
          f'{row["num_params"]:,}',
          row['optimizer'],
          'failed:',
          row['error'],
        )
      )
      continue
    lines.append(
      (
        row['config'],
        f'{row["num_params"]:,}',
        row['optimizer'],
        _ms(row['device_s']),
        fmt(row['device_x_sgdm'], '.2f'),
        fmt(row['device_x_amsgrad'], '.2f'),
        _ms(row['dispatched_s']),
        fmt(row['dispatched_x_sgdm'], '.2f'),
        fmt(row['dispatched_x_amsgrad'], '.2f'),
        str(row['floor_words']),
        fmt(row.get('hlo_words'), '.1f'),
        fmt(row.get('floor_gbps'), '.1f'),
        fmt(row.get('floor_pct_copy'), '.0f'),
      )
    )
  return reporting.markdown_table(head, lines)


def compile_table(compile_rows: list[dict]) -> str:
  """Cold compile times, same-round ratios and program sizes."""
  head = (
    'config',
    'leaves',
    'optimizer',
    'trace+lower s',
    'compile s',
    'x sgdm',
    'x adam',
    'x amsgrad',
    'HLO instr/leaf',
    'StableHLO B/leaf',
  )
  lines = [
    (
      row['config'],
      str(row['num_leaves']),
      row['optimizer'],
      fmt(row['trace_lower_s'], '.3f'),
      fmt(row['compile_s'], '.3f'),
      fmt(row['total_x_sgdm'], '.2f'),
      fmt(row['total_x_adam'], '.2f'),
      fmt(row['total_x_amsgrad'], '.2f'),
      fmt(row['hlo_instructions_per_leaf'], '.1f'),
      fmt(row['stablehlo_bytes_per_leaf'], ',.0f'),
    )
    for row in compile_rows
  ]
  return reporting.markdown_table(head, lines)


def memory_table(state_bytes: dict[str, dict]) -> str:
  """Optimizer-state bytes per parameter, float32 and with bfloat16 mu."""
  lines = [
    (name, f'{b["f32"]:.1f}', f'{b["bf16_mu"]:.1f}')
    for name, b in state_bytes.items()
  ]
  return reporting.markdown_table(
    ('optimizer', 'state B/param', 'with bf16 mu'), lines
  )


# The pairs a reader of this benchmark compares first: (ours, theirs).
KEY_PAIRS = (
  ('pnm', 'sgdm', 'PNM / optax sgd-m'),
  ('adapnm', 'amsgrad', 'AdaPNM / optax.amsgrad'),
  ('adapnm', 'adam', 'AdaPNM / optax.adam'),
)
COMPILE_PAIRS = (
  ('pnm', 'adam', 'PNM / optax.adam'),
  ('pnm', 'sgdm', 'PNM / optax sgd-m'),
  ('adapnm', 'amsgrad', 'AdaPNM / optax.amsgrad'),
)
KEY_CONFIGS = ('leaf 2^24', 'leaf 2^28')


def key_ratios(rows: list[dict], compile_rows: list[dict]) -> list[str]:
  """One line per key configuration with this run's same-round ratios.

  Step ratios for the 2^24 and 2^28 leaves and the trees (per jitted step,
  and in a jitted loop in brackets); compile ratios for the trees.
  """

  def find(table, config, name):
    return next(
      (
        r
        for r in table
        if r['config'] == config and r['optimizer'] == name and 'error' not in r
      ),
      None,
    )

  out = []
  configs = list(dict.fromkeys(r['config'] for r in rows))
  for config in configs:
    if config.startswith('leaf ') and config not in KEY_CONFIGS:
      continue
    parts = []
    for ours, theirs, label in KEY_PAIRS:
      row = find(rows, config, ours)
      if row is None:
        continue
      ratio = row.get(f'dispatched_x_{theirs}')
      if ratio is not None:
        parts.append(
          f'{label} {ratio:.2f}x (loop '
          f'{fmt(row.get(f"device_x_{theirs}"), ".2f")}x)'
        )
    if parts:
      out.append(f'{config}, per jitted step: ' + '; '.join(parts))
  for config in dict.fromkeys(r['config'] for r in compile_rows):
    if config.startswith('leaf '):
      continue
    parts = []
    for ours, theirs, label in COMPILE_PAIRS:
      row = find(compile_rows, config, ours)
      if row and row.get(f'total_x_{theirs}') is not None:
        parts.append(f'{label} {row[f"total_x_{theirs}"]:.2f}x')
    if parts:
      out.append(f'{config}, trace+lower+compile: ' + '; '.join(parts))
  return out


def plot(rows: list[dict], path: str) -> None:
  """Time per step against parameter count, one line per optimizer.

  Uses matplotlib's object-oriented API only (no pyplot state, no backend
  switch), so it is safe to call from any program or notebook.
  """
  import matplotlib
  from matplotlib.figure import Figure

  fig = Figure(figsize=(12, 4.8))
  axes = fig.subplots(1, 2, sharey=True)
  names = list(dict.fromkeys(r['optimizer'] for r in rows if 'error' not in r))
  cycle = matplotlib.rcParams['axes.prop_cycle'].by_key()['color']
  colors = {n: cycle[i % len(cycle)] for i, n in enumerate(names)}
  for ax, kind, title in (
    (axes[0], 'device_s', 'device time (steps in a jitted loop)'),
    (axes[1], 'dispatched_s', 'dispatched time (one jitted call per step)'),
  ):
    for name in names:
      mine = [r for r in rows if r['optimizer'] == name and r.get(kind)]
      leaf = sorted(
        (r['num_params'], r[kind]) for r in mine if r['num_leaves'] == 1
      )
      if leaf:
        ax.plot(*zip(*leaf), 'o-', label=name, color=colors[name])
      tree = [(r['num_params'], r[kind]) for r in mine if r['num_leaves'] > 1]
      if tree:
        ax.plot(
          *zip(*tree),
          's',
          color=colors[name],
          mfc='none',
          label=None if leaf else name,
        )
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('parameters (lines: one leaf; squares: trees)')
    ax.set_title(title, fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
  axes[0].set_ylabel('seconds per step')
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
