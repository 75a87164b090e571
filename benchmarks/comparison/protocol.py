"""The learning-rate protocol: a grid per optimizer, picked on validation.

Each optimizer gets a geometric grid around its default learning rate. Every
grid point is trained on the training set minus a held-out validation split
and scored by its mean final validation error over a few seeds (a point with
a diverged seed scores infinity). When the best point is at an edge of the
grid, the grid grows by one point beyond that edge (same ratio), up to a
bounded number of extensions (a grid where every point diverged grows
downwards); a pick still at an edge is reported as such, because the best
learning rate may lie outside what was tried.

Training on these problems is noisy: the score of a grid point is a mean over
its grid seeds, so the search keeps each point's per-seed errors and their
standard error, and says when a neighbour of the pick scored within one
standard error of it (the pick between the two is then a coin flip, and the
neighbour would have served as well).
"""

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np


def round_lr(lr: float) -> float:
  """Six significant digits: grid points print and compare cleanly."""
  return float(f'{lr:.6g}')


def initial_grid(center: float, points: int, ratio: float) -> list[float]:
  """``points`` learning rates ``center * ratio**k`` centred on ``center``
  (for an even count, one more point below the centre)."""
  if points < 1:
    raise ValueError(f'a grid needs at least 1 point, got {points}')
  if not ratio > 1:
    raise ValueError(f'grid ratio must be > 1, got {ratio}')
  low = -(points // 2)
  return [round_lr(center * ratio**k) for k in range(low, low + points)]


@dataclasses.dataclass
class GridSearch:
  """The outcome of :func:`search` for one optimizer.

  Attributes:
    scores: learning rate -> mean validation error (inf: diverged), in the
      order tried.
    picked: the learning rate with the lowest score.
    extensions: how many points were added beyond the first grid's edges.
    at_edge: ``'low'``/``'high'`` when the pick is still the lowest/highest
      point tried (with a grid of more than one point), or ``'low'`` when
      every point diverged; else None.
  """

  scores: dict
  picked: float
  extensions: int
  at_edge: str | None
  seed_scores: dict = dataclasses.field(default_factory=dict)

  @property
  def grid(self) -> list[float]:
    return sorted(self.scores)

  def standard_error(self, lr: float) -> float | None:
    """Standard error of the mean score at ``lr`` over its grid seeds (None
    with fewer than two finite seeds)."""
    values = [
      v
      for v in self.seed_scores.get(lr, [])
      if v is not None and math.isfinite(v)
    ]
    if len(values) < 2:
      return None
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))

  @property
  def close_neighbours(self) -> list[float]:
    """The grid neighbours of the pick whose mean score lies within one
    standard error (of the pick's mean) of the pick's."""
    se = self.standard_error(self.picked)
    if se is None:
      return []
    grid = self.grid
    i = grid.index(self.picked)
    return [
      grid[j]
      for j in (i - 1, i + 1)
      if 0 <= j < len(grid)
      and math.isfinite(self.scores[grid[j]])
      and self.scores[grid[j]] - self.scores[self.picked] <= se
    ]

  def as_json(self) -> dict:
    """The search as results files keep it: each point (mean validation
    error, its standard error, per-seed errors) and the pick."""
    return {
      'grid': [
        {
          'lr': lr,
          'validation_error': self.scores[lr],
          'standard_error': self.standard_error(lr),
          'per_seed': list(self.seed_scores.get(lr, [])),
        }
        for lr in self.grid
      ],
      'picked': self.picked,
      'picked_standard_error': self.standard_error(self.picked),
      'close_neighbours': self.close_neighbours,
      'extensions': self.extensions,
      'at_edge': self.at_edge,
    }


def _best(scores: dict) -> float:
  # Lowest score; among equal scores the smaller learning rate.
  return min(scores, key=lambda lr: (scores[lr], lr))


def _edge(scores: dict, best: float) -> str | None:
  if math.isinf(scores[best]):
    return 'low'  # every point diverged: the learning rates are too high
  if len(scores) < 2:
    return None
  grid = sorted(scores)
  return 'low' if best == grid[0] else 'high' if best == grid[-1] else None


def _mean_score(values: float | Sequence[float | None]) -> tuple[float, list]:
  """A score and its per-seed values: a number is its own score; per-seed
  values score their mean, or inf if any seed diverged (None or inf)."""
  if isinstance(values, (int, float)):
    return float(values), []
  per_seed = [None if v is None else float(v) for v in values]
  if not per_seed or any(v is None or not math.isfinite(v) for v in per_seed):
    return math.inf, per_seed
  return float(np.mean([v for v in per_seed if v is not None])), per_seed


def search(
  score: Callable[[float], float | Sequence[float | None]],
  center: float,
  points: int,
  ratio: float,
  max_extensions: int,
) -> GridSearch:
  """Scores the grid, extending it while the best point is at an edge.

  Args:
    score: learning rate -> validation error (lower is better; inf for a
      diverged run), or the per-seed validation errors (None or inf for a
      diverged seed), whose mean is the score.
    center, points, ratio: the first grid (:func:`initial_grid`).
    max_extensions: at most this many points are added.

  Returns:
    A :class:`GridSearch`.
  """
  scores, seed_scores = {}, {}

  def add(lr: float) -> None:
    scores[lr], seed_scores[lr] = _mean_score(score(lr))

  for lr in initial_grid(center, points, ratio):
    add(lr)
  extensions = 0
  while True:
    best = _best(scores)
    edge = _edge(scores, best)
    if edge is None or extensions >= max_extensions:
      break
    lr = round_lr(best / ratio if edge == 'low' else best * ratio)
    add(lr)
    extensions += 1
  return GridSearch(scores, best, extensions, edge, seed_scores)
