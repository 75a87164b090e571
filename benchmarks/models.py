"""Kept for ``tests/checkpoint_resume.py``: the models live in
:mod:`benchmarks.comparison.models`."""

from benchmarks.comparison.models import merge

__all__ = ['merge']
