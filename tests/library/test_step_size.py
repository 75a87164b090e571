"""Learning rates that match PNM's mean step, checked by running optimizers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pnm_optax
from tests import closed_forms as closed
from tests.reference import ReferencePNM


def _steady_step(opt, grad=0.5, steps=400):
  """The update after ``steps`` steps of a constant gradient (steady state)."""
  params = jnp.zeros(1)

  def step(state, _):
    updates, state = opt.update(jnp.full(1, grad), state, params)
    return state, updates[0]

  # One compiled loop: op by op, 400 steps would take seconds.
  _, steps_taken = jax.lax.scan(step, opt.init(params), length=steps)
  return float(steps_taken[-1])


@pytest.mark.parametrize('b0', [0.0, 0.5, 1.0, 2.0, 3.5])
def test_noise_norm_is_the_pn_noise_ratio(b0):
  assert pnm_optax.noise_norm(b0) == pytest.approx(
    closed.walsh_noise_ratio(b0), rel=1e-12
  )


@pytest.mark.parametrize('b0', [0.0, 1.0, 2.0])
def test_noise_norm_is_the_steady_state_shrink(b0):
  """Under a constant gradient both reference buffers converge to it and
  the step is ``lr g / n(b0)``: the float64 reference, not the library."""
  ref = ReferencePNM([np.zeros(1)], b0=b0)
  for _ in range(400):
    before = ref.params[0].copy()
    ref.step([np.full(1, 0.5)], 0.01)
  step = float(before[0] - ref.params[0][0])
  assert pnm_optax.noise_norm(b0) == pytest.approx(0.01 * 0.5 / step, rel=1e-9)


@pytest.mark.parametrize('b0', [0.5, 1.0, 2.0])
@pytest.mark.parametrize('reference_b0', [0.0, 1.0])
def test_b0_matched_learning_rate_keeps_the_mean_step(b0, reference_b0):
  lr = 0.01
  reference = _steady_step(pnm_optax.pnm(lr, b0=reference_b0))
  matched = _steady_step(
    pnm_optax.pnm(
      pnm_optax.b0_matched_learning_rate(lr, b0, reference_b0), b0=b0
    )
  )
  unmatched = _steady_step(pnm_optax.pnm(lr, b0=b0))
  assert matched == pytest.approx(reference, rel=1e-5)
  if b0 != reference_b0:
    assert abs(unmatched - reference) > 0.1 * abs(reference)


@pytest.mark.parametrize('b0', [0.0, 1.0, 2.0])
@pytest.mark.parametrize('momentum', [0.0, 0.5, 0.9])
def test_sgdm_equivalent_learning_rate_matches_optax_sgd(b0, momentum):
  sgd_lr = 0.01
  sgd = _steady_step(optax.sgd(sgd_lr, momentum=momentum or None))
  pnm = _steady_step(
    pnm_optax.pnm(
      pnm_optax.sgdm_equivalent_learning_rate(sgd_lr, b0, momentum), b0=b0
    )
  )
  assert pnm == pytest.approx(sgd, rel=1e-5)


def test_arrays_are_mapped_elementwise():
  b0 = np.array([0.0, 1.0, 2.0])
  expected = [closed.walsh_noise_ratio(b) for b in b0]
  np.testing.assert_allclose(
    pnm_optax.b0_matched_learning_rate(1.0, b0), expected, rtol=1e-12
  )
  out = pnm_optax.noise_norm(jnp.asarray(b0))
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)


@pytest.mark.parametrize(
  'call,message',
  [
    (lambda: pnm_optax.noise_norm(-1.0), 'b0 must be >= 0 and finite'),
    (lambda: pnm_optax.noise_norm(float('inf')), 'b0 must be >= 0 and finite'),
    (
      lambda: pnm_optax.b0_matched_learning_rate(-0.1, 1.0),
      'learning_rate must be >= 0',
    ),
    (
      lambda: pnm_optax.b0_matched_learning_rate(0.1, 1.0, reference_b0=-1),
      'reference_b0 must be >= 0',
    ),
    (
      lambda: pnm_optax.sgdm_equivalent_learning_rate(0.1, momentum=1.0),
      r'momentum must be in \[0, 1\)',
    ),
    (
      lambda: pnm_optax.sgdm_equivalent_learning_rate(float('nan')),
      'sgd_learning_rate must be >= 0',
    ),
  ],
)
def test_invalid_arguments_raise(call, message):
  with pytest.raises(ValueError, match=message):
    call()
