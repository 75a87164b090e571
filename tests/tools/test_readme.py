"""README's Python snippets run as written, on the objects they assume."""

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

README = pathlib.Path(__file__).resolve().parents[2] / 'README.md'


def _snippets():
  blocks = re.findall(r'```python\n(.*?)```', README.read_text(), re.S)

  def find(marker):
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f'one README snippet with {marker!r}: {found}'
    return found[0]

  return dict(
    usage=find('optax.clip_by_global_norm'),
    inject=find('inject_hyperparams'),
    flax=find('nnx.Optimizer'),
    shardings=find('out_shardings'),
  )


SNIPPETS = _snippets()


def _params():
  return {'w': jnp.ones((4, 3)), 'b': jnp.zeros((3,))}


def _namespace(**extra):
  return dict(jax=jax, jnp=jnp, optax=optax, pnm_optax=pnm_optax, **extra)


def test_usage_snippet_takes_a_step():
  params = _params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  ns = _namespace(params=params, grads=grads)
  exec(SNIPPETS['usage'], ns)
  # The 15 gradients of 0.5 are clipped to global norm 1. Step 1 of PNM
  # writes the odd buffer: the direction is (1 + b0) m / n with
  # m = (1 - b1^2) g, n = sqrt((1 + b0)^2 + b0^2), plus decoupled decay.
  lr = 0.1
  clipped = 0.5 / np.sqrt(15 * 0.5**2)
  direction = 2 * (1 - 0.81) * clipped / np.sqrt(5)
  for name, p in params.items():
    expected = np.asarray(p) - lr * (direction + 5e-4 * np.asarray(p))
    np.testing.assert_allclose(ns['params'][name], expected, rtol=1e-6)
  assert int(ns['state'][1][0].count) == 1


def test_inject_hyperparams_snippet_changes_the_rate():
  ns = _namespace(params=_params())
  exec(SNIPPETS['inject'], ns)
  opt, opt_state = ns['opt'], ns['opt_state']
  assert float(opt_state.hyperparams['learning_rate']) == 0.05
  grads = jax.tree.map(jnp.ones_like, ns['params'])
  updates, _ = opt.update(grads, opt_state, ns['params'])
  # b0 = 1 at step 0: each leaf moves by lr * 2 * (1 - b1^2) / sqrt(5).
  np.testing.assert_allclose(
    updates['w'], -0.05 * 2 * 0.19 / np.sqrt(5), rtol=1e-6
  )


def test_flax_snippet_masks_decay_to_matrices():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  model.bias[...] = jnp.ones((2,))
  kernel = np.asarray(model.kernel[...])
  zero = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
  ns = _namespace(
    model=model, grads=zero, schedule=optax.constant_schedule(0.1)
  )
  exec(SNIPPETS['flax'], ns)
  # Zero gradients: only weight decay moves, and only the kernel.
  np.testing.assert_allclose(
    model.kernel[...], kernel * (1 - 0.1 * 5e-4), rtol=1e-6
  )
  np.testing.assert_array_equal(model.bias[...], np.ones(2))


# Runs README's shardings snippet on 8 CPU devices (XLA_FLAGS must be set
# before JAX is imported, hence a subprocess); prints one JSON line.
_SHARDINGS_CHILD = """
import json, sys
import jax, jax.numpy as jnp, optax, pnm_optax
from jax.sharding import NamedSharding, PartitionSpec as P

assert jax.device_count() == 8, jax.devices()
mesh = jax.make_mesh((2, 4), ('data', 'model'))
param_shardings = {
    'w': NamedSharding(mesh, P('data', 'model')),
    'b': NamedSharding(mesh, P('model')),
}
params = jax.device_put(
    {'w': jnp.ones((8, 16)), 'b': jnp.zeros((16,))}, param_shardings)
opt = pnm_optax.adapnm(1e-3)
ns = dict(jax=jax, jnp=jnp, optax=optax, pnm_optax=pnm_optax, opt=opt,
          params=params, param_shardings=param_shardings, mesh=mesh,
          NamedSharding=NamedSharding, P=P)
exec(sys.argv[1], ns)
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
  """On a (2, 4) mesh of 8 devices every buffer is split like its parameter
  (the same per-device block) and the step count is replicated."""
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
  blocks = {'w': [4, 4], 'b': [4]}  # (8, 16) over (2, 4); (16,) over 4
  assert len(out['buffers']) == 4 * 2
  for key, buffer in out['buffers'].items():
    assert buffer['same'], key
    assert buffer['devices'] == 8, key
    assert buffer['shard'] == blocks[key.split('/')[1]], key
  assert out['count_replicated'] and out['count_devices'] == 8


if __name__ == '__main__':
  pytest.main([__file__])
