"""Orbax checkpointing of params + batch statistics + PNM optimizer state.

Train, save mid-training, restore in a fresh Python process and continue:
the resumed trajectory must be bitwise identical to the uninterrupted one.
"""

import subprocess
import sys

import chex
import numpy as np
import pytest

from tests.helpers import REPO
from tests.integration import checkpoint_resume as run

SAVE_AT = 5


@pytest.mark.parametrize('name', ['pnm', 'adapnm'])
def test_resume_in_fresh_process_is_bitwise_identical(name, tmp_path):
  graphdef, state = run.initial_state(name)
  state = run.train(graphdef, name, state, SAVE_AT)
  at_save = run.leaves(state)
  ckpt_dir = str(tmp_path / 'ckpt')
  run.save(ckpt_dir, state)
  uninterrupted = run.leaves(run.train(graphdef, name, state, run.TOTAL_STEPS))

  out = str(tmp_path / 'resumed.npz')
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'tests.integration.checkpoint_resume',
      ckpt_dir,
      out,
      name,
      str(run.TOTAL_STEPS),
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  resumed = np.load(out)

  # The fresh process restored exactly the saved state ...
  assert len(at_save) == len(uninterrupted) > 10
  assert len(resumed.files) == 2 * len(at_save)
  restored = [resumed[f'restored_{i}'] for i in range(len(at_save))]
  chex.assert_trees_all_equal(restored, at_save, strict=True)
  # ... and continued along the same trajectory, bit for bit.
  final = [resumed[f'final_{i}'] for i in range(len(uninterrupted))]
  chex.assert_trees_all_equal(final, uninterrupted, strict=True)
  # Every leaf moved between the save and the end (params, statistics,
  # both momentum slots, counts), so the equality above is not vacuous.
  for i, (a, b) in enumerate(zip(at_save, uninterrupted)):
    assert not np.array_equal(a, b), f'leaf {i} did not change'
  assert run.TOTAL_STEPS in [int(x) for x in uninterrupted if x.ndim == 0]
