"""README's Python snippets run as written, on the objects they assume."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import pnm_optax

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


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


def test_shardings_snippet_places_state_like_params():
  mesh = jax.make_mesh((1,), ('data',))
  params = _params()
  param_shardings = {
    'w': NamedSharding(mesh, P('data', None)),
    'b': NamedSharding(mesh, P()),
  }
  params = jax.device_put(params, param_shardings)
  opt = pnm_optax.adapnm(1e-3)
  ns = _namespace(
    opt=opt,
    params=params,
    param_shardings=param_shardings,
    mesh=mesh,
    NamedSharding=NamedSharding,
    P=P,
  )
  exec(SNIPPETS['shardings'], ns)
  state = ns['opt_state'][0]
  for buffers in (state.mu_odd, state.mu_even, state.nu, state.nu_max):
    for name, sharding in param_shardings.items():
      assert buffers[name].sharding.spec == sharding.spec
  assert state.count.sharding.spec == P()


if __name__ == '__main__':
  pytest.main([__file__])
