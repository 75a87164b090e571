"""The Python API of the comparison job: :func:`compare`.

The command line (``python -m benchmarks.comparison``) and the CIFAR-10
notebook both call it. It takes a bundled data set or your arrays, a bundled
model or your Flax NNX model factory, the optimizers and their
hyperparameters; it trains every configuration with all seeds side by side,
saves each finished configuration, and returns the results as a dict.
"""

import datetime
import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from benchmarks.common import environment
from benchmarks.comparison import (
  checkpoints,
  plots,
  protocol,
  statistics,
  tables,
  training,
)
from benchmarks.comparison import data as data_lib
from benchmarks.comparison import optimizers as opt_lib
from benchmarks.comparison import progress as progress_lib
from benchmarks.comparison import results as results_lib
from benchmarks.comparison import settings as settings_lib
from benchmarks.comparison import summary as summary_lib

ArrayData = tuple  # (x_train, y_train, x_test, y_test)
_TRAINERS = {}  # see Comparison.trainer
_MAX_TRAINERS = 4


def compare(
  model: str | training.ModelFactory | None = None,
  data: str | data_lib.Dataset | ArrayData = 'mnist1d',
  *,
  optimizers: Sequence[str] = opt_lib.OPTIMIZERS,
  hparams: Mapping[str, Mapping[str, float]] | None = None,
  seeds: int = 5,
  epochs: int | None = None,
  batch_size: int | None = None,
  out: str | None = None,
  progress: bool | None = None,
  **options,
) -> dict:
  """Trains ``model`` on ``data`` with each optimizer and compares them.

  Args:
    model: a bundled model (``'cnn'``, ``'mlp'``, ``'resnet18'``; default:
      the data set's) or a factory ``rngs -> flax.nnx.Module``, called once
      per seed with ``nnx.Rngs(seed)``. The module maps a batch of inputs to
      logits; if its ``__call__`` takes ``train``, it gets ``train=True``
      while training and ``False`` when evaluating.
    data: ``'mnist1d'``, ``'digits'``, ``'cifar10'`` (with
      ``data_dir=...``), a :class:`data.Dataset`, or your arrays
      ``(x_train, y_train, x_test, y_test)`` (integer labels).
    optimizers: names registered in :data:`optimizers.SPECS` (bundled:
      ``pnm``, ``adapnm``, ``sgdm``, ``adam``, ``adamw``).
    hparams: per optimizer, values replacing the defaults, e.g.
      ``{'pnm': {'lr': 0.5, 'b0': 2.0}}`` (keys: its spec's ``keys``).
    seeds: seeds 0 .. seeds-1; seed ``s`` fixes the initialisation and the
      data order, the same for every optimizer.
    epochs, batch_size: default per data set (MNIST-1D: 60 x 100).
    out: folder for the results file, its plot and checkpoints; None keeps
      everything in memory.
    progress: True for a progress bar, False for plain lines, None for a bar
      on a terminal only.
    **options: the other fields of :class:`settings.Settings`
      (``lr_grid``, ``b0_sweep``, ``decay_per_step``, ``schedule``,
      ``validation_fraction``, ``overwrite``, ``plot``, ...).

  Returns:
    A dict: ``summary`` (optimizer -> final and best-epoch test error mean
    and std, per-seed errors, diverged seeds, wall time), ``curves``
    (optimizer -> per-seed per-epoch metrics), ``paired`` (PNM - SGD-M,
    AdaPNM - Adam, AdaPNM - AdamW: mean and std of the per-seed difference,
    paired t-test p-value, wins), ``grid`` (the learning-rate searches, if
    any), ``b0_sweep`` (if asked), ``hparams`` (what each optimizer ran
    with), ``tables`` (Markdown), ``settings``, ``environment``,
    ``json_path``/``png_path`` (None without ``out``) and
    ``wall_seconds``. Errors are fractions in [0, 1].

  Raises:
    settings.SettingsError: a setting out of range (nothing was trained).
    data.DatasetUnavailableError: the data set is not on this machine.
  """
  settings = settings_lib.Settings(
    data=data
    if isinstance(data, (str, data_lib.Dataset))
    else data_lib.from_arrays(*data),
    model=model,
    optimizers=optimizers,
    hparams=hparams,
    seeds=seeds,
    epochs=epochs,
    batch_size=batch_size,
    out=out,
    progress=progress,
    **options,
  ).resolved()
  return prepare(settings).run()


def prepare(
  settings: settings_lib.Settings, reporter: progress_lib.Progress | None = None
) -> 'Comparison':
  """Loads the data and opens the results file of resolved ``settings``;
  nothing is trained yet (errors here mean bad settings or missing data).

  Raises:
    settings.SettingsError: the batch size exceeds the training set.
    data.DatasetUnavailableError: the data set is not on this machine.
    ValueError: the results file exists but holds something else.
  """
  return Comparison(
    settings,
    load_data(settings),
    reporter or progress_lib.Progress(bar=settings.progress),
  )


def load_data(settings: settings_lib.Settings) -> data_lib.Dataset:
  """The data set of ``settings``, checked against the batch size."""
  dataset = (
    settings.data
    if isinstance(settings.data, data_lib.Dataset)
    else data_lib.load_dataset(settings.data, settings.data_dir)
  )
  n_train = dataset.x_train.shape[0]
  if settings.validation_fraction is not None:
    n_train = int(n_train * (1 - settings.validation_fraction))
  if settings.batch > n_train:
    raise settings_lib.SettingsError(
      'batch_size',
      f'must be at most {n_train} (the training examples of '
      f'{dataset.name}), got {settings.batch_size}',
    )
  return dataset


def _fingerprint(dataset: data_lib.Dataset) -> str:
  digest = hashlib.sha256()
  for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
    digest.update(str(a.shape).encode())
    digest.update(np.ascontiguousarray(a).tobytes())
  return digest.hexdigest()[:16]


class FinalMeasure(Protocol):
  """Something computed from a configuration's final state (e.g. the
  curvature of the training loss): ``describe()`` gives its settings
  (JSON-able; part of the configuration's identity), the call gives a
  JSON-able dict of per-seed values."""

  def describe(self) -> dict: ...

  def __call__(
    self,
    trainer: training.Trainer,
    state,
    seeds: list,
    history: training.History,
  ) -> dict: ...


class Comparison:
  """One comparison, ready to run: data, results file, progress reporter."""

  def __init__(
    self,
    settings: settings_lib.Settings,
    dataset: data_lib.Dataset,
    reporter: progress_lib.Progress,
  ):
    self.settings, self.dataset, self.reporter = settings, dataset, reporter
    if callable(settings.model):
      self.factory = settings.model
      self.model_name = settings.model_name or getattr(
        settings.model, '__name__', 'model'
      )
    else:
      self.factory = training.bundled_factory(
        settings.model, dataset.input_shape, dataset.num_classes
      )
      self.model_name = settings.model
    self.environment = environment.collect()
    experiment = {
      'data': dataset.name,
      'model': self.model_name,
      **settings.describe(),
    }
    if dataset.name not in data_lib.SPECS:
      experiment['data_fingerprint'] = _fingerprint(dataset)
    self.store = results_lib.ResultsFile(
      settings.out,
      f'{dataset.name}_{self.model_name}',
      experiment,
      overwrite=settings.overwrite,
    )

  def trainer(self, split: str) -> training.Trainer:
    """The trainer evaluating on ``split``: ``test`` (full training set) or
    ``validation`` (a stratified hold-out of the training set). Trainers
    are shared by comparisons in one process with the same data, model and
    budget, so their compiled programs are reused."""
    s = self.settings
    data_key = (
      self.dataset.name
      if self.dataset.name in data_lib.SPECS
      else _fingerprint(self.dataset)
    )
    key = (
      data_key,
      s.data_dir,
      self.factory,
      s.epochs,
      s.batch_size,
      s.max_steps_per_epoch,
      s.schedule,
      s.decay_mask,
      split,
      s.validation_fraction if split == 'validation' else None,
    )
    if key not in _TRAINERS:
      dataset = (
        self.dataset
        if split == 'test'
        else (data_lib.holdout_validation(self.dataset, s.holdout))
      )
      if len(_TRAINERS) >= _MAX_TRAINERS:
        _TRAINERS.pop(next(iter(_TRAINERS)))
      _TRAINERS[key] = training.Trainer(
        dataset,
        self.factory,
        epochs=s.epoch_count,
        batch_size=s.batch,
        steps_per_epoch=min(
          dataset.x_train.shape[0] // s.batch,
          s.max_steps_per_epoch or np.inf,
        ),
        schedule=s.schedule,
        decay_mask=s.decay_mask,
      )
    return _TRAINERS[key]

  def train(
    self, name: str, hp: Mapping[str, float], seeds: Sequence[int], split: str
  ) -> training.History:
    """One configuration (skipped when already in the results file)."""
    return self.train_measured(name, hp, seeds, split)[0]

  def train_measured(
    self,
    name: str,
    hp: Mapping[str, float],
    seeds: Sequence[int],
    split: str,
    measure: 'FinalMeasure | None' = None,
  ) -> tuple[training.History, dict | None]:
    """One configuration and, with ``measure``, what ``measure`` computes
    from its final state (both read back when the configuration is already
    in the results file: the measure's settings are part of the
    configuration)."""
    spec = {
      'optimizer': name,
      'hparams': dict(hp),
      'evaluated_on': split,
      'seeds': list(seeds),
    }
    if measure is not None:
      spec['measure'] = measure.describe()
    config_id = results_lib.settings_id(spec)
    label = f'{opt_lib.label(name)} lr {hp["lr"]:g}'
    if 'b0' in hp:
      label += f' b0 {hp["b0"]:g}'
    if 'momentum' in hp and hp['momentum'] != 0.9:
      label += f' momentum {hp["momentum"]:g}'
    label += f' ({split}, {len(seeds)} seeds)'
    history = self.store.finished(config_id)
    if history is not None:
      self.reporter.start(label, self.settings.epoch_count)
      self.reporter.finish(history, skipped=True)
      return history, self.store.record(config_id).get('measures')
    checkpointer = None
    done = 0
    if self.store.checkpoint_path is not None:
      checkpointer = checkpoints.ConfigurationCheckpoint(
        self.store.checkpoint_path, config_id, self.settings.checkpoint_every_s
      )
      done = checkpointer.saved_epochs()
    self.reporter.start(label, self.settings.epoch_count, done)
    trainer = self.trainer(split)
    measures = None
    final_state = []
    history = trainer.train(
      name,
      hp,
      seeds,
      on_epoch=self.reporter.epoch,
      checkpointer=checkpointer,
      on_finish=final_state.append if measure is not None else None,
    )
    if measure is not None:
      measures = measure(trainer, final_state[0], list(seeds), history)
      spec['measures'] = measures
    finished = datetime.datetime.now(datetime.UTC)
    self.store.add(
      config_id,
      {
        'label': label,
        **spec,
        'steps_per_epoch': trainer.steps_per_epoch,
      },
      history,
      {
        **self.environment,
        'finished_utc': finished.strftime('%Y-%m-%d %H:%M:%S UTC'),
      },
    )
    if checkpointer is not None:
      checkpointer.remove()
    self.reporter.finish(history)
    return history, measures

  def validation_errors(
    self, name: str, hp: Mapping[str, float]
  ) -> list[float | None]:
    """Final validation error of each grid seed (None: diverged)."""
    history = self.train(
      name, hp, range(self.settings.grid_seeds), 'validation'
    )
    return list(summary_lib.final_errors(history).values())

  def validation_error(self, name: str, hp: Mapping[str, float]) -> float:
    """Mean final validation error over the grid seeds (inf: diverged)."""
    errors = self.validation_errors(name, hp)
    if any(e is None for e in errors):
      return float('inf')
    return float(np.mean([e for e in errors if e is not None]))

  def tune(
    self,
    label: str,
    name: str,
    hparams_at: Callable[[float], dict],
    centre: float,
  ) -> protocol.GridSearch:
    """Picks the lr of one arm (``hparams_at(lr)``) on the validation split
    from the grid around ``centre``; reports a pick at an edge of the grid
    and a pick whose neighbour scored within one standard error."""
    s = self.settings
    search = protocol.search(
      lambda lr: self.validation_errors(name, hparams_at(lr)),
      centre,
      s.lr_grid,
      s.lr_grid_ratio,
      s.max_grid_extensions,
    )
    if search.at_edge:
      self.reporter.message(
        f'WARNING: {label}: the best lr {search.picked:g} is still at the '
        f'{search.at_edge} edge of the grid after {search.extensions} '
        'extensions; the best lr may lie beyond'
      )
    elif search.extensions:
      self.reporter.message(
        f'{label}: grid extended {search.extensions}x; picked lr '
        f'{search.picked:g}'
      )
    if search.close_neighbours:
      self.reporter.message(
        f'{label}: picked lr {search.picked:g}, but lr '
        + ', '.join(f'{lr:g}' for lr in search.close_neighbours)
        + ' scored within one standard error of it on validation'
      )
    return search

  def run(self) -> dict:
    """Trains what the results file lacks; returns the results (see
    :func:`compare`)."""
    return _run(self)


def _run(job: Comparison) -> dict:
  start = time.perf_counter()
  s, dataset, reporter = job.settings, job.dataset, job.reporter
  final_split = (
    'validation'
    if (s.validation_fraction is not None and not s.lr_grid)
    else 'test'
  )
  trainer = job.trainer(final_split)
  env = job.environment
  reporter.message(
    f'{dataset.name}: {trainer.dataset.x_train.shape[0]} train / '
    f'{trainer.dataset.x_test.shape[0]} {final_split} examples; model '
    f'{job.model_name} ({trainer.num_params:,} parameters); {s.epochs} '
    f'epochs x {trainer.steps_per_epoch} steps of {s.batch_size}; '
    f'schedule {s.schedule}; seeds 0..{s.seeds - 1}'
  )
  reporter.message(
    f'{env["cpu"]} x{env["cpu_count"]}, jax {env["versions"]["jax"]} '
    f'({env["backend"]}: {env["device"]} x{env["num_devices"]}); results: '
    f'{job.store.json_path or "in memory"}'
  )
  if job.store.resumed:
    reporter.message(
      f'resuming: {job.store.resumed} finished configurations '
      'in the results file are not trained again'
    )

  if not isinstance(s.data, str):
    untuned = [
      n for n in s.optimizers if 'lr' not in (s.hparams or {}).get(n, {})
    ]
    if untuned:
      reporter.message(
        'your arrays have no tuned defaults: '
        + ', '.join(opt_lib.label(n) for n in untuned)
        + " run with the paper's CIFAR-10 lr and weight decay (give hparams "
        'or lr_grid for your problem)'
      )
  hparams, searches = {}, {}
  for name in s.optimizers:
    hp = s.hparams_for(name)
    if s.lr_grid:
      search = job.tune(
        opt_lib.label(name),
        name,
        lambda lr, name=name: s.hparams_for(name, lr=lr),
        hp['lr'],
      )
      searches[name] = search
      hp = s.hparams_for(name, lr=search.picked)
    hparams[name] = hp
  seeds = list(range(s.seeds))
  finals = {
    name: job.train(name, hparams[name], seeds, final_split)
    for name in s.optimizers
  }

  sweep = []
  for name in (
    [n for n in s.optimizers if opt_lib.spec(n).pn] if s.b0_sweep else []
  ):
    base = hparams[name]
    for b0 in s.b0_sweep or ():
      matched_lr = statistics.matched_learning_rate(
        base['lr'], b0, reference_b0=base['b0']
      )
      entry = {'optimizer': name, 'b0': b0}
      kinds = [('fixed', base['lr']), ('matched', matched_lr)]
      if s.lr_grid:  # every b0 gets its own lr, picked as the others'
        search = job.tune(
          f'{opt_lib.label(name)} b0 {b0:g}',
          name,
          lambda lr, name=name, b0=b0: s.hparams_for(name, lr=lr, b0=b0),
          protocol.round_lr(matched_lr),
        )
        entry['grid'] = search.as_json()
        kinds.append(('tuned', search.picked))
      for kind, lr in kinds:
        hp = s.hparams_for(name, lr=lr, b0=b0)
        entry[kind] = {
          'lr': lr,
          'hparams': hp,
          **summary_lib.summarize(job.train(name, hp, seeds, final_split)),
        }
      sweep.append(entry)

  report = _report(
    job,
    finals,
    hparams,
    searches,
    sweep,
    final_split,
    time.perf_counter() - start,
  )
  if s.plot and job.store.png_path is not None:
    figure = plots.curves_figure(
      report['curves'],
      split=final_split,
      lr_drops=opt_lib.lr_drop_epochs(s.epoch_count)
      if s.schedule == 'step'
      else (),
      title=f'{dataset.name} / {job.model_name}: mean +- std over '
      f'{s.seeds} seeds',
    )
    figure.savefig(job.store.png_path, dpi=110)
    report['png_path'] = job.store.png_path
  elif job.store.png_path is not None and _remove(job.store.png_path):
    reporter.message(
      f'removed the earlier plot {job.store.png_path} (not redrawn: plot off)'
    )
  job.store.set_report(
    {k: v for k, v in report.items() if k not in ('settings',)}
  )
  return report


def _remove(path: str) -> bool:
  if os.path.exists(path):
    os.remove(path)
    return True
  return False


def _report(
  job: Comparison, finals, hparams, searches, sweep, split: str, wall: float
) -> dict:
  s = job.settings
  summary = {n: summary_lib.summarize(h) for n, h in finals.items()}
  paired = summary_lib.paired_against_baselines(finals)
  grid = {n: v.as_json() for n, v in searches.items()}
  table = {
    'results': tables.results_table(summary, hparams, split),
    'paired': tables.paired_table(paired),
  }
  if searches:
    table['grid'] = tables.grid_table(searches)
  if sweep:
    table['b0'] = tables.b0_table(sweep)
  return {
    'settings': s,
    'experiment_id': job.store.id,
    'data': job.dataset.name,
    'model': job.model_name,
    'evaluated_on': split,
    'hparams': hparams,
    'summary': summary,
    'curves': {n: summary_lib.curves(h) for n, h in finals.items()},
    'paired': paired,
    'grid': grid,
    'b0_sweep': sweep,
    'tables': table,
    'environment': job.environment,
    'json_path': job.store.json_path,
    'png_path': None,
    'wall_seconds': wall,
  }
