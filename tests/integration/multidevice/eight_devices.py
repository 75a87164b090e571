"""Multi-device measurements on 8 CPU devices, run in a subprocess.

``tests/integration/test_multidevice.py`` runs this script with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set before JAX is
imported, so the rest of the suite keeps one device) and asserts on the JSON
it writes: usage, from the repository root,
``python -m tests.integration.multidevice.eight_devices OUT.json``.

It measures, it does not judge: trajectory errors against a plain single-device
run, spreads between pmap replicas, state shardings against parameter
shardings, and the collectives found in compiled HLO.
"""

import contextlib
import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import pnm_optax
from tests.helpers import rel_err
from tests.integration.multidevice import problem

# A (2, 4) mesh; w1 is FSDP + tensor-parallel, the rest tensor-parallel or
# replicated, so every kind of leaf sharding is present.
MESH_SHAPE, MESH_AXES = (2, 4), ('data', 'model')
PARAM_SPECS = {
  'w1': P('data', 'model'),
  'b1': P('model'),
  'w2': P('model', None),
  'b2': P(),
}
W1_SHARD = 'f32[8,8]'  # per-device block of w1 (16, 32) on the (2, 4) mesh
W1_FULL = 'f32[16,32]'  # w1 unsharded: must not appear in a sharded update
COLLECTIVE = re.compile(
  r'\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter|'
  r'collective-broadcast)'
)

# Optimizer update configurations whose compiled HLO is searched.
HLO_CASES = {
  'scale_by_pnm': lambda: pnm_optax.scale_by_pnm(),
  'pnm': lambda: pnm_optax.pnm(0.1),
  'pnm_schedules_wd': lambda: pnm_optax.pnm(
    optax.cosine_decay_schedule(0.1, 100),
    b0=optax.linear_schedule(1.0, 0.0, 100),
    weight_decay=1e-4,
  ),
  'adapnm': lambda: pnm_optax.adapnm(1e-3, weight_decay=1e-2),
  'adapnm_no_amsgrad_bf16': lambda: pnm_optax.adapnm(
    1e-3, amsgrad=False, mu_dtype=jnp.bfloat16
  ),
}
# Positive control: global-norm clipping needs an all-reduce over the shards.
CONTROL_CASE = lambda: optax.chain(
  optax.clip_by_global_norm(1.0), pnm_optax.pnm(0.1)
)

# Optimizers whose abstract init must give usable out_shardings.
ABSTRACT_INIT_CASES = {
  'pnm': lambda: pnm_optax.pnm(0.1),
  'adapnm_no_amsgrad': lambda: pnm_optax.adapnm(amsgrad=False),
  'chain_clip_adapnm': lambda: optax.chain(
    optax.clip_by_global_norm(1.0), pnm_optax.adapnm(1e-3)
  ),
  'inject_hyperparams_pnm': lambda: optax.inject_hyperparams(pnm_optax.pnm)(
    learning_rate=0.1, b0=0.5
  ),
}


# ----------------------------------------------------------------- pmap ---


def _replica_spread(tree) -> float:
  """Largest |leaf[i] - leaf[0]| over replicas i and all leaves."""
  spread = 0.0
  for leaf in jax.tree.leaves(tree):
    leaf = np.asarray(leaf, np.float64)
    spread = max(spread, float(np.max(np.abs(leaf - leaf[:1]), initial=0.0)))
  return spread


def pmap_case(name: str) -> dict:
  """pmap data parallelism with pmean'd gradients vs one device."""
  opt = problem.OPTIMIZERS[name]()
  n = jax.local_device_count()
  params0 = problem.init_params()
  xs, ys = problem.batches()
  ref_traj, ref_state = problem.single_device_run(opt, params0, xs, ys)

  def step(params, state, x, y):
    grads = jax.grad(problem.loss_fn)(params, x, y)
    grads = jax.lax.pmean(grads, axis_name='batch')
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  p_step = jax.pmap(step, axis_name='batch')
  params = jax.tree.map(lambda a: np.broadcast_to(a, (n,) + a.shape), params0)
  state = jax.pmap(opt.init)(params)
  errors, spread = [], 0.0
  for x, y in zip(xs, ys):
    params, state = p_step(
      params, state, x.reshape(n, -1, problem.IN), y.reshape(n, -1, problem.OUT)
    )
    host = jax.tree.map(np.asarray, params)
    spread = max(spread, _replica_spread(host))
    errors.append(
      rel_err(jax.tree.map(lambda a: a[0], host), ref_traj[len(errors)])
    )
  state = jax.tree.map(np.asarray, state)
  return {
    'devices': n,
    'reference_moved': rel_err(ref_traj[-1], params0),
    'step_rel_errors': errors,
    'state_rel_error': rel_err(jax.tree.map(lambda a: a[0], state), ref_state),
    'param_replica_spread': spread,
    'state_replica_spread': _replica_spread(state),
    'state_leading_dims': sorted(
      {int(np.shape(a)[0]) for a in jax.tree.leaves(state)}
    ),
  }


# ------------------------------------------------------------ shardings ---


def _mesh(axis_type):
  return jax.make_mesh(MESH_SHAPE, MESH_AXES, axis_types=(axis_type,) * 2)


def _mesh_context(mesh):
  """Explicit meshes need ``jax.set_mesh`` around ``jit``; Auto ones do not."""
  if mesh.axis_types[0] == AxisType.Explicit:
    return jax.set_mesh(mesh)
  return contextlib.nullcontext()


def _sharded_params(mesh, params):
  return {
    k: jax.device_put(v, NamedSharding(mesh, PARAM_SPECS[k]))
    for k, v in params.items()
  }


def _state_shardings(opt, params, mesh):
  """State shardings from the abstract init: param-like trees get the
  parameters' shardings (optax.tree.map_params), the rest is replicated."""
  abstract = jax.eval_shape(opt.init, params)
  return optax.tree.map_params(
    opt,
    lambda _, p: p.sharding,
    abstract,
    params,
    transform_non_params=lambda _: NamedSharding(mesh, P()),
  )


def _sharding_mismatches(opt, state, params, mesh, count_on_mesh=True):
  """Describes every state leaf whose sharding is not its parameter's.

  Param-like leaves (found with optax.tree.map_params) must be sharded like
  their parameter; other leaves (count, hyperparameters) fully replicated,
  over the whole mesh unless ``count_on_mesh`` is False (eager init leaves
  them uncommitted on one device, as optax does).
  Returns ``(number of leaves checked, list of mismatch descriptions)``.
  """
  expected = optax.tree.map_params(
    opt,
    lambda _, p: p.sharding,
    state,
    params,
    transform_non_params=lambda _: 'replicated',
  )
  paths_leaves, _ = jax.tree_util.tree_flatten_with_path(state)
  wants = jax.tree.leaves(expected)
  assert len(wants) == len(paths_leaves)
  mesh_devices = set(mesh.devices.flat)
  problems = []
  for (path, leaf), want in zip(paths_leaves, wants):
    got = leaf.sharding
    where = jax.tree_util.keystr(path)
    if want == 'replicated':
      if not got.is_fully_replicated:
        problems.append(f'{where}: {got} is not replicated')
      elif count_on_mesh and set(got.device_set) != mesh_devices:
        problems.append(f'{where}: {got} is not on the whole mesh')
    elif not got.is_equivalent_to(want, leaf.ndim):
      problems.append(f'{where}: {got} != parameter sharding {want}')
  return len(paths_leaves), problems


def _same_param_shardings(params, sharded_before) -> list:
  return [
    k
    for k in params
    if not params[k].sharding.is_equivalent_to(
      sharded_before[k].sharding, params[k].ndim
    )
  ]


def sharded_case(axis_type, name: str) -> dict:
  """Init, training steps and their state shardings on a (2, 4) mesh."""
  opt = problem.OPTIMIZERS[name]()
  mesh = _mesh(axis_type)
  params0 = problem.init_params()
  xs, ys = problem.batches()
  out = {}
  with _mesh_context(mesh):
    params = _sharded_params(mesh, params0)
    out['eager_init'] = _sharding_mismatches(
      opt, opt.init(params), params, mesh, count_on_mesh=False
    )
    state = jax.jit(
      opt.init, out_shardings=_state_shardings(opt, params, mesh)
    )(params)
    out['jit_init_out_shardings'] = _sharding_mismatches(
      opt, state, params, mesh
    )
    out['init_is_zero'] = all(
      not np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(state)
    )
    if axis_type == AxisType.Explicit:
      # Shardings are part of the types: plain jit(init) follows the params.
      out['jit_init_types'] = _sharding_mismatches(
        opt, jax.jit(opt.init)(params), params, mesh
      )

    if axis_type == AxisType.Auto:
      # The whole train step; GSPMD propagates shardings from the inputs.
      step = jax.jit(problem.train_step_fn(opt), donate_argnums=(0, 1))
      batch_sharding = NamedSharding(mesh, P('data'))
      ref_traj, _ = problem.single_device_run(opt, params0, xs, ys)
      errors = []
      for x, y in zip(xs, ys):
        params, state, _ = step(
          params,
          state,
          jax.device_put(x, batch_sharding),
          jax.device_put(y, batch_sharding),
        )
        errors.append(rel_err(params, ref_traj[len(errors)]))
      out['step_rel_errors'] = errors
    else:
      # The optimizer alone (a model under Explicit axes must reshard its
      # FSDP weights itself, which is not the optimizer's business).
      update = jax.jit(opt.update)
      rng = np.random.default_rng(2)
      for _ in range(problem.STEPS):
        grads = jax.tree.map(
          lambda p: jax.device_put(
            rng.normal(size=p.shape).astype(np.float32), p.sharding
          ),
          params,
        )
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    out['after_steps'] = _sharding_mismatches(opt, state, params, mesh)
    out['params_moved_shardings'] = _same_param_shardings(
      params, _sharded_params(mesh, params0)
    )
    out['count'] = int(jax.tree.leaves(state)[0])
  return out


def _sharded_inputs(opt, mesh):
  params = _sharded_params(mesh, problem.init_params())
  state = jax.jit(opt.init, out_shardings=_state_shardings(opt, params, mesh))(
    params
  )
  rng = np.random.default_rng(3)
  grads = jax.tree.map(
    lambda p: jax.device_put(
      rng.normal(size=p.shape).astype(np.float32), p.sharding
    ),
    params,
  )
  return grads, state, params


def hlo_case(axis_type, make_opt) -> dict:
  """Collectives and w1 buffer shapes in the compiled update alone."""
  opt = make_opt()
  mesh = _mesh(axis_type)
  with _mesh_context(mesh):
    grads, state, params = _sharded_inputs(opt, mesh)
    hlo = jax.jit(opt.update).lower(grads, state, params).compile().as_text()
  return {
    'collectives': sorted(set(COLLECTIVE.findall(hlo))),
    'w1_shard_shape_present': W1_SHARD in hlo,
    'w1_full_shape_present': W1_FULL in hlo,
  }


def abstract_init_case(axis_type, name: str) -> dict:
  """eval_shape + map_params shardings as out_shardings of a sharded init."""
  opt = ABSTRACT_INIT_CASES[name]()
  mesh = _mesh(axis_type)
  with _mesh_context(mesh):
    params = _sharded_params(mesh, problem.init_params())
    shardings = _state_shardings(opt, params, mesh)
    state = jax.jit(opt.init, out_shardings=shardings)(params)
    reference = opt.init(problem.init_params())  # unsharded, on one device
    checked, problems = _sharding_mismatches(opt, state, params, mesh)
    leaves, asked = jax.tree.leaves(state), jax.tree.leaves(shardings)
  return {
    'checked': checked,
    'mismatches': problems,
    'as_asked': len(leaves) == len(asked)
    and all(
      leaf.sharding.is_equivalent_to(want, leaf.ndim)
      for leaf, want in zip(leaves, asked)
    ),
    'values_rel_error': rel_err(state, reference),
    'same_structure': (
      jax.tree.structure(state) == jax.tree.structure(reference)
    ),
  }


def main(out_path: str) -> None:
  if jax.device_count() != 8:
    sys.exit(f'needs 8 devices (XLA_FLAGS), got {jax.devices()}')
  axis_types = {'auto': AxisType.Auto, 'explicit': AxisType.Explicit}
  results = {
    'versions': {'jax': jax.__version__, 'optax': optax.__version__},
    'pmap': {name: pmap_case(name) for name in problem.OPTIMIZERS},
    'sharded': {
      f'{a}/{name}': sharded_case(t, name)
      for a, t in axis_types.items()
      for name in problem.OPTIMIZERS
    },
    'hlo': {
      f'{a}/{name}': hlo_case(t, make)
      for a, t in axis_types.items()
      for name, make in HLO_CASES.items()
    },
    'hlo_control': {
      a: hlo_case(t, CONTROL_CASE) for a, t in axis_types.items()
    },
    'abstract_init': {
      f'{a}/{name}': abstract_init_case(t, name)
      for a, t in axis_types.items()
      for name in ABSTRACT_INIT_CASES
    },
  }
  with open(out_path, 'w') as f:
    json.dump(results, f, indent=1)


if __name__ == '__main__':
  main(sys.argv[1])
