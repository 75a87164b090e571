"""Statistics over seeds: mean +- std, and paired differences.

Seed ``s`` gives every optimizer the same initialisation and data order, so
two optimizers are compared seed by seed (a paired design): the difference
of their test errors per seed, its mean and std, the paired t-test p-value
(``scipy.stats.ttest_rel``) and how often each one won.
"""

import math
from collections.abc import Mapping, Sequence

import numpy as np


def finite(values: Sequence[float | None]) -> list[float]:
  """The values that are numbers (not None, not NaN or infinite)."""
  return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_std(
  values: Sequence[float | None],
) -> tuple[float | None, float | None]:
  """Mean and sample std (ddof=1; 0 for one value) of the finite values;
  (None, None) when there are none."""
  arr = np.asarray(finite(values), np.float64)
  if arr.size == 0:
    return None, None
  return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def paired_difference(
  a: Mapping[int, float | None], b: Mapping[int, float | None]
) -> dict:
  """``a - b`` over the seeds where both are finite (errors: lower wins).

  Args:
    a, b: seed -> final error of each optimizer.

  Returns:
    ``n`` (paired seeds), ``mean`` and ``std`` (ddof=1) of ``a - b``,
    ``p_value`` of the two-sided paired t-test (None when n < 2 or every
    difference is equal), and ``a_wins``/``b_wins``/``ties`` (seeds where
    ``a < b``, ``a > b``, ``a == b``).
  """
  seeds = sorted(
    s for s in set(a) & set(b) if finite([a[s]]) and finite([b[s]])
  )
  x = np.asarray([a[s] for s in seeds], np.float64)
  y = np.asarray([b[s] for s in seeds], np.float64)
  diff = x - y
  mean, std = mean_std(diff.tolist())
  p_value = None
  if len(seeds) >= 2 and np.ptp(diff) > 0:
    from scipy import stats

    p_value = float(stats.ttest_rel(x, y).pvalue)
  return {
    'n': len(seeds),
    'mean': mean,
    'std': std,
    'p_value': p_value,
    'a_wins': int(np.sum(diff < 0)),
    'b_wins': int(np.sum(diff > 0)),
    'ties': int(np.sum(diff == 0)),
  }
