"""b0 is the noise knob: pnm_optax against the closed forms of
``tests/closed_forms.py`` (derived from the algorithm, not from the code), with
tolerances of 5 standard errors of each estimate (one fixed seed, so every run
is the same run)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pnm_optax
from tests import closed_forms as closed

B1 = 0.9


@pytest.mark.parametrize('b0', [0.0, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize('b1', [0.9, 0.5])
def test_closed_forms_equal_the_recursion(b0, b1):
  steps, sigma = 400, 1.7
  u, m = closed.weights_by_recursion(b0, b1, steps)
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


def test_the_numbers_quoted_in_the_docs():
  # b1 = 0.9, gradients of mean 1 and std 3, 400 steps.
  mu, sigma, steps = 1.0, 3.0, 400
  nsr = [
    np.sqrt(closed.steady_mean_var(b0, B1, mu, sigma)[1]) * closed.norm(b0) / mu
    for b0 in (0, 1, 2, 3)
  ]
  np.testing.assert_allclose(nsr, [0.972, 2.173, 3.505, 4.860], atol=5e-4)
  np.testing.assert_allclose(
    [closed.lag1_correlation(b0, B1) for b0 in (1, 2, 3)],
    [-0.724, -0.835, -0.869],
    atol=5e-4,
  )
  np.testing.assert_allclose(
    [closed.noise_ratio_to_sgdm(b0, B1) for b0 in (0, 1, 2, 3)],
    [1.412, 3.158, 5.092, 7.061],
    atol=5e-4,
  )
  matched_std = [
    closed.norm(b0) * np.sqrt(closed.displacement_var(b0, B1, sigma, steps))
    for b0 in (0, 1, 2, 3)
  ]
  np.testing.assert_allclose(
    matched_std, [59.00, 59.09, 59.20, 59.32], atol=5e-3
  )
  sgdm_std = np.sqrt(closed.sgdm_displacement_var(B1, sigma, steps))
  assert sgdm_std == pytest.approx(58.96, abs=5e-3)
  assert sigma * np.sqrt(steps) == 60.0


# ------------------------------------------------------------- Monte-Carlo

SAMPLES = 1 << 16  # independent coordinates: one sample of each statistic
STEPS = 400


def _run(tx, scale, key, mu, sigma):
  """(u_{T-2}, u_{T-1}, u_T, scale * D_T) per coordinate, float64."""

  def body(carry, k):
    state, last, total = carry
    grads = mu + sigma * jax.random.normal(k, (SAMPLES,))
    updates, state = tx.update(grads, state)
    return (state, (last[1], last[2], updates), total + updates), None

  zeros = jnp.zeros(SAMPLES)
  init = (tx.init(zeros), (zeros, zeros, zeros), zeros)
  keys = jax.random.split(key, STEPS)
  (_, last, total), _ = jax.jit(lambda: jax.lax.scan(body, init, keys))()
  return [np.asarray(x, np.float64) for x in last] + [
    scale * np.asarray(total, np.float64)
  ]


def _se_var(var):
  return var * np.sqrt(2 / (SAMPLES - 1))  # Gaussian samples


def _se_corr(rho):
  return (1 - rho**2) / np.sqrt(SAMPLES - 3)


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


def test_sgdm_per_step_and_summed():
  mu, sigma, mom = 1.0, 3.0, B1
  _, v1, v, total = _run(
    optax.trace(decay=mom), 1 - mom, jax.random.key(7), mu, sigma
  )
  var = sigma**2 / (1 - mom**2)
  assert abs(v.mean() - mu / (1 - mom)) < 5 * np.sqrt(var / SAMPLES)
  assert abs(v.var(ddof=1) - var) < 5 * _se_var(var)
  assert abs(np.corrcoef(v1, v)[0, 1] - mom) < 5 * _se_corr(mom)
  d_var = closed.sgdm_displacement_var(mom, sigma, STEPS)
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


def stability_limit(b0):
  """Largest lr_0 h (mean step times curvature) at which PNM at the matched
  learning rate converges on h x^2 / 2."""
  return 2 / (1 + 2 * b0)


def _largest_root(s, b0, b1):
  beta = b1**2
  poly = np.polyadd(
    np.polymul([1, -1], [1, 0, -beta]),
    s * (1 - beta) * np.array([1 + b0, -b0, 0]),
  )
  return np.max(np.abs(np.roots(poly)))


@pytest.mark.parametrize('b0', [0.0, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize('b1', [0.9, 0.5, 0.0])
def test_stability_limit_is_the_first_root_to_leave_the_unit_circle(b0, b1):
  limit = stability_limit(b0)
  grid = limit * np.linspace(1e-3, 0.995, 400)
  below = [_largest_root(s, b0, b1) for s in grid]
  assert max(below) < 1
  assert _largest_root(1.01 * limit, b0, b1) > 1


def _final_distance(tx, steps=2000):
  def step(carry, _):
    x, state = carry
    updates, state = tx.update(x, state, x)  # f = x^2 / 2: the gradient is x
    return (optax.apply_updates(x, updates), state), None

  x = jnp.ones(1)
  (x, _), _ = jax.jit(
    lambda: jax.lax.scan(step, (x, tx.init(x)), None, length=steps)
  )()
  return abs(float(x[0]))


@pytest.mark.parametrize('b0', [0.0, 1.0, 2.0, 3.0])
def test_pnm_on_a_quadratic_is_stable_below_the_limit_only(b0):
  for factor, stable in ((0.9, True), (1.1, False)):
    lr = factor * stability_limit(b0) * np.hypot(1 + b0, b0)
    distance = _final_distance(pnm_optax.pnm(lr, b1=B1, b0=b0))
    if stable:
      assert distance < 1e-6, (factor, distance)
    else:
      assert not distance < 1e6, (factor, distance)


@pytest.mark.parametrize('momentum', [0.9, 0.81])
def test_sgdm_on_a_quadratic_is_stable_below_its_limit_only(momentum):
  limit = 2 * (1 + momentum) / (1 - momentum)
  for factor, stable in ((0.9, True), (1.1, False)):
    lr = factor * limit * (1 - momentum)  # the same mean step as lr_0
    distance = _final_distance(optax.sgd(lr, momentum=momentum))
    assert (distance < 1e-6) == stable, (factor, distance)
