"""The closed forms of ``tests/closed_forms.py`` that need no ``pnm_optax``:
the spec's recursion, SGD-M's noise and stability (``optax.sgd``), the
roots behind PNM's stability limit, the Walsh construction of the noise norm
and the numbers the docs quote. The library's own tests
(``tests/library/test_noise.py``, ``test_step_size.py``) check ``pnm_optax``
against these forms."""

import jax
import numpy as np
import optax
import pytest

from tests import closed_forms as closed
from tests import helpers

B1 = 0.9
SAMPLES = 1 << 16
STEPS = 400


@pytest.mark.parametrize('b0', [0.0, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize('b1', [0.9, 0.5])
def test_closed_forms_equal_the_recursion(b0, b1):
  steps, sigma = 400, 1.7
  u, m = closed.weights_by_recursion(b0, b1, steps)
  np.testing.assert_allclose(
    u.sum(0), closed.displacement_weights(b0, b1, steps), rtol=0, atol=1e-12
  )
  assert sigma**2 * np.sum(u.sum(0) ** 2) == pytest.approx(
    closed.displacement_var(b0, b1, sigma, steps), rel=1e-12
  )
  np.testing.assert_allclose(
    u.sum(0), (m.sum(0) + b0 * m[-1]) / closed.norm(b0), rtol=0, atol=1e-12
  )


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


def test_sgdm_per_step_and_summed():
  mu, sigma, mom = 1.0, 3.0, B1
  _, v1, v, total = helpers.monte_carlo(
    optax.trace(decay=mom),
    1 - mom,
    jax.random.key(7),
    mu,
    sigma,
    SAMPLES,
    STEPS,
  )
  var = sigma**2 / (1 - mom**2)
  assert abs(v.mean() - mu / (1 - mom)) < 5 * np.sqrt(var / SAMPLES)
  assert abs(v.var(ddof=1) - var) < 5 * closed.se_var(var, SAMPLES)
  assert abs(np.corrcoef(v1, v)[0, 1] - mom) < 5 * closed.se_corr(mom, SAMPLES)
  d_var = closed.sgdm_displacement_var(mom, sigma, STEPS)
  assert abs(total.var(ddof=1) - d_var) < 5 * closed.se_var(d_var, SAMPLES)


@pytest.mark.parametrize('b0', [0.0, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize('b1', [0.9, 0.5, 0.0])
def test_stability_limit_is_the_first_root_to_leave_the_unit_circle(b0, b1):
  limit = closed.stability_limit(b0)
  grid = limit * np.linspace(1e-3, 0.995, 400)
  below = [closed.largest_root(s, b0, b1) for s in grid]
  assert max(below) < 1
  assert closed.largest_root(1.01 * limit, b0, b1) > 1


@pytest.mark.parametrize('momentum', [0.9, 0.81])
def test_sgdm_on_a_quadratic_is_stable_below_its_limit_only(momentum):
  limit = 2 * (1 + momentum) / (1 - momentum)
  for factor, stable in ((0.9, True), (1.1, False)):
    lr = factor * limit * (1 - momentum)  # the same mean step as lr_0
    distance = helpers.final_distance_on_quadratic(
      optax.sgd(lr, momentum=momentum)
    )
    assert (distance < 1e-6) == stable, (factor, distance)


def test_walsh_noise_ratio_is_a_variance_ratio():
  """The Walsh construction against a Monte Carlo estimate with independent
  normal samples (within 5 standard errors)."""
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(2, 400_000))
  for b0 in (0.5, 2.0):
    sample = np.std((1 + b0) * x - b0 * y) / np.std(x)
    assert sample == pytest.approx(closed.walsh_noise_ratio(b0), rel=5 * 2e-3)
