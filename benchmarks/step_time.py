"""Speed of one train step: pnm-optax against Optax (and PyTorch if present).

Run ``python -m benchmarks.step_time`` (``--quick`` for a few seconds,
``--help`` for options). A train step is ``update`` + ``apply_updates`` in one
jitted function with the parameters and optimizer state donated. For each
parameter tree it measures, interleaving the optimizers in rounds (so the
machine's load hits all of them alike) and taking medians:

* device time per step: ``K`` steps inside one jitted ``lax.fori_loop``,
  divided by ``K``;
* dispatched time per step: ``K`` donated jitted calls from Python, blocked
  at the end, divided by ``K``;
* ratios against ``optax.sgd(momentum=0.9)`` (and ``optax.amsgrad``) measured
  in the same round;
* achieved bandwidth: the optimizer's traffic floor (words that a fused step
  must read and write per parameter) over the faster of the two times,
  against a measured copy bandwidth;
* XLA's own count of bytes accessed by the compiled step (cost analysis);
* compile time, and state memory per parameter with and without
  ``mu_dtype=bfloat16``.

Writes a table to stdout, ``step_time.json`` and ``step_time.png`` to
``--out`` (default ``results/step_time``).
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pnm_optax
from benchmarks import environment
from benchmarks import trees

LEARNING_RATE = 1e-3
WORD_BYTES = 4  # float32 parameters


class Optimizer(NamedTuple):
  """A benchmarked optimizer.

  Attributes:
    make: ``mu_dtype -> GradientTransformation`` (None for PyTorch ones).
    floor_words: words per parameter a fused step must move at least.
    state_words: float32 state buffers per parameter (for memory planning).
  """
  make: Optional[Callable]
  floor_words: int
  state_words: int


JAX_OPTIMIZERS: Dict[str, Optimizer] = {
    'sgdm': Optimizer(lambda mu_dtype: optax.sgd(
        LEARNING_RATE, momentum=0.9, accumulator_dtype=mu_dtype), 5, 1),
    'pnm': Optimizer(lambda mu_dtype: pnm_optax.pnm(
        LEARNING_RATE, mu_dtype=mu_dtype), 6, 2),
    'adam': Optimizer(lambda mu_dtype: optax.adam(
        LEARNING_RATE, mu_dtype=mu_dtype), 7, 2),
    'amsgrad': Optimizer(lambda mu_dtype: optax.amsgrad(
        LEARNING_RATE, mu_dtype=mu_dtype), 9, 3),
    'adapnm': Optimizer(lambda mu_dtype: pnm_optax.adapnm(
        LEARNING_RATE, mu_dtype=mu_dtype), 10, 4),
}
TORCH_OPTIMIZERS: Dict[str, Optimizer] = {
    'torch_sgd_foreach': Optimizer(None, 5, 1),
    'torch_sgd_fused': Optimizer(None, 5, 1),
    'torch_pnm': Optimizer(None, 6, 3),  # + one temporary per leaf
}
BASELINE = 'sgdm'
DEFAULT_SIZES = '1e5,1e6,2^22,2^24,2^26,2^28'
QUICK_SIZES = '1e4,1e5'


# --------------------------------------------------------------------------
# Steps and timing.


def make_train_step(opt: optax.GradientTransformation):
  """``(params, state, grads) -> (params, state)``: update + apply."""
  def train_step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return train_step


def make_train_loop(train_step):
  """``k`` train steps with fixed gradients inside one ``fori_loop``."""
  def train_loop(params, state, grads, k):
    body = lambda _, carry: train_step(*carry, grads)
    return jax.lax.fori_loop(0, k, body, (params, state))
  return train_loop


def hlo_words_per_param(compiled, num_params: int) -> Optional[float]:
  """XLA's cost-analysis bytes accessed by one step, in float32 words/param."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # not every backend implements it
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'bytes accessed' not in cost:
    return None
  return float(cost['bytes accessed']) / (num_params * WORD_BYTES)


def count_array_copies(hlo_text: str) -> int:
  """Number of non-scalar ``copy`` instructions in optimized HLO text."""
  return len(re.findall(r'= \w+\[[^\]]+\]\S* copy\(', hlo_text))


class JaxRunner:
  """One optax optimizer on one tree: compiled step and loop, own state."""

  def __init__(self, name: str, params, grads,
               opt: Optional[optax.GradientTransformation] = None):
    self.name = name
    if opt is None:
      opt = JAX_OPTIMIZERS[name].make(None)
    step = make_train_step(opt)
    self.step = jax.jit(step, donate_argnums=(0, 1))
    self.loop = jax.jit(make_train_loop(step), donate_argnums=(0, 1))
    self.grads = grads
    self.params = jax.tree.map(jnp.copy, params)
    self.state = opt.init(self.params)
    start = time.perf_counter()
    compiled = self.step.lower(self.params, self.state, grads).compile()
    self.compile_s = time.perf_counter() - start
    self.hlo_words = hlo_words_per_param(compiled, trees_size(params))
    self.hlo_array_copies = count_array_copies(compiled.as_text())
    for _ in range(2):  # warm both paths; jit reuses the AOT executable
      self.params, self.state = self.step(self.params, self.state, grads)
      self.params, self.state = self.loop(self.params, self.state, grads, 1)
    jax.block_until_ready(self.params)

  def time_device(self, k: int) -> float:
    start = time.perf_counter()
    self.params, self.state = self.loop(self.params, self.state, self.grads, k)
    jax.block_until_ready((self.params, self.state))
    return (time.perf_counter() - start) / k

  def time_dispatched(self, k: int) -> float:
    step, grads = self.step, self.grads
    params, state = self.params, self.state
    start = time.perf_counter()
    for _ in range(k):
      params, state = step(params, state, grads)
    jax.block_until_ready((params, state))
    elapsed = time.perf_counter() - start
    self.params, self.state = params, state
    return elapsed / k


class TorchRunner:
  """One PyTorch optimizer on the same shapes (eager: dispatched time only)."""

  def __init__(self, name: str, shapes, seed: int = 0):
    import torch  # pylint: disable=g-import-not-at-top
    from benchmarks import torch_ref  # pylint: disable=g-import-not-at-top
    self.name = name
    gen = torch.Generator().manual_seed(seed)
    self.params = [torch.randn(s, generator=gen) for _, s in shapes]
    for p in self.params:
      p.grad = 1e-2 * torch.randn(p.shape, generator=gen)
    start = time.perf_counter()
    self.opt = torch_ref.make_optimizer(name, self.params, LEARNING_RATE)
    for _ in range(2):
      self.opt.step()  # raises here if, e.g., fused is unsupported
    self.setup_s = time.perf_counter() - start
    self.compile_s = None
    self.hlo_words = None

  def time_device(self, k: int) -> Optional[float]:
    del k
    return None

  def time_dispatched(self, k: int) -> float:
    step = self.opt.step
    start = time.perf_counter()
    for _ in range(k):
      step()
    return (time.perf_counter() - start) / k


def trees_size(tree) -> int:
  return sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(tree))


def measure_copy_bandwidth(num_params: int, repeats: int,
                           target_s: float) -> float:
  """GB/s of a donated jitted in-place scale ``x * s`` (read + write).

  Timed both as back-to-back calls and inside one ``fori_loop``, taking the
  faster: on XLA:CPU a loop body runs slower than the same computation called
  alone, on an accelerator the calls pay dispatch.
  """
  scale = jax.jit(lambda x, s: x * s, donate_argnums=0)
  loop = jax.jit(lambda x, s, k: jax.lax.fori_loop(0, k, lambda _, y: y * s,
                                                   x), donate_argnums=0)
  x = jnp.ones(num_params, jnp.float32)
  s = jnp.float32(1.0)
  x = loop(scale(x, s), s, 1).block_until_ready()
  start = time.perf_counter()
  x = scale(scale(x, s), s).block_until_ready()
  k = max(2, min(1000, int(target_s / max((time.perf_counter() - start) / 2,
                                          1e-7))))
  rates = {'calls': [], 'loop': []}
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(k):
      x = scale(x, s)
    x.block_until_ready()
    rates['calls'].append(time.perf_counter() - start)
    start = time.perf_counter()
    x = loop(x, s, k).block_until_ready()
    rates['loop'].append(time.perf_counter() - start)
  del x
  return max(2 * WORD_BYTES * num_params * k / float(np.median(t)) / 1e9
             for t in rates.values())


# --------------------------------------------------------------------------
# Memory planning.


def available_bytes() -> int:
  """Available host memory (device memory on an accelerator if known)."""
  dev = jax.devices()[0]
  if dev.platform != 'cpu':
    try:
      stats = dev.memory_stats() or {}
      if 'bytes_limit' in stats:
        return int(stats['bytes_limit'] - stats.get('bytes_in_use', 0))
    except Exception:  # pylint: disable=broad-except
      pass
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_AVPHYS_PAGES')


def bytes_needed(num_params: int, names: List[str]) -> int:
  """Peak bytes for all optimizers of one round living side by side.

  Per optimizer: parameters, state and one temporary (updates); plus the
  shared gradients and one spare buffer.
  """
  words = 2
  for name in names:
    opt = JAX_OPTIMIZERS.get(name) or TORCH_OPTIMIZERS[name]
    words += 2 + opt.state_words + (1 if name.startswith('torch') else 0)
  return words * num_params * WORD_BYTES


def plan_groups(num_params: int, names: List[str], budget: float
                ) -> Tuple[List[List[str]], List[str]]:
  """Splits ``names`` into groups that fit in ``budget`` bytes side by side.

  All of them in one group when they fit. Otherwise every group starts with
  the baseline, so each ratio to it is still taken within a round, and
  optimizers are added in order while they fit (neighbours such as amsgrad
  and adapnm stay together when memory allows). Returns the groups and the
  optimizers that do not fit even next to the baseline alone.
  """
  if bytes_needed(num_params, names) <= budget:
    return [list(names)], []
  groups, too_big, group = [], [], [BASELINE]
  for name in names:
    if name == BASELINE:
      continue
    if bytes_needed(num_params, [BASELINE, name]) > budget:
      too_big.append(name)
      continue
    if bytes_needed(num_params, group + [name]) > budget:
      groups.append(group)
      group = [BASELINE]
    group.append(name)
  if len(group) > 1:
    groups.append(group)
  return groups, too_big


def state_bytes_per_param(name: str, mu_dtype) -> float:
  """Optimizer-state bytes per parameter for a 2^20-element float32 leaf."""
  n = 2 ** 20
  opt = JAX_OPTIMIZERS[name].make(mu_dtype)
  shape = jax.eval_shape(opt.init, jax.ShapeDtypeStruct((n,), jnp.float32))
  total = sum(x.size * np.dtype(x.dtype).itemsize
              for x in jax.tree.leaves(shape))
  return total / n


# --------------------------------------------------------------------------
# The benchmark.


def parse_size(text: str) -> int:
  """``'1e5'``, ``'2^24'``, ``'2**24'`` or ``'16777216'`` -> int."""
  text = text.strip()
  match = re.fullmatch(r'(\d+)\s*(?:\^|\*\*)\s*(\d+)', text)
  if match:
    return int(match.group(1)) ** int(match.group(2))
  return int(float(text))


def size_label(n: int) -> str:
  """``2^24``, ``1e5`` or ``123,456``."""
  if n >= 2 ** 10 and n & (n - 1) == 0:
    return f'2^{n.bit_length() - 1}'
  if n >= 10 and 10 ** round(math.log10(n)) == n:
    return f'1e{round(math.log10(n))}'
  return f'{n:,}'


def build_configs(sizes: List[int], tree_names: List[str]):
  """``(label, shapes)`` per single-leaf size and per named tree."""
  configs = [(f'leaf {size_label(n)}', trees.single_leaf_shapes(n))
             for n in sizes]
  for name in tree_names:
    shapes = trees.TREES[name]()
    configs.append((f'{name} ({len(shapes)} leaves)', shapes))
  return configs


def run_config(label, shapes, names, repeats, target_s, progress):
  """Measures all optimizers on one tree; returns one row per optimizer."""
  n = trees.num_params(shapes)
  key_p, key_g = jax.random.split(jax.random.key(0))
  params = trees.make_tree(shapes, key_p)
  grads = trees.make_tree(shapes, key_g, scale=1e-2)
  runners, errors = [], {}
  for name in names:
    try:
      if name in JAX_OPTIMIZERS:
        runners.append(JaxRunner(name, params, grads))
      else:
        runners.append(TorchRunner(name, shapes))
    except Exception as e:  # pylint: disable=broad-except
      errors[name] = f'{type(e).__name__}: {e}'.splitlines()[0][:160]
  del params
  # Steps per timed sample, per optimizer, from a short dispatched run.
  steps = {r.name: int(max(2, min(1000, target_s / max(
      r.time_dispatched(2), 1e-7)))) for r in runners}
  samples = {r.name: {'device': [], 'dispatched': []} for r in runners}
  for rnd in range(repeats):
    order = runners[rnd % len(runners):] + runners[:rnd % len(runners)]
    for r in order:
      samples[r.name]['device'].append(r.time_device(steps[r.name]))
      samples[r.name]['dispatched'].append(r.time_dispatched(steps[r.name]))
    progress.update(1)

  def ratios(name, ref, kind):
    if ref not in samples or samples[name][kind][0] is None:
      return None
    return float(np.median([a / b for a, b in zip(samples[name][kind],
                                                  samples[ref][kind])]))

  rows = []
  for r in runners:
    dev = samples[r.name]['device']
    device_s = None if dev[0] is None else float(np.median(dev))
    opt = JAX_OPTIMIZERS.get(r.name) or TORCH_OPTIMIZERS[r.name]
    rows.append(dict(
        config=label, num_params=n, num_leaves=len(shapes), optimizer=r.name,
        steps_per_sample=steps[r.name],
        device_s=device_s,
        dispatched_s=float(np.median(samples[r.name]['dispatched'])),
        device_x_sgdm=ratios(r.name, BASELINE, 'device'),
        device_x_amsgrad=ratios(r.name, 'amsgrad', 'device'),
        device_x_adam=ratios(r.name, 'adam', 'device'),
        dispatched_x_sgdm=ratios(r.name, BASELINE, 'dispatched'),
        dispatched_x_amsgrad=ratios(r.name, 'amsgrad', 'dispatched'),
        dispatched_x_adam=ratios(r.name, 'adam', 'dispatched'),
        floor_words=opt.floor_words,
        hlo_words=r.hlo_words,
        compile_s=r.compile_s,
        samples=samples[r.name]))
  for name, err in errors.items():
    rows.append(dict(config=label, num_params=n, num_leaves=len(shapes),
                     optimizer=name, error=err))
  del runners
  return rows


def add_bandwidth(rows, copy_gbps):
  """Traffic floor over the faster of the device and dispatched times."""
  for row in rows:
    times = [t for t in (row.get('device_s'), row.get('dispatched_s')) if t]
    if not times:
      continue
    floor = row['floor_words'] * WORD_BYTES * row['num_params']
    row['floor_gbps'] = floor / min(times) / 1e9
    row['floor_pct_copy'] = 100 * row['floor_gbps'] / copy_gbps


def _fmt(x, spec, none='-'):
  return none if x is None else format(x, spec)


def format_table(rows) -> str:
  head = ('config', 'params', 'optimizer', 'device ms', 'x sgdm', 'x amsgrad',
          'dispatch ms', 'x sgdm', 'x amsgrad', 'floor w', 'XLA w', 'GB/s',
          '% copy', 'compile s')
  lines = []
  for row in rows:
    if 'error' in row:
      lines.append((row['config'], f"{row['num_params']:,}", row['optimizer'],
                    'failed: ' + row['error']))
      continue
    ms = lambda s: None if s is None else 1e3 * s
    lines.append((
        row['config'], f"{row['num_params']:,}", row['optimizer'],
        _fmt(ms(row['device_s']), '.3f'), _fmt(row['device_x_sgdm'], '.2f'),
        _fmt(row['device_x_amsgrad'], '.2f'),
        _fmt(ms(row['dispatched_s']), '.3f'),
        _fmt(row['dispatched_x_sgdm'], '.2f'),
        _fmt(row['dispatched_x_amsgrad'], '.2f'), str(row['floor_words']),
        _fmt(row['hlo_words'], '.1f'), _fmt(row.get('floor_gbps'), '.1f'),
        _fmt(row.get('floor_pct_copy'), '.0f'), _fmt(row['compile_s'], '.2f')))
  return markdown_table(head, lines)


def markdown_table(head, lines) -> str:
  widths = [max(len(str(c)) for c in col)
            for col in zip(head, *[l + ('',) * (len(head) - len(l))
                                   for l in lines])]
  def fmt(cells):
    cells = list(cells) + [''] * (len(head) - len(cells))
    if len(cells) > len(head):
      cells = cells[:len(head) - 1] + [' '.join(cells[len(head) - 1:])]
    return '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(cells, widths)) + ' |'
  sep = '|' + '|'.join('-' * (w + 2) for w in widths) + '|'
  return '\n'.join([fmt(head), sep] + [fmt(l) for l in lines])


def format_memory_table(names) -> str:
  lines = []
  for name in names:
    if name in JAX_OPTIMIZERS:
      lines.append((name, f'{state_bytes_per_param(name, None):.1f}',
                    f'{state_bytes_per_param(name, jnp.bfloat16):.1f}'))
  return markdown_table(('optimizer', 'state B/param', 'with bf16 mu'), lines)


def machine_info() -> dict:
  """Machine, versions and load, for the report header."""
  info = dict(
      timestamp_utc=datetime.datetime.now(datetime.timezone.utc).strftime(
          '%Y-%m-%d %H:%M UTC'),
      command=' '.join(['python -m benchmarks.step_time'] + sys.argv[1:]),
      python=platform.python_version(),
      jax=jax.__version__, jaxlib=_jaxlib_version(), optax=optax.__version__,
      pnm_optax=pnm_optax.__version__, numpy=np.__version__,
      backend=jax.default_backend(),
      device=str(jax.devices()[0].device_kind),
      num_devices=jax.device_count(),
      cpu=environment.cpu_name(), cpu_count=os.cpu_count(),
      platform=platform.platform(),
      mem_total_gib=_mem_total_gib())
  try:
    import torch  # pylint: disable=g-import-not-at-top
    info['torch'] = torch.__version__
    info['torch_threads'] = torch.get_num_threads()
  except ImportError:
    info['torch'] = None
  return info


def _jaxlib_version():
  try:
    import jaxlib  # pylint: disable=g-import-not-at-top
    return jaxlib.__version__
  except (ImportError, AttributeError):
    return None


def _mem_total_gib() -> Optional[float]:
  try:
    return round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
                 / 2 ** 30, 1)
  except (ValueError, OSError, AttributeError):
    return None


def target_summary(rows, backend: str) -> List[str]:
  """The issues' speed targets at 2^24 against this run's ratios.

  The targets are stated for one donated jitted step, i.e. the dispatched
  time; the device-loop ratio is printed next to it.
  """
  def find(name):
    return next((r for r in rows if r['num_leaves'] == 1 and
                 r['num_params'] == 2 ** 24 and r['optimizer'] == name
                 and r.get('dispatched_s')), None)
  def verdict(ratio, target):
    return f'{ratio:.2f}x -> {"met" if ratio <= target else "MISSED"}'
  gpu = backend in ('gpu', 'cuda', 'rocm')
  pnm_target, ada_target = (1.3, 1.15) if gpu else (1.6, None)
  out = []
  pnm, ada = find('pnm'), find('adapnm')
  if pnm:
    out.append(f'PNM / optax sgd-m at 2^24, one jitted step ({backend} '
               f'target <= {pnm_target}x): '
               + verdict(pnm['dispatched_x_sgdm'], pnm_target)
               + f' (in a jitted loop: {_fmt(pnm["device_x_sgdm"], ".2f")}x)')
  if ada and ada.get('dispatched_x_amsgrad') is not None:
    line = (f'AdaPNM / optax.amsgrad at 2^24, one jitted step: ' + (
        verdict(ada['dispatched_x_amsgrad'], ada_target) if ada_target
        else f'{ada["dispatched_x_amsgrad"]:.2f}x (target is for GPUs)'))
    line += (f' (in a jitted loop: {_fmt(ada["device_x_amsgrad"], ".2f")}x);'
             f' / optax.adam: {_fmt(ada.get("dispatched_x_adam"), ".2f")}x')
    out.append(line)
  if not gpu:
    out.append('GPU targets (PNM <= 1.3x sgd-m, AdaPNM <= 1.15x amsgrad) '
               'are not measured on a CPU run.')
  return out


def plot(rows, path):
  """Time per step against parameter count, one line per optimizer."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
  names = list(dict.fromkeys(r['optimizer'] for r in rows if 'error' not in r))
  colors = dict(zip(names, plt.rcParams['axes.prop_cycle'].by_key()['color']
                    * 3))
  for ax, kind, title in ((axes[0], 'device_s', 'device time (steps in a '
                           'jitted loop)'),
                          (axes[1], 'dispatched_s', 'dispatched time (one '
                           'jitted call per step)')):
    for name in names:
      pts = sorted((r['num_params'], r[kind]) for r in rows
                   if r['optimizer'] == name and r.get(kind)
                   and r['num_leaves'] == 1)
      if pts:
        ax.plot(*zip(*pts), 'o-', label=name, color=colors[name])
      tree_pts = [(r['num_params'], r[kind]) for r in rows
                  if r['optimizer'] == name and r.get(kind)
                  and r['num_leaves'] > 1]
      if tree_pts:
        ax.plot(*zip(*tree_pts), 's', color=colors[name], mfc='none')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('parameters (lines: one leaf; squares: trees)')
    ax.set_title(title, fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
  axes[0].set_ylabel('seconds per step')
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.step_time', description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default=None,
                      help=f'single-leaf parameter counts (default '
                      f'{DEFAULT_SIZES}; --quick: {QUICK_SIZES})')
  parser.add_argument('--trees', default=None,
                      help='comma list of ' + ','.join(trees.TREES) +
                      " or 'none' (default: all; --quick: none)")
  parser.add_argument('--optimizers', default=','.join(
      list(JAX_OPTIMIZERS) + list(TORCH_OPTIMIZERS)),
                      help='comma list (sgdm, the baseline, is always run)')
  parser.add_argument('--no-torch', action='store_true',
                      help='skip the PyTorch optimizers')
  parser.add_argument('--torch-threads', type=int, default=None,
                      help="torch.set_num_threads (default: torch's own)")
  parser.add_argument('--repeats', type=int, default=None,
                      help='rounds per tree (default 5; --quick: 3)')
  parser.add_argument('--target-time', type=float, default=None,
                      help='seconds per timed sample (default 0.25; '
                      '--quick: 0.02)')
  parser.add_argument('--mem-fraction', type=float, default=0.6,
                      help='share of available memory a tree may use')
  parser.add_argument('--layouts', action='store_true',
                      help='also time the PNM state-layout alternatives '
                      '(benchmarks/layouts.py)')
  parser.add_argument('--layout-size', default='2^24',
                      help='leaf size for --layouts')
  parser.add_argument('--quick', action='store_true',
                      help='tiny sizes, few repeats: a few seconds')
  parser.add_argument('--no-progress', action='store_true')
  parser.add_argument('--out', default='results/step_time',
                      help='folder for step_time.json and step_time.png')
  parser.add_argument('--no-plot', action='store_true')
  args = parser.parse_args(argv)
  if args.sizes is None:
    args.sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
  if args.trees is None:
    args.trees = 'none' if args.quick else ','.join(trees.TREES)
  if args.repeats is None:
    args.repeats = 3 if args.quick else 5
  if args.target_time is None:
    args.target_time = 0.02 if args.quick else 0.25
  return args


def torch_available() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def main(argv=None) -> dict:
  args = parse_args(argv)
  sizes = [parse_size(s) for s in args.sizes.split(',') if s.strip()]
  tree_names = [] if args.trees in ('', 'none') else args.trees.split(',')
  for name in tree_names:
    if name not in trees.TREES:
      raise SystemExit(f'unknown tree {name!r}; choose from {list(trees.TREES)}')
  names = [n.strip() for n in args.optimizers.split(',') if n.strip()]
  for name in names:
    if name not in JAX_OPTIMIZERS and name not in TORCH_OPTIMIZERS:
      raise SystemExit(f'unknown optimizer {name!r}')
  names = [BASELINE] + [n for n in names if n != BASELINE]
  notes = []
  if any(n in TORCH_OPTIMIZERS for n in names):
    if args.no_torch or not torch_available():
      notes.append('PyTorch optimizers skipped: ' + (
          '--no-torch' if args.no_torch else 'torch is not installed'))
      names = [n for n in names if n not in TORCH_OPTIMIZERS]

  if args.torch_threads and any(n in TORCH_OPTIMIZERS for n in names):
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(args.torch_threads)
  info = machine_info()
  info['loadavg_start'] = [round(x, 2) for x in os.getloadavg()]
  print(f"# step_time  {info['timestamp_utc']}")
  print(f"# machine: {info['cpu']} ({info['cpu_count']} cores, "
        f"{info['mem_total_gib']} GiB); JAX backend {info['backend']} "
        f"[{info['device']}]")
  print(f"# versions: python {info['python']}, jax {info['jax']}, jaxlib "
        f"{info['jaxlib']}, optax {info['optax']}, pnm_optax "
        f"{info['pnm_optax']}, numpy {info['numpy']}, torch {info['torch']}"
        + (f" ({info['torch_threads']} threads)" if info['torch'] else ''))
  print(f"# load average at start (1, 5, 15 min): {info['loadavg_start']}")
  print(f'# command: {info["command"]}')

  configs, skipped = [], []
  budget = args.mem_fraction * available_bytes()
  budget_text = (f'budget {budget / 2**30:.1f} GiB ({args.mem_fraction:.0%} '
                 'of available memory)')
  for label, shapes in build_configs(sizes, tree_names):
    n = trees.num_params(shapes)
    if bytes_needed(n, [BASELINE]) > budget:
      need = bytes_needed(n, names)
      skipped.append(dict(config=label, num_params=n, reason=(
          f'needs ~{need / 2**30:.1f} GiB for all optimizers side by side, '
          f'{bytes_needed(n, [BASELINE]) / 2**30:.1f} GiB for the baseline '
          f'alone, {budget_text}')))
      continue
    groups, too_big = plan_groups(n, names, budget)
    for name in too_big:
      need = bytes_needed(n, [BASELINE, name])
      skipped.append(dict(config=label, num_params=n, optimizer=name,
                          reason=f'{name} needs ~{need / 2**30:.1f} GiB next '
                          f'to the baseline, {budget_text}'))
    if not groups:
      continue
    if len(groups) > 1:
      notes.append(f'{label}: all optimizers side by side need '
                   f'~{bytes_needed(n, names) / 2**30:.1f} GiB, {budget_text}; '
                   'measured in groups, ratios within each group: '
                   + ' '.join('(' + ', '.join(g) + ')' for g in groups))
    configs.append((label, shapes, groups))
  for s in skipped:
    what = s['config'] + (f" {s['optimizer']}" if 'optimizer' in s else '')
    print(f'# skipped {what}: {s["reason"]}')
  for note in notes:
    print(f'# {note}')

  copy_n = min(2 ** 25, max([trees.num_params(s) for _, s, _ in configs] +
                            [2 ** 16]))
  copy_gbps = [measure_copy_bandwidth(copy_n, 5, args.target_time)]

  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  num_rounds = sum(len(groups) for _, _, groups in configs) * args.repeats
  progress = tqdm(total=num_rounds, desc='rounds', disable=args.no_progress,
                  file=sys.stderr)
  rows = []
  for label, shapes, groups in configs:
    progress.set_postfix_str(label)
    for i, group in enumerate(groups):
      group_rows = run_config(label, shapes, group, args.repeats,
                              args.target_time, progress)
      # The baseline's row from the first group stands for the config.
      rows += [r for r in group_rows if i == 0 or r['optimizer'] != BASELINE]
  progress.close()
  copy_gbps.append(measure_copy_bandwidth(copy_n, 5, args.target_time))
  copy = float(np.median(copy_gbps))
  add_bandwidth(rows, copy)
  info['loadavg_end'] = [round(x, 2) for x in os.getloadavg()]

  print(f'# copy bandwidth (donated jitted x * s, faster of calls and loop, {size_label(copy_n)} float32, read '
        f'+ write): {copy:.1f} GB/s (before/after: '
        f'{copy_gbps[0]:.1f}/{copy_gbps[1]:.1f})')
  print('# device = K steps in one jitted fori_loop / K; dispatch = K donated '
        'jitted calls / K; medians of', args.repeats, 'rounds, ratios per '
        'round. floor w = words/param a fused step must move; XLA w = bytes '
        'accessed by the compiled step (XLA cost analysis) / 4 / params; GB/s '
        '= floor bytes / the faster of device and dispatch time; % copy = '
        'GB/s over the copy bandwidth.')
  print()
  table = format_table(rows)
  print(table)
  print()
  memory = format_memory_table([n for n in names if n in JAX_OPTIMIZERS])
  print(memory)
  print()
  summary = target_summary(rows, info['backend'])
  for line in summary:
    print('# ' + line)
  print(f"# load average at end (1, 5, 15 min): {info['loadavg_end']}")

  result = dict(meta=info, copy_gbps=copy, copy_gbps_samples=copy_gbps,
                copy_num_params=copy_n, repeats=args.repeats,
                target_time_s=args.target_time, skipped=skipped, notes=notes,
                rows=rows, table=table, memory_table=memory,
                state_bytes_per_param={
                    n: dict(f32=state_bytes_per_param(n, None),
                            bf16_mu=state_bytes_per_param(n, jnp.bfloat16))
                    for n in names if n in JAX_OPTIMIZERS},
                targets=summary)
  if args.layouts:
    from benchmarks import layouts  # pylint: disable=g-import-not-at-top
    print()
    result['layouts'] = layouts.run(parse_size(args.layout_size),
                                    args.repeats, args.target_time,
                                    progress=not args.no_progress)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'step_time.json'), 'w') as f:
    json.dump(result, f, indent=1)
  if not args.no_plot and rows:
    plot(rows, os.path.join(args.out, 'step_time.png'))
  print(f'# wrote {args.out}/step_time.json' +
        ('' if args.no_plot else f' and {args.out}/step_time.png'))
  return result


if __name__ == '__main__':
  main()
