"""The settings of a comparison, their defaults per data set, and their checks.

:class:`Settings` is what the command line and the Python API both fill in;
:meth:`Settings.resolved` fills the per-data-set defaults and checks every
value before anything is trained, raising :class:`SettingsError` with one
line that says what is wrong and what is allowed.
"""

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from benchmarks.comparison import data as data_lib
from benchmarks.comparison import models as models_lib
from benchmarks.comparison import optimizers as opt_lib

_T = TypeVar('_T')
ARRAY_DEFAULTS = {'epochs': 10, 'batch_size': 128}
DEFAULT_OUT = os.path.join('results', 'comparison')


class SettingsError(ValueError):
  """A setting out of range: ``field`` names it, the message says why."""

  def __init__(self, field: str, message: str):
    super().__init__(f'{field} {message}')
    self.field, self.reason = field, message


def _int(field: str, value, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise SettingsError(field, f'must be an integer >= {low}, got {value!r}')
  if value < low:
    raise SettingsError(field, f'must be an integer >= {low}, got {value}')
  return value


def _float(
  field: str,
  value,
  low: float,
  high: float = math.inf,
  low_open: bool = False,
  high_open: bool = False,
) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise SettingsError(field, f'must be a number, got {value!r}')
  value = float(value)
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if not math.isfinite(value) or too_low or too_high:
    interval = (
      ('(' if low_open else '[')
      + f'{low:g}, {high:g}'
      + (')' if high_open or math.isinf(high) else ']')
    )
    raise SettingsError(field, f'must lie in {interval}, got {value:g}')
  return value


def _required(field: str, value: _T | None) -> _T:
  if value is None:
    raise SettingsError(field, 'is unset: call Settings.resolved() first')
  return value


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that defines a comparison (see docs/comparison.md).

  ``None`` means the data set's default (its :class:`data.DatasetSpec`;
  :data:`ARRAY_DEFAULTS` for your own arrays).
  """

  data: str | data_lib.Dataset = 'mnist1d'
  model: str | Callable | None = None
  model_name: str | None = None
  optimizers: Sequence[str] = opt_lib.OPTIMIZERS
  hparams: Mapping[str, Mapping[str, float]] | None = None
  seeds: int = 5
  epochs: int | None = None
  batch_size: int | None = None
  max_steps_per_epoch: int | None = None
  schedule: str = 'step'
  b0: float = 1.0
  decay_per_step: float | None = None
  decay_mask: str = 'all'
  lr_grid: int = 0
  lr_grid_ratio: float = 2.0
  max_grid_extensions: int = 3
  grid_seeds: int = 4
  validation_fraction: float | None = None
  b0_sweep: Sequence[float] | None = None
  data_dir: str | None = None
  out: str | None = DEFAULT_OUT
  overwrite: bool = False
  plot: bool = True
  progress: bool | None = None
  checkpoint_every_s: float = 120.0

  @property
  def epoch_count(self) -> int:
    """``epochs`` of resolved settings."""
    return _required('epochs', self.epochs)

  @property
  def batch(self) -> int:
    """``batch_size`` of resolved settings."""
    return _required('batch_size', self.batch_size)

  @property
  def holdout(self) -> float:
    """``validation_fraction`` of resolved settings that hold one out."""
    return _required('validation_fraction', self.validation_fraction)

  @property
  def dataset_name(self) -> str:
    return self.data if isinstance(self.data, str) else self.data.name

  def resolved(self) -> 'Settings':
    """A copy with the defaults filled in, every value checked.

    Raises:
      SettingsError: the first value out of range.
    """
    if isinstance(self.data, str):
      if self.data not in data_lib.SPECS:
        raise SettingsError(
          'data',
          f'must be one of {", ".join(data_lib.SPECS)} or arrays, got '
          f'{self.data!r}',
        )
      spec = data_lib.SPECS[self.data]
      d = {
        'model': spec.model,
        'epochs': spec.epochs,
        'batch_size': spec.batch_size,
      }
    else:
      d = dict(ARRAY_DEFAULTS)
    model = self.model if self.model is not None else d.get('model')
    if model is None:
      raise SettingsError(
        'model',
        'must be given for your own data: a '
        'bundled name or a factory rngs -> nnx.Module',
      )
    if isinstance(model, str):
      if model not in models_lib.MODELS:
        raise SettingsError(
          'model',
          f'must be one of '
          f'{", ".join(models_lib.MODELS)} or a factory, '
          f'got {model!r}',
        )
    elif not callable(model):
      raise SettingsError(
        'model',
        'must be a bundled name or a factory '
        f'rngs -> nnx.Module, got {model!r}',
      )
    optimizers = tuple(self.optimizers)
    if not optimizers:
      raise SettingsError(
        'optimizers',
        f'must name at least one of {", ".join(opt_lib.SPECS)}',
      )
    for name in optimizers:
      if name not in opt_lib.SPECS:
        raise SettingsError(
          'optimizers',
          f'has unknown {name!r}; choose from {", ".join(opt_lib.SPECS)}',
        )
    if len(set(optimizers)) != len(optimizers):
      raise SettingsError('optimizers', f'names one twice: {optimizers}')
    hparams = dict(self.hparams or {})
    for name, overrides in hparams.items():
      if name not in optimizers:
        raise SettingsError(
          'hparams',
          f'has optimizer {name!r}, which is not '
          f'among the optimizers ({", ".join(optimizers)})',
        )
      try:
        opt_lib.check_hparams(name, overrides)
      except ValueError as e:
        raise SettingsError('hparams', f'is invalid: {e}') from e
      if (
        self.decay_per_step is not None
        and opt_lib.spec(name).decoupled
        and ('weight_decay' in overrides)
      ):
        raise SettingsError(
          'hparams',
          f'sets weight_decay of {name}, which '
          '--decay-per-step sets to decay_per_step / lr',
        )
    if self.schedule not in opt_lib.SCHEDULES:
      raise SettingsError(
        'schedule',
        f'must be one of {", ".join(opt_lib.SCHEDULES)}, got {self.schedule!r}',
      )
    if self.decay_mask not in ('all', 'kernels'):
      raise SettingsError(
        'decay_mask', f"must be 'all' or 'kernels', got {self.decay_mask!r}"
      )
    sweep = None
    if self.b0_sweep is not None:
      sweep = tuple(_float('b0_sweep', v, 0.0) for v in self.b0_sweep)
      if not sweep:
        raise SettingsError('b0_sweep', 'must hold at least one value')
      if not any(opt_lib.spec(n).pn for n in optimizers):
        raise SettingsError(
          'b0_sweep',
          'needs a positive-negative optimizer among the optimizers ('
          + ', '.join(n for n, o in opt_lib.SPECS.items() if o.pn)
          + ')',
        )
    lr_grid = _int('lr_grid', self.lr_grid, 0)
    fraction = self.validation_fraction
    if fraction is None and lr_grid:
      fraction = 0.2
    if fraction is not None:
      fraction = _float(
        'validation_fraction', fraction, 0.0, 1.0, low_open=True, high_open=True
      )
    if self.out is not None and not isinstance(self.out, str):
      raise SettingsError('out', f'must be a folder path, got {self.out!r}')
    for name in optimizers:
      if 'lr' in hparams.get(name, {}):
        continue
      try:
        opt_lib.default_hparams(
          self.dataset_name,
          model if isinstance(model, str) else None,
          name,
          arrays=not isinstance(self.data, str),
        )
      except opt_lib.MissingDefaultsError as e:
        raise SettingsError('hparams', f'lacks an lr: {e}') from e
    steps = self.max_steps_per_epoch
    return dataclasses.replace(
      self,
      model=model,
      optimizers=optimizers,
      hparams=hparams,
      seeds=_int('seeds', self.seeds, 1),
      epochs=_int(
        'epochs', self.epochs if self.epochs is not None else d['epochs'], 1
      ),
      batch_size=_int(
        'batch_size',
        self.batch_size if self.batch_size is not None else d['batch_size'],
        1,
      ),
      max_steps_per_epoch=None
      if steps is None
      else _int('max_steps_per_epoch', steps, 1),
      b0=_float('b0', self.b0, 0.0),
      decay_per_step=None
      if self.decay_per_step is None
      else _float(
        'decay_per_step', self.decay_per_step, 0.0, 1.0, high_open=True
      ),
      lr_grid=lr_grid,
      lr_grid_ratio=_float(
        'lr_grid_ratio', self.lr_grid_ratio, 1.0, low_open=True
      ),
      max_grid_extensions=_int(
        'max_grid_extensions', self.max_grid_extensions, 0
      ),
      grid_seeds=_int('grid_seeds', self.grid_seeds, 1),
      validation_fraction=fraction,
      b0_sweep=sweep,
      checkpoint_every_s=_float(
        'checkpoint_every_s', self.checkpoint_every_s, 0.0
      ),
    )

  def hparams_for(
    self, name: str, lr: float | None = None, b0: float | None = None
  ) -> dict:
    """Every hyperparameter of optimizer ``name``: defaults, then ``b0``,
    then the user's overrides, then ``lr``/``b0`` if given, then the per-step
    weight-decay matching."""
    model = self.model if isinstance(self.model, str) else None
    given = (self.hparams or {}).get(name, {})
    arrays = not isinstance(self.data, str)
    if 'lr' in given and (
      opt_lib.spec(name).defaults_for(self.dataset_name, model, arrays) is None
    ):  # no registered defaults: the user's lr, weight decay 0
      hp = {'weight_decay': 0.0, **opt_lib.spec(name).hparams, 'lr': 0.0}
    else:
      hp = opt_lib.default_hparams(self.dataset_name, model, name, arrays)
    if 'b0' in hp:
      hp['b0'] = self.b0
    hp.update((self.hparams or {}).get(name, {}))
    if lr is not None:
      hp['lr'] = lr
    if b0 is not None:
      hp['b0'] = b0
    if self.decay_per_step is not None:
      hp = opt_lib.match_decay_per_step(name, hp, self.decay_per_step)
    return {k: float(v) for k, v in hp.items()}

  def describe(self) -> dict[str, Any]:
    """The settings that change the numbers, JSON-able (no paths, no
    display options)."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    for key in (
      'data',
      'model',
      'data_dir',
      'out',
      'overwrite',
      'plot',
      'progress',
      'checkpoint_every_s',
    ):
      out.pop(key, None)
    out['optimizers'] = list(self.optimizers)
    out['b0_sweep'] = None if self.b0_sweep is None else list(self.b0_sweep)
    out['hparams'] = {n: self.hparams_for(n) for n in self.optimizers}
    return out
