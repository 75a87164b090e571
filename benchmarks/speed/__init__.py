"""The speed report: one train step of pnm-optax against Optax and PyTorch.

Run ``python -m benchmarks.speed`` (``--help`` for options). Modules, one job
each: ``step_time`` (the command), ``contenders`` and ``torch_contenders``
(the optimizers timed and the memory traffic each step needs), ``trees``
(parameter trees), ``timing`` (device and dispatched time), ``xla_probes``
(compile cost, XLA's byte counts), ``memory`` (what fits side by side),
``report`` (tables and plot) and
``layouts`` (the state-layout study, ``python -m benchmarks.speed.layouts``).
"""
