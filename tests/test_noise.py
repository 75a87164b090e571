"""b0 is the noise knob: steady-state statistics of the PN direction.

With gradients g_t = mu + sigma * xi_t (xi i.i.d. standard normal), the two
buffers average disjoint gradients, so they are independent EMAs with decay
beta = b1^2: E[m] = mu and Var[m] = sigma^2 (1 - beta) / (1 + beta). Hence,
with n = sqrt((1 + b0)^2 + b0^2):

  E[u] = mu / n,    Var[u] = Var[m],    noise-to-signal = sqrt(Var[m]) n / mu.

The normalisation keeps the noise variance of EMA momentum, shrinks the mean
step by 1 / n, so the noise-to-signal ratio grows with b0.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pnm_optax


@pytest.mark.parametrize('b0', [0.0, 1.0, 2.0])
def test_pn_direction_statistics(b0):
  dim, steps, burn_in, mu, sigma, b1 = 4096, 2000, 200, 0.5, 1.0, 0.9
  opt = pnm_optax.scale_by_pnm(b1=b1, b0=b0)

  def body(state, key):
    updates, state = opt.update(
      mu + sigma * jax.random.normal(key, (dim,)), state
    )
    return state, updates

  keys = jax.random.split(jax.random.key(0), steps)
  _, directions = jax.jit(
    lambda: jax.lax.scan(body, opt.init(jnp.zeros(dim)), keys)
  )()
  directions = np.asarray(directions[burn_in:], np.float64)
  beta, n = b1**2, np.hypot(1 + b0, b0)
  var_m = sigma**2 * (1 - beta) / (1 + beta)
  assert directions.mean() == pytest.approx(mu / n, rel=5e-3)
  assert directions.var() == pytest.approx(var_m, rel=2e-2)
  assert directions.std() / directions.mean() == pytest.approx(
    np.sqrt(var_m) * n / mu, rel=2e-2
  )
