"""The noise study (``--study noise``): flags, a tiny run end to end through
the command line with Ctrl-C and resume, its statistics against independent
references (t formula, exact Wilcoxon by enumeration), and the Hessian
measure against an explicit Hessian."""

import itertools
import json
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
from jax.flatten_util import ravel_pytree
from scipy import stats

from benchmarks.comparison import cli, curvature, noise, training
from benchmarks.comparison import data as data_lib
from tests.helpers import REPO, interruptible

TINY = ['--seeds', '2', '--epochs', '2', '--max-steps-per-epoch', '2']


def strict_load(path):
  def refuse(token):
    raise ValueError(f'non-standard JSON token {token}')

  with open(path) as f:
    return json.loads(f.read(), parse_constant=refuse)


# ----------------------------------------------------------------- flags


@pytest.mark.parametrize(
  'argv, words',
  [
    (['--seeds', '1'], ['--seeds', '>= 2']),
    (['--epochs', '0'], ['--epochs', '>= 1']),
    (['--max-steps-per-epoch', '-3'], ['--max-steps-per-epoch', '>= 1']),
    (['--lr-grid', '3'], ['--study', 'drop --lr-grid']),
    (['--batch-size', '50'], ['--study', 'drop --batch-size']),
    (['--model', 'cnn'], ['--study', 'drop --model']),
    (['--hparams', '{}'], ['--study', 'drop --hparams']),
  ],
)
def test_bad_flags_exit_2_with_one_line(argv, words, tmp_path, capsys):
  code = cli.main(['--study', 'noise', '--out', str(tmp_path), *argv])
  err = capsys.readouterr().err
  assert code == 2
  assert len(err.strip().splitlines()) == 1, err
  assert err.startswith('error: ')
  for word in words:
    assert word in err, err
  assert not list(tmp_path.glob('*.json'))


def test_bad_flags_in_a_subprocess(tmp_path):
  for argv in (['--study', 'nois'], ['--study', 'noise', '--seeds', 'x']):
    proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.comparison', *argv],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert 'Traceback' not in proc.stderr


# ------------------------------------------------ statistics, independently


def _t_test_p(diff):
  """Two-sided paired t-test from its formula."""
  n = len(diff)
  t = np.mean(diff) / (np.std(diff, ddof=1) / np.sqrt(n))
  return 2 * stats.t.sf(abs(t), n - 1)


def _wilcoxon_exact_p(diff):
  """Two-sided exact signed-rank p by enumerating every sign assignment
  (distinct non-zero |differences|)."""
  ranks = np.argsort(np.argsort(np.abs(diff))) + 1
  total = ranks.sum()
  observed = ranks[diff > 0].sum()
  t_obs = min(observed, total - observed)
  signs = np.array(list(itertools.product([0, 1], repeat=len(diff))))
  w_plus = signs @ ranks
  return np.mean(np.minimum(w_plus, total - w_plus) <= t_obs)


@pytest.mark.parametrize('shift', [0.0, 0.01, 0.05])
def test_paired_tests_against_independent_formulas(shift):
  rng = np.random.default_rng(int(100 * shift))
  b = rng.uniform(0.1, 0.3, size=10)
  a = b + shift + 0.02 * rng.normal(size=10)
  got = noise.paired_tests(dict(enumerate(a)), dict(enumerate(b)))
  diff = a - b
  assert got['n'] == 10
  assert got['mean'] == pytest.approx(np.mean(diff), rel=1e-12)
  assert got['std'] == pytest.approx(np.std(diff, ddof=1), rel=1e-12)
  assert got['p_value'] == pytest.approx(_t_test_p(diff), rel=1e-9)
  assert got['wilcoxon_p'] == pytest.approx(_wilcoxon_exact_p(diff), rel=1e-9)
  assert got['a_wins'] == int(np.sum(diff < 0))
  assert got['b_wins'] == int(np.sum(diff > 0))


def test_paired_tests_skip_diverged_seeds_and_flat_differences():
  a = {0: 0.25, 1: None, 2: 0.5, 3: float('nan'), 4: 0.75}
  b = {0: 0.5, 1: 0.1, 2: 0.75, 3: 0.1, 4: 1.0}  # differences exactly -0.25
  got = noise.paired_tests(a, b)
  assert got['n'] == 3
  assert got['mean'] == -0.25
  assert got['p_value'] is None  # every difference equal: no test
  assert got['wilcoxon_p'] == pytest.approx(0.25)  # all 3 negative: 2/2^3


# --------------------------------------------------- the Hessian measure


class _Small(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(3, 3, rngs=rngs)
    self.out = nnx.Linear(3, 2, rngs=rngs)

  def __call__(self, x):
    return self.out(jnp.tanh(self.hidden(x)))


def _explicit_hessian(seed, x, y):
  """The Hessian of the mean cross-entropy at the model's initialisation,
  written here: flat parameters, jax.hessian."""
  params = nnx.state(_Small(nnx.Rngs(seed)), nnx.Param)
  flat, unravel = ravel_pytree(params)
  graphdef = nnx.graphdef(_Small(nnx.Rngs(seed)))

  def loss(p):
    model = nnx.merge(graphdef, unravel(p))
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return np.asarray(jax.hessian(loss)(flat), np.float64)


def test_hessian_measure_against_the_explicit_hessian():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 3)).astype(np.float32)
  y = rng.integers(0, 2, size=64)
  dataset = data_lib.from_arrays(x, y, x[:8], y[:8])
  trainer = training.Trainer(dataset, _Small, epochs=1, batch_size=8)
  seeds = [0, 1, 2]
  params, rest, opt_state = trainer.initial_state(
    'sgdm', {'lr': 0.1, 'weight_decay': 0.0, 'momentum': 0.9}, seeds
  )
  history = training.History(seeds=seeds)
  history.diverged_at = [None, None, 0]  # a diverged seed reports None
  probes = 4096
  measure = curvature.HessianMeasure(examples=48, probes=probes, iterations=300)
  got = measure(trainer, (params, rest, opt_state), seeds, history)
  assert got['hessian_trace'][2] is None
  for i, seed in enumerate(seeds[:2]):
    h = _explicit_hessian(seed, x[:48], y[:48])
    off = h - np.diag(np.diag(h))
    se = np.sqrt(2 * np.sum(off**2) / probes)  # Rademacher: Var z.Hz
    assert abs(got['hessian_trace'][i] - np.trace(h)) < 5 * se + 1e-5
    assert got['trace_se'][i] == pytest.approx(se, rel=0.1)
    eig = np.linalg.eigvalsh(h)
    top = eig[np.argmax(np.abs(eig))]
    assert got['top_eigenvalue'][i] == pytest.approx(top, rel=1e-3)


def test_hutchinson_and_power_iteration_on_a_known_matrix():
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
  eig = np.linspace(-1.0, 3.0, 20)
  eig[-1] = 6.0
  a = jnp.asarray((q * eig) @ q.T, jnp.float32)
  loss = lambda p: 0.5 * p @ a @ p
  p0 = jnp.zeros(20)
  trace, se = curvature.hutchinson_trace(loss, p0, jax.random.key(0), 2000)
  off = np.asarray(a) - np.diag(np.diag(np.asarray(a)))
  expected_se = np.sqrt(2 * np.sum(off**2) / 2000)
  assert abs(float(trace) - eig.sum()) < 5 * expected_se
  assert float(se) == pytest.approx(expected_se, rel=0.1)
  top = curvature.top_eigenvalue(loss, p0, jax.random.key(1), 100)
  assert float(top) == pytest.approx(6.0, rel=1e-4)


# ------------------------------------------------------- equal steps


@pytest.mark.parametrize(
  'batch, epochs, cap, want',
  [
    (100, 30, None, 30),
    (1000, 30, None, 300),
    (400, 30, None, 120),
    (1000, 2, 2, 2),
    (1000, 3, 10, 8),
  ],
)
def test_a_larger_batch_gets_the_steps_of_batch_100(batch, epochs, cap, want):
  got = noise.cell_epochs(4000, batch, epochs, cap)
  assert got == want
  steps = lambda b: min(4000 // b, cap or 4000)
  assert got * steps(batch) >= epochs * steps(100)


# ------------------------------------------- the study end to end (tiny)


def _command(out):
  return interruptible(
    'benchmarks.comparison',
    '--study',
    'noise',
    *TINY,
    '--out',
    str(out),
    '--no-progress',
  )


def test_tiny_study_end_to_end_interrupted_and_resumed(tmp_path):
  out = tmp_path / 'out'
  proc = subprocess.Popen(
    _command(out),
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.monotonic() + 300
  first = None
  while time.monotonic() < deadline and proc.poll() is None:
    files = sorted(out.glob('mnist1d_mlp_*.json')) if out.exists() else []
    if files and len(strict_load(files[0])['configurations']) >= 3:
      first = files[0]
      break
    time.sleep(0.05)
  assert first, proc.communicate()
  proc.send_signal(signal.SIGINT)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, stderr
  assert 'Traceback' not in stderr
  assert len(stderr.strip().splitlines()) == 1, stderr
  kept = strict_load(first)['configurations']
  assert len(kept) >= 3
  assert not (out / 'noise_study.md').exists()

  done = subprocess.run(
    _command(out), cwd=REPO, capture_output=True, text=True, timeout=600
  )
  assert done.returncode == 0, done.stderr
  assert done.stdout.count('already in the results, skipped') >= len(kept)
  resumed = strict_load(first)['configurations']
  for config_id, record in kept.items():  # kept as they were, not retrained
    assert resumed[config_id] == record

  for name in ('noise_study.md', 'noise_study.json', 'noise_study.png'):
    assert (out / name).stat().st_size > 0
  assert (out / 'noise_study.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  report = strict_load(out / 'noise_study.json')
  cells = report['cells']
  assert [(c['model'], c['batch_size']) for c in cells] == [
    ('mlp', 100),
    ('cnn', 100),
  ]
  for c in cells:
    assert c['steps'] == 2 * 2  # epochs x capped steps per epoch
    assert set(c['arms']) == set(noise.ARMS)
    assert set(c['grid']) == set(noise.TUNED_ARMS)  # every arm its own lr
    ref_lr = c['picked_lr']['PNM b0=0']
    for b0 in noise.B0_VALUES:
      tuned = c['arms'][noise.pnm_arm(b0)]
      assert tuned['hparams']['b0'] == b0
      assert tuned['hparams']['lr'] == c['grid'][noise.pnm_arm(b0)]['picked']
      grid = c['grid'][noise.pnm_arm(b0)]
      assert len({p['lr'] for p in grid['grid']}) >= noise.GRID_POINTS
      for point in grid['grid']:
        assert len(point['per_seed']) == noise.GRID_SEEDS
      if not b0:
        continue
      matched = ref_lr * np.hypot(1 + b0, b0)
      # each b0's grid is centred on the lr with b0 = 0's mean step
      assert any(
        p['lr'] == pytest.approx(matched, rel=1e-5) for p in grid['grid']
      )
      arm = c['arms'][noise.matched_arm(b0)]
      assert arm['hparams']['b0'] == b0
      assert arm['hparams']['lr'] == pytest.approx(matched, rel=1e-9)
    assert c['arms']['SGD-M 0.81']['hparams']['momentum'] == 0.81
    assert c['arms']['SGD-M 0.9']['hparams']['momentum'] == 0.9
    for arm in c['arms'].values():
      assert len(arm['errors']) == 2
      assert 'moved' in arm['convergence']
    assert len(c['paired']) == 9
    for pair in c['paired']:
      ea, eb = c['arms'][pair['a']]['errors'], c['arms'][pair['b']]['errors']
      seeds = [s for s in ea if ea[s] is not None and eb[s] is not None]
      diff = np.array([ea[s] - eb[s] for s in seeds])
      assert pair['n'] == len(seeds)
      if seeds:
        assert pair['mean'] == pytest.approx(diff.mean(), abs=1e-12)
      if len(seeds) == 2 and np.ptp(diff) > 0:
        assert pair['p_value'] == pytest.approx(_t_test_p(diff), rel=1e-9)
        half = stats.t.ppf(0.975, 1) * np.std(diff, ddof=1) / np.sqrt(2)
        assert pair['ci_low'] == pytest.approx(diff.mean() - half, rel=1e-9)
        assert pair['ci_high'] == pytest.approx(diff.mean() + half, rel=1e-9)
    # The decomposition adds up: (b0=1 - SGD-M) = buffers + knob.
    total = noise.find_pair(c, 'PNM b0=1', 'SGD-M 0.9')['mean']
    buffers = noise.find_pair(c, 'PNM b0=0', 'SGD-M 0.9')['mean']
    knob = noise.find_pair(c, 'PNM b0=1', 'PNM b0=0')['mean']
    if all(p['n'] == 2 for p in c['paired']):
      assert total == pytest.approx(buffers + knob, abs=1e-12)
  # Holm over each family across the cells, recomputed from the raw p.
  for family in (noise.HEADLINE, noise.MATCHED):
    pairs = [p for c in cells for p in c['paired'] if p['family'] == family]
    tested = sorted(
      (p['p_value'], i) for i, p in enumerate(pairs) if p['p_value'] is not None
    )
    running = 0.0
    for rank, (raw, i) in enumerate(tested):
      running = max(running, min(1.0, (len(tested) - rank) * raw))
      assert pairs[i]['p_holm'] == pytest.approx(running, rel=1e-12)
  text = (out / 'noise_study.md').read_text()
  for word in ('Headline', 'Hessian trace', 'SGD-M 0.81', 'picked', 'Holm'):
    assert word in text
