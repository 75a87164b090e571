"""Figures of a comparison, drawn with matplotlib's object-oriented API.

Every function returns a ``matplotlib.figure.Figure`` made without pyplot:
nothing here selects or switches a backend, so the caller decides where a
figure goes (``fig.savefig(path)``, or ``display(fig)`` in a notebook, which
renders it as PNG whatever the notebook's matplotlib setup).
Errors are in percent, as in the tables; bands are mean +- std over seeds.
"""

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import figure

from benchmarks.comparison import optimizers as opt_lib


class Figure(figure.Figure):
  """A matplotlib Figure that notebooks display as a PNG image, also where
  no pyplot backend has registered a display hook (headless kernels)."""

  def _repr_png_(self) -> bytes:
    buffer = io.BytesIO()
    self.savefig(buffer, format='png', dpi=100)
    return buffer.getvalue()


_PANELS = (
  ('train_loss', 'training loss', 1.0, True),
  ('train_error', 'training error %', 100.0, False),
  ('test_error', '{split} error %', 100.0, False),
)


def mean_std_per_epoch(per_seed) -> tuple[np.ndarray, np.ndarray]:
  """Mean and sample std over seeds (rows) of the finite values per epoch
  (std 0 where one seed is left; NaN where none)."""
  arr = np.asarray(per_seed, np.float64)
  ok = np.isfinite(arr)
  count = ok.sum(0)
  filled = np.where(ok, arr, 0.0)
  mean = np.where(count > 0, filled.sum(0) / np.maximum(count, 1), np.nan)
  dev = np.where(ok, arr - mean, 0.0)
  var = (dev**2).sum(0) / np.maximum(count - 1, 1)
  return mean, np.where(count > 0, np.sqrt(var), np.nan)


def curves_figure(
  curves: Mapping[str, Mapping],
  *,
  title: str = '',
  split: str = 'test',
  lr_drops: Sequence[int] = (),
) -> Figure:
  """Training loss, training error and ``split`` error per epoch.

  Args:
    curves: optimizer -> ``{'epoch': [...], metric: [per-seed lists]}`` (the
      ``curves`` of a comparison's results).
    title: figure title.
    split: what the last panel evaluates (``test`` or ``validation``).
    lr_drops: 0-based epochs where the step schedule lowers the lr; drawn
      as dotted lines between that epoch and the one before.

  Returns:
    The figure (three panels, a band of +- one std over seeds per
    optimizer, markers on the lines so that short runs show).
  """
  fig = Figure(figsize=(15, 4.2), layout='constrained')
  axes = fig.subplots(1, 3)
  for ax, (key, label, scale, log) in zip(axes, _PANELS):
    for name, c in curves.items():
      epochs = np.asarray(c['epoch'])
      mean, std = mean_std_per_epoch(c[key])
      (line,) = ax.plot(
        epochs,
        scale * mean,
        marker='o',
        markersize=3,
        markevery=max(1, len(epochs) // 25),
        label=opt_lib.label(name),
      )
      ax.fill_between(
        epochs,
        scale * (mean - std),
        scale * (mean + std),
        color=line.get_color(),
        alpha=0.2,
        linewidth=0,
      )
    for i, drop in enumerate(lr_drops):
      ax.axvline(
        drop + 0.5,
        color='0.4',
        linestyle=':',
        linewidth=1,
        label='lr / 10' if i == 0 else None,
      )
    ax.set_xlabel('epoch')
    ax.set_ylabel(label.format(split=split))
    if log:
      ax.set_yscale('log')
    ax.grid(alpha=0.3)
  axes[-1].legend(fontsize=8)
  if title:
    fig.suptitle(title)
  return fig


def final_errors_figure(
  summary: Mapping[str, Mapping],
  *,
  title: str = '',
  reference: Mapping[str, float] | None = None,
  reference_label: str = 'reference',
) -> Figure:
  """Final test error per optimizer (bar: mean, whisker: std over seeds),
  with ``reference`` values (%, e.g. the paper's) as black marks."""
  names = list(summary)
  mean = np.array(
    [
      np.nan
      if summary[n]['test_error_mean'] is None
      else 100 * summary[n]['test_error_mean']
      for n in names
    ]
  )
  std = np.array(
    [
      0.0
      if summary[n]['test_error_std'] is None
      else 100 * summary[n]['test_error_std']
      for n in names
    ]
  )
  fig = Figure(figsize=(6.5, 3.8), layout='constrained')
  ax = fig.subplots()
  x = np.arange(len(names))
  ax.bar(
    x,
    mean,
    yerr=std,
    capsize=4,
    color='tab:blue',
    alpha=0.8,
    label='this run (mean +- std over seeds)',
  )
  if reference:
    ax.plot(
      [i for i, n in enumerate(names) if n in reference],
      [reference[n] for n in names if n in reference],
      'k_',
      markersize=25,
      markeredgewidth=2,
      label=reference_label,
    )
  ax.set_xticks(x, [opt_lib.label(n) for n in names])
  ax.set_ylabel('test error %')
  ax.grid(axis='y', alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  return fig


def grid_figure(grid: Mapping[str, Mapping], *, title: str = '') -> Figure:
  """Validation error against learning rate per optimizer (log lr axis)
  from a comparison's ``grid``; the picked lr is circled, diverged points
  are left out."""
  fig = Figure(figsize=(6.5, 3.8), layout='constrained')
  ax = fig.subplots()
  for name, search in grid.items():
    lrs = [p['lr'] for p in search['grid']]
    errors = [
      np.nan
      if p['validation_error'] is None or not np.isfinite(p['validation_error'])
      else 100 * p['validation_error']
      for p in search['grid']
    ]
    (line,) = ax.plot(
      lrs,
      errors,
      marker='o',
      markersize=4,
      label=opt_lib.label(name),
    )
    picked = errors[lrs.index(search['picked'])]
    ax.plot(
      [search['picked']],
      [picked],
      'o',
      markersize=11,
      markerfacecolor='none',
      color=line.get_color(),
    )
  ax.set_xscale('log')
  ax.set_xlabel('learning rate')
  ax.set_ylabel('validation error %')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  return fig
