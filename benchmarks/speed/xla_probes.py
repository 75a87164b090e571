"""What XLA makes of a jitted function: compile time, size and traffic.

Definitions used by every report:

* **trace+lower seconds**: ``jax.jit(f).trace(*args)`` then ``.lower()``:
  Python tracing to a jaxpr and lowering to StableHLO.
* **compile seconds**: ``lowered.compile()``: XLA's optimization passes and
  code generation for the backend.
* **HLO instructions**: instruction lines in every computation of the
  optimized HLO module (``compiled.as_text()``): the entry computation,
  fusions' bodies and loop bodies alike, parameters, constants and ``ROOT``
  lines included (:func:`count_instructions`).
* **StableHLO bytes**: ``len(lowered.as_text())``, the text XLA starts from.
* **XLA words per parameter**: XLA's cost analysis ``bytes accessed`` by one
  call, over 4 bytes per float32 parameter.
* **array copies**: non-scalar ``copy`` instructions in the optimized HLO
  (a donated buffer that cannot be updated in place is copied).

Each compile is a cold one: JAX's in-memory caches are cleared
(``jax.clear_caches``) and the function is a fresh closure, so no earlier
trace, lowering or executable is reused. The persistent compilation cache,
when a program configures one, must be switched off by the caller before
anything compiles (``jax.config.update('jax_enable_compilation_cache',
False)``), as ``benchmarks/speed/step_time.py`` does.
"""

import re
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from benchmarks.speed import contenders, timing

_INSTRUCTION = re.compile(r'^\s+(?:ROOT\s+)?%?[^\s=]+\s=\s', re.MULTILINE)
_ARRAY_COPY = re.compile(r'= \w+\[[^\]]+\]\S* copy\(')


def count_instructions(hlo_text: str) -> int:
  """Instruction lines in all computations of an HLO module's text."""
  return len(_INSTRUCTION.findall(hlo_text))


def count_array_copies(hlo_text: str) -> int:
  """Non-scalar ``copy`` instructions in optimized HLO text."""
  return len(_ARRAY_COPY.findall(hlo_text))


def words_per_param(compiled, num_params: int) -> float | None:
  """XLA's cost-analysis bytes accessed by one call, in float32 words per
  parameter; None where the backend has no cost analysis."""
  try:
    cost = compiled.cost_analysis()
  except Exception:
    return None
  if isinstance(cost, (list, tuple)):  # older jax: one dict per module
    cost = cost[0] if cost else None
  if not cost or 'bytes accessed' not in cost:
    return None
  return float(cost['bytes accessed']) / (num_params * contenders.WORD_BYTES)


def cold_compile(
  make_fn: Callable[[], Callable], args: Sequence, donate_argnums=()
) -> dict:
  """Traces, lowers and compiles a fresh ``make_fn()`` from empty caches.

  Args:
    make_fn: returns a new function object on every call (a fresh closure),
      so that no cache keyed on the function can answer.
    args: arguments to trace with (``jax.ShapeDtypeStruct`` or arrays).
    donate_argnums: as for ``jax.jit``.

  Returns:
    ``trace_lower_s``, ``compile_s`` and the ``lowered`` and ``compiled``
    stages.
  """
  jax.clear_caches()
  jitted = jax.jit(make_fn(), donate_argnums=donate_argnums)
  start = time.perf_counter()
  if hasattr(jitted, 'trace'):
    lowered = jitted.trace(*args).lower()
  else:  # jax before ``trace`` existed: lower() traces too
    lowered = jitted.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  return dict(
    trace_lower_s=lowered_at - start,
    compile_s=done - lowered_at,
    lowered=lowered,
    compiled=compiled,
  )


def describe(lowered, compiled, num_params: int, num_leaves: int) -> dict:
  """Size and traffic of one compiled function (see the module docstring)."""
  hlo = compiled.as_text() or ''
  instructions = count_instructions(hlo)
  stablehlo_bytes = len(lowered.as_text())
  return dict(
    hlo_instructions=instructions,
    hlo_instructions_per_leaf=instructions / num_leaves,
    stablehlo_bytes=stablehlo_bytes,
    stablehlo_bytes_per_leaf=stablehlo_bytes / num_leaves,
    hlo_words=words_per_param(compiled, num_params),
    hlo_array_copies=count_array_copies(hlo),
  )


def compile_rounds(
  makers: dict[str, Callable[[], Callable]],
  args: dict[str, Sequence],
  donate_argnums,
  repeats: int,
  num_params: int,
  num_leaves: int,
  on_round: Callable[[], None] = lambda: None,
  deadline: float = float('inf'),
) -> dict[str, dict]:
  """Cold compiles of several functions, interleaved in rounds.

  Round ``r`` compiles every function once, starting at a rotated position,
  so load from other processes hits all of them alike (as the step timing
  does). One untimed compile comes first: a process's first compile also
  pays one-off start-up costs.

  Args:
    makers: ``name -> make_fn`` as for :func:`cold_compile`.
    args: ``name -> arguments`` to trace that function with.
    donate_argnums: as for ``jax.jit``.
    repeats: rounds.
    num_params: parameters in the tree (for words per parameter).
    num_leaves: leaves in the tree (for the per-leaf sizes).
    on_round: called after each round (progress).
    deadline: a ``time.monotonic()`` value: no compile starts after it (a
      function compiled in no round is left out of the result).

  Returns:
    ``name -> dict`` with the per-round ``samples`` (``trace_lower_s``,
    ``compile_s``, ``total_s`` lists), their medians under the same keys,
    and the last compile's :func:`describe`.
  """
  names = list(makers)
  samples = {
    n: {'trace_lower_s': [], 'compile_s': [], 'total_s': []} for n in names
  }
  last = {}
  if not names:
    return {}
  # Untimed: the process's first compile also pays one-off start-up costs.
  cold_compile(makers[names[0]], args[names[0]], donate_argnums)
  for rnd in range(repeats):
    for name in timing.rotated(names, rnd):
      if time.monotonic() > deadline:
        continue
      result = cold_compile(makers[name], args[name], donate_argnums)
      s = samples[name]
      s['trace_lower_s'].append(result['trace_lower_s'])
      s['compile_s'].append(result['compile_s'])
      s['total_s'].append(result['trace_lower_s'] + result['compile_s'])
      last[name] = result
    on_round()
  out = {}
  for name in names:
    if name not in last:
      continue
    out[name] = dict(
      {k: float(np.median(v)) for k, v in samples[name].items()},
      samples=samples[name],
      **describe(
        last[name]['lowered'], last[name]['compiled'], num_params, num_leaves
      ),
    )
  jax.clear_caches()  # drop the executables before the next measurement
  return out
