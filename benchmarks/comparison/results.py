"""The results file of one experiment: named by its settings, saved as each
configuration finishes, resumable.

``<out>/<dataset>_<model>_<id>.json`` where ``<id>`` is a hash of every
setting that changes the numbers (data, model, budget, schedule, seeds,
optimizers and their hyperparameters, protocol), so two different
experiments never share a file. The file holds one record per finished
configuration (optimizer and hyperparameters, trained on all its seeds side
by side) with its per-seed curves, per-epoch wall time and learning rate and
its provenance (command, UTC time, git commit, machine, versions, device),
plus the latest report (summary, paired statistics, tables). It is written
strictly (no NaN) and atomically after every configuration, so an
interrupted command keeps what it finished, and the same command run again
skips those configurations. Beside it: ``<stem>.png`` (the curves) and,
while a configuration is in progress, ``<stem>.checkpoint.npz``.
"""

import hashlib
import json
import os
from collections.abc import Mapping

from benchmarks.common import reporting
from benchmarks.comparison import training

FORMAT = 'pnm-optax comparison results v1'


def settings_id(settings: Mapping) -> str:
  """A short stable hash of JSON-able ``settings``."""
  text = json.dumps(reporting.strict_json(settings), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


class ResultsFile:
  """Finished configurations of one experiment, kept on disk (or in memory
  when ``folder`` is None).

  Args:
    folder: where the files go; None keeps everything in memory.
    stem: file name without extension (``<dataset>_<model>``); the
      experiment's id is appended.
    experiment: the settings that define the experiment.
    overwrite: start afresh even if the file exists (its finished
      configurations are discarded).

  Raises:
    ValueError: the file exists but is not a results file of this
      experiment (and ``overwrite`` is false).
  """

  def __init__(
    self,
    folder: str | None,
    stem: str,
    experiment: Mapping,
    overwrite: bool = False,
  ):
    self.experiment = reporting.strict_json(dict(experiment))
    self.id = settings_id(self.experiment)
    self.stem = f'{stem}_{self.id}'
    self.folder = folder
    self.content = {
      'format': FORMAT,
      'experiment_id': self.id,
      'experiment': self.experiment,
      'configurations': {},
    }
    self.resumed = 0
    if folder is None:
      return
    json_path = os.path.join(folder, self.stem + '.json')
    if overwrite:
      for suffix in ('.json', '.png', '.checkpoint.npz'):
        path = os.path.join(folder, self.stem + suffix)
        if os.path.exists(path):
          os.remove(path)
    elif os.path.exists(json_path):
      try:
        with open(json_path) as f:
          saved = json.load(f)
      except (OSError, ValueError) as e:
        raise ValueError(
          f'{self.json_path} exists but cannot be read ({e}); '
          'pass --overwrite to replace it'
        ) from e
      if (
        saved.get('format') != FORMAT
        or saved.get('experiment') != self.experiment
      ):
        raise ValueError(
          f'{self.json_path} holds another experiment; pass '
          '--overwrite to replace it or choose another --out'
        )
      self.content = saved
      self.resumed = len(saved['configurations'])

  def _path(self, suffix: str) -> str | None:
    if self.folder is None:
      return None
    return os.path.join(self.folder, self.stem + suffix)

  @property
  def json_path(self) -> str | None:
    return self._path('.json')

  @property
  def png_path(self) -> str | None:
    return self._path('.png')

  @property
  def checkpoint_path(self) -> str | None:
    return self._path('.checkpoint.npz')

  def finished(self, config_id: str) -> training.History | None:
    """The history of a finished configuration, or None."""
    record = self.content['configurations'].get(config_id)
    if record is None:
      return None
    return training.History(
      seeds=record['seeds'],
      metrics={k: record['curves'][k] for k in training.METRICS},
      epoch_seconds=record['epoch_seconds'],
      learning_rate=record['learning_rate'],
      diverged_at=record['diverged_at_epoch'],
    )

  def record(self, config_id: str) -> dict:
    """The saved record of a finished configuration."""
    return self.content['configurations'][config_id]

  def add(
    self,
    config_id: str,
    spec: Mapping,
    history: training.History,
    provenance: Mapping,
  ) -> None:
    """Records a finished configuration and saves the file."""
    self.content['configurations'][config_id] = {
      **spec,
      'seeds': history.seeds,
      'diverged_at_epoch': history.diverged_at,
      'curves': history.metrics,
      'epoch_seconds': history.epoch_seconds,
      'learning_rate': history.learning_rate,
      'wall_seconds': sum(history.epoch_seconds),
      'provenance': dict(provenance),
    }
    self.save()

  def set_report(self, report: Mapping) -> None:
    self.content.update(report)
    self.save()

  def save(self) -> None:
    path = self.json_path
    if path is not None:
      reporting.write_json(path, self.content)
