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


def t_interval(values: Sequence[float | None], level: float = 0.95) -> dict:
  """Mean of ``values`` and its two-sided t confidence interval.

  Returns:
    ``n``, ``mean``, ``std`` (ddof=1), ``se`` (std / sqrt(n)) and
    ``ci_low``/``ci_high`` (None with fewer than two values); None and
    non-finite values are left out.
  """
  arr = np.asarray(finite(values), np.float64)
  n = int(arr.size)
  out: dict = {
    'n': n,
    'mean': None,
    'std': None,
    'se': None,
    'ci_low': None,
    'ci_high': None,
  }
  if n == 0:
    return out
  out['mean'] = float(arr.mean())
  if n < 2:
    return out
  from scipy import stats

  std = float(arr.std(ddof=1))
  se = std / math.sqrt(n)
  half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
  out.update(
    std=std,
    se=se,
    ci_low=out['mean'] - half,
    ci_high=out['mean'] + half,
  )
  return out


def holm(p_values: Sequence[float | None]) -> list[float | None]:
  """Holm-Bonferroni adjusted p-values, in the order given (None stays
  None and does not count as a test).

  The k-th smallest of m p-values becomes ``max_{j <= k} min(1, (m - j + 1)
  p_(j))``: rejecting where the adjusted p is below alpha controls the
  family-wise error rate at alpha.
  """
  tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
  m = len(tested)
  out: list[float | None] = [None] * len(p_values)
  running = 0.0
  for rank, (p, i) in enumerate(sorted(tested)):
    running = max(running, min(1.0, (m - rank) * p))
    out[i] = running
  return out


def matched_learning_rate(
  lr: float, b0: float, reference_b0: float = 0.0
) -> float:
  """:func:`pnm_optax.b0_matched_learning_rate` as a Python float."""
  import pnm_optax

  value = pnm_optax.b0_matched_learning_rate(lr, b0, reference_b0=reference_b0)
  return float(np.asarray(value, np.float64))


def detectable_difference(
  std: float | None, n: int, alpha: float = 0.05, power: float = 0.8
) -> float | None:
  """The smallest true mean difference a two-sided paired t-test on ``n``
  pairs with difference std ``std`` finds at level ``alpha`` with
  probability ``power`` (normal approximation of the noncentral t:
  ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * std / sqrt(n)``)."""
  if std is None or n < 2:
    return None
  from scipy import stats

  factor = stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)
  return float(factor * std / math.sqrt(n))


def seeds_to_detect(
  difference: float,
  std: float,
  alpha: float = 0.05,
  power: float = 0.8,
  max_seeds: int = 100_000,
) -> int | None:
  """The fewest paired seeds with which :func:`detectable_difference` is at
  most ``difference`` (None beyond ``max_seeds``)."""
  if not difference > 0 or not std >= 0:
    raise ValueError(
      f'difference must be > 0 and std >= 0, got {difference}, {std}'
    )
  n = 2
  while n <= max_seeds:
    found = detectable_difference(std, n, alpha, power)
    if found is not None and found <= difference:
      return n
    n += 1
  return None


def paired_summary(
  a: Mapping[int, float | None], b: Mapping[int, float | None]
) -> dict:
  """:func:`paired_difference` plus the 95% t interval of the mean
  difference (``ci_low``, ``ci_high``) and the smallest difference these
  seeds could have detected (``detectable``, see
  :func:`detectable_difference`)."""
  out = paired_difference(a, b)
  seeds = sorted(
    s for s in set(a) & set(b) if finite([a[s]]) and finite([b[s]])
  )
  pairs = [(a[s], b[s]) for s in seeds]
  diff = [x - y for x, y in pairs if x is not None and y is not None]
  interval = t_interval(diff)
  out['ci_low'], out['ci_high'] = interval['ci_low'], interval['ci_high']
  out['detectable'] = detectable_difference(out['std'], out['n'])
  return out
