"""Positive-Negative Momentum (PNM, AdaPNM) as Optax transformations."""

from pnm_optax.alias import adapnm, pnm
from pnm_optax.step_size import (
  b0_matched_learning_rate,
  noise_norm,
  sgdm_equivalent_learning_rate,
)
from pnm_optax.train_step import PNMTrainStep, pnm_train_step
from pnm_optax.transform import (
  ScaleByAdaPNMNoAmsgradState,
  ScaleByAdaPNMState,
  ScaleByPNMState,
  scale_by_adapnm,
  scale_by_pnm,
)

# The package's only version string: pyproject.toml reads it from here.
__version__ = '0.1.0'

__all__ = [
  'adapnm',
  'b0_matched_learning_rate',
  'noise_norm',
  'pnm',
  'pnm_train_step',
  'PNMTrainStep',
  'sgdm_equivalent_learning_rate',
  'scale_by_adapnm',
  'scale_by_pnm',
  'ScaleByAdaPNMNoAmsgradState',
  'ScaleByAdaPNMState',
  'ScaleByPNMState',
]
