"""The optimizers the speed benchmark compares, and what each step must move.

JAX optimizers are built here; PyTorch ones by
:func:`benchmarks.speed.torch_contenders.make`, and only where the packages they
need are installed (:func:`missing_module`). All use the same learning rate
and the papers' default hyperparameters: momentum ``b1 = 0.9``, PNM's
``b0 = 1``, AMSGrad on, no weight decay.
"""

import importlib.util
from collections.abc import Callable
from typing import NamedTuple

import optax

import pnm_optax

LEARNING_RATE = 1e-3
WORD_BYTES = 4  # float32 parameters
BASELINE = 'sgdm'  # every ratio is taken to it (and to amsgrad, adam)


class Optimizer(NamedTuple):
  """A benchmarked optimizer.

  Attributes:
    make: ``mu_dtype -> GradientTransformation``; None for PyTorch ones.
    floor_words: float32 words per parameter that a fully fused step must
      read and write at least (the memory-traffic floor).
    state_words: float32 buffers per parameter it keeps, plus temporaries
      that live through a step (for memory planning).
    requires: Python modules it needs beyond JAX and Optax.
  """

  make: Callable | None
  floor_words: int
  state_words: int
  requires: tuple[str, ...] = ()


JAX_OPTIMIZERS: dict[str, Optimizer] = {
  'sgdm': Optimizer(
    lambda mu_dtype: optax.sgd(
      LEARNING_RATE, momentum=0.9, accumulator_dtype=mu_dtype
    ),
    5,
    1,
  ),
  'pnm': Optimizer(
    lambda mu_dtype: pnm_optax.pnm(LEARNING_RATE, mu_dtype=mu_dtype), 6, 2
  ),
  'adam': Optimizer(
    lambda mu_dtype: optax.adam(LEARNING_RATE, mu_dtype=mu_dtype), 7, 2
  ),
  'amsgrad': Optimizer(
    lambda mu_dtype: optax.amsgrad(LEARNING_RATE, mu_dtype=mu_dtype), 9, 3
  ),
  'adapnm': Optimizer(
    lambda mu_dtype: pnm_optax.adapnm(LEARNING_RATE, mu_dtype=mu_dtype), 10, 4
  ),
}
# Outside the Optax contract: pnm_optax.pnm_train_step alternates two
# compiled steps (one per parity), each writing only its own buffer.
STATIC_PARITY = 'pnm_static'
STEP_HELPERS: dict[str, Optimizer] = {STATIC_PARITY: Optimizer(None, 6, 2)}
_TORCH = ('torch',)
_PYTORCH_OPTIMIZER = ('torch', 'pytorch_optimizer')
TORCH_OPTIMIZERS: dict[str, Optimizer] = {
  'torch_sgd_foreach': Optimizer(None, 5, 1, _TORCH),
  'torch_sgd_fused': Optimizer(None, 5, 1, _TORCH),
  # Written like the PNM authors' code; + one temporary per leaf.
  'torch_pnm': Optimizer(None, 6, 3, _TORCH),
  # pytorch_optimizer's foreach steps: + one temporary list (PNM), two
  # (AdaPNM: the denominators and the PN combination).
  'pytorch_optimizer_pnm': Optimizer(None, 6, 3, _PYTORCH_OPTIMIZER),
  'pytorch_optimizer_adapnm': Optimizer(None, 10, 6, _PYTORCH_OPTIMIZER),
}
ALL = {**JAX_OPTIMIZERS, **STEP_HELPERS, **TORCH_OPTIMIZERS}


def make(name: str, mu_dtype=None) -> optax.GradientTransformation:
  """A JAX optimizer of :data:`JAX_OPTIMIZERS` (``mu_dtype``: its momentum
  dtype, or None)."""
  maker = JAX_OPTIMIZERS[name].make
  if maker is None:
    raise ValueError(f'{name} is not an optax optimizer')
  return maker(mu_dtype)


def is_torch(name: str) -> bool:
  return name in TORCH_OPTIMIZERS


def module_available(module: str) -> bool:
  """Whether ``module`` can be imported (without importing it)."""
  return importlib.util.find_spec(module) is not None


def missing_module(name: str) -> str | None:
  """The first module optimizer ``name`` needs that is not installed."""
  return next((m for m in ALL[name].requires if not module_available(m)), None)
