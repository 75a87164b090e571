"""The compared optimizers, their hyperparameters and the shared schedule.

Weight decay follows the paper's code: SGD-M and Adam add it to the gradient
(L2, as ``torch.optim.SGD``/``Adam``); PNM, AdaPNM and AdamW decay decoupled,
``p *= 1 - lr * weight_decay`` per step.
"""

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

import pnm_optax

OPTIMIZERS = ('pnm', 'adapnm', 'sgdm', 'adam', 'adamw')
LABELS = {
  'pnm': 'PNM',
  'adapnm': 'AdaPNM',
  'sgdm': 'SGD-M',
  'adam': 'Adam',
  'adamw': 'AdamW',
}
DECOUPLED = ('pnm', 'adapnm', 'adamw')  # weight decay p *= 1 - lr * wd
# PNM and AdaPNM against the baseline each one extends.
BASELINE_PAIRS = (('pnm', 'sgdm'), ('adapnm', 'adam'), ('adapnm', 'adamw'))
SCHEDULES = ('step', 'cosine', 'constant')

_ADAM_KEYS = ('lr', 'weight_decay', 'b1', 'b2', 'eps')
HPARAM_KEYS = {
  'pnm': ('lr', 'weight_decay', 'b1', 'b0'),
  'adapnm': _ADAM_KEYS + ('b0',),
  'sgdm': ('lr', 'weight_decay', 'momentum'),
  'adam': _ADAM_KEYS,
  'adamw': _ADAM_KEYS,
}
_BASE = {
  'pnm': {'b1': 0.9, 'b0': 1.0},
  'adapnm': {'b1': 0.9, 'b2': 0.999, 'eps': 1e-8, 'b0': 1.0},
  'sgdm': {'momentum': 0.9},
  'adam': {'b1': 0.9, 'b2': 0.999, 'eps': 1e-8},
  'adamw': {'b1': 0.9, 'b2': 0.999, 'eps': 1e-8},
}

# The authors' CIFAR-10 settings (pnm_cifar10_demo.ipynb): base weight decay
# 5e-4; SGD-M and Adam add it to the gradient; PNM decays decoupled at lr 1
# (5e-4 per step); AdamW and AdaPNM get 5e-4 / lr, the same 5e-4 per step.
PAPER_HPARAMS = {
  'pnm': {'lr': 1.0, 'weight_decay': 5e-4},
  'adapnm': {'lr': 1e-3, 'weight_decay': 0.5},
  'sgdm': {'lr': 0.1, 'weight_decay': 5e-4},
  'adam': {'lr': 1e-3, 'weight_decay': 5e-4},
  'adamw': {'lr': 1e-3, 'weight_decay': 0.5},
}
# MNIST-1D (no weight decay, as the MNIST-1D paper): the learning rates that
# ``--study full`` picked on a validation split (docs/comparison.md), at
# 60 epochs; they are also the centres of its grids. The first grids were
# centred on SGD-M 0.1, Adam 0.01 (the MNIST-1D paper's) and PNM/AdaPNM at
# about the same mean step (PNM: 22x SGD-M's lr, AdaPNM: 2x Adam's).
MNIST1D_HPARAMS = {
  'cnn': {
    'pnm': {'lr': 2.0},
    'adapnm': {'lr': 2e-2},
    'sgdm': {'lr': 0.1},
    'adam': {'lr': 2e-2},
    'adamw': {'lr': 2e-2},
  },
  'mlp': {
    'pnm': {'lr': 4.0},
    'adapnm': {'lr': 2e-2},
    'sgdm': {'lr': 0.2},
    'adam': {'lr': 2e-2},
    'adamw': {'lr': 1e-2},
  },
}


def default_hparams(dataset: str, model: str | None, name: str) -> dict:
  """Every hyperparameter of optimizer ``name`` for a bundled setting."""
  hp = {'weight_decay': 0.0, **_BASE[name]}
  if dataset == 'mnist1d':
    hp.update(MNIST1D_HPARAMS.get(model, MNIST1D_HPARAMS['cnn'])[name])
  else:
    hp.update(PAPER_HPARAMS[name])
  return hp


def check_hparams(name: str, overrides: Mapping[str, object]) -> None:
  """Raises ValueError naming an unknown key or a value out of range."""
  if name not in OPTIMIZERS:
    raise ValueError(
      f'unknown optimizer {name!r}; choose from {", ".join(OPTIMIZERS)}'
    )
  if not isinstance(overrides, Mapping):
    raise ValueError(
      f'hyperparameters of {name} must be a JSON object such '
      f'as {{"lr": 0.1}}, got {overrides!r}'
    )
  for key, value in overrides.items():
    if key not in HPARAM_KEYS[name]:
      raise ValueError(
        f'unknown hyperparameter {key!r} for {name}; allowed: '
        f'{", ".join(HPARAM_KEYS[name])}'
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
  if name not in DECOUPLED:
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
  ``hp`` (all keys of :data:`HPARAM_KEYS`) and learning rate
  ``hp['lr'] * multiplier(step)``."""
  base_lr, wd = hp['lr'], hp['weight_decay']
  lr = lambda step: base_lr * multiplier(step)
  if name == 'pnm':
    return pnm_optax.pnm(
      lr, b1=hp['b1'], b0=hp['b0'], weight_decay=wd, mask=mask
    )
  if name == 'adapnm':
    return pnm_optax.adapnm(
      lr,
      b1=hp['b1'],
      b2=hp['b2'],
      b0=hp['b0'],
      eps=hp['eps'],
      weight_decay=wd,
      mask=mask,
    )
  if name == 'sgdm':
    return optax.chain(
      optax.add_decayed_weights(wd, mask),
      optax.sgd(lr, momentum=hp['momentum']),
    )
  if name == 'adam':
    return optax.chain(
      optax.add_decayed_weights(wd, mask),
      optax.adam(lr, b1=hp['b1'], b2=hp['b2'], eps=hp['eps']),
    )
  if name == 'adamw':
    return optax.adamw(
      lr, b1=hp['b1'], b2=hp['b2'], eps=hp['eps'], weight_decay=wd, mask=mask
    )
  raise ValueError(f'unknown optimizer {name!r}; choose from {OPTIMIZERS}')
