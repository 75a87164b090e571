r"""b0 is the noise knob: what it does per step, and summed over many steps.

The closed forms below are derived from the algorithm's definition, not from
``pnm_optax``; :func:`_weights_by_recursion` checks them against the
recursion run in float64 NumPy, and the Monte-Carlo tests check
``pnm_optax.scale_by_pnm`` against them, with tolerances of 5 standard
errors of each estimate (one fixed seed, so every run is the same run).

Model: per coordinate, gradients ``g_t = mu + sigma xi_t`` with ``xi_t``
i.i.d. standard normal. PNM with ``beta = b1^2``, ``a = 1 + b0`` and
``n = sqrt(a^2 + b0^2)``::

  m_t = beta m_{t-2} + (1 - beta) g_t        (m_{-1} = m_0 = 0)
  u_t = (a m_t - b0 m_{t-1}) / n

**Per step** (steady state). ``m_t = (1 - beta) sum_k beta^k g_{t-2k}``: the
two buffers average disjoint gradients (odd and even steps), so ``E m = mu``
and ``Cov(m_t, m_{t+k}) = v beta^(k/2)`` for even ``k``, ``0`` for odd ``k``,
with ``v = sigma^2 (1 - beta) / (1 + beta)``. Hence::

  E u = mu / n
  Var u = (a^2 + b0^2) v / n^2 = v                       (any b0)
  Cov(u_t, u_{t+2j})   = v beta^j
  Cov(u_t, u_{t+2j+1}) = -a b0 (1 + beta) beta^j v / n^2

so the lag-1 correlation is ``rho_1 = -(1 + b0) b0 (1 + b1^2) / n^2``
(-0.724 at b0 = 1, b1 = 0.9; -0.835 at b0 = 2), and the per-step
noise-to-signal ratio ``sqrt(v) n / mu`` grows with ``n``. SGD-M
(``v_t = mom v_{t-1} + g_t``, optax's ``trace``) has mean ``mu / (1 - mom)``
and variance ``sigma^2 / (1 - mom^2)``, a noise-to-signal ratio
``sigma sqrt((1 - mom) / (1 + mom)) / mu``; at ``b1 = mom`` PNM's is
``n (1 + mom) / sqrt(1 + mom^2)`` times larger: 1.41x at b0 = 0 (its
buffers decay with ``b1^2`` and each sees every other gradient) and 3.16x at
b0 = 1 for ``mom = 0.9``.

**Over many steps** (exact, from zero buffers). Gradient ``g_s`` enters
``u_t`` (``t >= s``) with weight ``a (1 - beta) beta^j / n`` when
``t - s = 2j`` and ``-b0 (1 - beta) beta^j / n`` when ``t - s = 2j + 1``.
Summed over ``t = s .. T``, with ``r = T - s`` and ``c = a beta - b0``::

  n w_s = 1 - c beta^j        (r = 2j)
  n w_s = 1 - beta^(j + 1)    (r = 2j + 1)

``D_T = sum_{t <= T} u_t = sum_s w_s g_s``, so ``E D_T = mu sum_s w_s`` and
``Var D_T = sigma^2 sum_s w_s^2``; for ``T = 2J``::

  n^2 Var D_T / sigma^2 = 2J - 2 (c + beta) (1 - beta^J) / (1 - beta)
                          + (c^2 + beta^2) (1 - beta^(2J)) / (1 - beta^2)

At the learning rate that matches the mean step of b0 = 0 (``lr_0 n``) the
displacement is ``lr_0 n D_T``: its variance is ``sigma^2 T`` minus a bounded
term for every b0 (the same identity as ``sum_t u_t = (sum_t m_t + b0 (m_T -
m_0)) / n``), like SGD-M's at its matched step ``(1 - mom) v_t``, whose
weights are ``1 - mom^(r + 1)``::

  Var / sigma^2 = T - 2 mom (1 - mom^T) / (1 - mom)
                  + mom^2 (1 - mom^(2T)) / (1 - mom^2)

The extra per-step noise of b0 > 0 is anti-correlated from step to step and
cancels in the sum.

**Curvature: the largest stable step.** On ``f(x) = h x^2 / 2`` (no noise)
at the matched learning rate ``lr_0 n``, ``x_t = z^t`` solves the recursion
when, with ``s = lr_0 h`` (mean step times curvature)::

  (z - 1)(z^2 - beta) + s (1 - beta) ((1 + b0) z^2 - b0 z) = 0

At ``z = -1`` (a period-2 oscillation, how a too-large step diverges) this
reads ``-2 (1 - beta) + s (1 - beta)(1 + 2 b0) = 0``: PNM is stable for
``s < 2 / (1 + 2 b0)``, whatever ``b1`` (the test checks that no other root
leaves the unit circle first). In a period-2 oscillation each buffer sees a
constant gradient, so the momentum does not damp it: at ``b0 = 0`` the limit
is plain gradient descent's, and the knob tightens it by ``1 + 2 b0``. SGD-M
at the same mean step (``eta = lr_0 (1 - mom)``) has
``z^2 - (1 + mom - eta h) z + mom = 0``, stable for
``s < 2 (1 + mom) / (1 - mom)``: 38 at ``mom = 0.9``, 19 at 0.81.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pnm_optax

B1 = 0.9


# ------------------------------------------------------------ closed forms


def _norm(b0):
  return np.sqrt((1 + b0) ** 2 + b0**2)


def steady_mean_var(b0, b1, mu, sigma):
  """E u and Var u of the PN direction in steady state."""
  beta = b1**2
  return mu / _norm(b0), sigma**2 * (1 - beta) / (1 + beta)


def steady_autocov(b0, b1, sigma, lag):
  """Cov(u_t, u_{t+lag}) in steady state."""
  beta, a, n2 = b1**2, 1 + b0, _norm(b0) ** 2
  v = sigma**2 * (1 - beta) / (1 + beta)
  j = lag // 2
  if lag % 2 == 0:
    return v * beta**j
  return -a * b0 * (1 + beta) * beta**j * v / n2


def lag1_correlation(b0, b1):
  return -(1 + b0) * b0 * (1 + b1**2) / _norm(b0) ** 2


def noise_ratio_to_sgdm(b0, momentum):
  """Per-step noise-to-signal of PNM (b1 = momentum) over SGD-M's."""
  return _norm(b0) * (1 + momentum) / np.sqrt(1 + momentum**2)


def displacement_weights(b0, b1, steps):
  """w_s, s = 1 .. steps: the weight of g_s in D_T = sum_t u_t."""
  beta, c = b1**2, (1 + b0) * b1**2 - b0
  r = steps - np.arange(1, steps + 1)
  j = r // 2
  w = np.where(r % 2 == 0, 1 - c * beta**j, 1 - beta ** (j + 1))
  return w / _norm(b0)


def displacement_var(b0, b1, sigma, steps):
  """Var D_T from zero buffers, T = steps even (closed-form sums)."""
  assert steps % 2 == 0
  beta, c, half = b1**2, (1 + b0) * b1**2 - b0, steps // 2
  total = (
    steps
    - 2 * (c + beta) * (1 - beta**half) / (1 - beta)
    + (c**2 + beta**2) * (1 - beta ** (2 * half)) / (1 - beta**2)
  )
  return sigma**2 * total / _norm(b0) ** 2


def sgdm_displacement_var(momentum, sigma, steps):
  """Var of sum_t (1 - mom) v_t, v_t = mom v_{t-1} + g_t, from v_0 = 0."""
  m = momentum
  return sigma**2 * (
    steps
    - 2 * m * (1 - m**steps) / (1 - m)
    + m**2 * (1 - m ** (2 * steps)) / (1 - m**2)
  )


# ------------------------------------- the recursion in NumPy (from the spec)


def _weights_by_recursion(b0, b1, steps):
  """(U, M): row t - 1 holds the weights of g_1 .. g_T in u_t (and m_t),
  from running the spec's recursion on unit gradients in float64."""
  beta, n = b1**2, _norm(b0)
  eye = np.eye(steps)
  m = {-1: np.zeros(steps), 0: np.zeros(steps)}
  u = []
  for t in range(1, steps + 1):
    m[t] = beta * m[t - 2] + (1 - beta) * eye[t - 1]
    u.append(((1 + b0) * m[t] - b0 * m[t - 1]) / n)
  return np.array(u), np.array([m[t] for t in range(1, steps + 1)])


@pytest.mark.parametrize('b0', [0.0, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize('b1', [0.9, 0.5])
def test_closed_forms_equal_the_recursion(b0, b1):
  steps, sigma = 400, 1.7
  u, m = _weights_by_recursion(b0, b1, steps)
  # Multi-step: the weights of D_T and its variance.
  np.testing.assert_allclose(
    u.sum(0), displacement_weights(b0, b1, steps), rtol=0, atol=1e-12
  )
  assert sigma**2 * np.sum(u.sum(0) ** 2) == pytest.approx(
    displacement_var(b0, b1, sigma, steps), rel=1e-12
  )
  # The identity sum_t u_t = (sum_t m_t + b0 (m_T - m_0)) / n, m_0 = 0.
  np.testing.assert_allclose(
    u.sum(0), (m.sum(0) + b0 * m[-1]) / _norm(b0), rtol=0, atol=1e-12
  )
  # Per step, far from the zero start: Cov(u_t, u_{t+k}) = sigma^2 U_t.U_t+k.
  t = steps - 10
  for lag in range(5):
    assert sigma**2 * u[t - lag] @ u[t] == pytest.approx(
      steady_autocov(b0, b1, sigma, lag), rel=1e-9, abs=1e-12
    )
  mean, var = steady_mean_var(b0, b1, 1.0, sigma)
  assert u[t].sum() == pytest.approx(mean, rel=1e-9)
  assert sigma**2 * u[t] @ u[t] == pytest.approx(var, rel=1e-9)
  if b0 > 0:
    corr = (u[t - 1] @ u[t]) / (u[t] @ u[t])
    assert corr == pytest.approx(lag1_correlation(b0, b1), rel=1e-9)


def test_the_numbers_quoted_in_the_docs():
  # b1 = 0.9, gradients of mean 1 and std 3, 400 steps.
  mu, sigma, steps = 1.0, 3.0, 400
  nsr = [
    np.sqrt(steady_mean_var(b0, B1, mu, sigma)[1]) * _norm(b0) / mu
    for b0 in (0, 1, 2, 3)
  ]
  np.testing.assert_allclose(nsr, [0.972, 2.173, 3.505, 4.860], atol=5e-4)
  np.testing.assert_allclose(
    [lag1_correlation(b0, B1) for b0 in (1, 2, 3)],
    [-0.724, -0.835, -0.869],
    atol=5e-4,
  )
  np.testing.assert_allclose(
    [noise_ratio_to_sgdm(b0, B1) for b0 in (0, 1, 2, 3)],
    [1.412, 3.158, 5.092, 7.061],
    atol=5e-4,
  )
  matched_std = [
    _norm(b0) * np.sqrt(displacement_var(b0, B1, sigma, steps))
    for b0 in (0, 1, 2, 3)
  ]
  np.testing.assert_allclose(
    matched_std, [59.00, 59.09, 59.20, 59.32], atol=5e-3
  )
  sgdm_std = np.sqrt(sgdm_displacement_var(B1, sigma, steps))
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
    _norm(b0),  # the matched learning rate, relative to b0 = 0
    jax.random.key(int(10 * b0)),
    mu,
    sigma,
  )
  mean, var = steady_mean_var(b0, B1, mu, sigma)
  assert abs(u.mean() - mean) < 5 * np.sqrt(var / SAMPLES)
  assert abs(u.var(ddof=1) - var) < 5 * _se_var(var)
  rho1 = lag1_correlation(b0, B1)
  assert abs(np.corrcoef(u1, u)[0, 1] - rho1) < 5 * _se_corr(rho1)
  rho2 = B1**2  # lag 2: v beta / v, whatever b0
  assert abs(np.corrcoef(u2, u)[0, 1] - rho2) < 5 * _se_corr(rho2)
  d_mean = mu * _norm(b0) * displacement_weights(b0, B1, STEPS).sum()
  d_var = _norm(b0) ** 2 * displacement_var(b0, B1, sigma, STEPS)
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
  d_var = sgdm_displacement_var(mom, sigma, STEPS)
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
  r_pnm = np.sqrt(steady_mean_var(b0, B1, mu, sigma)[1]) * _norm(b0) / mu
  r_sgd = sigma * np.sqrt((1 - B1) / (1 + B1)) / mu
  rel_se = np.hypot(np.sqrt(0.5 + r_pnm**2), np.sqrt(0.5 + r_sgd**2)) / np.sqrt(
    SAMPLES
  )
  expected = noise_ratio_to_sgdm(b0, B1)
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
