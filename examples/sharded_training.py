"""Data-parallel and sharded training with pnm_optax (an example).

Trains the same MLP on the same synthetic batches four ways and compares
every run with the single-device one:

* ``single``: plain ``jax.jit`` on one device (the reference);
* ``pmap``: ``jax.pmap`` data parallelism, gradients averaged by ``lax.pmean``;
* ``dp``: ``jax.jit`` on a 1-D ``('data',)`` mesh, batch sharded, parameters
  and optimizer state replicated;
* ``fsdp``: ``jax.jit`` on a 2-D ``('data', 'model')`` mesh, weights sharded
  on both axes (FSDP + tensor parallel) and each optimizer buffer sharded like
  its parameter (shardings from ``jax.eval_shape`` + ``optax.tree.map_params``).

Runs unchanged on CPU, GPU or TPU hosts, and across hosts::

  python -m examples.sharded_training --fake-devices 8  # 8 fake CPU devices
  python -m examples.sharded_training                    # the host's devices
  # one command per process (or --distributed on TPU pods / SLURM):
  python -m examples.sharded_training --coordinator-address HOST:PORT \\
      --num-processes 2 --process-id 0

Any device count works: the global batch and the fsdp mesh's model axis,
when not given, are chosen so that the devices divide them, and a weight
dimension the mesh axis does not divide is replicated along it (the output
says which); a size given that cannot be split ends the program with one
line naming sizes that can (exit status 2). ``--devices N`` uses the first N
devices only.

Step times are medians over the steps after the first two (which include
compilation: pmap compiles again on its second call); fake CPU devices share
the host's cores, so their times say nothing about speed-ups.
"""

import argparse
import os
import platform
import sys
from typing import NoReturn

PROG = 'python -m examples.sharded_training'
MODES = ('single', 'pmap', 'dp', 'fsdp')
DEFAULT_BATCH = 256
DEFAULT_MODEL_AXIS = 2


# No JAX before the flags are parsed: --fake-devices must set XLA_FLAGS first.


def positive_int(text: str) -> int:
  """argparse type: an integer >= 1."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'{value} is not >= 1')
  return value


def mode_list(text: str) -> list[str]:
  """argparse type: comma-separated modes, each one of ``MODES``."""
  names = [n.strip() for n in text.split(',') if n.strip()]
  unknown = [n for n in names if n not in MODES]
  if unknown or not names:
    raise argparse.ArgumentTypeError(
      f'unknown mode(s) {", ".join(map(repr, unknown)) or repr(text)}; '
      f'choose from {",".join(MODES)}'
    )
  return list(dict.fromkeys(names))


def fail(message: str) -> NoReturn:
  """Ends the program like an argparse error: one line, exit status 2."""
  print(f'{PROG}: error: {message}', file=sys.stderr)
  sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog=PROG,
    description=(__doc__ or '').split('\n\n')[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
    '--fake-devices',
    type=positive_int,
    default=None,
    metavar='N',
    help='simulate N CPU devices (sets XLA_FLAGS and JAX_PLATFORMS=cpu '
    'before JAX is imported); default: use the real devices',
  )
  parser.add_argument(
    '--devices',
    type=positive_int,
    default=None,
    metavar='N',
    help='use the first N devices only (one process; default: all)',
  )
  parser.add_argument('--optimizer', choices=('pnm', 'adapnm'), default='pnm')
  parser.add_argument(
    '--modes',
    type=mode_list,
    default=list(MODES),
    help='comma-separated subset of ' + ','.join(MODES),
  )
  parser.add_argument('--steps', type=positive_int, default=30)
  parser.add_argument(
    '--batch',
    type=positive_int,
    default=None,
    help='global batch, a multiple of the device count '
    f'(default: the multiple nearest {DEFAULT_BATCH})',
  )
  parser.add_argument('--hidden', type=positive_int, default=512)
  parser.add_argument(
    '--model-axis',
    type=positive_int,
    default=None,
    help="size of the fsdp mesh's 'model' axis, a divisor "
    f'of the device count (default {DEFAULT_MODEL_AXIS} '
    'where it divides the device count and --hidden, '
    'else 1)',
  )
  parser.add_argument('--seed', type=int, default=0)
  multihost = parser.add_argument_group('multi-host (jax.distributed)')
  multihost.add_argument(
    '--distributed',
    action='store_true',
    help='jax.distributed.initialize() with cluster '
    'auto-detection (TPU pods, SLURM, ...)',
  )
  multihost.add_argument('--coordinator-address', metavar='HOST:PORT')
  multihost.add_argument('--num-processes', type=positive_int)
  multihost.add_argument('--process-id', type=int)
  return parser


def _divisors(n: int) -> list:
  return [d for d in range(1, n + 1) if n % d == 0]


def choose_layout(num_devices: int, batch, model_axis, hidden: int):
  """The global batch and the fsdp mesh's ``(data, model)`` axis sizes.

  A size left as None is chosen so that the device count divides it: the
  batch is the multiple of ``num_devices`` nearest ``DEFAULT_BATCH``, the
  model axis ``DEFAULT_MODEL_AXIS`` where it divides both the device count
  and ``hidden``, else 1. A size given that does not divide is an error.

  Returns:
    ``(batch, (data, model), note)``, the note saying what was chosen.

  Raises:
    ValueError: one line naming the flag and the values that would work.
  """
  n = num_devices
  chosen = []
  if batch is None:
    batch = max(n, n * round(DEFAULT_BATCH / n))
    if batch != DEFAULT_BATCH:
      chosen.append(
        f'global batch {batch} (the multiple of {n} devices '
        f'nearest {DEFAULT_BATCH})'
      )
  elif batch % n:
    lower, upper = n * (batch // n), n * (batch // n + 1)
    fits = [d for d in _divisors(batch) if d < n][-1]
    raise ValueError(
      f'--batch {batch} does not split over {n} devices: use a multiple of '
      f'{n} (e.g. --batch {upper}'
      + (f' or {lower}' if lower else '')
      + f'), or --devices {fits}'
    )
  if model_axis is None:
    model_axis = (
      DEFAULT_MODEL_AXIS
      if n % DEFAULT_MODEL_AXIS == 0 and hidden % DEFAULT_MODEL_AXIS == 0
      else 1
    )
  elif n % model_axis:
    raise ValueError(
      f'--model-axis {model_axis} does not divide {n} '
      f'devices: use one of {_divisors(n)}'
    )
  elif hidden % model_axis:
    raise ValueError(
      f'--model-axis {model_axis} does not divide --hidden {hidden}: use '
      f'--hidden {model_axis * max(1, round(hidden / model_axis))} or a '
      f'model axis among {[d for d in _divisors(n) if hidden % d == 0]}'
    )
  return batch, (n // model_axis, model_axis), '; '.join(chosen)


if __name__ == '__main__':
  ARGS = build_parser().parse_args()
  if ARGS.fake_devices:
    # XLA reads its flags once, when JAX starts: set them before `import jax`.
    os.environ['XLA_FLAGS'] = ' '.join(
      [
        f
        for f in os.environ.get('XLA_FLAGS', '').split()
        if not f.startswith('--xla_force_host_platform_device_count')
      ]
      + [f'--xla_force_host_platform_device_count={ARGS.fake_devices}']
    )
    os.environ['JAX_PLATFORMS'] = 'cpu'


import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import pnm_optax  # noqa: E402

IN_DIM, CLASSES = 64, 10
WARMUP = 2  # steps left out of the timing: they include compilation
# FSDP + tensor parallel: column- then row-parallel hidden layers on 'model',
# the other weight dimension FSDP-sharded on 'data'.
FSDP_SPECS = {
  'w1': P('data', 'model'),
  'b1': P('model'),
  'w2': P('model', 'data'),
  'b2': P(),
  'w3': P('data', None),
  'b3': P(),
}


def fit_specs(specs: dict, shapes: dict, axis_sizes: dict):
  """``specs`` with each dimension that its mesh axis does not divide
  replicated (as FSDP implementations do), and a note naming them."""
  fitted, replicated = {}, []
  for name, spec in specs.items():
    entries = list(spec) + [None] * (len(shapes[name]) - len(spec))
    for i, axis in enumerate(entries):
      if axis is not None and shapes[name][i] % axis_sizes[axis]:
        replicated.append(f'{name} dim {i} ({shapes[name][i]}) on {axis!r}')
        entries[i] = None
    fitted[name] = P(*entries)
  note = (
    'replicated where the axis does not divide: ' + ', '.join(replicated)
    if replicated
    else ''
  )
  return fitted, note


# ------------------------------------------------------------ problem ---


def init_params(hidden: int, seed: int) -> dict:
  """MLP parameters as host float32 arrays (identical on every process)."""
  rng = np.random.default_rng(seed)

  def dense(n_in, n_out):
    return (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)

  return {
    'w1': dense(IN_DIM, hidden),
    'b1': np.zeros(hidden, np.float32),
    'w2': dense(hidden, hidden),
    'b2': np.zeros(hidden, np.float32),
    'w3': dense(hidden, CLASSES),
    'b3': np.zeros(CLASSES, np.float32),
  }


def global_batches(steps: int, batch: int, seed: int):
  """Synthetic classification batches labelled by a random linear teacher.

  Every process builds the same global batches and feeds its own part, so all
  runs (and the reference) see exactly the same data.
  """
  rng = np.random.default_rng(seed + 1)
  teacher = rng.normal(size=(IN_DIM, CLASSES))
  for _ in range(steps):
    x = rng.normal(size=(batch, IN_DIM)).astype(np.float32)
    yield x, np.argmax(x @ teacher, axis=-1).astype(np.int32)


def loss_fn(params, x, y):
  h = jax.nn.relu(x @ params['w1'] + params['b1'])
  h = jax.nn.relu(h @ params['w2'] + params['b2'])
  logits = h @ params['w3'] + params['b3']
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_optimizer(name: str) -> optax.GradientTransformation:
  if name == 'pnm':
    return pnm_optax.pnm(0.1, b0=1.0, weight_decay=5e-4)
  return pnm_optax.adapnm(1e-3, b0=1.0, weight_decay=1e-2)


def train_step_fn(opt):
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  return step


# -------------------------------------------------------------- modes ---


def _timed_loop(step, params, state, batches, first_copy=None):
  """Runs ``step`` over ``batches``; returns params, state, losses, times."""
  first_copy = first_copy or _first_copy
  losses, times = [], []
  for x, y in batches:
    start = time.perf_counter()
    params, state, loss = step(params, state, x, y)
    jax.block_until_ready((params, state, loss))
    times.append(time.perf_counter() - start)
    losses.append(loss)
  return params, state, [float(first_copy(l)) for l in losses], times


def _first_copy(x) -> np.ndarray:
  """This process's copy of a replicated array."""
  return np.asarray(x.addressable_shards[0].data)


def _first_replica(x) -> np.ndarray:
  """Device 0's copy of a pmap output (leading axis: one row per device)."""
  return np.asarray(x.addressable_shards[0].data).reshape(x.shape[1:])


def _state_bytes_on_first_device(state) -> int:
  device = jax.local_devices()[0]
  return sum(
    s.data.nbytes
    for leaf in jax.tree.leaves(state)
    for s in leaf.addressable_shards
    if s.device == device
  )


def _local(devices) -> list:
  """This process's devices among ``devices``."""
  return [d for d in devices if d.process_index == jax.process_index()]


def run_single(opt, params0, batches, devices):
  """Reference: one device, the whole global batch."""
  device = _local(devices)[0]
  params = jax.device_put(params0, device)
  # Committed like the step's outputs, so step 2 does not compile again.
  state = jax.device_put(opt.init(params), device)
  step = jax.jit(train_step_fn(opt), donate_argnums=(0, 1))
  params, state, losses, times = _timed_loop(
    step,
    params,
    state,
    (
      (jax.device_put(x, device), jax.device_put(y, device)) for x, y in batches
    ),
  )
  return (
    jax.tree.map(np.asarray, params),
    losses,
    times,
    _state_bytes_on_first_device(state),
  )


def run_pmap(opt, params0, batches, devices):
  """pmap data parallelism: replicated state, gradients pmean'd."""
  n_local = len(_local(devices))
  # All devices: pmap picks them (across processes); a subset: name it.
  subset = None if len(devices) == jax.device_count() else devices

  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    grads, loss = jax.lax.pmean((grads, loss), axis_name='batch')
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  p_step = jax.pmap(
    step, axis_name='batch', donate_argnums=(0, 1), devices=subset
  )
  params = jax.tree.map(
    lambda a: np.broadcast_to(a, (n_local,) + a.shape), params0
  )  # host arrays, one copy per device
  state = jax.pmap(opt.init, devices=subset)(params)
  mine = slice(
    jax.process_index() * n_local, (jax.process_index() + 1) * n_local
  )

  def local(a):  # this process's part of the global batch, a row per device
    return a.reshape(len(devices), -1, *a.shape[1:])[mine]

  params, state, losses, times = _timed_loop(
    p_step,
    params,
    state,
    ((local(x), local(y)) for x, y in batches),
    first_copy=_first_replica,
  )
  return (
    jax.tree.map(_first_replica, params),
    losses,
    times,
    _state_bytes_on_first_device(state),
  )


def _put_global(value, sharding):
  """A global array from a host value every process holds in full.

  With a real data loader each process holds only its rows: use
  ``jax.make_array_from_process_local_data(sharding, local_rows)``.
  """
  return jax.make_array_from_callback(
    value.shape, sharding, lambda index: value[index]
  )


def run_mesh(opt, params0, batches, mesh, specs):
  """jit on ``mesh`` with parameters sharded by ``specs``."""
  param_shardings = {k: NamedSharding(mesh, specs[k]) for k in params0}
  replicated = NamedSharding(mesh, P())
  params = {k: _put_global(v, param_shardings[k]) for k, v in params0.items()}
  # Optimizer-state shardings from the abstract init: every param-like buffer
  # gets its parameter's sharding, the step count is replicated.
  state_shardings = optax.tree.map_params(
    opt,
    lambda _, s: s,
    jax.eval_shape(opt.init, params),
    param_shardings,
    transform_non_params=lambda _: replicated,
  )
  state = jax.jit(opt.init, out_shardings=state_shardings)(params)
  step = jax.jit(
    train_step_fn(opt),
    donate_argnums=(0, 1),
    out_shardings=(param_shardings, state_shardings, replicated),
  )
  batch_sharding = NamedSharding(mesh, P('data'))
  params, state, losses, times = _timed_loop(
    step,
    params,
    state,
    (
      (_put_global(x, batch_sharding), _put_global(y, batch_sharding))
      for x, y in batches
    ),
  )
  params = jax.jit(lambda p: p, out_shardings=replicated)(params)  # gather
  return (
    jax.tree.map(_first_copy, params),
    losses,
    times,
    _state_bytes_on_first_device(state),
  )


# --------------------------------------------------------------- main ---


def _rel_err(tree, ref) -> float:
  flat = lambda t: np.concatenate(
    [np.ravel(t[k]).astype(np.float64) for k in sorted(ref)]
  )
  a, b = flat(tree), flat(ref)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(args) -> None:
  if args.distributed or args.coordinator_address:
    jax.distributed.initialize(
      coordinator_address=args.coordinator_address,
      num_processes=args.num_processes,
      process_id=args.process_id,
    )
  if args.fake_devices and jax.device_count() != args.fake_devices * max(
    jax.process_count(), 1
  ):
    fail(
      '--fake-devices needs XLA_FLAGS set before JAX starts: '
      'run this file as a program (python -m '
      'examples.sharded_training).',
    )
  devices = jax.devices()
  if args.devices:
    if jax.process_count() > 1:
      fail(
        '--devices picks devices of one process; with '
        f'{jax.process_count()} processes all devices are used',
      )
    if args.devices > len(devices):
      fail(
        f'--devices {args.devices}: only {len(devices)} '
        'devices here (--fake-devices N simulates N on a CPU)',
      )
    devices = devices[: args.devices]
  n = len(devices)
  try:
    batch, (data_axis, model_axis), chosen = choose_layout(
      n, args.batch, args.model_axis, args.hidden
    )
  except ValueError as e:
    fail(str(e))
  say = print if jax.process_index() == 0 else (lambda *a, **k: None)
  say(
    f'# python {platform.python_version()}, jax {jax.__version__}, '
    f'optax {optax.__version__}, pnm_optax {pnm_optax.__version__}'
  )
  say(
    f'backend {jax.default_backend()}: {n} devices '
    f'({devices[0].device_kind}), {jax.process_count()} process(es)'
  )

  auto = jax.sharding.AxisType.Auto
  fsdp_mesh = jax.make_mesh(
    (data_axis, model_axis),
    ('data', 'model'),
    axis_types=(auto,) * 2,
    devices=devices,
  )
  params0 = init_params(args.hidden, args.seed)
  fsdp_specs, replicated = fit_specs(
    FSDP_SPECS,
    {k: v.shape for k, v in params0.items()},
    {'data': data_axis, 'model': model_axis},
  )
  meshes = {
    'dp': (
      jax.make_mesh((n,), ('data',), axis_types=(auto,), devices=devices),
      None,
    ),
    'fsdp': (fsdp_mesh, fsdp_specs),
  }
  n_params = sum(a.size for a in params0.values())
  say(
    f'MLP {IN_DIM}-{args.hidden}-{args.hidden}-{CLASSES} ({n_params} '
    f'parameters), {args.optimizer}, global batch {batch}, '
    f'{args.steps} steps; fsdp mesh data={data_axis} x model={model_axis}'
  )
  for note in (chosen, replicated):
    if note:
      say(f'# {note}')

  results = {}
  for mode in args.modes:
    opt = make_optimizer(args.optimizer)
    batches = global_batches(args.steps, batch, args.seed)
    if mode == 'single':
      results[mode] = run_single(opt, params0, batches, devices)
    elif mode == 'pmap':
      results[mode] = run_pmap(opt, params0, batches, devices)
    else:
      mesh, specs = meshes[mode]
      specs = specs or {k: P() for k in params0}
      results[mode] = run_mesh(opt, params0, batches, mesh, specs)

  layout = {
    'single': '1 device',
    'pmap': f'pmap over {n}',
    'dp': f'mesh data={n}',
    'fsdp': f'mesh data={data_axis} x model={model_axis}',
  }
  ref = results.get('single')
  base_ms = (
    np.median(ref[2][WARMUP:]) * 1e3 if ref and args.steps > WARMUP else None
  )
  say(
    '\n| mode | layout | first loss | final loss | rel. diff. vs single '
    '| opt. state on device 0 (KiB) | median step (ms) | vs single |'
  )
  say('|---|---|---|---|---|---|---|---|')
  for mode, (params, losses, times, state_bytes) in results.items():
    diff = f'{_rel_err(params, ref[0]):.1e}' if ref else 'n/a'
    ms = (
      np.median(times[WARMUP:]) * 1e3 if len(times) > WARMUP else float('nan')
    )
    ratio = f'{ms / base_ms:.2f}x' if base_ms else 'n/a'
    say(
      f'| {mode} | {layout[mode]} | {losses[0]:.4f} | {losses[-1]:.4f} | '
      f'{diff} | {state_bytes / 1024:.1f} | {ms:.2f} | {ratio} |'
    )
  if jax.process_count() > 1:
    jax.distributed.shutdown()


if __name__ == '__main__':
  main(build_parser().parse_args())
