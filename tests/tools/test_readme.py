"""The Python snippets of README and the guides run as written."""

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pnm_optax
from tests.helpers import REPO, rel_err
from tests.reference import ReferencePNM

README = REPO / 'README.md'
USAGE = REPO / 'docs' / 'usage.md'
MULTIDEVICE = REPO / 'docs' / 'multidevice.md'


def _snippet(page: pathlib.Path, marker: str) -> str:
  blocks = re.findall(r'```python\n(.*?)```', page.read_text(), re.S)
  found = [b for b in blocks if marker in b]
  assert len(found) == 1, f'one {page.name} snippet with {marker!r}: {found}'
  return found[0]


SNIPPETS = dict(
  loop=_snippet(README, 'jax.grad(loss)'),
  flax=_snippet(README, 'nnx.Optimizer'),
  inject=_snippet(USAGE, 'inject_hyperparams(pnm_optax.pnm)'),
  shardings=_snippet(MULTIDEVICE, 'out_shardings=state_shardings'),
)


def test_readme_fits_a_screenful_or_two():
  assert len(README.read_text().splitlines()) <= 130


def test_optax_loop_runs_as_written_and_matches_the_reference(capsys):
  """README's first example, run as a program would: its printed loss is the
  one its comment shows, and its parameters are the float64 reference's."""
  ns: dict = {}
  exec(SNIPPETS['loop'], ns)
  printed = capsys.readouterr().out.strip()
  assert f'# {printed}' in SNIPPETS['loop'], printed
  x, y = np.asarray(ns['x'], np.float64), np.asarray(ns['y'], np.float64)
  ref = ReferencePNM([np.zeros(3), np.zeros(())], b0=1.0, weight_decay=1e-4)
  for _ in range(300):
    w, b = ref.params
    r = x @ w + b - y
    grads = [2 * x.T @ r / len(r), 2 * np.mean(r)]
    ref.step(grads, lr=0.1)
  assert rel_err(ns['params']['w'], ref.params[0]) < 1e-4
  assert abs(float(ns['params']['b']) - float(ref.params[1])) < 1e-5


def test_flax_snippet_steps_with_decay_on_kernels_only():
  """One step of README's NNX example against PNM's first step written out:
  ``p - lr ((1 + b0)(1 - b1^2) g / sqrt(5) + wd p)``, decay on kernels only."""
  ns = _namespace()
  exec(SNIPPETS['flax'], ns)
  model, optimizer = ns['model'], ns['optimizer']
  x = jax.random.normal(jax.random.key(1), (16, 3))
  y = jnp.ones((16, 1))
  before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
  grads = jax.tree.map(
    np.asarray,
    nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model),
  )
  ns['train_step'](model, optimizer, x, y)
  after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
  lr, wd, kernels = 0.1, 5e-4, 0
  for path, p in jax.tree_util.tree_leaves_with_path(before):
    g = _at(grads, path)
    decay = wd * p if p.ndim > 1 else 0.0
    kernels += p.ndim > 1
    expected = p - lr * (2 * (1 - 0.81) * g / np.sqrt(5) + decay)
    np.testing.assert_allclose(_at(after, path), expected, rtol=1e-5, atol=1e-7)
  assert kernels == 2


def _at(tree, path):
  for key in path:
    tree = tree[getattr(key, 'key', getattr(key, 'idx', None))]
  return tree


def _namespace(**extra):
  return dict(jax=jax, jnp=jnp, optax=optax, pnm_optax=pnm_optax, **extra)


def test_inject_hyperparams_snippet_changes_the_rate():
  params = {'w': jnp.ones((4, 3)), 'b': jnp.zeros((3,))}
  ns = _namespace(params=params)
  exec(SNIPPETS['inject'], ns)
  opt, opt_state = ns['opt'], ns['opt_state']
  assert float(opt_state.hyperparams['learning_rate']) == 0.05
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = opt.update(grads, opt_state, params)
  # b0 = 1 at step 0: each leaf moves by lr * 2 * (1 - b1^2) / sqrt(5).
  np.testing.assert_allclose(
    updates['w'], -0.05 * 2 * 0.19 / np.sqrt(5), rtol=1e-6
  )


# Runs docs/multidevice.md's shardings snippet on 8 CPU devices (XLA_FLAGS must be set
# before JAX is imported, hence a subprocess); prints one JSON line.
_SHARDINGS_CHILD = """
import json, sys
import jax, jax.numpy as jnp, optax, pnm_optax
from jax.sharding import NamedSharding, PartitionSpec as P

assert jax.device_count() == 8, jax.devices()
mesh = jax.make_mesh((2, 4), ('data', 'model'))
params = {'w1': jnp.ones((8, 16)), 'b1': jnp.zeros((16,)),
          'w2': jnp.ones((16, 4)), 'b2': jnp.zeros((4,))}
x, y = jnp.ones((8, 8)), jnp.zeros((8, 4))

def loss_fn(params, x, y):
    h = jnp.tanh(x @ params['w1'] + params['b1'])
    return jnp.mean((h @ params['w2'] + params['b2'] - y) ** 2)

opt = pnm_optax.adapnm(1e-3)
ns = dict(jax=jax, jnp=jnp, optax=optax, pnm_optax=pnm_optax, opt=opt,
          params=params, loss_fn=loss_fn, x=x, y=y)
exec(sys.argv[1], ns)
param_shardings = ns['param_shardings']
state = ns['opt_state'][0]
buffers = {}
for field in ('mu_odd', 'mu_even', 'nu', 'nu_max'):
    for name, x in getattr(state, field).items():
        buffers[f'{field}/{name}'] = dict(
            same=x.sharding.is_equivalent_to(param_shardings[name], x.ndim),
            devices=len(x.sharding.device_set),
            shard=list(x.addressable_shards[0].data.shape))
print(json.dumps(dict(
    buffers=buffers,
    count_replicated=state.count.sharding.is_fully_replicated,
    count_devices=len(state.count.sharding.device_set))))
"""


def test_shardings_snippet_places_state_like_params():
  """On a (2, 4) mesh of 8 devices, after a donated sharded step, every
  buffer is split like its parameter (the same per-device block) and the step
  count is replicated."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  flags = env.get('XLA_FLAGS', '').split()
  flags = [f for f in flags if 'host_platform_device_count' not in f]
  env['XLA_FLAGS'] = ' '.join(
    [*flags, '--xla_force_host_platform_device_count=8']
  )
  proc = subprocess.run(
    [sys.executable, '-c', _SHARDINGS_CHILD, SNIPPETS['shardings']],
    cwd=README.parent,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  # (8, 16) over (2, 4); (16,) over 4; (16, 4) over 4 rows; b2 replicated.
  blocks = {'w1': [4, 4], 'b1': [4], 'w2': [4, 4], 'b2': [4]}
  assert len(out['buffers']) == 4 * 4
  for key, buffer in out['buffers'].items():
    assert buffer['same'], key
    assert buffer['devices'] == 8, key
    assert buffer['shard'] == blocks[key.split('/')[1]], key
  assert out['count_replicated'] and out['count_devices'] == 8


if __name__ == '__main__':
  pytest.main([__file__])
