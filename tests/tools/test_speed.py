"""The speed benchmark runs end to end and reports what it promises.

No timing assertions: only structure, bookkeeping, the probes' definitions,
and the correctness of the benchmarked alternatives (layouts, the PyTorch
PNMs) against references.
"""

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.common import argtypes
from benchmarks.speed import (
  contenders,
  layouts,
  memory,
  step_time,
  timing,
  trees,
  xla_probes,
)
from tests.reference import ReferencePNM

try:
  import torch
except ImportError:
  torch = None
HAS_PYTORCH_OPTIMIZER = contenders.module_available('pytorch_optimizer')


def _resnet18_param_count(num_classes, stem_kernel):
  """Parameter count of ResNet-18 written out by hand, layer by layer."""
  conv = lambda k, c_in, c_out: k * k * c_in * c_out
  bn = lambda c: 2 * c
  total = conv(stem_kernel, 3, 64) + bn(64)
  widths = [64, 64, 128, 256, 512]
  for stage in range(4):
    c_in, c_out = widths[stage], widths[stage + 1]
    total += (
      conv(3, c_in, c_out) + bn(c_out) + 3 * (conv(3, c_out, c_out) + bn(c_out))
    )
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
  shapes = trees.transformer_shapes(
    d_model=768, num_layers=12, vocab_size=50257, max_len=1024
  )
  assert len(shapes) == 2 + 12 * 12 + 2
  assert trees.num_params(shapes) == 124_439_808  # GPT-2 small, tied head
  names = [name for name, _ in shapes]
  assert len(set(names)) == len(names)


def test_many_leaves_tree_has_exactly_the_leaves_asked_for():
  shapes = trees.many_leaves_shapes()
  assert trees.TREES['many_leaves']() == shapes
  assert len(shapes) == 1000
  names = [name for name, _ in shapes]
  assert len(set(names)) == len(names)
  # Mixed small shapes: 4-D kernels, 2-D kernels, 1-D biases and norms.
  assert {len(s) for _, s in shapes} == {1, 2, 4}
  assert max(math.prod(s) for _, s in shapes) <= 3 * 3 * 64 * 64
  assert len(trees.many_leaves_shapes(7)) == 7
  with pytest.raises(ValueError, match='num_leaves'):
    trees.many_leaves_shapes(0)


@pytest.mark.parametrize(
  'text, value',
  [('2^24', 2**24), ('2**10', 1024), ('1e5', 100_000), ('4096', 4096)],
)
def test_parse_size(text, value):
  assert argtypes.parse_size(text) == value


@pytest.mark.parametrize('text', ['abc', '1.5', '0', '-4', '2^', 'inf', 'nan'])
def test_parse_size_rejects_what_is_not_a_count(text):
  with pytest.raises(ValueError, match='not a'):
    argtypes.parse_size(text)


def test_state_memory_per_parameter():
  # float32 buffers: sgd-m 1, PNM 2, Adam 2, AMSGrad 3, AdaPNM 4 (+ scalars);
  # bfloat16 momentum halves the momentum buffers only.
  words = {
    'sgdm': (1, 0),
    'pnm': (2, 0),
    'adam': (1, 1),
    'amsgrad': (1, 2),
    'adapnm': (2, 2),
  }
  for name, (mu, nu) in words.items():
    f32 = memory.state_bytes_per_param(name, None)
    bf16 = memory.state_bytes_per_param(name, 'bfloat16')
    assert f32 == pytest.approx(4 * (mu + nu), abs=0.01)
    assert bf16 == pytest.approx(2 * mu + 4 * nu, abs=0.01)


JAX_NAMES = ['sgdm', 'pnm', 'adam', 'amsgrad', 'adapnm']


def test_plan_groups_keeps_everything_together_when_it_fits():
  n = 2**20
  budget = memory.bytes_needed(n, JAX_NAMES)
  assert memory.plan_groups(n, JAX_NAMES, budget) == ([JAX_NAMES], [])


@pytest.mark.parametrize(
  'fits_with, groups, too_big',
  [
    # Words per parameter: 2 shared + per optimizer 2 + its state words.
    (
      ['sgdm', 'pnm', 'adam'],
      [['sgdm', 'pnm', 'adam'], ['sgdm', 'amsgrad'], ['sgdm', 'adapnm']],
      [],
    ),
    (
      ['sgdm', 'amsgrad'],
      [['sgdm', 'pnm'], ['sgdm', 'adam'], ['sgdm', 'amsgrad']],
      ['adapnm'],
    ),
    (['sgdm'], [], ['pnm', 'adam', 'amsgrad', 'adapnm']),
  ],
)
def test_plan_groups_splits_to_fit_with_the_baseline_in_each(
  fits_with, groups, too_big
):
  n = 2**28
  budget = memory.bytes_needed(n, fits_with)
  planned, skipped = memory.plan_groups(n, JAX_NAMES, budget)
  assert (planned, skipped) == (groups, too_big)
  for group in planned:
    assert group[0] == 'sgdm'
    assert memory.bytes_needed(n, group) <= budget


def test_run_in_memory_groups_reports_each_optimizer_once(
  tmp_path, capsys, monkeypatch
):
  # Memory for sgd-m, PNM and Adam side by side at 1e4 parameters only.
  budget = memory.bytes_needed(10_000, ['sgdm', 'pnm', 'adam'])
  monkeypatch.setattr(memory, 'available_bytes', lambda: budget / 0.6)
  result = step_time.main(
    [
      '--sizes',
      '1e4',
      '--trees',
      'none',
      '--repeats',
      '2',
      '--compile-repeats',
      '1',
      '--target-time',
      '0.002',
      '--optimizers',
      ','.join(JAX_NAMES),
      '--no-torch',
      '--no-progress',
      '--no-plot',
      '--out',
      str(tmp_path / 'out'),
    ]
  )
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


TORCH_NAMES = [
  'torch_sgd_foreach',
  'torch_pnm',
  'pytorch_optimizer_pnm',
  'pytorch_optimizer_adapnm',
]


def _run(tmp_path, capsys, *extra):
  out = tmp_path / 'out'
  result = step_time.main(
    [
      '--sizes',
      '1000,2^40',
      '--trees',
      'none',
      '--repeats',
      '2',
      '--compile-repeats',
      '2',
      '--target-time',
      '0.002',
      '--optimizers',
      ','.join(['sgdm', 'pnm', 'amsgrad', 'adapnm'] + TORCH_NAMES),
      '--no-progress',
      '--out',
      str(out),
      *extra,
    ]
  )
  return result, out, capsys.readouterr().out


def test_smoke_run_writes_table_json_and_plot(tmp_path, capsys):
  result, out, stdout = _run(tmp_path, capsys)
  with open(out / 'step_time.json') as f:
    saved = json.load(f)
  assert saved['table'] == result['table']
  assert result['table'] in stdout
  assert (out / 'step_time.png').stat().st_size > 1000
  for key in ('jax', 'optax', 'pnm_optax'):
    assert saved['meta']['versions'][key]
  for key in ('cpu', 'backend', 'loadavg', 'loadavg_end', 'command'):
    assert key in saved['meta']
  assert saved['complete'] is True
  assert saved['copy_gbps'] > 0
  # 2^40 parameters cannot fit: skipped with the reason printed.
  assert [s['num_params'] for s in saved['skipped']] == [2**40]
  assert 'skipped leaf 2^40' in stdout
  jax_names = ['sgdm', 'pnm', 'amsgrad', 'adapnm']
  torch_names = [
    n
    for n in TORCH_NAMES
    if torch
    and (HAS_PYTORCH_OPTIMIZER or not n.startswith('pytorch_optimizer'))
  ]
  rows = {r['optimizer']: r for r in saved['rows']}
  assert list(rows) == jax_names + torch_names
  compiled = {r['optimizer']: r for r in saved['compile_rows']}
  assert list(compiled) == jax_names  # PyTorch has no compile step
  for name in jax_names:
    row = rows[name]
    assert row['num_params'] == 1000 and row['num_leaves'] == 1
    assert row['device_s'] > 0 and row['dispatched_s'] > 0
    assert len(row['samples']['device']) == 2
    assert row['hlo_words'] > 0
    assert compiled[name]['compile_s'] > 0
    assert compiled[name]['trace_lower_s'] > 0
    assert len(compiled[name]['samples']['total_s']) == 2
    assert (
      row['floor_words']
      == {'sgdm': 5, 'pnm': 6, 'amsgrad': 9, 'adapnm': 10}[name]
    )
    fastest = min(row['device_s'], row['dispatched_s'])
    assert row['floor_gbps'] == pytest.approx(
      row['floor_words'] * 4 * 1000 / fastest / 1e9
    )
    assert row['floor_pct_copy'] == pytest.approx(
      100 * row['floor_gbps'] / saved['copy_gbps']
    )
    assert name in stdout
  # A ratio against itself, round by round, is exactly one.
  assert rows['sgdm']['device_x_sgdm'] == 1.0
  assert rows['amsgrad']['device_x_amsgrad'] == 1.0
  for name in torch_names:
    assert rows[name]['device_s'] is None and rows[name]['dispatched_s'] > 0
    assert rows[name]['torch_device'] == 'cpu'  # as JAX's backend here
  if not torch:
    assert any('torch is not installed' in n for n in saved['notes'])
  elif not HAS_PYTORCH_OPTIMIZER:
    assert any(
      'pytorch_optimizer is not installed' in n for n in saved['notes']
    )
  assert result['compile_table'] in stdout
  # Measured ratios only: the report does not judge them.
  report = '\n'.join(
    l for l in stdout.splitlines() if not l.startswith('# command')
  )
  assert not re.search(r'\b(target|met|MISSED|verdict)\b', report, re.I)


def test_smoke_run_without_torch(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(
    contenders,
    'module_available',
    lambda module: module not in ('torch', 'pytorch_optimizer'),
  )
  result, _, stdout = _run(
    tmp_path, capsys, '--no-plot', '--compile-repeats', '1'
  )
  assert {r['optimizer'] for r in result['rows']} == {
    'sgdm',
    'pnm',
    'amsgrad',
    'adapnm',
  }
  assert (
    'torch_sgd_foreach, torch_pnm, pytorch_optimizer_pnm, '
    'pytorch_optimizer_adapnm skipped: torch is not installed'
  ) in stdout


def test_compile_only_on_the_many_leaves_tree(tmp_path, capsys, monkeypatch):
  # The documented command, on a 12-leaf version of the tree to stay quick.
  monkeypatch.setitem(
    trees.TREES, 'many_leaves', lambda: trees.many_leaves_shapes(12)
  )
  result = step_time.main(
    [
      '--trees',
      'many_leaves',
      '--sizes',
      'none',
      '--compile-only',
      '--compile-repeats',
      '2',
      '--no-progress',
      '--out',
      str(tmp_path / 'out'),
    ]
  )
  stdout = capsys.readouterr().out
  assert result['rows'] == [] and 'table' not in result
  rows = {r['optimizer']: r for r in result['compile_rows']}
  assert list(rows) == JAX_NAMES + [contenders.STATIC_PARITY]
  for row in rows.values():
    assert row['config'] == 'many_leaves (12 leaves)'
    assert row['num_leaves'] == 12
    assert row['trace_lower_s'] > 0 and row['compile_s'] > 0
    assert row['total_s'] == pytest.approx(
      np.median(
        np.add(row['samples']['trace_lower_s'], row['samples']['compile_s'])
      )
    )
    assert row['hlo_instructions_per_leaf'] == row['hlo_instructions'] / 12
    assert row['stablehlo_bytes_per_leaf'] == row['stablehlo_bytes'] / 12
    assert row['hlo_instructions'] > 12 and row['stablehlo_bytes'] > 0
  for ref in ('sgdm', 'adam', 'amsgrad'):  # a ratio to itself, per round
    assert rows[ref][f'total_x_{ref}'] == 1.0
  # More state, more work per leaf: AdaPNM's step is the largest program.
  assert rows['adapnm']['hlo_instructions'] > rows['sgdm']['hlo_instructions']
  assert result['compile_table'] in stdout
  assert any(
    line.startswith(
      'many_leaves (12 leaves), trace+lower+compile: PNM / optax.adam '
    )
    for line in result['key_ratios']
  )
  with open(tmp_path / 'out' / 'step_time.json') as f:
    assert json.load(f)['compile_rows'] == json.loads(
      json.dumps(result['compile_rows'])
    )


HLO_TEXT = """HloModule jit_f, is_scheduled=true, entry_computation_layout={(f32[8]{0})->f32[8]{0}}

FileNames
1 "f.py"

%fused_computation (param_0.1: f32[8], param_1.2: f32[8]) -> f32[8] {
  %param_0.1 = f32[8]{0} parameter(0)
  %param_1.2 = f32[8]{0} parameter(1)
  %mul.0 = f32[8]{0} multiply(%param_0.1, %param_1.2), metadata={op_name="a = b"}
  ROOT %add.0 = f32[8]{0} add(%mul.0, %param_1.2)
}

ENTRY %main.1 (x.1: f32[8], y.1: f32[8]) -> f32[8] {
  x.1 = f32[8]{0} parameter(0), metadata={op_name="x"}
  %y.1 = f32[8]{0} parameter(1)
  ROOT %fusion = f32[8]{0} fusion(x.1, %y.1), kind=kLoop, calls=%fused_computation
}
"""


def _budget_run(tmp_path, *flags):
  return step_time.main(
    [
      '--sizes=1e3,1e4',
      '--trees=none',
      '--optimizers=sgdm,pnm,pnm_static',
      '--no-torch',
      '--repeats=2',
      '--compile-repeats=1',
      '--target-time=0.001',
      '--no-progress',
      '--no-plot',
      f'--out={tmp_path}',
      *flags,
    ]
  )


def test_time_budgets_skip_what_they_do_not_reach(tmp_path, capsys):
  # No time per configuration: only the baseline's step is timed.
  result = _budget_run(tmp_path, '--config-budget=1e-9')
  assert {r['optimizer'] for r in result['rows']} == {'sgdm'}
  assert [s['optimizer'] for s in result['skipped']] == [
    'sgdm (compile), pnm (compile), pnm_static (compile), '
    'pnm (step time), pnm_static (step time)'
  ] * 2
  # No time for the report: the first configuration runs, no other starts.
  result = _budget_run(tmp_path, '--budget=1e-9')
  assert {r['config'] for r in result['rows']} == {'leaf 1e3'}
  (skip,) = [s for s in result['skipped'] if s['config'] == 'leaf 1e4']
  assert 'optimizer' not in skip and 'budget' in skip['reason']
  assert '# skipped leaf 1e4: over the' in capsys.readouterr().out


def test_static_parity_rows_and_no_loop_on_many_leaves(tmp_path, monkeypatch):
  monkeypatch.setattr(step_time, 'LOOP_MAX_LEAVES', 0)  # every tree 'large'
  result = _budget_run(tmp_path)
  rows = {r['optimizer']: r for r in result['rows']}
  assert rows['pnm_static']['floor_words'] == 6
  for row in rows.values():
    assert row['device_s'] is None and row['dispatched_s'] > 0
  monkeypatch.setattr(step_time, 'LOOP_MAX_LEAVES', 200)
  result = _budget_run(tmp_path)
  rows = {r['optimizer']: r for r in result['rows']}
  assert rows['pnm_static']['device_s'] > 0
  # The same step as pnm's, one word fewer (the untouched buffer).
  words = {r['optimizer']: r['hlo_words'] for r in result['compile_rows']}
  assert words['pnm_static'] < words['pnm']


def test_static_parity_runner_follows_the_reference():
  params = {'w': jnp.linspace(-1.0, 1.0, 64)}
  grads = {'w': jnp.cos(jnp.arange(64.0))}
  runner = timing.StaticParityRunner('pnm_static', params, grads)
  runner.time_dispatched(3)  # 4 steps: an even count
  runner.time_device(4)  # two pairs in the loop
  ref = ReferencePNM([np.asarray(params['w'])])
  for _ in range(2 * (2 + 2) + 4 + 4):  # warm-up: 2 steps and a pair, twice
    ref.step([np.asarray(grads['w'])], contenders.LEARNING_RATE)
  assert int(runner.state.count) == 16
  np.testing.assert_allclose(runner.params['w'], ref.params[0], rtol=2e-6)


def test_count_instructions_counts_every_instruction_line():
  # 4 in the fusion's body (parameters and ROOT included) + 3 in the entry;
  # the header, metadata tables and computation signatures are not counted.
  assert xla_probes.count_instructions(HLO_TEXT) == 7
  assert xla_probes.count_array_copies(HLO_TEXT) == 0
  copy = HLO_TEXT.replace('fusion(x.1', 'copy(x.1')
  assert xla_probes.count_array_copies(copy) == 1


def test_instructions_grow_by_the_same_amount_per_leaf():
  def compile_text(num_leaves):
    args = [
      jax.ShapeDtypeStruct((4 + i,), jnp.float32) for i in range(num_leaves)
    ]
    result = xla_probes.cold_compile(
      lambda: lambda xs: [jnp.sin(x) * 2.0 for x in xs], (args,)
    )
    return result['compiled'].as_text(), result

  # From two leaves up (one leaf has no output tuple): same cost per leaf.
  counts = [
    xla_probes.count_instructions(compile_text(k)[0]) for k in (2, 3, 4)
  ]
  assert counts[2] - counts[1] == counts[1] - counts[0] > 0
  _, result = compile_text(2)
  assert result['trace_lower_s'] > 0 and result['compile_s'] > 0
  described = xla_probes.describe(
    result['lowered'], result['compiled'], num_params=9, num_leaves=2
  )
  assert described['hlo_instructions'] == counts[0]
  assert described['stablehlo_bytes'] == len(result['lowered'].as_text())
  assert 'stablehlo.sine' in result['lowered'].as_text()


@pytest.mark.parametrize(
  'argv, message',
  [
    (['--sizes', '1e5,abc'], "'abc' is not a size"),
    (['--sizes', '-3'], 'not a positive'),
    (['--trees', 'resnet19'], "unknown name(s) 'resnet19'"),
    (['--optimizers', 'sgdm,lion'], "unknown name(s) 'lion'"),
    (['--repeats', '-1'], '-1 is not >= 1'),
    (['--compile-repeats', '0'], '0 is not >= 1'),
    (['--target-time', 'nan'], 'not a finite number'),
    (['--mem-fraction', '1.5'], 'not in (0, 1]'),
    (['--bogus'], 'unrecognized arguments'),
  ],
)
def test_bad_flags_exit_2_with_one_error_line(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    step_time.main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  errors = [l for l in err.splitlines() if 'error:' in l]
  assert len(errors) == 1 and message in errors[0], err
  assert 'Traceback' not in err


@pytest.mark.parametrize(
  'argv', [['--size', '2^'], ['--repeats', '0'], ['--layouts', 'pnm nothing']]
)
def test_layouts_bad_flags_exit_2(argv, capsys):
  with pytest.raises(SystemExit) as exit_info:
    layouts.main(argv)
  assert exit_info.value.code == 2
  assert 'error:' in capsys.readouterr().err


def test_layout_alternatives_compute_the_same_updates():
  alternatives = [f'pnm {n}' for n in layouts.PNM_LAYOUTS] + [
    f'adapnm {n}' for n in layouts.ADAPNM_LAYOUTS
  ]
  names = ['sgdm', 'pnm core', 'adapnm core'] + alternatives
  result = layouts.run(
    4096, repeats=1, target_s=0.001, names=names, progress=False
  )
  rows = {r['layout']: r for r in result['rows']}
  assert set(rows) == set(names)
  for name in alternatives:
    assert rows[name]['max_rel_dev_from_core'] < 1e-5, name
  # Buffers returned swapped cannot stay in their donated slots.
  assert rows['pnm swapped']['hlo_array_copies'] > 0
  assert rows['pnm core']['hlo_array_copies'] == 0


@pytest.mark.skipif(torch is None, reason='PyTorch is not installed')
def test_torch_pnm_matches_the_float64_reference():
  from benchmarks.speed import torch_contenders

  rng = np.random.default_rng(0)
  shapes = [(5,), (3, 4)]
  params = [rng.normal(size=s) for s in shapes]
  reference = ReferencePNM(params, b1=0.9, b0=1.0)
  tensors = [torch.tensor(p) for p in params]
  opt = torch_contenders.TorchPNM(tensors, lr=0.1, betas=(0.9, 1.0))
  for _ in range(7):
    grads = [rng.normal(size=s) for s in shapes]
    for t, g in zip(tensors, grads):
      t.grad = torch.tensor(g)
    opt.step()
    reference.step(grads, lr=0.1)
  for t, p in zip(tensors, reference.params):
    np.testing.assert_allclose(t.numpy(), p, rtol=1e-12, atol=1e-14)
  assert not math.isclose(float(tensors[0][0]), params[0][0])


@pytest.mark.skipif(
  torch is None or not HAS_PYTORCH_OPTIMIZER,
  reason='PyTorch or pytorch_optimizer is not installed',
)
@pytest.mark.parametrize(
  'name, adaptive, lr',
  [
    ('pytorch_optimizer_pnm', False, 0.1),
    ('pytorch_optimizer_adapnm', True, 0.01),
  ],
)
def test_pytorch_optimizer_runs_with_our_hyperparameters(name, adaptive, lr):
  """The benchmarked pytorch_optimizer settings follow the same trajectory
  as the float64 reference with the JAX optimizers' defaults."""
  from benchmarks.speed import torch_contenders

  rng = np.random.default_rng(1)
  shapes = [(5,), (3, 4)]
  params = [rng.normal(size=s) for s in shapes]
  reference = ReferencePNM(
    params, adaptive=adaptive, b1=0.9, b2=0.999, b0=1.0, eps=1e-8, amsgrad=True
  )
  tensors = [torch.tensor(p) for p in params]
  opt = torch_contenders.make(name, tensors, lr)
  for _ in range(7):
    # |g| >= 1: pytorch_optimizer's AdaPNM adds eps before the second-moment
    # bias correction (ours after), which moves a step by ~3e-7 / |g|.
    grads = [
      np.sign(n) * (1 + np.abs(n)) for n in (rng.normal(size=s) for s in shapes)
    ]
    for t, g in zip(tensors, grads):
      t.grad = torch.tensor(g)
    opt.step()
    reference.step(grads, lr=lr)
  for t, p, p0 in zip(tensors, reference.params, params):
    np.testing.assert_allclose(
      t.numpy() - p0, p - p0, rtol=1e-5 if adaptive else 1e-10
    )
    assert np.abs(p - p0).max() > lr / 10
