"""Pieces every program in ``benchmarks/`` and ``examples/`` shares.

``argtypes``: command-line argument types that end a bad flag with exit
status 2 and one line (no JAX import); ``environment``: where and with what
a program ran (machine, versions, commit), recorded in every result; ``reporting``:
Markdown tables and JSON files written atomically.
"""
