r"""Closed forms of what b0 does per step and summed over many steps.

The closed forms below are derived from the algorithm's definition, not from
``pnm_optax``; :func:`weights_by_recursion` runs that recursion in float64 NumPy;
``tests/library/test_noise.py`` checks ``pnm_optax.scale_by_pnm`` against
them (exactly, and by Monte Carlo with tolerances of 5 standard errors of each
estimate, one fixed seed, so every run is the same run);
``tests/test_closed_forms.py`` checks the forms that need no ``pnm_optax``
(SGD-M's, the stability limit's roots, the numbers quoted in the docs).

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

import numpy as np


def norm(b0):
  return np.sqrt((1 + b0) ** 2 + b0**2)


def steady_mean_var(b0, b1, mu, sigma):
  """E u and Var u of the PN direction in steady state."""
  beta = b1**2
  return mu / norm(b0), sigma**2 * (1 - beta) / (1 + beta)


def steady_autocov(b0, b1, sigma, lag):
  """Cov(u_t, u_{t+lag}) in steady state."""
  beta, a, n2 = b1**2, 1 + b0, norm(b0) ** 2
  v = sigma**2 * (1 - beta) / (1 + beta)
  j = lag // 2
  if lag % 2 == 0:
    return v * beta**j
  return -a * b0 * (1 + beta) * beta**j * v / n2


def lag1_correlation(b0, b1):
  return -(1 + b0) * b0 * (1 + b1**2) / norm(b0) ** 2


def noise_ratio_to_sgdm(b0, momentum):
  """Per-step noise-to-signal of PNM (b1 = momentum) over SGD-M's."""
  return norm(b0) * (1 + momentum) / np.sqrt(1 + momentum**2)


def displacement_weights(b0, b1, steps):
  """w_s, s = 1 .. steps: the weight of g_s in D_T = sum_t u_t."""
  beta, c = b1**2, (1 + b0) * b1**2 - b0
  r = steps - np.arange(1, steps + 1)
  j = r // 2
  w = np.where(r % 2 == 0, 1 - c * beta**j, 1 - beta ** (j + 1))
  return w / norm(b0)


def displacement_var(b0, b1, sigma, steps):
  """Var D_T from zero buffers, T = steps even (closed-form sums)."""
  assert steps % 2 == 0
  beta, c, half = b1**2, (1 + b0) * b1**2 - b0, steps // 2
  total = (
    steps
    - 2 * (c + beta) * (1 - beta**half) / (1 - beta)
    + (c**2 + beta**2) * (1 - beta ** (2 * half)) / (1 - beta**2)
  )
  return sigma**2 * total / norm(b0) ** 2


def sgdm_displacement_var(momentum, sigma, steps):
  """Var of sum_t (1 - mom) v_t, v_t = mom v_{t-1} + g_t, from v_0 = 0."""
  m = momentum
  return sigma**2 * (
    steps
    - 2 * m * (1 - m**steps) / (1 - m)
    + m**2 * (1 - m ** (2 * steps)) / (1 - m**2)
  )


def weights_by_recursion(b0, b1, steps):
  """(U, M): row t - 1 holds the weights of g_1 .. g_T in u_t (and m_t),
  from running the spec's recursion on unit gradients in float64."""
  beta, n = b1**2, norm(b0)
  eye = np.eye(steps)
  m = {-1: np.zeros(steps), 0: np.zeros(steps)}
  u = []
  for t in range(1, steps + 1):
    m[t] = beta * m[t - 2] + (1 - beta) * eye[t - 1]
    u.append(((1 + b0) * m[t] - b0 * m[t - 1]) / n)
  return np.array(u), np.array([m[t] for t in range(1, steps + 1)])


def stability_limit(b0):
  """Largest lr_0 h (mean step times curvature) at which PNM at the matched
  learning rate converges on h x^2 / 2."""
  return 2 / (1 + 2 * b0)


def largest_root(s, b0, b1):
  """The largest root modulus of PNM's characteristic polynomial on
  h x^2 / 2 at s = lr_0 h."""
  beta = b1**2
  poly = np.polyadd(
    np.polymul([1, -1], [1, 0, -beta]),
    s * (1 - beta) * np.array([1 + b0, -b0, 0]),
  )
  return np.max(np.abs(np.roots(poly)))


def walsh_noise_ratio(b0):
  """The noise norm from its definition, not its formula: how much the PN
  combination ``(1 + b0) X - b0 Y`` of two independent buffers scales their
  noise.

  X and Y are two Walsh functions (rows of a Hadamard matrix): zero mean,
  equal spread and zero sample correlation, exactly, so the ratio of the
  standard deviations is the population value without sampling error.
  """
  n = 64
  i = np.arange(n)
  walsh = lambda k: (-1.0) ** np.array([bin(k & j).count('1') for j in i])
  x, y = walsh(1), walsh(2)
  return np.std((1 + b0) * x - b0 * y) / np.std(x)


def se_var(var, samples):
  """Standard error of a sample variance of Gaussian samples."""
  return var * np.sqrt(2 / (samples - 1))


def se_corr(rho, samples):
  """Standard error of a sample correlation."""
  return (1 - rho**2) / np.sqrt(samples - 3)
