"""Whole train steps: forward + backward + update, one per optimizer.

Run ``python -m benchmarks.speed.whole_step`` (or ``python -m
benchmarks.speed --whole-step``). What a user feels is the whole step, not
the optimizer alone: this times one jitted, donated Flax train step per
optimizer on two models,

* ``resnet18``: the CIFAR ResNet-18 of the PNM paper (3x3 stem, BatchNorm,
  10 classes) on random CIFAR-shaped batches, cross-entropy loss;
* ``transformer``: a small GPT-style language model (pre-LN blocks, causal
  self-attention, tied embeddings) on random token batches, next-token loss,

with the optimizers interleaved in rounds (each round runs every optimizer
for a fixed number of steps, from a rotated start) and reports the median
time per step and the median over rounds of the ratio, within a round, to
``optax.sgd(momentum=0.9)``, ``optax.amsgrad`` and ``optax.adam``.
``pnm_static`` is :func:`pnm_optax.pnm_train_step`, which alternates two
compiled steps and writes only the momentum buffer of the step's parity.

The default size follows the backend: full size (ResNet-18 at width 64 and
batch 256; the transformer at width 512, 8 layers, batch 32 x 256 tokens) on
an accelerator, a small version on the CPU (``--size``). Each model has a
time budget (``--budget``): optimizers not reached in it are listed as
skipped. Writes ``whole_step.json`` to ``--out`` after every model.
"""

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import optax

from benchmarks.common import argtypes, environment, reporting
from benchmarks.common.reporting import fmt
from benchmarks.speed import contenders, timing

PROG = 'python -m benchmarks.speed.whole_step'
MODELS = ('resnet18', 'transformer')
OPTIMIZERS = ('sgdm', 'pnm', 'amsgrad', 'adapnm', 'pnm_static', 'adam')
RATIO_REFS = ('sgdm', 'amsgrad', 'adam')
MIN_ROUNDS = 3

# Model settings by size: the full ones are what the published numbers use.
SIZES: dict[str, dict[str, dict[str, int]]] = {
  'full': {
    'resnet18': dict(width=64, batch=256, image=32),
    'transformer': dict(
      width=512, layers=8, heads=8, vocab=32000, seq=256, batch=32
    ),
  },
  'small': {
    'resnet18': dict(width=8, batch=8, image=32),
    'transformer': dict(
      width=64, layers=2, heads=4, vocab=512, seq=32, batch=4
    ),
  },
  'tiny': {
    # Batch 8 of 16x16: with fewer values per batch-norm channel the
    # normalisation is near-degenerate and rounding differences explode.
    'resnet18': dict(width=4, batch=8, image=16),
    'transformer': dict(width=16, layers=1, heads=2, vocab=64, seq=8, batch=2),
  },
}


def _resnet18(width: int):
  import flax.linen as nn

  class Block(nn.Module):
    features: int
    strides: int

    @nn.compact
    def __call__(self, x, train: bool):
      norm = lambda: nn.BatchNorm(use_running_average=not train)
      y = nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(x)
      y = nn.relu(norm()(y))
      y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
      y = norm()(y)
      if self.strides != 1 or x.shape[-1] != self.features:
        x = nn.Conv(self.features, (1, 1), self.strides, use_bias=False)(x)
        x = norm()(x)
      return nn.relu(x + y)

  class ResNet18(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
      x = nn.Conv(width, (3, 3), use_bias=False)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
      for stage, mult in enumerate((1, 2, 4, 8)):
        for block in range(2):
          strides = 2 if stage > 0 and block == 0 else 1
          x = Block(width * mult, strides)(x, train)
      return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))

  return ResNet18()


def _transformer(width: int, layers: int, heads: int, vocab: int, seq: int):
  import flax.linen as nn

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))
      y = nn.MultiHeadDotProductAttention(heads, qkv_features=width)(
        nn.LayerNorm()(x), mask=mask
      )
      x = x + y
      y = nn.Dense(4 * width)(nn.LayerNorm()(x))
      return x + nn.Dense(width)(nn.gelu(y))

  class LM(nn.Module):
    @nn.compact
    def __call__(self, tokens):
      embed = nn.Embed(vocab, width)
      x = embed(tokens)
      x = x + self.param(
        'positions', nn.initializers.normal(0.02), (seq, width)
      )
      for _ in range(layers):
        x = Block()(x)
      return embed.attend(nn.LayerNorm()(x))

  return LM()


def build_model(name: str, settings: dict[str, int], key):
  """``(params, extra, loss_fn, batch)`` for one model.

  ``loss_fn(params, extra, batch) -> (loss, new_extra)``; ``extra`` is the
  BatchNorm statistics (ResNet-18) or an empty dict.
  """
  k_init, k_x, k_y = jax.random.split(key, 3)
  if name == 'resnet18':
    model = _resnet18(settings['width'])
    shape = (settings['batch'], settings['image'], settings['image'], 3)
    x = jax.random.normal(k_x, shape, jnp.float32)
    y = jax.random.randint(k_y, (settings['batch'],), 0, 10)
    variables = model.init(k_init, x[:1], train=False)
    params, extra = variables['params'], variables['batch_stats']

    def loss_fn(params, extra, batch):
      x, y = batch
      logits, updates = cast(
        tuple,
        model.apply(
          {'params': params, 'batch_stats': extra},
          x,
          train=True,
          mutable=['batch_stats'],
        ),
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return jnp.mean(loss), updates['batch_stats']

    return params, extra, loss_fn, (x, y)
  s = settings
  model = _transformer(
    s['width'], s['layers'], s['heads'], s['vocab'], s['seq']
  )
  tokens = jax.random.randint(k_x, (s['batch'], s['seq'] + 1), 0, s['vocab'])
  params = model.init(k_init, tokens[:1, :-1])['params']

  def lm_loss(params, extra, batch):
    logits = cast(jax.Array, model.apply({'params': params}, batch[:, :-1]))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:])
    return jnp.mean(loss), extra

  return params, {}, lm_loss, tokens


class WholeStepRunner:
  """One optimizer's jitted, donated train step on one model."""

  def __init__(self, name: str, params, extra, loss_fn, batch):
    self.name = name
    self.batch = batch
    grad_fn = jax.grad(loss_fn, has_aux=True)
    params = jax.tree.map(jnp.copy, params)  # ours to donate
    self.extra = jax.tree.map(jnp.copy, extra)
    if name == 'pnm_static':
      import pnm_optax

      train = pnm_optax.pnm_train_step(
        contenders.LEARNING_RATE,
        grad_fn=lambda p, extra, batch: grad_fn(p, extra, batch),
      )
      state = train.init(params)

      def run(carry, k):
        params, state, extra = carry
        for _ in range(k):
          params, state, extra = train.step(params, state, extra, self.batch)
        return params, state, extra

    else:
      opt = contenders.make(name)
      state = opt.init(params)

      def step(params, state, extra, batch):
        grads, extra = grad_fn(params, extra, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, extra

      jitted = jax.jit(step, donate_argnums=(0, 1, 2))

      def run(carry, k):
        params, state, extra = carry
        for _ in range(k):
          params, state, extra = jitted(params, state, extra, self.batch)
        return params, state, extra

    self._run = run
    start = time.perf_counter()
    self.carry = run((params, state, self.extra), 1)
    jax.block_until_ready(self.carry)
    self.first_step_s = time.perf_counter() - start  # compile included
    self.carry = run(self.carry, 2)
    jax.block_until_ready(self.carry)

  def time_steps(self, k: int) -> float:
    start = time.perf_counter()
    self.carry = self._run(self.carry, k)
    jax.block_until_ready(self.carry)
    return (time.perf_counter() - start) / k

  def finite(self) -> bool:
    return all(
      bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(self.carry[0])
    )


def measure_model(
  model: str,
  settings: dict[str, int],
  names: list[str],
  repeats: int,
  steps: int,
  budget_s: float,
  log: Callable[[str], None],
) -> dict:
  """Times ``names`` side by side on one model within ``budget_s`` seconds."""
  start = time.perf_counter()
  params, extra, loss_fn, batch = build_model(
    model, settings, jax.random.key(0)
  )
  num_params = sum(x.size for x in jax.tree.leaves(params))
  runners, skipped, errors = [], [], {}
  for name in names:
    if time.perf_counter() - start > budget_s and name != 'sgdm':
      skipped.append(name)
      continue
    try:
      runners.append(WholeStepRunner(name, params, extra, loss_fn, batch))
      log(f'{model}: {name} compiled in {runners[-1].first_step_s:.1f} s')
    except Exception as e:  # a failed optimizer must not end the report
      errors[name] = f'{type(e).__name__}: {e}'.splitlines()[0][:200]
      log(f'{model}: {name} failed: {errors[name]}')
  del params
  samples: dict[str, list[float]] = {r.name: [] for r in runners}
  rounds = 0
  for rnd in range(repeats):
    # Compiling takes the budget; timing rounds are cheap, and the first
    # MIN_ROUNDS always run so that a ratio is a median over rounds.
    if rnd >= MIN_ROUNDS and time.perf_counter() - start > budget_s:
      break
    for r in timing.rotated(runners, rnd):
      samples[r.name].append(r.time_steps(steps))
    rounds += 1
    log(f'{model}: round {rnd + 1}/{repeats} done')
  rows = []
  for r in runners:
    row: dict[str, Any] = dict(
      optimizer=r.name,
      step_s=timing.median(samples[r.name]),
      first_step_s=r.first_step_s,
      finite=r.finite(),
      samples=samples[r.name],
    )
    for ref in RATIO_REFS:
      row[f'x_{ref}'] = timing.per_round_ratio(
        {n: {'t': s} for n, s in samples.items()}, r.name, ref, 't'
      )
    rows.append(row)
  rows += [dict(optimizer=n, error=e) for n, e in errors.items()]
  return dict(
    model=model,
    settings=settings,
    num_params=int(num_params),
    rounds=rounds,
    steps_per_round=steps,
    rows=rows,
    skipped=skipped,
    seconds=time.perf_counter() - start,
  )


def table(models: list[dict]) -> str:
  """Step time and same-round ratios, one line per model and optimizer."""
  lines = []
  for m in models:
    for row in m['rows']:
      if 'error' in row:
        lines.append((m['model'], row['optimizer'], 'failed:', row['error']))
        continue
      lines.append(
        (
          m['model'],
          row['optimizer'],
          fmt(None if row['step_s'] is None else 1e3 * row['step_s'], '.3f'),
          fmt(row['x_sgdm'], '.3f'),
          fmt(row['x_amsgrad'], '.3f'),
          fmt(row['x_adam'], '.3f'),
        )
      )
  return reporting.markdown_table(
    ('model', 'optimizer', 'ms/step', 'x sgdm', 'x amsgrad', 'x adam'), lines
  )


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog=PROG, description=(__doc__ or '').split('\n')[0]
  )
  parser.add_argument(
    '--models',
    type=argtypes.name_list(MODELS),
    default=list(MODELS),
    help='comma list of ' + ','.join(MODELS) + ' (default: both)',
  )
  parser.add_argument(
    '--optimizers',
    type=argtypes.name_list(OPTIMIZERS),
    default=list(OPTIMIZERS),
    help='comma list of '
    + ','.join(OPTIMIZERS)
    + ' (sgdm, the baseline, is always run; default: all)',
  )
  parser.add_argument(
    '--size',
    choices=tuple(SIZES),
    default=None,
    help='model and batch size (default: full on an accelerator, small on '
    'the CPU)',
  )
  parser.add_argument(
    '--repeats',
    type=argtypes.positive_int,
    default=5,
    help='timing rounds (default 5)',
  )
  parser.add_argument(
    '--steps',
    type=argtypes.positive_int,
    default=None,
    help='steps per optimizer and round (default 20; small and tiny: 3)',
  )
  parser.add_argument(
    '--budget',
    type=argtypes.positive_float,
    default=120.0,
    help='seconds per model: no optimizer is built and no round after the '
    f'first {MIN_ROUNDS} starts after it (default 120)',
  )
  parser.add_argument(
    '--out', default='results/speed', help='folder for whole_step.json'
  )
  parser.add_argument('--no-progress', action='store_true')
  args = parser.parse_args(argv)
  if args.size is None:
    args.size = 'small' if jax.default_backend() == 'cpu' else 'full'
  if args.steps is None:
    args.steps = 20 if args.size == 'full' else 3
  args.optimizers = ['sgdm'] + [n for n in args.optimizers if n != 'sgdm']
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  info = environment.collect()
  info['default_matmul_precision'] = str(
    getattr(jax.config, 'jax_default_matmul_precision', None)
  )
  for line in environment.header_lines(info):
    print(line)
  log = (
    (lambda _: None)
    if args.no_progress
    else (lambda text: print(f'# {text}', file=sys.stderr, flush=True))
  )
  result: dict[str, Any] = dict(
    kind='whole_step',
    meta=info,
    complete=False,
    size=args.size,
    repeats=args.repeats,
    budget_s=args.budget,
    models=[],
  )
  path = os.path.join(args.out, 'whole_step.json')
  for model in args.models:
    result['models'].append(
      measure_model(
        model,
        SIZES[args.size][model],
        args.optimizers,
        args.repeats,
        args.steps,
        args.budget,
        log,
      )
    )
    _write(path, result)
  result['complete'] = True
  result['table'] = table(result['models'])
  _write(path, result)
  print(
    f'# whole train step ({args.size} size), jitted and donated; medians of '
    f'up to {args.repeats} rounds of {args.steps} steps per optimizer; '
    'ratios within each round'
  )
  for m in result['models']:
    if m['skipped']:
      print(
        f'# {m["model"]}: skipped {", ".join(m["skipped"])} (over the '
        f'{args.budget:g} s budget)'
      )
  print()
  print(result['table'])
  print(f'# wrote {path}')
  return result


def _write(path: str, result: dict) -> None:
  try:
    reporting.write_json(path, result)
  except OSError as e:
    argtypes.fail(PROG, f'cannot write {path}: {e}')


if __name__ == '__main__':
  main()
