"""Memory: what the optimizers keep, and which of them fit side by side.

The speed benchmark times optimizers side by side in one process, so at large
sizes they may not all fit at once; :func:`plan_groups` splits them into
groups that do, each with the baseline so that every ratio is still taken
within a round.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.speed import contenders


def available_bytes() -> int:
  """Available device memory on an accelerator if known, else host memory."""
  dev = jax.devices()[0]
  if dev.platform != 'cpu':
    try:
      stats = dev.memory_stats() or {}
      if 'bytes_limit' in stats:
        return int(stats['bytes_limit'] - stats.get('bytes_in_use', 0))
    except Exception:
      pass
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_AVPHYS_PAGES')


def bytes_needed(num_params: int, names: list[str]) -> int:
  """Peak bytes for all optimizers of one round living side by side.

  Per optimizer: parameters, state and one temporary (updates), plus its own
  gradients for a PyTorch one; plus the shared gradients and one spare
  buffer.
  """
  words = 2
  for name in names:
    words += (
      2
      + contenders.ALL[name].state_words
      + (1 if contenders.is_torch(name) else 0)
    )
  return words * num_params * contenders.WORD_BYTES


def plan_groups(
  num_params: int,
  names: list[str],
  budget: float,
  baseline: str = contenders.BASELINE,
) -> tuple[list[list[str]], list[str]]:
  """Splits ``names`` into groups that fit in ``budget`` bytes side by side.

  All of them in one group when they fit. Otherwise every group starts with
  the baseline, so each ratio to it is still taken within a round, and
  optimizers are added in order while they fit (neighbours such as amsgrad
  and adapnm stay together when memory allows). Returns the groups and the
  optimizers that do not fit even next to the baseline alone.
  """
  if bytes_needed(num_params, names) <= budget:
    return [list(names)], []
  groups, too_big, group = [], [], [baseline]
  for name in names:
    if name == baseline:
      continue
    if bytes_needed(num_params, [baseline, name]) > budget:
      too_big.append(name)
      continue
    if bytes_needed(num_params, group + [name]) > budget:
      groups.append(group)
      group = [baseline]
    group.append(name)
  if len(group) > 1:
    groups.append(group)
  return groups, too_big


def state_bytes_per_param(name: str, mu_dtype) -> float:
  """Optimizer-state bytes per parameter of a JAX optimizer, measured on a
  2^20-element float32 leaf (``mu_dtype``: its momentum dtype, or None)."""
  n = 2**20
  opt = contenders.make(name, mu_dtype)
  shape = jax.eval_shape(opt.init, jax.ShapeDtypeStruct((n,), jnp.float32))
  total = sum(
    x.size * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(shape)
  )
  return total / n
