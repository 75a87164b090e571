"""Timing one train step: runners for JAX and PyTorch, interleaved rounds.

A JAX train step is ``opt.update`` + ``optax.apply_updates`` in one jitted
function with the parameters and optimizer state donated. Two times per step:

* device time: ``K`` steps inside one jitted ``lax.fori_loop``, over ``K``;
* dispatched time: ``K`` donated jitted calls from Python, blocked at the
  end, over ``K``: what a Python training loop sees.

PyTorch optimizers run eagerly, so they have a dispatched time only; they
run on the same kind of device as JAX where PyTorch can.
Optimizers compared with each other are timed in rounds, each round timing
every one once from a rotated starting point, so that load from other
processes hits all of them alike; a ratio is the median over rounds of the
ratio within the round.
"""

import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.speed import contenders

MAX_STEPS_PER_SAMPLE = 1000

Samples = Mapping[str, Mapping[str, Sequence[float | None]]]


def make_train_step(opt: optax.GradientTransformation) -> Callable:
  """``(params, state, grads) -> (params, state)``: update + apply.

  A new function object on every call (a fresh closure for cold compiles).
  """

  def train_step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return train_step


def make_train_loop(train_step: Callable) -> Callable:
  """``k`` train steps with fixed gradients inside one ``fori_loop``."""

  def train_loop(params, state, grads, k):
    body = lambda _, carry: train_step(*carry, grads)
    return jax.lax.fori_loop(0, k, body, (params, state))

  return train_loop


class JaxRunner:
  """One optax optimizer on one tree: jitted step and loop, its own state.

  With ``loop=False`` there is no ``fori_loop`` form (its compile costs about
  twice the step's, which dominates on trees of many leaves) and no device
  time.
  """

  def __init__(
    self,
    name: str,
    opt: optax.GradientTransformation,
    params,
    grads,
    loop: bool = True,
  ):
    self.name = name
    step = make_train_step(opt)
    self.step = jax.jit(step, donate_argnums=(0, 1))
    self.loop = (
      jax.jit(make_train_loop(step), donate_argnums=(0, 1)) if loop else None
    )
    self.grads = grads
    self.params = jax.tree.map(jnp.copy, params)  # ours to donate
    self.state = opt.init(self.params)
    for _ in range(2):  # compile and warm both paths
      self.params, self.state = self.step(self.params, self.state, grads)
      if self.loop is not None:
        self.params, self.state = self.loop(self.params, self.state, grads, 1)
    jax.block_until_ready((self.params, self.state))

  def time_device(self, k: int) -> float | None:
    if self.loop is None:
      return None
    start = time.perf_counter()
    self.params, self.state = self.loop(self.params, self.state, self.grads, k)
    jax.block_until_ready((self.params, self.state))
    return (time.perf_counter() - start) / k

  def time_dispatched(self, k: int) -> float:
    return _time_dispatched(self, k)


def _time_dispatched(runner, k: int) -> float:
  """Seconds per call of ``runner.step`` over ``k`` calls, each dispatched
  from Python; the runner keeps the parameters and state it ends with."""
  step, grads = runner.step, runner.grads
  params, state = runner.params, runner.state
  start = time.perf_counter()
  for _ in range(k):
    params, state = step(params, state, grads)
  jax.block_until_ready((params, state))
  elapsed = time.perf_counter() - start
  runner.params, runner.state = params, state
  return elapsed / k


class StaticParityRunner:
  """:func:`pnm_optax.pnm_train_step` (PNM, two compiled steps, one per
  parity) on one tree, timed as :class:`JaxRunner` times an optimizer.

  The device time runs pairs of steps (odd, then even) in one jitted
  ``fori_loop``, so it is taken over an even number of steps, and the
  dispatched time too (the count stays even between samples).
  """

  def __init__(self, name: str, params, grads, loop: bool = True):
    import pnm_optax

    self.name = name
    self.has_loop = loop
    train = pnm_optax.pnm_train_step(contenders.LEARNING_RATE)
    self.step = train.step

    def pair(_, carry):
      params, state = train.update(*carry, grads, True)
      # Without the barrier XLA fuses the odd and the even step into one
      # pass over memory, which would time two steps as about one.
      params, state = jax.lax.optimization_barrier((params, state))
      return train.update(params, state, grads, False)

    self.loop = jax.jit(
      lambda params, state, pairs: jax.lax.fori_loop(
        0, pairs, pair, (params, state)
      ),
      donate_argnums=(0, 1),
    )
    self.grads = grads
    self.params = jax.tree.map(jnp.copy, params)
    self.state = train.init(self.params)
    for _ in range(2):  # the count stays even: a loop pair starts odd
      self.params, self.state = self.step(self.params, self.state, grads)
      self.params, self.state = self.step(self.params, self.state, grads)
      if loop:
        self.params, self.state = self.loop(self.params, self.state, 1)
    jax.block_until_ready((self.params, self.state))

  def time_device(self, k: int) -> float | None:
    if not self.has_loop:
      return None
    pairs = max(1, k // 2)
    start = time.perf_counter()
    self.params, self.state = self.loop(self.params, self.state, pairs)
    jax.block_until_ready((self.params, self.state))
    return (time.perf_counter() - start) / (2 * pairs)

  def time_dispatched(self, k: int) -> float:
    # An even count, so that the next loop pair starts odd.
    return _time_dispatched(self, k + k % 2)


class TorchRunner:
  """One PyTorch optimizer on the same shapes (eager: dispatched time only).

  It runs on the GPU when JAX does and PyTorch sees one (so that the two are
  compared on the same device), else on the CPU.
  """

  def __init__(self, name: str, shapes, seed: int = 0):
    import torch  # pyright: ignore[reportMissingImports]  (optional)

    from benchmarks.speed import torch_contenders

    self.name = name
    self.device = (
      'cuda'
      if jax.default_backend() == 'gpu' and torch.cuda.is_available()
      else 'cpu'
    )
    gen = torch.Generator().manual_seed(seed)
    self.params = [
      torch.randn(s, generator=gen).to(self.device) for _, s in shapes
    ]
    for p in self.params:
      p.grad = 1e-2 * torch.randn(p.shape, generator=gen).to(self.device)
    self.opt = torch_contenders.make(
      name, self.params, contenders.LEARNING_RATE
    )
    self._sync = (
      torch.cuda.synchronize if self.device == 'cuda' else lambda: None
    )
    for _ in range(2):
      self.opt.step()  # raises here if, e.g., fused is unsupported
    self._sync()

  def time_device(self, k: int) -> float | None:
    del k
    return None

  def time_dispatched(self, k: int) -> float:
    step = self.opt.step
    start = time.perf_counter()
    for _ in range(k):
      step()
    self._sync()
    return (time.perf_counter() - start) / k


def rotated(items: Sequence, rnd: int) -> list:
  """``items`` starting at position ``rnd`` (mod its length)."""
  i = rnd % len(items)
  return list(items[i:]) + list(items[:i])


def steps_per_sample(runner, target_s: float) -> int:
  """Steps that make one timed sample last about ``target_s`` seconds."""
  per_step = max(runner.time_dispatched(2), 1e-7)
  return int(max(2, min(MAX_STEPS_PER_SAMPLE, target_s / per_step)))


def run_rounds(
  runners: Sequence,
  repeats: int,
  target_s: float,
  on_round: Callable[[], object] = lambda: None,
  deadline: float = float('inf'),
) -> tuple[dict[str, dict[str, list[float | None]]], dict[str, int]]:
  """Times every runner once per round, ``repeats`` rounds (at least one;
  no further round starts after ``deadline``, a ``time.monotonic()`` value).

  Returns:
    ``name -> {'device': [...], 'dispatched': [...]}`` seconds per step, one
    sample per round (device samples are None for PyTorch), and the steps
    per sample of each runner.
  """
  steps = {r.name: steps_per_sample(r, target_s) for r in runners}
  samples = {r.name: {'device': [], 'dispatched': []} for r in runners}
  for rnd in range(repeats):
    if rnd > 0 and time.monotonic() > deadline:
      break
    for r in rotated(runners, rnd):
      samples[r.name]['device'].append(r.time_device(steps[r.name]))
      samples[r.name]['dispatched'].append(r.time_dispatched(steps[r.name]))
    on_round()
  return samples, steps


def median(values: Sequence[float | None]) -> float | None:
  """Median, or None where there are no (non-None) samples."""
  present = [v for v in values if v is not None]
  if not present:
    return None
  return float(np.median(present))


def per_round_ratio(
  samples: Samples, name: str, ref: str, kind: str
) -> float | None:
  """Median over rounds of ``samples[name][kind] / samples[ref][kind]``.

  None where ``ref`` was not measured in the same rounds, or either has no
  such samples (PyTorch's device time).
  """
  if name not in samples or ref not in samples:
    return None
  a, b = samples[name].get(kind), samples[ref].get(kind)
  if not a or not b or a[0] is None or b[0] is None:
    return None
  ratios = [x / y for x, y in zip(a, b) if x is not None and y]
  return float(np.median(ratios)) if ratios else None


def measure_copy_bandwidth(
  num_params: int, repeats: int, target_s: float
) -> float:
  """GB/s of a donated jitted in-place scale ``x * s`` (read + write).

  Timed both as back-to-back calls and inside one ``fori_loop``, taking the
  faster: on XLA:CPU a loop body runs slower than the same computation called
  alone, on an accelerator the calls pay dispatch.
  """
  scale = jax.jit(lambda x, s: x * s, donate_argnums=0)
  loop = jax.jit(
    lambda x, s, k: jax.lax.fori_loop(0, k, lambda _, y: y * s, x),
    donate_argnums=0,
  )
  x = jnp.ones(num_params, jnp.float32)
  s = jnp.float32(1.0)
  x = loop(scale(x, s), s, 1).block_until_ready()
  start = time.perf_counter()
  x = scale(scale(x, s), s).block_until_ready()
  k = max(
    2,
    min(
      MAX_STEPS_PER_SAMPLE,
      int(target_s / max((time.perf_counter() - start) / 2, 1e-7)),
    ),
  )
  seconds = {'calls': [], 'loop': []}
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(k):
      x = scale(x, s)
    x.block_until_ready()
    seconds['calls'].append(time.perf_counter() - start)
    start = time.perf_counter()
    x = loop(x, s, k).block_until_ready()
    seconds['loop'].append(time.perf_counter() - start)
  del x
  return max(
    2 * contenders.WORD_BYTES * num_params * k / float(np.median(t)) / 1e9
    for t in seconds.values()
  )
