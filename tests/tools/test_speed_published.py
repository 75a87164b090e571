"""The speed blocks render what the newest GPU result file holds."""

import json
import shutil

import pytest

from benchmarks.speed import published


def _gpu_check(timestamp, tiny=False, backend='gpu'):
  meta = dict(
    timestamp_utc=timestamp,
    backend=backend,
    device='Test GPU 9000',
    versions=dict(python='3.12.3', jax='0.11.9', optax='0.2.9', flax='0.12.99'),
  )
  whole_rows = lambda pnm, static, adapnm: [
    dict(optimizer='sgdm', step_s=0.010, x_sgdm=1.0, x_amsgrad=0.9),
    dict(optimizer='pnm', step_s=0.0103, x_sgdm=pnm, x_amsgrad=0.95),
    dict(optimizer='pnm_static', step_s=0.0102, x_sgdm=static),
    dict(optimizer='amsgrad', step_s=0.011, x_sgdm=1.1, x_amsgrad=1.0),
    dict(optimizer='adapnm', step_s=0.0114, x_sgdm=1.14, x_amsgrad=adapnm),
    dict(optimizer='adam', error='RuntimeError: out of memory'),
  ]
  step = lambda name, sgdm, amsgrad: dict(
    config='leaf 2^28',
    num_params=2**28,
    optimizer=name,
    device_s=1e-3,
    device_x_sgdm=sgdm,
    device_x_amsgrad=amsgrad,
    dispatched_s=1.1e-3,
    dispatched_x_sgdm=sgdm,
    dispatched_x_amsgrad=amsgrad,
    floor_words=6,
    hlo_words=6.0,
  )
  return dict(
    kind='gpu_check',
    tiny=tiny,
    meta=meta,
    parts={},
    whole_step=dict(
      models=[
        dict(
          model='resnet18',
          settings=dict(width=64, batch=256, image=32),
          num_params=11_173_962,
          rounds=5,
          steps_per_round=20,
          rows=whole_rows(1.0271, 1.0123, 1.0345),
        ),
        dict(
          model='transformer',
          settings=dict(
            width=512, layers=8, heads=8, vocab=32000, seq=256, batch=32
          ),
          num_params=42_000_000,
          rounds=5,
          steps_per_round=20,
          rows=whole_rows(1.0412, 1.0222, 1.0301),
        ),
      ]
    ),
    step_time=dict(
      rows=[
        step('sgdm', 1.0, 0.55),
        step('pnm', 1.3987, 0.77),
        step('pnm_static', 1.1876, 0.66),
        step('adapnm', 2.2, 1.2109),
      ]
    ),
  )


@pytest.fixture
def results(tmp_path):
  shutil.copy(published.RESULTS / 'h200_2026-12-04.json', tmp_path)
  for name, data in {
    'gpu_check_new.json': _gpu_check('2027-01-02 03:04:05 UTC'),
    # Newer, but a toy run and a CPU run: never published.
    'gpu_check_tiny.json': _gpu_check('2028-01-01 00:00:00 UTC', tiny=True),
    'gpu_check_cpu.json': _gpu_check('2028-01-01 00:00:00 UTC', backend='cpu'),
  }.items():
    (tmp_path / name).write_text(json.dumps(data))
  return tmp_path


def test_the_newest_gpu_file_is_published(results):
  runs = published.gpu_runs(results)
  assert [r.source for r in runs] == [
    'h200_2026-12-04.json',
    'gpu_check_new.json',
  ]
  assert published.latest_gpu_run(results).source == 'gpu_check_new.json'


def test_headline_renders_the_gpu_check_format(results):
  text = published.headline(published.latest_gpu_run(results))
  lines = text.splitlines()
  # Whole steps first (what a user feels), then the optimizer step alone.
  assert 'ResNet-18 (batch 256)' in lines[2]
  for value in ('1.027', '1.012', '1.034'):
    assert value in lines[2]
  assert 'transformer LM (batch 32 x 256 tokens)' in lines[3]
  for value in ('1.041', '1.022', '1.030'):
    assert value in lines[3]
  assert '2^28' in lines[4]
  for value in ('1.399', '1.188', '1.211'):
    assert value in lines[4]
  assert 'Test GPU 9000 on 2027-01-02' in text
  assert 'jax 0.11.9' in text and 'flax 0.12.99' in text
  assert 'benchmarks/speed/results/gpu_check_new.json' in text


def test_whole_step_and_optimizer_step_tables(results):
  run = published.latest_gpu_run(results)
  whole = published.gpu_whole_step(run)
  assert whole.count('**pnm_optax.pnm_train_step**') == 2
  assert '10.300' in whole  # ms per step
  assert 'out of memory' not in whole  # failed rows are left out
  step = published.gpu_optimizer_step(run)
  assert '1.19' in step and 'leaf 2^28' in step


def test_the_first_gpu_run_renders_from_its_own_format():
  run = published.gpu_runs()[0]
  assert run.source == 'h200_2026-12-04.json'
  text = published.headline(run)
  # Its whole-step times (ms) and the static-parity probe give the ratios.
  assert f'{7.534 / 7.311:.3f}' in text
  assert f'{8.041 / 7.769:.3f}' in text
  assert f'{1.505 / 1.289:.3f}' in text


def test_no_gpu_file_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='no GPU result'):
    published.latest_gpu_run(tmp_path)


def test_a_run_without_optimizer_steps_leaves_them_to_the_run_before(
  results, monkeypatch
):
  """A GPU run whose optimizer-step part did not finish publishes its whole
  steps; the optimizer-step numbers come from the newest run that has them,
  and the headline names both files."""
  data = _gpu_check('2027-06-01 00:00:00 UTC')
  data['step_time'] = None
  (results / 'gpu_check_newer.json').write_text(json.dumps(data))
  assert published.latest_gpu_run(results).source == 'gpu_check_newer.json'
  assert (
    published.latest_gpu_run(results, need='steps').source
    == 'gpu_check_new.json'
  )
  monkeypatch.setattr(published, 'RESULTS', results)
  text = published.headline()
  steps = published.gpu_optimizer_step()
  assert '1.399' in text.splitlines()[4]
  assert 'gpu_check_newer.json' in text and 'gpu_check_new.json' in text
  assert 'gpu_check_new.json' in steps and 'newer' not in steps
