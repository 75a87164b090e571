"""pnm_optax under pmap, jit with shardings, and jax.distributed.

The suite runs in one process with one CPU device, so everything that needs
more devices runs in subprocesses (``python -m`` from the repository root;
the scripts are in ``tests/integration/multidevice/``):

* ``eight_devices.py``, with 8 CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=8``), measures pmap
  training, state shardings on a (2, 4) mesh (Auto and Explicit axes) and
  the collectives in the compiled update; it writes JSON and the tests below
  assert on it.
* ``examples/sharded_training.py`` (the example) runs with 4 fake devices
  as a smoke test of the documented command, and with 6, 3, 8 and 1 to check
  that it picks a mesh (or says which sizes to use) for any device count.
* ``distributed_worker.py`` is started twice as a 2-process
  ``jax.distributed`` job on 127.0.0.1, plus once on a single device.

The reference for every trajectory is an independent plain ``jit`` run on one
device over the concatenated (global) batch.
"""

import json
import os
import socket
import subprocess
import sys
import time

import chex
import numpy as np
import pytest

from tests.helpers import REPO

STEPS = 6  # problem.STEPS
OPTIMIZERS = ('pnm', 'adapnm')
AXIS_TYPES = ('auto', 'explicit')
HLO_CASES = (
  'scale_by_pnm',
  'pnm',
  'pnm_schedules_wd',
  'adapnm',
  'adapnm_no_amsgrad_bf16',
)
ABSTRACT_INIT_CASES = (
  'pnm',
  'adapnm_no_amsgrad',
  'chain_clip_adapnm',
  'inject_hyperparams_pnm',
)

# Data-parallel and single-device runs differ only in float32 reduction order
# (per-shard means then a cross-device mean, vs one mean over the batch);
# measured relative errors are ~1e-8 after 6 steps, so 1e-5 leaves a wide
# margin while still catching any real difference (a wrong step is O(1e-2)).
TRAJECTORY_RTOL = 1e-5
SUBPROCESS_TIMEOUT_S = 300


def _env(device_count: int | None = None) -> dict:
  """The current environment, CPU only, with ``device_count`` host devices."""
  env = dict(os.environ)
  env['JAX_PLATFORMS'] = 'cpu'
  flags = [
    f
    for f in env.get('XLA_FLAGS', '').split()
    if not f.startswith('--xla_force_host_platform_device_count')
  ]
  if device_count is not None:
    flags.append(f'--xla_force_host_platform_device_count={device_count}')
  env['XLA_FLAGS'] = ' '.join(flags)
  return env


@pytest.fixture(scope='module')
def eight(tmp_path_factory) -> dict:
  """Runs ``eight_devices.py`` once; returns its measurements."""
  out = tmp_path_factory.mktemp('eight_devices') / 'results.json'
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'tests.integration.multidevice.eight_devices',
      str(out),
    ],
    cwd=REPO,
    env=_env(8),
    capture_output=True,
    text=True,
    timeout=SUBPROCESS_TIMEOUT_S,
  )
  if proc.returncode != 0:
    pytest.fail(
      f'eight_devices.py failed (rc {proc.returncode}):\n'
      f'{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}'
    )
  return json.loads(out.read_text())


def test_every_case_was_measured(eight):
  assert set(eight['pmap']) == set(OPTIMIZERS)
  assert set(eight['sharded']) == {
    f'{a}/{o}' for a in AXIS_TYPES for o in OPTIMIZERS
  }
  assert set(eight['hlo']) == {
    f'{a}/{c}' for a in AXIS_TYPES for c in HLO_CASES
  }
  assert set(eight['abstract_init']) == {
    f'{a}/{c}' for a in AXIS_TYPES for c in ABSTRACT_INIT_CASES
  }


# ----------------------------------------------------------------- pmap ---


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_pmap_trajectory_matches_single_device(eight, name):
  r = eight['pmap'][name]
  assert r['devices'] == 8
  assert r['reference_moved'] > 1e-3, 'the reference run did not train'
  assert len(r['step_rel_errors']) == STEPS
  assert max(r['step_rel_errors']) < TRAJECTORY_RTOL, r['step_rel_errors']
  assert r['state_rel_error'] < TRAJECTORY_RTOL


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_pmap_state_is_replicated(eight, name):
  r = eight['pmap'][name]
  assert r['state_leading_dims'] == [8]  # one copy of every leaf per device
  assert r['param_replica_spread'] == 0.0  # bitwise identical replicas
  assert r['state_replica_spread'] == 0.0


# ------------------------------------------------------------ shardings ---

SHARDED = [f'{a}/{o}' for a in AXIS_TYPES for o in OPTIMIZERS]


@pytest.mark.parametrize('case', SHARDED)
@pytest.mark.parametrize(
  'stage', ['eager_init', 'jit_init_out_shardings', 'after_steps']
)
def test_state_sharded_like_params(eight, case, stage):
  """Every buffer has its parameter's sharding; count is replicated."""
  checked, mismatches = eight['sharded'][case][stage]
  assert checked == (9 if case.endswith('/pnm') else 17)
  assert mismatches == []


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_explicit_axes_jit_init_follows_param_types(eight, name):
  checked, mismatches = eight['sharded'][f'explicit/{name}']['jit_init_types']
  assert checked > 0 and mismatches == []


@pytest.mark.parametrize('case', SHARDED)
def test_sharded_steps_keep_param_shardings(eight, case):
  r = eight['sharded'][case]
  assert r['init_is_zero']
  assert r['count'] == STEPS
  assert r['params_moved_shardings'] == []


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_sharded_trajectory_matches_single_device(eight, name):
  errors = eight['sharded'][f'auto/{name}']['step_rel_errors']
  assert len(errors) == STEPS
  assert max(errors) < TRAJECTORY_RTOL, errors


@pytest.mark.parametrize(
  'case', [f'{a}/{c}' for a in AXIS_TYPES for c in HLO_CASES]
)
def test_update_hlo_has_no_collectives(eight, case):
  r = eight['hlo'][case]
  assert r['collectives'] == []
  # It really ran on shards: w1's (8, 8) blocks, never the full (16, 32).
  assert r['w1_shard_shape_present']
  assert not r['w1_full_shape_present']


@pytest.mark.parametrize('axis_type', AXIS_TYPES)
def test_collective_search_finds_global_norm_all_reduce(eight, axis_type):
  """Positive control: clip_by_global_norm must reduce across shards."""
  assert 'all-reduce' in eight['hlo_control'][axis_type]['collectives']


@pytest.mark.parametrize(
  'case', [f'{a}/{c}' for a in AXIS_TYPES for c in ABSTRACT_INIT_CASES]
)
def test_abstract_init_gives_out_shardings(eight, case):
  r = eight['abstract_init'][case]
  assert r['checked'] > 0
  assert r['mismatches'] == []
  assert r['as_asked']
  assert r['same_structure']
  assert r['values_rel_error'] == 0.0  # same values as an unsharded init


# ---------------------------------------------------------- multi-host ---


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_all(commands, timeout_s):
  """Runs commands concurrently; returns (return codes, outputs).

  Every child still running at the deadline (or on any error) is killed.
  """
  procs = []
  try:
    for command in commands:
      procs.append(
        subprocess.Popen(
          [
            sys.executable,
            '-m',
            'tests.integration.multidevice.distributed_worker',
            *command,
          ],
          cwd=REPO,
          env=_env(1),
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
        )
      )
    deadline = time.monotonic() + timeout_s
    outputs = []
    for proc in procs:
      try:
        outputs.append(
          proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
        )
      except subprocess.TimeoutExpired:
        pytest.fail(f'worker {proc.args} timed out after {timeout_s} s')
    return [p.returncode for p in procs], outputs
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_two_processes_train_like_one(tmp_path):
  """2-process jax.distributed data parallelism equals one process."""
  port = _free_port()
  outs = [tmp_path / f'{name}.npz' for name in ('p0', 'p1', 'single')]
  codes, logs = _run_all(
    [
      [
        str(outs[i]),
        '--port',
        str(port),
        '--process-id',
        str(i),
        '--num-processes',
        '2',
      ]
      for i in range(2)
    ]
    + [[str(outs[2])]],
    timeout_s=SUBPROCESS_TIMEOUT_S,
  )
  assert codes == [0, 0, 0], '\n'.join(log[-3000:] for log in logs)

  p0, p1, single = (dict(np.load(path)) for path in outs)
  assert int(p0['global_devices']) == int(p1['global_devices']) == 2
  assert int(single['global_devices']) == 1
  assert int(p0['count']) == int(p1['count']) == int(single['count']) == STEPS
  names = ['w1', 'b1', 'w2', 'b2']
  # Both processes hold bitwise identical parameters.
  chex.assert_trees_all_equal(
    {n: p0[n] for n in names}, {n: p1[n] for n in names}, strict=True
  )
  flat = lambda d: np.concatenate(
    [d[n].ravel().astype(np.float64) for n in names]
  )
  rel = np.linalg.norm(flat(p0) - flat(single)) / np.linalg.norm(flat(single))
  assert rel < TRAJECTORY_RTOL

  init = {n: single[f'init_{n}'] for n in names}
  assert np.linalg.norm(flat(single) - flat(init)) > 1e-3 * np.linalg.norm(
    flat(init)
  ), 'the run did not train'


# ------------------------------------------------------------- example ---


def _example(*flags) -> subprocess.CompletedProcess:
  """Runs the documented example with ``flags``."""
  return subprocess.run(
    [sys.executable, '-m', 'examples.sharded_training', *flags],
    cwd=REPO,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=SUBPROCESS_TIMEOUT_S,
  )


def _mode_rows(stdout: str) -> dict:
  """``mode -> cells`` of the example's table; asserts every mode ran."""
  rows = {}
  for line in stdout.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if cells[0] in ('single', 'pmap', 'dp', 'fsdp'):
      rows[cells[0]] = cells
  assert set(rows) == {'single', 'pmap', 'dp', 'fsdp'}, stdout
  return rows


def test_example_script_runs_and_agrees(tmp_path):
  """The documented example, small: every mode matches the single device."""
  proc = _example(
    '--fake-devices', '4', '--steps', '3', '--hidden', '64', '--batch', '32'
  )
  assert proc.returncode == 0, proc.stderr[-6000:]
  assert 'backend cpu: 4 devices' in proc.stdout
  rows = _mode_rows(proc.stdout)
  for mode, cells in rows.items():
    assert float(cells[4]) < TRAJECTORY_RTOL, (mode, cells)  # vs single
  # FSDP shards the optimizer state: less of it on device 0 than replicated.
  assert float(rows['fsdp'][5]) < float(rows['dp'][5]) / 2


@pytest.mark.parametrize(
  'devices, batch, mesh',
  [
    (6, 258, 'data=3 x model=2'),  # the multiple of 6 nearest 256
    (3, 255, 'data=3 x model=1'),
    (8, 256, 'data=4 x model=2'),
    (1, 256, 'data=1 x model=1'),
  ],
)
def test_example_picks_a_mesh_for_any_device_count(devices, batch, mesh):
  proc = _example(
    '--fake-devices', str(devices), '--steps', '3', '--hidden', '64'
  )
  assert proc.returncode == 0, proc.stderr[-6000:]
  assert f'backend cpu: {devices} devices' in proc.stdout
  assert f'global batch {batch}, 3 steps; fsdp mesh {mesh}' in proc.stdout
  rows = _mode_rows(proc.stdout)
  assert rows['fsdp'][1] == f'mesh {mesh}'
  for mode, cells in rows.items():
    assert float(cells[4]) < TRAJECTORY_RTOL, (mode, cells)  # vs single


@pytest.mark.parametrize(
  'flags, message',
  [
    (
      ('--fake-devices', '6', '--batch', '32'),
      '--batch 32 does not split over 6 devices: use a multiple of 6 '
      '(e.g. --batch 36 or 30), or --devices 4',
    ),
    (
      ('--fake-devices', '6', '--model-axis', '4'),
      '--model-axis 4 does not divide 6 devices: use one of [1, 2, 3, 6]',
    ),
    (('--fake-devices', '2', '--devices', '3'), '--devices 3: only 2 devices'),
    (('--fake-devices', '2', '--modes', 'dp,zero'), "unknown mode(s) 'zero'"),
    (
      (
        '--fake-devices',
        '-2',
      ),
      '-2 is not >= 1',
    ),
  ],
)
def test_example_says_which_sizes_to_use_in_one_line(flags, message):
  proc = _example(*flags)
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if 'error:' in l]
  assert len(errors) == 1 and message in errors[0], proc.stderr
  assert 'Traceback' not in proc.stderr
