"""The float64 NumPy port (``tests/reference.py``) against trajectories
recorded once from the authors' PyTorch update rule
(``tests/record_torch_reference.py``; the JSON names the torch version, the
date and the source).

Both run in float64 with the same operations in a different order, so they
agree to a few units of float64 rounding per step; any difference in the
rule (a bias correction, the parity, the decay) shows at 1e-3 or more.
"""

import json
import pathlib

import numpy as np
import pytest

from tests.reference import ReferencePNM

DATA = json.loads(
  (pathlib.Path(__file__).parent / 'data' / 'torch_reference.json').read_text()
)
RUNS = {
  f'{i}-{run["name"]}-{"decoupled" if run["decoupled"] else "l2"}': run
  for i, run in enumerate(DATA['runs'])
}


def test_the_recording_says_where_it_came_from():
  assert DATA['torch_version'] and DATA['recorded'] and DATA['source']
  names = {run['name'] for run in DATA['runs']}
  assert names == {'pnm', 'adapnm'}
  modes = {(run['name'], run['decoupled']) for run in DATA['runs']}
  assert len(modes) == 4  # both weight-decay modes of both optimizers
  amsgrad = {run.get('amsgrad') for run in DATA['runs'] if run['name'] != 'pnm'}
  assert amsgrad == {True, False}


@pytest.mark.parametrize('name', RUNS)
def test_reference_port_follows_the_pytorch_rule(name):
  run = RUNS[name]
  adaptive = run['name'] == 'adapnm'
  hyper = dict(b1=run['b1'], b0=run['b0'])
  if adaptive:
    hyper |= dict(b2=run['b2'], eps=run['eps'], amsgrad=run['amsgrad'])
  ref = ReferencePNM(
    [np.asarray(x, np.float64) for x in run['init']],
    adaptive=adaptive,
    weight_decay=run['weight_decay'],
    decoupled=run['decoupled'],
    **hyper,
  )
  start = [p.copy() for p in ref.params]
  for t, (grads, expected) in enumerate(zip(run['grads'], run['params']), 1):
    ref.step([np.asarray(g, np.float64) for g in grads], run['lr'])
    for got, want, p0 in zip(ref.params, expected, start):
      # Relative to the distance travelled: float64 rounding, a few ulps
      # per step of each operand.
      moved = np.max(np.abs(np.asarray(want) - p0)) + np.max(np.abs(p0))
      np.testing.assert_allclose(
        got, want, rtol=0, atol=64 * t * np.finfo(np.float64).eps * moved
      )
