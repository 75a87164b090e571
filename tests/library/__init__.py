"""The tests of pnm_optax itself: fast, CPU only, run alone with ``python -m pytest tests/library``."""
