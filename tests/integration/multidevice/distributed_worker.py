"""One process of a data-parallel ``pnm`` run, for the multi-process test.

Usage, from the repository root::

  python -m tests.integration.multidevice.distributed_worker OUT.npz --port PORT \\
      --process-id I --num-processes N
  python -m tests.integration.multidevice.distributed_worker OUT.npz  # one device

With ``--port`` it joins a ``jax.distributed`` job on 127.0.0.1 (one CPU
device per process, gloo collectives), builds a global mesh over all
processes' devices, feeds each process its slice of every global batch and
trains ``problem.STEPS`` steps of ``pnm``; the gradient mean is an all-reduce
across processes. Without it, it trains on the whole batch on one device.
Either way it writes the final parameters (from this process's addressable
copy), the initial ones (``init_*``) and the step count to OUT.npz.
"""

import argparse
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tests.integration.multidevice import problem

OPTIMIZER = 'pnm'


def _use_gloo() -> None:
  """Selects gloo for CPU collectives where JAX still lets one choose."""
  try:
    if jax.config.jax_cpu_collectives_implementation != 'gloo':
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  except AttributeError:  # option gone: CPU collectives need no choice
    pass


def distributed_run(port: int, process_id: int, num_processes: int) -> dict:
  _use_gloo()
  jax.distributed.initialize(
    coordinator_address=f'127.0.0.1:{port}',
    num_processes=num_processes,
    process_id=process_id,
    initialization_timeout=60,
  )
  try:
    mesh = jax.make_mesh(
      (jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,)
    )
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P('data'))
    params0 = problem.init_params()
    params = jax.tree.map(
      lambda a: jax.make_array_from_callback(
        a.shape, replicated, lambda idx: a[idx]
      ),
      params0,
    )
    opt = problem.OPTIMIZERS[OPTIMIZER]()
    state = jax.jit(opt.init, out_shardings=replicated)(params)
    step = jax.jit(
      problem.train_step_fn(opt),
      donate_argnums=(0, 1),
      out_shardings=(replicated, replicated, replicated),
    )
    xs, ys = problem.batches()
    local = slice(
      process_id * problem.GLOBAL_BATCH // num_processes,
      (process_id + 1) * problem.GLOBAL_BATCH // num_processes,
    )
    for x, y in zip(xs, ys):
      x, y = (
        jax.make_array_from_process_local_data(batch_sharding, a[local])
        for a in (x, y)
      )
      params, state, _ = step(params, state, x, y)
    out = {k: np.asarray(v.addressable_data(0)) for k, v in params.items()}
    out['global_devices'] = np.asarray(jax.device_count())
    out['count'] = np.asarray(jax.tree.leaves(state)[0].addressable_data(0))
    return out
  finally:
    jax.distributed.shutdown()


def single_run() -> dict:
  xs, ys = problem.batches()
  trajectory, state = problem.single_device_run(
    problem.OPTIMIZERS[OPTIMIZER](), problem.init_params(), xs, ys
  )
  out = dict(trajectory[-1])
  out['global_devices'] = np.asarray(1)
  out['count'] = np.asarray(jax.tree.leaves(state)[0])
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('out')
  parser.add_argument('--port', type=int)
  parser.add_argument('--process-id', type=int, default=0)
  parser.add_argument('--num-processes', type=int, default=1)
  args = parser.parse_args()
  start = time.perf_counter()
  if args.port is None:
    out = single_run()
  else:
    out = distributed_run(args.port, args.process_id, args.num_processes)
  out.update({f'init_{k}': v for k, v in problem.init_params().items()})
  np.savez(args.out, **out)
  print(
    f'process {args.process_id}: done in {time.perf_counter() - start:.1f} s',
    flush=True,
  )


if __name__ == '__main__':
  main()
