"""The speed report: one train step of pnm-optax against Optax and PyTorch.

Run ``python -m benchmarks.speed`` (``--help`` for options). Modules, one job
each: ``step_time`` (the command), ``contenders`` and ``torch_contenders``
(the optimizers timed and the memory traffic each step needs), ``trees``
(parameter trees), ``timing`` (device and dispatched time), ``xla_probes``
(compile cost, XLA's byte counts), ``memory`` (what fits side by side),
``report`` (tables and plot),
``layouts`` (the state-layout study, ``python -m benchmarks.speed.layouts``),
``whole_step`` (whole Flax train steps, ``python -m
benchmarks.speed.whole_step``), ``gpu_check.sh`` and ``gpu_summary`` (one GPU
session's measurements and tests, gathered into one JSON) and ``published``
(the generated tables of README and docs, from ``results/``).
"""
