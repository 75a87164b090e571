"""The comparison job end to end: flags checked before training (exit 2, one
line), results saved per configuration (strict JSON, resume, Ctrl-C),
divergence, the in-progress checkpoint, the Python API with a model defined
here, training against a plain per-seed loop, optimizers against PyTorch-
style references, and the data loaders."""

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from benchmarks import comparison
from benchmarks.comparison import api, checkpoints, cli, training
from benchmarks.comparison import data as data_lib
from benchmarks.comparison import models as models_lib
from benchmarks.comparison import optimizers as opt_lib
from tests import compat
from tests.helpers import REPO, interruptible
from tests.reference import ReferencePNM

TINY = [
  '--dataset',
  'mnist1d',
  '--model',
  'mlp',
  '--epochs',
  '2',
  '--max-steps-per-epoch',
  '3',
  '--seeds',
  '2',
  '--no-progress',
]


def strict_load(path):
  """JSON that a strict reader accepts (no NaN/Infinity)."""

  def refuse(token):
    raise ValueError(f'non-standard JSON token {token}')

  with open(path) as f:
    return json.loads(f.read(), parse_constant=refuse)


def results_files(folder):
  return sorted(str(p) for p in folder.glob('*.json'))


# ------------------------------------------------- flags checked up front


@pytest.mark.parametrize(
  'flags,expected',
  [
    (['--epochs', '0'], '--epochs must be an integer >= 1, got 0'),
    (['--epochs', '-3'], '--epochs must be an integer >= 1'),
    (['--batch-size', '0'], '--batch-size must be an integer >= 1'),
    (['--batch-size', '-5'], '--batch-size must be an integer >= 1'),
    (['--batch-size', '5000'], '--batch-size must be at most 4000'),
    (['--seeds', '0'], '--seeds must be an integer >= 1'),
    (['--optimizers', ''], '--optimizers must name at least one of pnm'),
    (['--optimizers', 'pnm,lion'], "unknown 'lion'; choose from pnm"),
    (['--b0', '-5'], '--b0 must lie in [0, inf), got -5'),
    (['--validation-fraction', '1.5'], 'must lie in (0, 1), got 1.5'),
    (
      ['--hparams', '{"pnm": {"learning_rate": 0.01}}'],
      "unknown hyperparameter 'learning_rate' for pnm; allowed: lr,",
    ),
    (['--hparams', '{"pnm": {"lr": -1}}'], 'pnm lr must be > 0'),
    (['--hparams', '{"pnm": '], '--hparams is not valid JSON'),
    (['--hparams', '[1, 2]'], 'must be a JSON object of objects'),
    (
      ['--hparams', '{"sgdm": {"lr": 0.1}}', '--optimizers', 'pnm'],
      "optimizer 'sgdm', which is not among the optimizers",
    ),
    (
      [
        '--decay-per-step',
        '1e-4',
        '--hparams',
        '{"adamw": {"weight_decay": 0.1}}',
      ],
      'sets weight_decay of adamw',
    ),
    (['--lr-grid', '-1'], '--lr-grid must be an integer >= 0'),
    (['--lr-grid-ratio', '1'], '--lr-grid-ratio must lie in (1, inf)'),
    (['--b0-sweep', '0,x'], '--b0-sweep must be comma-separated numbers'),
    (
      ['--b0-sweep', '1', '--optimizers', 'sgdm'],
      'needs a positive-negative optimizer among the optimizers (pnm, adapnm)',
    ),
    (['--checkpoint-every', '-1'], '--checkpoint-every must lie in [0,'),
    (['--epochs', 'x'], "argument --epochs: invalid int value: 'x'"),
    (['--schedule', 'linear'], 'argument --schedule: invalid choice'),
    (['--study', 'full', '--batch-size', '3'], 'drop --batch-size'),
    (['--study', 'full', '--seeds', '1'], '--seeds must be >= 2'),
  ],
)
def test_bad_flags_exit_2_with_one_line_before_training(
  flags, expected, tmp_path, capsys
):
  argv = flags + ['--out', str(tmp_path / 'out'), '--no-progress']
  with (
    pytest.raises(SystemExit)
    if 'argument' in expected
    else (_no_raise()) as raised
  ):
    status = cli.main(argv)
  if 'argument' in expected:
    status = raised.value.code
  err = capsys.readouterr().err
  assert status == 2, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), err
  assert expected in lines[0], err
  assert not (tmp_path / 'out').exists() or not any(
    (tmp_path / 'out').iterdir()
  )  # nothing was trained or written


class _no_raise:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def test_missing_data_and_unwritable_output_exit_2_in_a_subprocess(tmp_path):
  """Real processes: one line on stderr, no traceback, nothing trained."""
  written = _write_fake_cifar(tmp_path / 'cifar')
  os.remove(tmp_path / 'cifar' / data_lib.CIFAR10_DIR / 'data_batch_3')
  del written
  cases = [
    (
      ['--dataset', 'cifar10', '--data-dir', str(tmp_path / 'cifar')],
      'missing data_batch_3',
    ),
    (
      ['--dataset', 'cifar10', '--data-dir', str(tmp_path / 'none')],
      'CIFAR-10 not found',
    ),
    (['--out', '/dev/null/x'], "--out '/dev/null/x' cannot be written"),
    (['--epochs', '0'], '--epochs must be an integer >= 1'),
  ]
  script = (
    'import sys\nfrom benchmarks.comparison import cli\n'
    'for argv in {!r}:\n'
    '  status = cli.main(argv)\n'
    '  print("STATUS", status, file=sys.stderr, flush=True)\n'
  ).format([c[0] + ['--no-progress'] for c in cases[:3]])
  procs = [
    subprocess.run(
      [sys.executable, '-c', script],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
    ),
    subprocess.run(
      [sys.executable, '-m', 'benchmarks.comparison', *cases[3][0]],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
    ),
  ]
  assert procs[1].returncode == 2
  assert 'Traceback' not in procs[0].stderr + procs[1].stderr
  lines = (
    procs[0].stderr.strip().splitlines() + procs[1].stderr.strip().splitlines()
  )
  errors = [l for l in lines if l.startswith('error: ')]
  assert [l for l in lines if l.startswith('STATUS')] == ['STATUS 2'] * 3
  assert len(errors) == 4 and len(lines) == 7, lines
  for line, (_, expected) in zip(errors, cases):
    assert expected in line, line


# ------------------------------------------ results, resume, divergence


def test_results_named_by_settings_saved_strict_and_resumed(tmp_path, capsys):
  out = tmp_path / 'out'
  argv = TINY + ['--optimizers', 'pnm,sgdm', '--out', str(out)]
  assert cli.main(argv) == 0
  first = capsys.readouterr().out
  (json_path,) = results_files(out)
  assert os.path.basename(json_path).startswith('mnist1d_mlp_')
  png = json_path[:-5] + '.png'
  with open(png, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  saved = strict_load(json_path)
  configs = saved['configurations']
  assert len(configs) == 2
  for record in configs.values():
    prov = record['provenance']
    assert prov['versions']['jax'] == jax.__version__
    assert prov['command'] and prov['timestamp_utc'].endswith('UTC')
    assert prov['finished_utc'].endswith('UTC') and prov['device']
    assert len(record['epoch_seconds']) == len(record['learning_rate']) == 2
    assert record['seeds'] == [0, 1]
  hp = {r['optimizer']: r['hparams']['lr'] for r in configs.values()}
  for record in configs.values():  # step schedule: lr / 10 from epoch 2 of 2
    lr = hp[record['optimizer']]
    assert record['learning_rate'] == [lr, pytest.approx(lr / 10)]
  summary = saved['summary']
  for name in ('pnm', 'sgdm'):
    per_seed = np.array(saved['curves'][name]['test_error'])
    assert per_seed.shape == (2, 2)
    np.testing.assert_allclose(
      per_seed * 1000, np.round(per_seed * 1000), atol=1e-6
    )  # whole test signals
    assert summary[name]['test_error_mean'] == pytest.approx(
      per_seed[:, -1].mean()
    )
    assert summary[name]['test_error_std'] == pytest.approx(
      per_seed[:, -1].std(ddof=1)
    )
    assert (
      f'{100 * per_seed[:, -1].mean():.2f} +- '
      f'{100 * per_seed[:, -1].std(ddof=1):.2f}'
    ) in first
  assert 'PNM - SGD-M' in first and 'paired t-test p' in first

  # the same command again: nothing trained, same results
  mtime = os.path.getmtime(png)
  assert cli.main(argv + ['--no-plot']) == 0
  again = capsys.readouterr().out
  assert again.count('already in the results, skipped') == 2
  assert 'resuming: 2 finished configurations' in again
  assert strict_load(json_path)['summary'] == summary
  assert not os.path.exists(png)  # --no-plot: no stale plot beside it
  del mtime
  # a different experiment gets its own file
  assert (
    cli.main(
      TINY
      + ['--optimizers', 'pnm', '--b0', '0.5', '--out', str(out), '--no-plot']
    )
    == 0
  )
  assert len(results_files(out)) == 2
  # --overwrite starts afresh
  assert cli.main(argv + ['--overwrite', '--no-plot']) == 0
  assert 'skipped' not in capsys.readouterr().out


def test_diverged_run_is_marked_and_json_stays_strict(tmp_path, capsys):
  out = tmp_path / 'out'
  status = cli.main(
    TINY
    + [
      '--optimizers',
      'sgdm,adam',
      '--hparams',
      '{"sgdm": {"lr": 1e12}}',
      '--out',
      str(out),
    ]
  )
  printed = capsys.readouterr().out
  assert status == 0
  (json_path,) = results_files(out)
  saved = strict_load(json_path)
  sgdm = saved['summary']['sgdm']
  assert sgdm['diverged_seeds'] == [0, 1]
  assert sgdm['test_error_mean'] is None and sgdm['test_error_per_seed'] == [
    None,
    None,
  ]
  record = next(
    r for r in saved['configurations'].values() if r['optimizer'] == 'sgdm'
  )
  assert record['diverged_at_epoch'][0] is not None
  # stopped once every seed diverged; curves hold null after divergence
  assert None in record['curves']['train_loss'][record['diverged_at_epoch'][0]]
  assert saved['summary']['adam']['diverged_seeds'] == []
  row = next(l for l in printed.splitlines() if l.startswith('| SGD-M'))
  assert '2/2 diverged' in row
  assert saved['paired'] == []  # no AdaPNM/PNM here


def test_sigint_keeps_finished_configurations_and_the_same_command_resumes(
  tmp_path, capsys
):
  out = tmp_path / 'out'
  argv = [
    '--dataset',
    'mnist1d',
    '--model',
    'mlp',
    '--epochs',
    '80',
    '--max-steps-per-epoch',
    '2',
    '--seeds',
    '2',
    '--optimizers',
    'sgdm,adam,adamw',
    '--out',
    str(out),
    '--no-plot',
    '--no-progress',
    '--checkpoint-every',
    '0',
  ]
  proc = subprocess.Popen(
    interruptible('benchmarks.comparison', *argv),
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.monotonic() + 180
  json_path = None
  while time.monotonic() < deadline and proc.poll() is None:
    files = results_files(out) if out.exists() else []
    # one configuration finished and the next one has saved an epoch
    if (
      files
      and os.path.exists(files[0][:-5] + '.checkpoint.npz')
      and (strict_load(files[0])['configurations'])
    ):
      json_path = files[0]
      break
    time.sleep(0.05)
  assert json_path, proc.communicate()
  proc.send_signal(signal.SIGINT)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, stderr
  assert 'Traceback' not in stderr
  assert stderr.strip().splitlines()[-1].startswith('interrupted:'), stderr
  assert len(stderr.strip().splitlines()) == 1, stderr
  finished = strict_load(json_path)['configurations']
  assert 1 <= len(finished) < 3, stdout
  kept = {r['optimizer'] for r in finished.values()}

  assert cli.main(argv) == 0
  resumed = capsys.readouterr().out
  assert resumed.count('already in the results, skipped') == len(kept)
  if os.path.exists(json_path[:-5] + '.checkpoint.npz'):
    pytest.fail('the checkpoint of a finished configuration was kept')
  assert 'resuming at epoch' in resumed, resumed
  saved = strict_load(json_path)
  assert len(saved['configurations']) == 3
  assert sorted(saved['summary']) == ['adam', 'adamw', 'sgdm']


# -------------------------------------------- training and checkpoints


class TwoLayer(nnx.Module):
  """A model defined here, not in the benchmark (no ``train`` argument)."""

  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(40, 32, rngs=rngs)
    self.out = nnx.Linear(32, 10, rngs=rngs)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.hidden(x)))


def _toy_data(n_train=240, n_test=60, seed=0):
  """Ten Gaussian classes in 40 dimensions."""
  rng = np.random.default_rng(seed)
  centres = 2 * rng.normal(size=(10, 40))

  def split(n):
    y = rng.integers(0, 10, size=n)
    return (centres[y] + rng.normal(size=(n, 40))).astype(np.float32), y.astype(
      np.int64
    )

  return (*split(n_train), *split(n_test))


def _plain_loop(dataset, name, hp, seed, epochs, batch):
  """One seed, one jitted step per batch, Python loops: the reference."""
  steps = dataset.x_train.shape[0] // batch
  tx = opt_lib.make_optimizer(
    name, hp, opt_lib.lr_multiplier('step', epochs, steps)
  )
  graphdef, params = nnx.split(TwoLayer(nnx.Rngs(seed)))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  key = jax.random.key(seed)  # documented: seed s -> key(s), fold in epoch
  losses, errors = [], []
  for epoch in range(epochs):
    order_key, _ = jax.random.split(jax.random.fold_in(key, epoch))
    order = np.asarray(
      jax.random.permutation(order_key, dataset.x_train.shape[0])
    )
    total = 0.0
    for i in range(steps):
      idx = order[i * batch : (i + 1) * batch]
      params, opt_state, loss = step(
        params, opt_state, dataset.x_train[idx], dataset.y_train[idx]
      )
      total += float(loss)
    losses.append(total / steps)
    logits = nnx.merge(graphdef, params)(dataset.x_test)
    errors.append(float(np.mean(np.argmax(logits, -1) != dataset.y_test)))
  return losses, errors


@pytest.mark.parametrize('name', ['pnm'])
def test_seeds_in_parallel_equal_a_plain_loop_per_seed(name):
  dataset = data_lib.from_arrays(*_toy_data())
  hp = opt_lib.default_hparams('mnist1d', 'mlp', name)
  hp['lr'] = 0.05 if name == 'pnm' else 3e-3
  trainer = training.Trainer(dataset, TwoLayer, epochs=4, batch_size=32)
  history = trainer.train(name, hp, [0, 3])
  for i, seed in enumerate([0, 3]):
    losses, errors = _plain_loop(dataset, name, hp, seed, 4, 32)
    got = np.asarray(history.metrics['train_loss'])[:, i]
    np.testing.assert_allclose(got, losses, rtol=2e-4)
    got_err = np.asarray(history.metrics['test_error'])[:, i]
    np.testing.assert_allclose(got_err, errors, atol=1.5 / 60)
  assert history.learning_rate == pytest.approx(
    [hp['lr'], hp['lr'], hp['lr'] * 0.1, hp['lr'] * 0.01], rel=1e-6
  )


def test_resumed_configuration_ends_with_the_same_numbers(tmp_path):
  dataset = data_lib.from_arrays(*_toy_data(seed=1))
  hp = opt_lib.default_hparams('mnist1d', 'mlp', 'adapnm')
  trainer = training.Trainer(dataset, TwoLayer, epochs=5, batch_size=48)
  full = trainer.train('adapnm', hp, [0, 1])
  path = str(tmp_path / 'run.checkpoint.npz')

  def interrupt_after_3(history, epochs):
    if history.epochs_done == 3:
      raise KeyboardInterrupt

  first = checkpoints.ConfigurationCheckpoint(path, 'cfg', every_s=1e9)
  with pytest.raises(KeyboardInterrupt):
    trainer.train(
      'adapnm', hp, [0, 1], on_epoch=interrupt_after_3, checkpointer=first
    )
  assert first.saved_epochs() == 3  # saved on the way out
  assert checkpoints.ConfigurationCheckpoint(path, 'other').saved_epochs() == 0
  fresh = training.Trainer(dataset, TwoLayer, epochs=5, batch_size=48)
  resumed = fresh.train(
    'adapnm',
    hp,
    [0, 1],
    checkpointer=checkpoints.ConfigurationCheckpoint(path, 'cfg', every_s=0),
  )
  assert resumed.epochs_done == 5
  for key in training.METRICS:
    np.testing.assert_array_equal(resumed.metrics[key], full.metrics[key])
  assert resumed.learning_rate == full.learning_rate


def test_api_trains_a_model_defined_in_the_test(tmp_path):
  arrays = _toy_data(seed=2)
  result = comparison.compare(
    TwoLayer,
    arrays,
    optimizers=('pnm', 'sgdm'),
    seeds=3,
    epochs=3,
    batch_size=40,
    out=str(tmp_path),
    progress=False,
    hparams={'pnm': {'lr': 0.3}},
  )
  assert result['model'] == 'TwoLayer' and result['data'] == 'arrays'
  assert result['hparams']['pnm']['lr'] == 0.3
  assert result['hparams']['sgdm']['lr'] == 0.1  # the default
  for name in ('pnm', 'sgdm'):
    s = result['summary'][name]
    per_seed = np.array(result['curves'][name]['test_error'])
    assert per_seed.shape == (3, 3) and s['seeds'] == [0, 1, 2]
    np.testing.assert_allclose(s['test_error_per_seed'], per_seed[:, -1])
    assert 0 <= s['test_error_mean'] < 0.5  # learnt (chance: 0.9)
  (pair,) = result['paired']
  diffs = np.array(result['summary']['pnm']['test_error_per_seed']) - np.array(
    result['summary']['sgdm']['test_error_per_seed']
  )
  assert pair['mean'] == pytest.approx(diffs.mean())
  assert pair['a_wins'] == int(np.sum(diffs < 0))
  assert os.path.basename(result['json_path']).startswith('arrays_TwoLayer_')
  saved = strict_load(result['json_path'])
  assert saved['experiment']['data_fingerprint']
  # other arrays, other experiment
  other = comparison.compare(
    TwoLayer,
    _toy_data(seed=3),
    optimizers=('sgdm',),
    seeds=1,
    epochs=1,
    batch_size=40,
    out=str(tmp_path),
    progress=False,
    plot=False,
  )
  assert other['json_path'] != result['json_path']
  with pytest.raises(ValueError, match='y_train must hold integer'):
    comparison.compare(
      TwoLayer, (arrays[0], arrays[1].astype(float), arrays[2], arrays[3])
    )


def test_api_lr_grid_and_b0_sweeps_in_memory():
  result = comparison.compare(
    'mlp',
    'mnist1d',
    optimizers=('pnm',),
    seeds=2,
    epochs=2,
    max_steps_per_epoch=2,
    lr_grid=2,
    grid_seeds=1,
    max_grid_extensions=1,
    b0_sweep=(0.0, 2.0),
    progress=False,
  )
  assert result['json_path'] is None and result['png_path'] is None
  grid = result['grid']['pnm']
  assert 2 <= len(grid['grid']) <= 3
  assert grid['picked'] in [p['lr'] for p in grid['grid']]
  assert result['hparams']['pnm']['lr'] == grid['picked']
  sweep = result['b0_sweep']
  assert [e['b0'] for e in sweep] == [0.0, 2.0]
  for e in sweep:
    assert e['fixed']['lr'] == grid['picked']
    n = lambda b0: math.sqrt((1 + b0) ** 2 + b0**2)
    assert e['matched']['lr'] == pytest.approx(
      grid['picked'] * n(e['b0']) / n(1.0)
    )
    assert e['matched']['hparams']['b0'] == e['b0']
    # with a grid, each b0 also gets its own lr, from a grid centred on the
    # matched one
    assert e['tuned']['lr'] == e['grid']['picked']
    assert e['tuned']['hparams']['b0'] == e['b0']
    assert any(
      p['lr'] == pytest.approx(e['matched']['lr'], rel=1e-5)
      for p in e['grid']['grid']
    )
  assert 'matched mean step' in result['tables']['b0']
  assert 'own lr' in result['tables']['b0']


def test_decay_per_step_matches_lr_times_weight_decay():
  s = api.settings_lib.Settings(
    decay_per_step=5e-4, hparams={'pnm': {'lr': 0.5}, 'adamw': {'lr': 2e-3}}
  ).resolved()
  for name, lr in (
    ('pnm', 0.5),
    ('adamw', 2e-3),
    ('adapnm', opt_lib.default_hparams('mnist1d', 'cnn', 'adapnm')['lr']),
  ):
    hp = s.hparams_for(name)
    assert hp['lr'] * hp['weight_decay'] == pytest.approx(5e-4)
    assert hp['lr'] == lr
  assert s.hparams_for('sgdm')['weight_decay'] == 0.0  # L2, unchanged


# ------------------------------------- optimizers vs float64 references


def _tree(seed):
  rng = np.random.default_rng(seed)
  return {'w': rng.normal(size=(3, 4)), 'b': rng.normal(size=(4,))}


def _run(name, hp, steps=4):
  """Runs the job's optimizer for ``steps`` on float64 NumPy trees."""
  with compat.enable_x64():
    tx = opt_lib.make_optimizer(name, hp, lambda step: 1.0)
    params = jax.tree.map(jnp.asarray, _tree(0))
    state = tx.init(params)
    for t in range(steps):
      grads = jax.tree.map(jnp.asarray, _tree(100 + t))
      updates, state = tx.update(grads, state, params)
      params = jax.tree.map(lambda p, u: p + u, params, updates)
    return jax.tree.map(np.asarray, params)


def _reference(name, hp, steps=4):
  """PyTorch-style updates written out in NumPy (the paper's baselines)."""
  params = _tree(0)
  lr, wd = hp['lr'], hp['weight_decay']
  if name in ('pnm', 'adapnm'):
    keys = sorted(params)
    ref = ReferencePNM(
      [params[k] for k in keys],
      adaptive=name == 'adapnm',
      b0=hp['b0'],
      weight_decay=wd,
    )
    for t in range(steps):
      out = ref.step([_tree(100 + t)[k] for k in keys], lr)
    return dict(zip(keys, out))
  m = {k: np.zeros_like(v) for k, v in params.items()}
  v = {k: np.zeros_like(v) for k, v in params.items()}
  for t in range(1, steps + 1):
    grads = _tree(99 + t)
    for k, p in params.items():
      g = grads[k]
      if name == 'sgdm':  # torch.optim.SGD(momentum, weight_decay): L2
        g = g + wd * p
        m[k] = hp['momentum'] * m[k] + g
        params[k] = p - lr * m[k]
        continue
      if name == 'adam':  # torch.optim.Adam(weight_decay): L2
        g = g + wd * p
      else:  # torch.optim.AdamW: decoupled p *= 1 - lr * wd
        p = p * (1 - lr * wd)
      m[k] = 0.9 * m[k] + 0.1 * g
      v[k] = 0.999 * v[k] + 0.001 * g * g
      m_hat, v_hat = m[k] / (1 - 0.9**t), v[k] / (1 - 0.999**t)
      params[k] = p - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
  return params


@pytest.mark.parametrize('name', opt_lib.OPTIMIZERS)
def test_optimizers_match_pytorch_style_references(name):
  hp = dict(
    opt_lib.default_hparams('cifar10', 'resnet18', name), weight_decay=0.05
  )
  if 'b0' in hp:
    hp['b0'] = 0.7
  got, want = _run(name, hp), _reference(name, hp)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12)


def test_step_schedule_is_the_papers_at_200_epochs():
  """Paper: lr * 0.1 ** (epoch // 80) over 200 epochs."""
  spe = 7
  mult = opt_lib.lr_multiplier('step', 200, spe)
  for step in (
    0,
    80 * spe - 1,
    80 * spe,
    160 * spe - 1,
    160 * spe,
    200 * spe - 1,
  ):
    assert float(mult(step)) == pytest.approx(0.1 ** ((step // spe) // 80))
  assert opt_lib.lr_drop_epochs(200) == [80, 160]
  assert opt_lib.lr_drop_epochs(1) == []


# ------------------------------------------------------------------ data


def _write_fake_cifar(root, n_per_batch=4, n_test=3, seed=0):
  """CIFAR-10 python batches in the official format; returns the arrays."""
  rng = np.random.default_rng(seed)
  folder = root / data_lib.CIFAR10_DIR
  folder.mkdir(parents=True)
  written = {}
  for name in data_lib.CIFAR10_FILES:
    n = n_test if name == 'test_batch' else n_per_batch
    rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    with open(folder / name, 'wb') as f:
      pickle.dump(
        {b'data': rows, b'labels': labels, b'batch_label': name.encode()}, f
      )
    written[name] = (rows, labels)
  return written


def _rows_to_nhwc(rows):
  """Independent decoding: row layout is R plane, G plane, B plane."""
  out = np.empty((rows.shape[0], 32, 32, 3), np.uint8)
  for n in range(rows.shape[0]):
    for c in range(3):
      out[n, :, :, c] = rows[n, c * 1024 : (c + 1) * 1024].reshape(32, 32)
  return out


def test_cifar10_pickle_loader_parses_the_official_layout(tmp_path):
  written = _write_fake_cifar(tmp_path)
  for data_dir in (tmp_path, tmp_path / data_lib.CIFAR10_DIR):
    ds = data_lib.load_dataset('cifar10', str(data_dir))
    train_names = data_lib.CIFAR10_FILES[:-1]
    want_x = np.concatenate([_rows_to_nhwc(written[n][0]) for n in train_names])
    want_y = np.concatenate([written[n][1] for n in train_names])
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train, want_x)
    np.testing.assert_array_equal(ds.y_train, want_y)
    np.testing.assert_array_equal(
      ds.x_test, _rows_to_nhwc(written['test_batch'][0])
    )
    np.testing.assert_array_equal(ds.y_test, written['test_batch'][1])
    assert ds.augment and ds.input_shape == (32, 32, 3)


def test_incomplete_cifar10_folder_names_what_is_missing(tmp_path):
  _write_fake_cifar(tmp_path)
  os.remove(tmp_path / data_lib.CIFAR10_DIR / 'test_batch')
  with pytest.raises(
    data_lib.DatasetUnavailableError, match='missing test_batch'
  ):
    data_lib.load_dataset('cifar10', str(tmp_path))


def test_cifar10_normalisation_matches_float64(tmp_path):
  _write_fake_cifar(tmp_path)
  ds = data_lib.load_dataset('cifar10', str(tmp_path))
  got = np.asarray(data_lib.normalize(jnp.asarray(ds.x_test), ds))
  mean = np.array([0.4914, 0.4822, 0.4465])
  std = np.array([0.2023, 0.1994, 0.2010])
  want = (ds.x_test.astype(np.float64) / 255 - mean) / std
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_random_crop_flip_is_a_padded_crop_or_its_mirror():
  rng = np.random.default_rng(1)
  images = rng.integers(1, 256, size=(48, 32, 32, 3), dtype=np.uint8)
  out = np.asarray(
    data_lib.random_crop_flip(jax.random.key(3), jnp.asarray(images))
  )
  assert out.shape == images.shape and out.dtype == np.uint8
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  seen = set()
  for n in range(len(images)):
    matches = [
      (dy, dx, flip)
      for dy in range(9)
      for dx in range(9)
      for flip in (0, 1)
      if np.array_equal(
        out[n],
        (lambda c: c[:, ::-1] if flip else c)(
          padded[n, dy : dy + 32, dx : dx + 32]
        ),
      )
    ]
    assert len(matches) == 1, n
    seen.add(matches[0])
  assert {m[2] for m in seen} == {0, 1}  # both flipped and unflipped
  assert len({m[:2] for m in seen}) > 10  # many different offsets


def _fake_split(n, seed):
  rng = np.random.default_rng(seed)
  return (
    rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
    rng.integers(0, 10, size=n),
  )


def test_cifar10_tfds_branch_never_asks_to_download(tmp_path, monkeypatch):
  """A stand-in ``tensorflow_datasets`` records the call: the loader passes
  download=False and converts the arrays; an unprepared copy is 'absent'."""
  import types

  splits = {'train': _fake_split(6, 0), 'test': _fake_split(4, 1)}
  calls = []

  def load(name, split, batch_size, data_dir, download):
    calls.append((name, split, batch_size, data_dir, download))
    if data_dir == 'unprepared':
      raise AssertionError('dataset not prepared')  # tfds raises variously
    images, labels = splits[split]
    return {'image': images, 'label': labels}

  fake = types.SimpleNamespace(load=load, as_numpy=lambda tree: tree)
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', fake)
  ds = data_lib.load_dataset('cifar10', str(tmp_path))
  assert calls and all(c[0] == 'cifar10' and c[4] is False for c in calls)
  assert [c[1] for c in calls] == ['train', 'test']
  np.testing.assert_array_equal(ds.x_train, splits['train'][0])
  np.testing.assert_array_equal(ds.y_test, splits['test'][1])
  assert ds.y_train.dtype == np.int32 and ds.augment
  with pytest.raises(data_lib.DatasetUnavailableError):
    data_lib.load_dataset('cifar10', 'unprepared')


def test_cifar10_hugging_face_save_to_disk_branch(tmp_path, monkeypatch):
  """A stand-in ``datasets`` module: load_from_disk is used only when the
  directory holds a ``save_to_disk`` copy (dataset_dict.json)."""
  import types

  splits = {'train': _fake_split(5, 2), 'test': _fake_split(3, 3)}

  class Split:
    def __init__(self, images, labels):
      self.column_names = ['img', 'label']
      self._columns = {'img': images, 'label': labels}

    def __getitem__(self, key):
      return self._columns[key]

  class DatasetDict(dict):
    def with_format(self, kind):
      assert kind == 'numpy'
      return self

  loaded = []

  def load_from_disk(path):
    loaded.append(path)
    return DatasetDict({k: Split(*v) for k, v in splits.items()})

  monkeypatch.setitem(
    sys.modules,
    'datasets',
    types.SimpleNamespace(load_from_disk=load_from_disk),
  )
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)  # absent
  with pytest.raises(data_lib.DatasetUnavailableError):
    data_lib.load_dataset('cifar10', str(tmp_path))
  assert not loaded
  (tmp_path / 'dataset_dict.json').write_text('{"splits": ["train", "test"]}')
  ds = data_lib.load_dataset('cifar10', str(tmp_path))
  assert loaded == [str(tmp_path)]
  np.testing.assert_array_equal(ds.x_train, splits['train'][0])
  np.testing.assert_array_equal(ds.x_test, splits['test'][0])
  np.testing.assert_array_equal(ds.y_train, splits['train'][1])
  assert ds.x_train.dtype == np.uint8 and ds.y_test.dtype == np.int32


def test_cifar10_path_runs_on_a_local_copy(tmp_path, capsys):
  """uint8 images, normalisation and augmentation through the command."""
  _write_fake_cifar(tmp_path, n_per_batch=8, n_test=5)
  status = cli.main(
    [
      '--dataset',
      'cifar10',
      '--data-dir',
      str(tmp_path),
      '--model',
      'mlp',
      '--epochs',
      '2',
      '--seeds',
      '1',
      '--optimizers',
      'pnm',
      '--batch-size',
      '8',
      '--no-plot',
      '--no-progress',
      '--out',
      str(tmp_path / 'out'),
    ]
  )
  assert status == 0, capsys.readouterr().err
  (path,) = results_files(tmp_path / 'out')
  saved = strict_load(path)
  errors = np.asarray(saved['curves']['pnm']['test_error'])
  np.testing.assert_allclose(errors * 5, np.round(errors * 5), atol=1e-9)
  (record,) = saved['configurations'].values()
  assert record['epoch_seconds'] and saved['experiment']['epochs'] == 2
  assert 'cifar10: 40 train / 5 test examples' in capsys.readouterr().out


def test_digits_split_is_stratified_and_disjoint():
  ds = data_lib.load_digits()
  assert ds.x_train.shape == (1347, 8, 8, 1) and ds.x_test.shape[0] == 450
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
  train_counts = np.bincount(ds.y_train, minlength=10)
  test_counts = np.bincount(ds.y_test, minlength=10)
  assert np.all(np.abs(train_counts / 1347 - test_counts / 450) < 0.01)
  train_rows = {x.tobytes() for x in ds.x_train}
  overlap = sum(x.tobytes() in train_rows for x in ds.x_test)
  assert overlap < 10  # digits holds a few exact duplicate images


def test_validation_holdout_comes_from_the_training_set_only():
  full = data_lib.load_digits()
  ds = data_lib.holdout_validation(full, 0.2)
  assert ds.x_train.shape[0] + ds.x_test.shape[0] == full.x_train.shape[0]
  assert ds.x_test.shape[0] == math.ceil(0.2 * full.x_train.shape[0])
  pool = sorted(
    x.tobytes() + y.tobytes() for x, y in zip(full.x_train, full.y_train)
  )
  split = sorted(
    x.tobytes() + y.tobytes()
    for x, y in zip(
      np.concatenate([ds.x_train, ds.x_test]),
      np.concatenate([ds.y_train, ds.y_test]),
    )
  )
  assert pool == split  # a partition of the training set, test untouched
  assert ds.name == 'digits-validation'


@pytest.mark.parametrize('name', ['mlp', 'cnn'])
def test_image_models_train_mode_updates_only_batch_stats(name):
  model = models_lib.make_model(name, (8, 8, 1), 10, nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jnp.asarray(
    np.random.default_rng(0).normal(size=(16, 8, 8, 1)), jnp.float32
  )
  merged = models_lib.merge(graphdef, params, rest)
  assert merged(x, train=True).shape == (16, 10)
  _, params2, rest2 = nnx.split(merged, nnx.Param, ...)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    np.testing.assert_array_equal(a, b)
  changed = [
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(rest), jax.tree.leaves(rest2))
  ]
  assert all(changed) if name == 'cnn' else not changed


def test_docs_api_example_runs_as_written(tmp_path):
  """The Python example of docs/comparison.md, on arrays made here."""
  with open(os.path.join(REPO, 'docs', 'comparison.md')) as f:
    text = f.read()
  section = text[text.index('## From Python') :]
  code = section[section.index('```python\n') + 10 :]
  code = code[: code.index('```')]
  assert "out='results/mine'" in code
  code = code.replace("out='results/mine'", f'out={str(tmp_path)!r}')
  x_train, y_train, x_test, y_test = _toy_data(seed=4)
  scope = {
    'x_train': x_train,
    'y_train': y_train,
    'x_test': x_test,
    'y_test': y_test,
  }
  exec(compile(code, 'docs/comparison.md', 'exec'), scope)
  results = scope['results']
  assert set(results['summary']) == {'pnm', 'sgdm'}
  assert results['paired'][0]['n'] == 5
  assert 0 <= results['summary']['pnm']['test_error_mean'] < 0.5
