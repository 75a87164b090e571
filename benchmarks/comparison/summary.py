"""Numbers of a finished configuration: final errors per seed, mean +- std,
per-epoch curves, and the paired comparisons against the baselines."""

from collections.abc import Mapping

import numpy as np

from benchmarks.comparison import optimizers as opt_lib
from benchmarks.comparison import statistics, training

# The last CONVERGENCE_WINDOW of the epochs: a run whose training loss fell
# by more than LOSS_RTOL (relative) or whose held-out error moved by more
# than ERROR_ATOL (fraction: 0.5 points) over it had not converged.
CONVERGENCE_WINDOW = 0.2
LOSS_RTOL = 0.1
ERROR_ATOL = 0.005


def final_errors(history: training.History) -> dict[int, float | None]:
  """seed -> test error after the last epoch (None if the seed diverged)."""
  last = history.metrics['test_error'][-1] if history.epochs_done else []
  return {
    seed: (None if history.diverged_at[i] is not None else last[i])
    for i, seed in enumerate(history.seeds)
  }


def summarize(history: training.History) -> dict:
  """Mean +- std over seeds of the final and best-epoch test error and the
  final training loss (diverged seeds left out and counted)."""
  per_epoch = {
    k: np.asarray(v, np.float64).reshape(history.epochs_done, -1)
    for k, v in history.metrics.items()
  }
  final = final_errors(history)
  best = [
    None
    if history.diverged_at[i] is not None
    else float(np.min(per_epoch['test_error'][:, i]))
    for i in range(len(history.seeds))
  ]
  train_loss = [
    None
    if history.diverged_at[i] is not None
    else float(per_epoch['train_loss'][-1, i])
    for i in range(len(history.seeds))
  ]
  out = {}
  for key, values in (
    ('test_error', list(final.values())),
    ('best_test_error', best),
    ('train_loss', train_loss),
  ):
    out[key + '_mean'], out[key + '_std'] = statistics.mean_std(values)
  interval = statistics.t_interval(list(final.values()))
  out['test_error_ci'] = [interval['ci_low'], interval['ci_high']]
  out['convergence'] = convergence(history)
  out['test_error_per_seed'] = list(final.values())
  out['seeds'] = list(history.seeds)
  out['diverged_seeds'] = [
    s for s, d in zip(history.seeds, history.diverged_at) if d is not None
  ]
  out['epochs'] = history.epochs_done
  out['wall_seconds'] = float(sum(history.epoch_seconds))
  return out


def convergence(history: training.History) -> dict:
  """Whether training had settled: the change of the mean (over the seeds
  that did not diverge) training loss and held-out error over the last
  :data:`CONVERGENCE_WINDOW` of the epochs.

  Returns:
    ``window_epochs``, ``train_loss_change`` (relative, (last - first) /
    first), ``error_change`` (fraction, last - first) and ``moved`` (True
    when either exceeds :data:`LOSS_RTOL` / :data:`ERROR_ATOL` in size;
    None when there is nothing to compare).
  """
  epochs = history.epochs_done
  window = max(1, int(round(CONVERGENCE_WINDOW * epochs)))
  out: dict = {
    'window_epochs': window,
    'train_loss_change': None,
    'error_change': None,
    'moved': None,
  }
  if epochs <= window:
    return out
  alive = [i for i, d in enumerate(history.diverged_at) if d is None]
  if not alive:
    return out

  def mean_at(metric: str, epoch: int) -> float:
    row = np.asarray(history.metrics[metric][epoch], np.float64)
    return float(np.mean(row[alive]))

  first, last = epochs - window - 1, epochs - 1
  loss0 = mean_at('train_loss', first)
  loss_change = (mean_at('train_loss', last) - loss0) / max(abs(loss0), 1e-12)
  error_change = mean_at('test_error', last) - mean_at('test_error', first)
  out.update(
    train_loss_change=loss_change,
    error_change=error_change,
    moved=bool(abs(loss_change) > LOSS_RTOL or abs(error_change) > ERROR_ATOL),
  )
  return out


def curves(history: training.History) -> dict:
  """``epoch`` (1..E) and, per metric, one list per seed plus the
  ``<metric>_mean`` per epoch over the seeds still finite."""
  out: dict[str, list] = {'epoch': list(range(1, history.epochs_done + 1))}
  for key, per_epoch in history.metrics.items():
    arr = np.asarray(per_epoch, np.float64).reshape(history.epochs_done, -1)
    out[key] = arr.T.tolist()
    counts = np.sum(np.isfinite(arr), axis=1)
    sums = np.nansum(arr, axis=1)
    out[key + '_mean'] = np.where(
      counts > 0, sums / np.maximum(counts, 1), np.nan
    ).tolist()
  out['learning_rate'] = list(history.learning_rate)
  return out


def paired_against_baselines(
  finals: Mapping[str, training.History],
) -> list[dict]:
  """PNM - SGD-M, AdaPNM - Adam, AdaPNM - AdamW where both ran, with 95%
  intervals, the smallest detectable difference, and Holm-adjusted p-values
  over these comparisons (``p_holm``)."""
  out = []
  for a, b in opt_lib.baseline_pairs(list(finals)):
    if a in finals and b in finals:
      out.append(
        {
          'a': a,
          'b': b,
          **statistics.paired_summary(
            final_errors(finals[a]), final_errors(finals[b])
          ),
        }
      )
  for pair, adjusted in zip(out, statistics.holm([p['p_value'] for p in out])):
    pair['p_holm'] = adjusted
  return out
