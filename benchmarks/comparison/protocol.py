"""The learning-rate protocol: a grid per optimizer, picked on validation.

Each optimizer gets a geometric grid around its default learning rate. Every
grid point is trained on the training set minus a held-out validation split
and scored by its mean final validation error over a few seeds (a point with
a diverged seed scores infinity). When the best point is at an edge of the
grid, the grid grows by one point beyond that edge (same ratio), up to a
bounded number of extensions (a grid where every point diverged grows
downwards); a pick still at an edge is reported as such, because the best
learning rate may lie outside what was tried.
"""

import dataclasses
import math
from collections.abc import Callable


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

  @property
  def grid(self) -> list[float]:
    return sorted(self.scores)

  def as_json(self) -> dict:
    """The search as results files keep it: each point and the pick."""
    return {
      'grid': [
        {'lr': lr, 'validation_error': self.scores[lr]} for lr in self.grid
      ],
      'picked': self.picked,
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


def search(
  score: Callable[[float], float],
  center: float,
  points: int,
  ratio: float,
  max_extensions: int,
) -> GridSearch:
  """Scores the grid, extending it while the best point is at an edge.

  Args:
    score: learning rate -> validation error (lower is better; inf for a
      diverged run).
    center, points, ratio: the first grid (:func:`initial_grid`).
    max_extensions: at most this many points are added.

  Returns:
    A :class:`GridSearch`.
  """
  scores = {lr: float(score(lr)) for lr in initial_grid(center, points, ratio)}
  extensions = 0
  while True:
    best = _best(scores)
    edge = _edge(scores, best)
    if edge is None or extensions >= max_extensions:
      break
    lr = round_lr(best / ratio if edge == 'low' else best * ratio)
    scores[lr] = float(score(lr))
    extensions += 1
  return GridSearch(scores, best, extensions, edge)
