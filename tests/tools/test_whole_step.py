"""The whole-train-step benchmark and the GPU check script, on the CPU.

No timing assertions: the bookkeeping, that every optimizer trains the same
model (PNM's two forms to the same parameters), and the script's parts.
"""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks.speed import gpu_summary, whole_step
from tests.helpers import REPO, rel_err

TINY = whole_step.SIZES['tiny']


def test_tiny_run_writes_rows_ratios_and_json(tmp_path, capsys):
  result = whole_step.main(
    [
      '--size=tiny',
      '--models=transformer',
      '--optimizers=sgdm,pnm,pnm_static',
      '--repeats=2',
      '--steps=2',
      '--no-progress',
      f'--out={tmp_path}',
    ]
  )
  (model,) = result['models']
  rows = {r['optimizer']: r for r in model['rows']}
  assert list(rows) == ['sgdm', 'pnm', 'pnm_static']
  assert rows['sgdm']['x_sgdm'] == 1.0
  for row in rows.values():
    assert len(row['samples']) == model['rounds'] == 2
    assert row['finite'] and row['step_s'] > 0
    assert row['x_sgdm'] == pytest.approx(
      np.median(
        [a / b for a, b in zip(row['samples'], rows['sgdm']['samples'])]
      )
    )
  saved = json.loads((tmp_path / 'whole_step.json').read_text())
  assert saved['complete'] and saved['size'] == 'tiny'
  assert saved['meta']['backend'] == jax.default_backend()
  out = capsys.readouterr().out
  assert '| transformer | pnm_static' in out


def test_budget_skips_optimizers_not_reached(tmp_path):
  model = whole_step.measure_model(
    'transformer',
    TINY['transformer'],
    ['sgdm', 'pnm', 'adam'],
    repeats=5,
    steps=1,
    budget_s=1e-9,
    log=lambda _: None,
  )
  assert [r['optimizer'] for r in model['rows']] == ['sgdm']
  assert model['skipped'] == ['pnm', 'adam']
  assert model['rounds'] == whole_step.MIN_ROUNDS == 3  # always run


@pytest.mark.parametrize('model', whole_step.MODELS)
def test_pnm_train_step_trains_like_pnm(model):
  """Both PNM forms give the same parameters after the same steps (both
  parities), so the benchmark times the same training."""
  params, extra, loss_fn, batch = whole_step.build_model(
    model, TINY[model], jax.random.key(0)
  )
  runners = [
    whole_step.WholeStepRunner(name, params, extra, loss_fn, batch)
    for name in ('pnm', 'pnm_static')
  ]
  for r in runners:
    r.time_steps(2)  # 1 + 2 + 2 = 5 steps in all
  a, b = (r.carry[0] for r in runners)
  moved = rel_err(a, params)
  assert moved > 1e-5
  assert rel_err(b, a) < 1e-3 * moved


def test_resnet18_at_full_width_has_the_paper_models_parameters():
  params, extra, _, _ = jax.eval_shape(
    lambda: (
      whole_step.build_model(
        'resnet18', dict(width=64, batch=2, image=32), jax.random.key(0)
      )[:2]
      + (None, None)
    )
  )
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  assert count == 11_173_962  # as benchmarks/speed/trees.py's resnet18
  assert len(jax.tree.leaves(params)) == 62


@pytest.mark.parametrize(
  'argv, message',
  [
    (['--models=vgg'], "unknown name(s) 'vgg'"),
    (['--size=huge'], "invalid choice: 'huge'"),
    (['--budget=0'], 'is not a finite number > 0'),
  ],
)
def test_bad_flags_exit_2_with_one_error_line(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    whole_step.parse_args(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert message in err
  assert 'Traceback' not in err


def test_gpu_check_script_parses():
  subprocess.run(
    ['bash', '-n', str(REPO / 'benchmarks/speed/gpu_check.sh')], check=True
  )


def test_gpu_summary_gathers_the_parts(tmp_path):
  (tmp_path / 'whole_step.json').write_text(
    json.dumps(dict(kind='whole_step', models=[]))
  )
  (tmp_path / 'step_time.json').write_text(
    json.dumps(dict(rows=[dict(optimizer='pnm', samples=[1.0])]))
  )
  (tmp_path / 'library_tests.log').write_text(
    'F..\n1 failed, 2 passed in 3.0s\n'
  )
  status = tmp_path / 'status'
  status.write_text(
    'whole_step 0 12\nstep_time 0 3\nlibrary_tests 1 5\n'
    'default_report -1 0 not run: under 30 s left of the 420 s\n'
  )
  gpu_summary.main([str(tmp_path), str(status)])
  result = json.loads((tmp_path / 'gpu_check.json').read_text())
  assert result['kind'] == 'gpu_check'
  assert result['parts']['library_tests'] == dict(rc=1, seconds=5)
  assert result['parts']['default_report']['rc'] == -1
  assert 'not run' in result['parts']['default_report']['note']
  assert result['library_tests'] == '1 failed, 2 passed in 3.0s'
  assert result['step_time']['rows'] == [dict(optimizer='pnm')]
  assert result['default_report'] is None
  assert result['meta']['command'] == 'bash benchmarks/speed/gpu_check.sh'


def test_whole_step_command_runs_as_a_module(tmp_path):
  done = subprocess.run(
    [sys.executable, '-m', 'benchmarks.speed.whole_step', '--models=vgg'],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert done.returncode == 2
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith('python -m benchmarks.speed.whole_step: error:')
  assert 'Traceback' not in done.stderr


def test_speed_command_forwards_whole_step(tmp_path):
  from benchmarks.speed import step_time

  result = step_time.main(
    [
      '--whole-step',
      '--size=tiny',
      '--models=transformer',
      '--optimizers=sgdm',
      '--repeats=1',
      '--steps=1',
      '--no-progress',
      f'--out={tmp_path}',
    ]
  )
  assert result['kind'] == 'whole_step'
  assert (tmp_path / 'whole_step.json').exists()
