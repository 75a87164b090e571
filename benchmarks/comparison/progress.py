"""Progress: a bar on a terminal, plain lines otherwise.

On a terminal a tqdm bar counts epochs. Anywhere else (a log file, a pipe, a
notebook) it prints plain lines: one per epoch, at most one every
``interval_s`` seconds when epochs are fast, and one per finished
configuration, so a long job is never silent for long. tqdm is imported only
for the bar (its notebook variant, which warns without ipywidgets, is never
used).
"""

import sys
import time
from typing import TextIO

from benchmarks.common import reporting
from benchmarks.comparison import training


def _error_text(history: training.History) -> str:
  errors = [e for e in history.metrics['test_error'][-1] if e == e]
  if not errors:
    return 'every seed diverged'
  return f'error {100 * sum(errors) / len(errors):.2f}% (mean of {len(errors)})'


class Progress:
  """Reports training progress.

  Args:
    bar: True for a tqdm bar, False for plain lines, None for a bar only
      when ``stream`` is a terminal.
    stream: where lines go (default ``sys.stdout``).
    interval_s: least time between two plain epoch lines.
    quiet: print nothing at all.
  """

  def __init__(
    self,
    bar: bool | None = None,
    stream: TextIO | None = None,
    interval_s: float = 5.0,
    quiet: bool = False,
  ):
    self.stream = stream or sys.stdout
    if bar is None:
      bar = hasattr(self.stream, 'isatty') and self.stream.isatty()
    self.bar_enabled, self.interval_s, self.quiet = bar, interval_s, quiet
    self._bar = None
    self._label = ''
    self._last = 0.0

  def message(self, text: str) -> None:
    if self.quiet:
      return
    if self._bar is not None:
      self._bar.write(text, file=self.stream)
    else:
      print(text, file=self.stream, flush=True)

  def start(self, label: str, epochs: int, done: int = 0) -> None:
    """A configuration starts (``done`` epochs restored from a checkpoint)."""
    self._label, self._last = label, time.monotonic()
    if self.quiet:
      return
    if done:
      self.message(f'{label}: resuming at epoch {done + 1} of {epochs}')
    if self.bar_enabled:
      from tqdm import tqdm

      self._bar = tqdm(
        total=epochs,
        initial=done,
        desc=label,
        unit='epoch',
        file=self.stream,
        leave=False,
        dynamic_ncols=True,
      )

  def epoch(self, history: training.History, epochs: int) -> None:
    """An epoch finished (the trainer's ``on_epoch`` callback)."""
    if self.quiet:
      return
    text = _error_text(history)
    if self._bar is not None:
      self._bar.set_postfix_str(text, refresh=False)
      self._bar.update(1)
      return
    now = time.monotonic()
    done = history.epochs_done
    if now - self._last >= self.interval_s and done < epochs:
      self._last = now
      self.message(
        f'{self._label}: epoch {done}/{epochs}, {text}, '
        f'{history.epoch_seconds[-1]:.2f} s/epoch'
      )

  def finish(self, history: training.History, skipped: bool = False) -> None:
    """A configuration finished (or was found finished in the results)."""
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    if skipped:
      self.message(f'{self._label}: already in the results, skipped')
      return
    diverged = sum(d is not None for d in history.diverged_at)
    note = (
      f', {diverged} of {len(history.seeds)} seeds diverged'
      if (diverged)
      else ''
    )
    self.message(
      f'{self._label}: {history.epochs_done} epochs, '
      f'{_error_text(history)}{note}, '
      f'{reporting.fmt(sum(history.epoch_seconds), ".1f")} s'
    )
