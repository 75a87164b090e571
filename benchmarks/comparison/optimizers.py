"""The compared optimizers: one :class:`OptimizerSpec` each, in a registry.

An optimizer is one entry: its label, how to build it, its hyperparameters
with their defaults, its learning rate and weight decay per data set (and
model), whether it decays weights decoupled and whether it is a
positive-negative (``b0``) variant. Adding one is :func:`register` (the
job, its flags, its checks and its tables follow from the entry).

Weight decay follows the paper's code: SGD-M and Adam add it to the gradient
(L2, as ``torch.optim.SGD``/``Adam``); PNM, AdaPNM and AdamW decay decoupled,
``p *= 1 - lr * weight_decay`` per step.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

import pnm_optax

SCHEDULES = ('step', 'cosine', 'constant')
# lr(step) -> learning rate: the base lr times the shared schedule.
LearningRate = optax.Schedule
# (hyperparameters, lr, weight-decay mask) -> the optax transformation.
Maker = Callable[
  [Mapping[str, float], LearningRate, object], optax.GradientTransformation
]


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """One optimizer of the comparison job.

  Attributes:
    name: the name on the command line (``--optimizers``, ``--hparams``).
    label: the name in tables and plots.
    make: ``(hp, lr, mask) -> optax.GradientTransformation``; ``hp`` holds
      every key of :attr:`keys`, ``lr`` maps the step to the learning rate,
      ``mask`` is the weight-decay mask (None: every parameter).
    hparams: the hyperparameters other than ``lr`` and ``weight_decay``,
      with their defaults (for example ``{'b1': 0.9, 'b0': 1.0}``).
    defaults: ``lr`` and ``weight_decay`` per data set, keyed
      ``'<dataset>/<model>'`` or ``'<dataset>'`` (the first found wins), and
      ``'*'`` for your own arrays. A data set with none of them has no
      defaults: its runs must give ``lr``.
    decoupled: weight decay ``p *= 1 - lr * weight_decay`` (else an L2 term
      added to the gradient).
    pn: a positive-negative momentum variant (has ``b0``; joins the b0
      sweeps).
    baselines: the optimizers it extends, compared with it seed by seed
      (where both run).
  """

  name: str
  label: str
  make: Maker
  hparams: Mapping[str, float]
  defaults: Mapping[str, Mapping[str, float]]
  decoupled: bool = False
  pn: bool = False
  baselines: tuple[str, ...] = ()

  @property
  def keys(self) -> tuple[str, ...]:
    """Every hyperparameter it takes."""
    return ('lr', 'weight_decay', *self.hparams)

  def defaults_for(
    self, dataset: str, model: str | None, arrays: bool = False
  ) -> dict | None:
    """``lr`` and ``weight_decay`` for ``dataset`` (and ``model``; with
    ``arrays``, a user's arrays: the ``'*'`` entry), or None when the
    registry has none for it."""
    keys = [f'{dataset}/{model}', dataset] + (['*'] if arrays else [])
    for key in keys:
      if key in self.defaults:
        return dict(self.defaults[key])
    return None


SPECS: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
  """Adds ``spec`` to the registry (a name taken already is an error)."""
  if spec.name in SPECS:
    raise ValueError(f'optimizer {spec.name!r} is registered already')
  SPECS[spec.name] = spec
  return spec


def unregister(name: str) -> None:
  """Removes optimizer ``name`` (tests register toy optimizers)."""
  SPECS.pop(name)


def spec(name: str) -> OptimizerSpec:
  """The registered optimizer ``name``.

  Raises:
    ValueError: no such optimizer (the message lists them).
  """
  if name not in SPECS:
    raise ValueError(
      f'unknown optimizer {name!r}; choose from {", ".join(SPECS)}'
    )
  return SPECS[name]


def label(name: str) -> str:
  """The table label of ``name`` (the name itself if not registered)."""
  return SPECS[name].label if name in SPECS else name


def baseline_pairs(names) -> list[tuple[str, str]]:
  """``(variant, baseline)`` for every registered pair among ``names``."""
  return [
    (n, b)
    for n in names
    if n in SPECS
    for b in SPECS[n].baselines
    if b in names
  ]


def _pnm(hp, lr, mask):
  return pnm_optax.pnm(
    lr, b1=hp['b1'], b0=hp['b0'], weight_decay=hp['weight_decay'], mask=mask
  )


def _adapnm(hp, lr, mask):
  return pnm_optax.adapnm(
    lr,
    b1=hp['b1'],
    b2=hp['b2'],
    b0=hp['b0'],
    eps=hp['eps'],
    weight_decay=hp['weight_decay'],
    mask=mask,
  )


def _sgdm(hp, lr, mask):
  return optax.chain(
    optax.add_decayed_weights(hp['weight_decay'], mask),
    optax.sgd(lr, momentum=hp['momentum']),
  )


def _adam(hp, lr, mask):
  return optax.chain(
    optax.add_decayed_weights(hp['weight_decay'], mask),
    optax.adam(lr, b1=hp['b1'], b2=hp['b2'], eps=hp['eps']),
  )


def _adamw(hp, lr, mask):
  return optax.adamw(
    lr,
    b1=hp['b1'],
    b2=hp['b2'],
    eps=hp['eps'],
    weight_decay=hp['weight_decay'],
    mask=mask,
  )


_ADAM = {'b1': 0.9, 'b2': 0.999, 'eps': 1e-8}


def _defaults(
  cifar: tuple[float, float], mnist1d_cnn: float, mnist1d_mlp: float
) -> dict:
  """Per data set: CIFAR-10 (the authors' settings, pnm_cifar10_demo.ipynb:
  base weight decay 5e-4; SGD-M and Adam add it to the gradient, PNM decays
  decoupled at lr 1, AdamW and AdaPNM get 5e-4 / lr, the same 5e-4 per
  step); MNIST-1D without weight decay (as the MNIST-1D paper): the lrs an
  earlier 60-epoch version of ``--study full`` picked on validation, now the
  centres of its grids (docs/comparison.md shows what the grids pick). The
  first grids were centred on SGD-M 0.1, Adam 0.01 (the MNIST-1D paper's)
  and PNM/AdaPNM at about the same mean step. ``digits`` has no entry of its
  own: it takes MNIST-1D's MLP values, which were not
  tuned for it (tune with ``--lr-grid``). Your own arrays (``'*'``) get the
  paper's CIFAR-10 values, and the job says so when it uses them."""
  lr, wd = cifar
  return {
    'cifar10': {'lr': lr, 'weight_decay': wd},
    'mnist1d/cnn': {'lr': mnist1d_cnn, 'weight_decay': 0.0},
    'mnist1d/mlp': {'lr': mnist1d_mlp, 'weight_decay': 0.0},
    'mnist1d': {'lr': mnist1d_cnn, 'weight_decay': 0.0},
    'digits': {'lr': mnist1d_mlp, 'weight_decay': 0.0},
    '*': {'lr': lr, 'weight_decay': wd},
  }


register(
  OptimizerSpec(
    'pnm',
    'PNM',
    _pnm,
    {'b1': 0.9, 'b0': 1.0},
    _defaults((1.0, 5e-4), 2.0, 4.0),
    decoupled=True,
    pn=True,
    baselines=('sgdm',),
  )
)
register(
  OptimizerSpec(
    'adapnm',
    'AdaPNM',
    _adapnm,
    {**_ADAM, 'b0': 1.0},
    _defaults((1e-3, 0.5), 2e-2, 2e-2),
    decoupled=True,
    pn=True,
    baselines=('adam', 'adamw'),
  )
)
register(
  OptimizerSpec(
    'sgdm', 'SGD-M', _sgdm, {'momentum': 0.9}, _defaults((0.1, 5e-4), 0.1, 0.2)
  )
)
register(
  OptimizerSpec(
    'adam', 'Adam', _adam, _ADAM, _defaults((1e-3, 5e-4), 2e-2, 2e-2)
  )
)
register(
  OptimizerSpec(
    'adamw',
    'AdamW',
    _adamw,
    _ADAM,
    _defaults((1e-3, 0.5), 2e-2, 1e-2),
    decoupled=True,
  )
)
# The bundled optimizers in the order tables show them (the default set).
OPTIMIZERS = ('pnm', 'adapnm', 'sgdm', 'adam', 'adamw')


class MissingDefaultsError(ValueError):
  """The registry has no lr for this optimizer on this data set."""


def default_hparams(
  dataset: str, model: str | None, name: str, arrays: bool = False
) -> dict:
  """Every hyperparameter of optimizer ``name`` for ``dataset`` and
  ``model`` from the registry (``arrays``: the data are a user's arrays).

  Raises:
    MissingDefaultsError: no defaults for this data set (give ``lr``).
  """
  s = spec(name)
  found = s.defaults_for(dataset, model, arrays)
  if found is None:
    raise MissingDefaultsError(
      f'{name} has no default lr for data set {dataset!r}; give one '
      f'(--hparams \'{{"{name}": {{"lr": ...}}}}\') or add defaults to its '
      'OptimizerSpec'
    )
  return {'weight_decay': 0.0, **s.hparams, **found}


def check_hparams(name: str, overrides: Mapping[str, object]) -> None:
  """Raises ValueError naming an unknown key or a value out of range."""
  keys = spec(name).keys
  if not isinstance(overrides, Mapping):
    raise ValueError(
      f'hyperparameters of {name} must be a JSON object such '
      f'as {{"lr": 0.1}}, got {overrides!r}'
    )
  for key, value in overrides.items():
    if key not in keys:
      raise ValueError(
        f'unknown hyperparameter {key!r} for {name}; allowed: {", ".join(keys)}'
      )
    if (
      isinstance(value, bool)
      or not isinstance(value, (int, float))
      or (not math.isfinite(value))
    ):
      raise ValueError(f'{name} {key} must be a finite number, got {value!r}')
    if key == 'lr' and value <= 0:
      raise ValueError(f'{name} lr must be > 0, got {value}')
    if key in ('weight_decay', 'b0') and value < 0:
      raise ValueError(f'{name} {key} must be >= 0, got {value}')
    if key in ('b1', 'b2', 'momentum') and not 0 <= value < 1:
      raise ValueError(f'{name} {key} must lie in [0, 1), got {value}')
    if key == 'eps' and value <= 0:
      raise ValueError(f'{name} eps must be > 0, got {value}')


def match_decay_per_step(name: str, hp: dict, decay_per_step: float) -> dict:
  """Decoupled optimizers get ``weight_decay = decay_per_step / lr``, so each
  shrinks the weights by the same factor ``1 - decay_per_step`` per step at
  its base lr (scaled by the schedule like the lr). L2 optimizers (SGD-M,
  Adam) keep their ``weight_decay`` as the L2 coefficient."""
  if not spec(name).decoupled:
    return dict(hp)
  return {**hp, 'weight_decay': decay_per_step / hp['lr']}


def lr_multiplier(
  schedule: str, epochs: int, steps_per_epoch: int
) -> optax.Schedule:
  """Shared schedule, as a multiplier of each optimizer's base lr.

  ``step``: x0.1 at 40% and 80% of the epochs (epochs 80 and 160 of 200, as
  the paper). ``cosine``: cosine decay to 0 over all steps. ``constant``.
  """
  total = epochs * steps_per_epoch
  if schedule == 'step':
    bounds = {e * steps_per_epoch: 0.1 for e in lr_drop_epochs(epochs)}
    return optax.piecewise_constant_schedule(1.0, bounds)
  if schedule == 'cosine':
    return optax.cosine_decay_schedule(1.0, max(total, 1))
  if schedule == 'constant':
    return optax.constant_schedule(1.0)
  raise ValueError(f'unknown schedule {schedule!r}; choose from {SCHEDULES}')


def lr_drop_epochs(epochs: int) -> list[int]:
  """Epochs (0-based, first epoch at the lower lr) of the step schedule."""
  drops = sorted({int(round(f * epochs)) for f in (0.4, 0.8)})
  return [e for e in drops if 0 < e < epochs]


def kernels_only(params):
  """Weight-decay mask: decay weight matrices/kernels, not biases or norms."""
  return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def make_optimizer(
  name: str, hp: Mapping[str, float], multiplier: optax.Schedule, mask=None
) -> optax.GradientTransformation:
  """The optax transformation for optimizer ``name`` with hyperparameters
  ``hp`` (every key of its spec) and learning rate
  ``hp['lr'] * multiplier(step)``."""
  base_lr = hp['lr']
  return spec(name).make(hp, lambda step: base_lr * multiplier(step), mask)
