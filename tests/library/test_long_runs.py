"""Very long runs: past int32's largest step count the parity alternates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pnm_optax
from tests import helpers
from tests.reference import ReferencePNM

INT32_MAX = 2**31 - 1
START = INT32_MAX - 4  # steps already taken


def _scale_state(state):
  return next(s for s in state if hasattr(s, 'mu_odd'))


@pytest.mark.parametrize('adaptive', [False, True])
def test_parity_alternates_past_int32_saturation(adaptive):
  rng = np.random.default_rng(0)
  init = [rng.normal(size=(5,)), rng.normal(size=(2, 3))]
  ref = ReferencePNM(init, adaptive=adaptive, weight_decay=1e-2)
  ref.step_count = START
  lr = 1e-2
  opt = (pnm_optax.adapnm if adaptive else pnm_optax.pnm)(lr, weight_decay=1e-2)
  params = [jnp.asarray(p, jnp.float32) for p in init]
  state = opt.init(params)
  state = (state[0]._replace(count=jnp.asarray(START, jnp.int32)), *state[1:])
  step = jax.jit(opt.update)
  counts, written = [], []
  for _ in range(12):  # saturates after 4 steps
    before = _scale_state(state)
    grads = [rng.normal(size=p.shape) for p in init]
    ref.step(grads, lr)
    updates, state = step(
      [jnp.asarray(g, jnp.float32) for g in grads], state, params
    )
    params = optax.apply_updates(params, updates)
    after = _scale_state(state)
    counts.append(int(after.count))
    changed = [
      not all(
        np.array_equal(a, b)
        for a, b in zip(
          jax.tree.leaves(getattr(before, k)),
          jax.tree.leaves(getattr(after, k)),
        )
      )
      for k in ('mu_odd', 'mu_even')
    ]
    written.append(changed)
  assert counts[:4] == [INT32_MAX - 3, INT32_MAX - 2, INT32_MAX - 1, INT32_MAX]
  assert counts[4:] == [INT32_MAX - 1, INT32_MAX] * 4
  # Step START + 1 = 2**31 - 4 is even: mu_even first, then alternating.
  assert written == [[False, True], [True, False]] * 6
  assert helpers.rel_err(params, ref.params) < 1e-5
