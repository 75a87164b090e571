"""Numbers of a finished configuration: final errors per seed, mean +- std,
per-epoch curves, and the paired comparisons against the baselines."""

from collections.abc import Mapping

import numpy as np

from benchmarks.comparison import optimizers as opt_lib
from benchmarks.comparison import statistics, training


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
  out['test_error_per_seed'] = list(final.values())
  out['seeds'] = list(history.seeds)
  out['diverged_seeds'] = [
    s for s, d in zip(history.seeds, history.diverged_at) if d is not None
  ]
  out['epochs'] = history.epochs_done
  out['wall_seconds'] = float(sum(history.epoch_seconds))
  return out


def curves(history: training.History) -> dict:
  """``epoch`` (1..E) and, per metric, one list per seed plus the
  ``<metric>_mean`` per epoch over the seeds still finite."""
  out = {'epoch': list(range(1, history.epochs_done + 1))}
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
  """PNM - SGD-M, AdaPNM - Adam, AdaPNM - AdamW where both ran."""
  out = []
  for a, b in opt_lib.BASELINE_PAIRS:
    if a in finals and b in finals:
      out.append(
        {
          'a': a,
          'b': b,
          **statistics.paired_difference(
            final_errors(finals[a]), final_errors(finals[b])
          ),
        }
      )
  return out
