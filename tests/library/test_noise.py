"""b0 is the noise knob: pnm_optax against the closed forms of
``tests/closed_forms.py`` (derived from the algorithm, not from the code), with
tolerances of 5 standard errors of each estimate (one fixed seed, so every run
is the same run)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pnm_optax
from tests import closed_forms as closed
from tests import compat, helpers

# Estimates from 2^14 samples: optimised compiles pay for themselves.
pytestmark = pytest.mark.long_compute

B1 = 0.9


@functools.partial(jax.jit, static_argnames='steps')
def _unit_gradient_steps(b0, b1, steps):
  """scale_by_pnm's directions and written buffers for g_t = e_t (b0 and b1
  traced: one compiled program for every value)."""
  tx = pnm_optax.scale_by_pnm(b1=b1, b0=b0)

  def body(state, g):
    u, state = tx.update(g, state)
    m = jnp.where(state.count % 2 == 1, state.mu_odd, state.mu_even)
    return state, (u, m)

  eye = jnp.eye(steps, dtype=jnp.float64)
  init = tx.init(jnp.zeros(steps, jnp.float64))
  return jax.lax.scan(body, init, eye)[1]


def _library_weights(b0, b1, steps):
  """(U, M) from ``pnm_optax.scale_by_pnm`` in float64: row t - 1 holds the
  weights of g_1 .. g_T in u_t (and in m_t, the buffer step t writes), read
  off by feeding unit gradients (g_t = e_t), one compiled loop."""
  with compat.enable_x64():
    u, m = _unit_gradient_steps(np.float64(b0), np.float64(b1), steps)
    return np.asarray(u), np.asarray(m)


@pytest.mark.parametrize('b0', [0.0, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize('b1', [0.9, 0.5])
def test_the_library_follows_the_closed_forms(b0, b1):
  """Per-step and summed weights of every gradient in scale_by_pnm's
  direction, exactly (float64), against the closed forms and the spec's
  recursion."""
  steps, sigma = 400, 1.7
  u, m = _library_weights(b0, b1, steps)
  u_rec, m_rec = closed.weights_by_recursion(b0, b1, steps)
  np.testing.assert_allclose(u, u_rec, rtol=0, atol=1e-14)
  np.testing.assert_allclose(m, m_rec, rtol=0, atol=1e-14)
  # Multi-step: the weights of D_T and its variance.
  np.testing.assert_allclose(
    u.sum(0), closed.displacement_weights(b0, b1, steps), rtol=0, atol=1e-12
  )
  assert sigma**2 * np.sum(u.sum(0) ** 2) == pytest.approx(
    closed.displacement_var(b0, b1, sigma, steps), rel=1e-12
  )
  # The identity sum_t u_t = (sum_t m_t + b0 (m_T - m_0)) / n, m_0 = 0.
  np.testing.assert_allclose(
    u.sum(0), (m.sum(0) + b0 * m[-1]) / closed.norm(b0), rtol=0, atol=1e-12
  )
  # Per step, far from the zero start: Cov(u_t, u_{t+k}) = sigma^2 U_t.U_t+k.
  t = steps - 10
  for lag in range(5):
    assert sigma**2 * u[t - lag] @ u[t] == pytest.approx(
      closed.steady_autocov(b0, b1, sigma, lag), rel=1e-9, abs=1e-12
    )
  mean, var = closed.steady_mean_var(b0, b1, 1.0, sigma)
  assert u[t].sum() == pytest.approx(mean, rel=1e-9)
  assert sigma**2 * u[t] @ u[t] == pytest.approx(var, rel=1e-9)
  if b0 > 0:
    corr = (u[t - 1] @ u[t]) / (u[t] @ u[t])
    assert corr == pytest.approx(closed.lag1_correlation(b0, b1), rel=1e-9)


# ------------------------------------------------------------- Monte-Carlo

# Independent coordinates: one sample of each statistic. The tolerances are
# 5 standard errors of this many samples (a variance to about 6%, a
# correlation to about 0.04); the exact weights above pin the update down,
# these check the statistics the closed forms predict from them.
SAMPLES = 1 << 14
STEPS = 400


def _run(tx, scale, key, mu, sigma):
  return helpers.monte_carlo(tx, scale, key, mu, sigma, SAMPLES, STEPS)


def _se_var(var):
  return closed.se_var(var, SAMPLES)


def _se_corr(rho):
  return closed.se_corr(rho, SAMPLES)


@pytest.mark.parametrize('b0', [0.0, 1.0, 2.0, 3.0])
def test_pn_direction_per_step_and_summed(b0):
  mu, sigma = 1.0, 3.0
  u2, u1, u, total = _run(
    pnm_optax.scale_by_pnm(b1=B1, b0=b0),
    closed.norm(b0),  # the matched learning rate, relative to b0 = 0
    jax.random.key(int(10 * b0)),
    mu,
    sigma,
  )
  mean, var = closed.steady_mean_var(b0, B1, mu, sigma)
  assert abs(u.mean() - mean) < 5 * np.sqrt(var / SAMPLES)
  assert abs(u.var(ddof=1) - var) < 5 * _se_var(var)
  rho1 = closed.lag1_correlation(b0, B1)
  assert abs(np.corrcoef(u1, u)[0, 1] - rho1) < 5 * _se_corr(rho1)
  rho2 = B1**2  # lag 2: v beta / v, whatever b0
  assert abs(np.corrcoef(u2, u)[0, 1] - rho2) < 5 * _se_corr(rho2)
  d_mean = (
    mu * closed.norm(b0) * closed.displacement_weights(b0, B1, STEPS).sum()
  )
  d_var = closed.norm(b0) ** 2 * closed.displacement_var(b0, B1, sigma, STEPS)
  assert abs(total.mean() - d_mean) < 5 * np.sqrt(d_var / SAMPLES)
  assert abs(total.var(ddof=1) - d_var) < 5 * _se_var(d_var)


@pytest.mark.parametrize('b0', [0.0, 1.0, 3.0])
def test_per_step_noise_ratio_to_sgdm(b0):
  mu, sigma = 1.0, 3.0
  key = jax.random.key(3)  # the same gradients for both
  u = _run(pnm_optax.scale_by_pnm(b1=B1, b0=b0), 1.0, key, mu, sigma)[2]
  v = _run(optax.trace(decay=B1), 1.0, key, mu, sigma)[2]
  ratio = (u.std() / u.mean()) / (v.std() / v.mean())
  # Relative standard error of a std / mean estimate: sqrt(1/2 + r^2) / sqrt(N)
  # per optimizer, r the noise-to-signal ratio (independent enough: the two
  # see the same gradients, which only correlates the errors).
  r_pnm = (
    np.sqrt(closed.steady_mean_var(b0, B1, mu, sigma)[1]) * closed.norm(b0) / mu
  )
  r_sgd = sigma * np.sqrt((1 - B1) / (1 + B1)) / mu
  rel_se = np.hypot(np.sqrt(0.5 + r_pnm**2), np.sqrt(0.5 + r_sgd**2)) / np.sqrt(
    SAMPLES
  )
  expected = closed.noise_ratio_to_sgdm(b0, B1)
  assert abs(ratio / expected - 1) < 5 * rel_se


# ------------------------------------------------- curvature: stable steps


@pytest.mark.parametrize('b0', [0.0, 1.0, 2.0, 3.0])
def test_pnm_on_a_quadratic_is_stable_below_the_limit_only(b0):
  for factor, stable in ((0.9, True), (1.1, False)):
    lr = factor * closed.stability_limit(b0) * np.hypot(1 + b0, b0)
    distance = helpers.final_distance_on_quadratic(
      pnm_optax.pnm(lr, b1=B1, b0=b0)
    )
    if stable:
      assert distance < 1e-6, (factor, distance)
    else:
      assert not distance < 1e6, (factor, distance)
