"""The speed benchmark runs end to end and reports what it promises.

No timing assertions: only structure, bookkeeping, and the correctness of the
benchmarked alternatives (layouts, the PyTorch PNM) against references.
"""

import json
import math

import numpy as np
import pytest

from benchmarks import layouts, step_time, trees
from tests.reference import ReferencePNM

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = None


def _resnet18_param_count(num_classes, stem_kernel):
  """Parameter count of ResNet-18 written out by hand, layer by layer."""
  conv = lambda k, c_in, c_out: k * k * c_in * c_out
  bn = lambda c: 2 * c
  total = conv(stem_kernel, 3, 64) + bn(64)
  widths = [64, 64, 128, 256, 512]
  for stage in range(4):
    c_in, c_out = widths[stage], widths[stage + 1]
    total += conv(3, c_in, c_out) + bn(c_out) + 3 * (conv(3, c_out, c_out)
                                                     + bn(c_out))
    if c_in != c_out:
      total += conv(1, c_in, c_out) + bn(c_out)
  return total + 512 * num_classes + num_classes


def test_resnet18_tree_matches_the_architecture():
  shapes = trees.resnet18_shapes()
  # 20 convolutions + 20 batch norms x (scale, bias) + head kernel and bias;
  # PyTorch's len(list(resnet18().parameters())) is 62 as well.
  assert len(shapes) == 20 + 2 * 20 + 2 == 62
  assert trees.num_params(shapes) == _resnet18_param_count(10, 3)
  assert trees.num_params(shapes) == pytest.approx(11.2e6, rel=0.01)
  # torchvision's ImageNet resnet18 has 11,689,512 parameters.
  imagenet = trees.resnet18_shapes(num_classes=1000, imagenet_stem=True)
  assert trees.num_params(imagenet) == _resnet18_param_count(1000, 7)
  assert trees.num_params(imagenet) == 11_689_512


def test_transformer_tree_is_gpt2_small_with_its_config():
  shapes = trees.transformer_shapes(d_model=768, num_layers=12,
                                    vocab_size=50257, max_len=1024)
  assert len(shapes) == 2 + 12 * 12 + 2
  assert trees.num_params(shapes) == 124_439_808  # GPT-2 small, tied head
  names = [name for name, _ in shapes]
  assert len(set(names)) == len(names)


@pytest.mark.parametrize('text, value', [
    ('2^24', 2 ** 24), ('2**10', 1024), ('1e5', 100_000), ('4096', 4096)])
def test_parse_size(text, value):
  assert step_time.parse_size(text) == value


def test_state_memory_per_parameter():
  # float32 buffers: sgd-m 1, PNM 2, Adam 2, AMSGrad 3, AdaPNM 4 (+ scalars);
  # bfloat16 momentum halves the momentum buffers only.
  words = {'sgdm': (1, 0), 'pnm': (2, 0), 'adam': (1, 1), 'amsgrad': (1, 2),
           'adapnm': (2, 2)}
  for name, (mu, nu) in words.items():
    f32 = step_time.state_bytes_per_param(name, None)
    bf16 = step_time.state_bytes_per_param(name, 'bfloat16')
    assert f32 == pytest.approx(4 * (mu + nu), abs=0.01)
    assert bf16 == pytest.approx(2 * mu + 4 * nu, abs=0.01)


JAX_NAMES = ['sgdm', 'pnm', 'adam', 'amsgrad', 'adapnm']


def test_plan_groups_keeps_everything_together_when_it_fits():
  n = 2 ** 20
  budget = step_time.bytes_needed(n, JAX_NAMES)
  assert step_time.plan_groups(n, JAX_NAMES, budget) == ([JAX_NAMES], [])


@pytest.mark.parametrize('fits_with, groups, too_big', [
    # Words per parameter: 2 shared + per optimizer 2 + its state words.
    (['sgdm', 'pnm', 'adam'],
     [['sgdm', 'pnm', 'adam'], ['sgdm', 'amsgrad'], ['sgdm', 'adapnm']], []),
    (['sgdm', 'amsgrad'],
     [['sgdm', 'pnm'], ['sgdm', 'adam'], ['sgdm', 'amsgrad']], ['adapnm']),
    (['sgdm'], [], ['pnm', 'adam', 'amsgrad', 'adapnm']),
])
def test_plan_groups_splits_to_fit_with_the_baseline_in_each(
    fits_with, groups, too_big):
  n = 2 ** 28
  budget = step_time.bytes_needed(n, fits_with)
  planned, skipped = step_time.plan_groups(n, JAX_NAMES, budget)
  assert (planned, skipped) == (groups, too_big)
  for group in planned:
    assert group[0] == 'sgdm'
    assert step_time.bytes_needed(n, group) <= budget


def test_run_in_memory_groups_reports_each_optimizer_once(
    tmp_path, capsys, monkeypatch):
  # Memory for sgd-m, PNM and Adam side by side at 1e4 parameters only.
  budget = step_time.bytes_needed(10_000, ['sgdm', 'pnm', 'adam'])
  monkeypatch.setattr(step_time, 'available_bytes', lambda: budget / 0.6)
  result = step_time.main([
      '--sizes', '1e4', '--trees', 'none', '--repeats', '2',
      '--target-time', '0.002', '--optimizers', ','.join(JAX_NAMES),
      '--no-torch', '--no-progress', '--no-plot',
      '--out', str(tmp_path / 'out')])
  stdout = capsys.readouterr().out
  rows = {r['optimizer']: r for r in result['rows']}
  assert [r['optimizer'] for r in result['rows']] == JAX_NAMES
  for name in JAX_NAMES:
    assert rows[name]['dispatched_x_sgdm'] > 0
  # AdaPNM ran in a group without amsgrad or adam: no ratio to them.
  assert rows['adapnm']['dispatched_x_amsgrad'] is None
  assert rows['amsgrad']['dispatched_x_amsgrad'] == 1.0
  assert any('measured in groups' in n for n in result['notes'])
  assert '(sgdm, pnm, adam) (sgdm, amsgrad) (sgdm, adapnm)' in stdout


def _run(tmp_path, capsys, *extra):
  out = tmp_path / 'out'
  result = step_time.main([
      '--sizes', '1000,2^40', '--trees', 'none', '--repeats', '2',
      '--target-time', '0.002', '--optimizers',
      'sgdm,pnm,amsgrad,adapnm,torch_sgd_foreach,torch_pnm',
      '--no-progress', '--out', str(out), *extra])
  return result, out, capsys.readouterr().out


def test_smoke_run_writes_table_json_and_plot(tmp_path, capsys):
  result, out, stdout = _run(tmp_path, capsys)
  with open(out / 'step_time.json') as f:
    saved = json.load(f)
  assert saved['table'] == result['table']
  assert result['table'] in stdout
  assert (out / 'step_time.png').stat().st_size > 1000
  for key in ('jax', 'optax', 'pnm_optax', 'cpu', 'backend',
              'loadavg_start', 'loadavg_end', 'command'):
    assert key in saved['meta']
  assert saved['copy_gbps'] > 0
  # 2^40 parameters cannot fit: skipped with the reason printed.
  assert [s['num_params'] for s in saved['skipped']] == [2 ** 40]
  assert 'skipped leaf 2^40' in stdout
  jax_names = ['sgdm', 'pnm', 'amsgrad', 'adapnm']
  torch_names = ['torch_sgd_foreach', 'torch_pnm'] if torch else []
  rows = {r['optimizer']: r for r in saved['rows']}
  assert list(rows) == jax_names + torch_names
  for name in jax_names:
    row = rows[name]
    assert row['num_params'] == 1000 and row['num_leaves'] == 1
    assert row['device_s'] > 0 and row['dispatched_s'] > 0
    assert len(row['samples']['device']) == 2
    assert row['compile_s'] > 0
    assert row['floor_words'] == {'sgdm': 5, 'pnm': 6, 'amsgrad': 9,
                                  'adapnm': 10}[name]
    fastest = min(row['device_s'], row['dispatched_s'])
    assert row['floor_gbps'] == pytest.approx(
        row['floor_words'] * 4 * 1000 / fastest / 1e9)
    assert row['floor_pct_copy'] == pytest.approx(
        100 * row['floor_gbps'] / saved['copy_gbps'])
    assert name in stdout
  # A ratio against itself, round by round, is exactly one.
  assert rows['sgdm']['device_x_sgdm'] == 1.0
  assert rows['amsgrad']['device_x_amsgrad'] == 1.0
  for name in torch_names:
    assert rows[name]['device_s'] is None and rows[name]['dispatched_s'] > 0
  if not torch:
    assert any('torch is not installed' in n for n in saved['notes'])


def test_smoke_run_without_torch(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(step_time, 'torch_available', lambda: False)
  result, _, stdout = _run(tmp_path, capsys, '--no-plot')
  assert {r['optimizer'] for r in result['rows']} == {
      'sgdm', 'pnm', 'amsgrad', 'adapnm'}
  assert 'PyTorch optimizers skipped: torch is not installed' in stdout


def test_layout_alternatives_compute_the_same_updates():
  alternatives = ([f'pnm {n}' for n in layouts.PNM_LAYOUTS]
                  + [f'adapnm {n}' for n in layouts.ADAPNM_LAYOUTS])
  names = ['sgdm', 'pnm core', 'adapnm core'] + alternatives
  result = layouts.run(4096, repeats=1, target_s=0.001, names=names,
                       progress=False)
  rows = {r['layout']: r for r in result['rows']}
  assert set(rows) == set(names)
  for name in alternatives:
    assert rows[name]['max_rel_dev_from_core'] < 1e-5, name
  # Buffers returned swapped cannot stay in their donated slots.
  assert rows['pnm swapped']['hlo_array_copies'] > 0
  assert rows['pnm core']['hlo_array_copies'] == 0


@pytest.mark.skipif(torch is None, reason='PyTorch is not installed')
def test_torch_pnm_matches_the_float64_reference():
  from benchmarks import torch_ref  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  shapes = [(5,), (3, 4)]
  params = [rng.normal(size=s) for s in shapes]
  reference = ReferencePNM(params, b1=0.9, b0=1.0)
  tensors = [torch.tensor(p) for p in params]
  opt = torch_ref.TorchPNM(tensors, lr=0.1, betas=(0.9, 1.0))
  for _ in range(7):
    grads = [rng.normal(size=s) for s in shapes]
    for t, g in zip(tensors, grads):
      t.grad = torch.tensor(g)
    opt.step()
    reference.step(grads, lr=0.1)
  for t, p in zip(tensors, reference.params):
    np.testing.assert_allclose(t.numpy(), p, rtol=1e-12, atol=1e-14)
  assert not math.isclose(float(tensors[0][0]), params[0][0])
