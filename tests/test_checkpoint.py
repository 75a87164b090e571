"""Orbax checkpointing of params + batch statistics + PNM optimizer state.

Train, save mid-training, restore in a fresh Python process and continue:
the resumed trajectory must be bitwise identical to the uninterrupted one.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import checkpoint_resume as run

HELPER = os.path.join(os.path.dirname(__file__), 'checkpoint_resume.py')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVE_AT = 5


@pytest.mark.parametrize('name', ['pnm', 'adapnm'])
def test_resume_in_fresh_process_is_bitwise_identical(name, tmp_path):
  graphdef, state = run.initial_state(name)
  state = run.train(graphdef, name, state, SAVE_AT)
  at_save = run.leaves(state)
  ckpt_dir = str(tmp_path / 'ckpt')
  run.save(ckpt_dir, state)
  uninterrupted = run.leaves(run.train(graphdef, name, state,
                                       run.TOTAL_STEPS))

  out = str(tmp_path / 'resumed.npz')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [REPO, os.environ.get('PYTHONPATH', '')]))
  proc = subprocess.run(
      [sys.executable, HELPER, ckpt_dir, out, name, str(run.TOTAL_STEPS)],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  resumed = np.load(out)

  # The fresh process restored exactly the saved state ...
  assert len(at_save) == len(uninterrupted) > 10
  for i, want in enumerate(at_save):
    got = resumed[f'restored_{i}']
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
  # ... and continued along the same trajectory, bit for bit.
  for i, want in enumerate(uninterrupted):
    np.testing.assert_array_equal(resumed[f'final_{i}'], want)
  # Every leaf moved between the save and the end (params, statistics,
  # both momentum slots, counts), so the equality above is not vacuous.
  for i, (a, b) in enumerate(zip(at_save, uninterrupted)):
    assert not np.array_equal(a, b), f'leaf {i} did not change'
  assert run.TOTAL_STEPS in [int(x) for x in uninterrupted if x.ndim == 0]
