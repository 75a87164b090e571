"""Positive-Negative Momentum (PNM, AdaPNM) as Optax transformations."""

from pnm_optax.alias import adapnm, pnm
from pnm_optax.transform import (
    ScaleByAdaPNMState,
    ScaleByPNMState,
    scale_by_adapnm,
    scale_by_pnm,
)

__version__ = '0.1.0'

__all__ = [
    'adapnm',
    'pnm',
    'scale_by_adapnm',
    'scale_by_pnm',
    'ScaleByAdaPNMState',
    'ScaleByPNMState',
]
