"""The comparison job's registry and its protocol for noisy training: an
optimizer and a data set added as one entry each, the statistics against
independent references (scipy's own interval, the step-down definition of
Holm's procedure, the noncentral t power), the grid's standard errors and
close-neighbour note, and the convergence flag."""

import math

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from scipy import stats

from benchmarks import comparison
from benchmarks.comparison import data as data_lib
from benchmarks.comparison import optimizers as opt_lib
from benchmarks.comparison import (
  protocol,
  settings,
  statistics,
  summary,
  training,
)


class TwoLayer(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(8, 16, rngs=rngs)
    self.out = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.hidden(x)))


def _blobs(seed=0, n_train=120, n_test=60):
  rng = np.random.default_rng(seed)
  centres = 3 * rng.normal(size=(3, 8))

  def split(n):
    y = rng.integers(0, 3, size=n)
    x = centres[y] + rng.normal(size=(n, 8))
    return x.astype(np.float32), y.astype(np.int64)

  return (*split(n_train), *split(n_test))


@pytest.fixture
def toy_optimizer():
  """Plain SGD with a scale knob, registered for the test and removed."""
  spec = opt_lib.register(
    opt_lib.OptimizerSpec(
      'toysgd',
      'Toy SGD',
      lambda hp, lr, mask: optax.chain(
        optax.add_decayed_weights(hp['weight_decay'], mask),
        optax.sgd(lambda step: hp['scale'] * lr(step)),
      ),
      {'scale': 1.0},
      {'blobs': {'lr': 0.5, 'weight_decay': 0.0}},
      baselines=('sgdm',),
    )
  )
  yield spec
  opt_lib.unregister('toysgd')


@pytest.fixture
def blobs_dataset():
  arrays = _blobs()
  spec = data_lib.register(
    data_lib.DatasetSpec(
      'blobs',
      lambda _: data_lib.from_arrays(*arrays, name='blobs'),
      'mlp',
      3,
      20,
      'three Gaussian blobs (a test)',
    )
  )
  yield spec
  data_lib.SPECS.pop('blobs')


def test_a_registered_optimizer_and_data_set_run_the_job(
  toy_optimizer, blobs_dataset
):
  result = comparison.compare(
    TwoLayer,
    'blobs',
    optimizers=('toysgd', 'sgdm'),
    hparams={'sgdm': {'lr': 0.1}, 'toysgd': {'scale': 0.5}},
    seeds=3,
    progress=False,
    out=None,
  )
  assert result['settings'].epochs == 3  # the data set's defaults
  assert result['settings'].batch_size == 20
  hp = result['hparams']['toysgd']
  assert hp == {'lr': 0.5, 'weight_decay': 0.0, 'scale': 0.5}
  assert 'Toy SGD' in result['tables']['results']
  (pair,) = result['paired']  # its registered baseline
  assert (pair['a'], pair['b']) == ('toysgd', 'sgdm')
  assert 'Toy SGD - SGD-M' in result['tables']['paired']
  assert result['summary']['toysgd']['test_error_mean'] < 0.5  # it learnt


def test_a_data_set_without_defaults_asks_for_an_lr(blobs_dataset):
  with pytest.raises(settings.SettingsError, match='pnm has no default lr'):
    settings.Settings(data='blobs', optimizers=('pnm',)).resolved()
  s = settings.Settings(
    data='blobs', optimizers=('pnm',), hparams={'pnm': {'lr': 0.3}}
  ).resolved()
  assert s.hparams_for('pnm') == {
    'lr': 0.3,
    'weight_decay': 0.0,
    'b1': 0.9,
    'b0': 1.0,
  }


def test_digits_no_longer_gets_the_cifar_papers_hyperparameters():
  cifar = {
    n: opt_lib.default_hparams('cifar10', None, n) for n in opt_lib.SPECS
  }
  for name in opt_lib.OPTIMIZERS:
    hp = settings.Settings(data='digits').resolved().hparams_for(name)
    assert hp['weight_decay'] == 0.0
    assert hp['lr'] == opt_lib.default_hparams('mnist1d', 'mlp', name)['lr']
    assert (hp['lr'], hp['weight_decay']) != (
      cifar[name]['lr'],
      cifar[name]['weight_decay'],
    )


def test_unknown_optimizer_and_taken_names_are_refused():
  with pytest.raises(ValueError, match='registered already'):
    opt_lib.register(opt_lib.SPECS['pnm'])
  with pytest.raises(ValueError, match="unknown optimizer 'nope'; choose"):
    opt_lib.spec('nope')
  with pytest.raises(settings.SettingsError, match="has unknown 'nope'"):
    settings.Settings(optimizers=('nope',)).resolved()


# ------------------------------------------------------------ statistics


@pytest.mark.parametrize('seed', [0, 1])
def test_t_interval_matches_scipy(seed):
  x = np.random.default_rng(seed).normal(0.3, 0.1, size=23)
  got = statistics.t_interval(list(x))
  want = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
  assert got['mean'] == pytest.approx(x.mean(), rel=1e-12)
  assert got['ci_low'] == pytest.approx(want.low, rel=1e-10)
  assert got['ci_high'] == pytest.approx(want.high, rel=1e-10)
  assert got['se'] == pytest.approx(stats.sem(x), rel=1e-12)


def test_paired_interval_is_the_interval_of_the_differences():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=20), rng.normal(size=20)
  got = statistics.paired_summary(dict(enumerate(a)), dict(enumerate(b)))
  want = stats.ttest_rel(a, b).confidence_interval(0.95)
  assert (got['ci_low'], got['ci_high']) == pytest.approx(
    (want.low, want.high), rel=1e-10
  )


def _step_down_rejections(p, alpha):
  """Holm's procedure by its definition: test the k-th smallest at alpha /
  (m - k + 1) and stop at the first that fails."""
  order = sorted(range(len(p)), key=lambda i: p[i])
  rejected = set()
  for k, i in enumerate(order):
    if p[i] > alpha / (len(p) - k):
      break
    rejected.add(i)
  return rejected


@pytest.mark.parametrize('seed', range(4))
def test_holm_adjusted_p_rejects_what_the_step_down_procedure_rejects(seed):
  p = list(np.random.default_rng(seed).uniform(0, 0.08, size=7))
  adjusted = statistics.holm(p)
  for alpha in np.linspace(0.001, 0.2, 200):
    by_adjusted = {i for i, q in enumerate(adjusted) if q <= alpha}
    assert by_adjusted == _step_down_rejections(p, alpha), alpha
  assert all(q >= raw for q, raw in zip(adjusted, p))


def test_holm_skips_missing_p_values_and_caps_at_one():
  assert statistics.holm([None, 0.5, 0.01]) == [None, 0.5, 0.02]
  assert statistics.holm([0.6, 0.7]) == [1.0, 1.0]
  assert statistics.holm([]) == []


@pytest.mark.parametrize('n', [10, 20, 40])
def test_detectable_difference_has_the_stated_power(n):
  std = 0.7
  d = statistics.detectable_difference(std, n)
  assert d is not None
  df, crit = n - 1, stats.t.ppf(0.975, n - 1)
  nc = d / (std / math.sqrt(n))
  power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
  assert power == pytest.approx(0.8, abs=0.02)
  n_needed = statistics.seeds_to_detect(d, std)
  assert n_needed is not None and n_needed <= n


# ------------------------------------------------------------ the grid


def test_grid_keeps_per_seed_scores_and_flags_a_close_neighbour():
  # lr 1 is best; lr 2 is 0.01 worse with a standard error of 0.02.
  noise = {0.5: 0.3, 1.0: 0.10, 2.0: 0.11, 4.0: 0.5}
  spread = np.array([-0.03, -0.01, 0.01, 0.03])
  result = protocol.search(
    lambda lr: list(noise.get(lr, 0.9) + spread), 1.0, 4, 2.0, 0
  )
  assert result.picked == 1.0
  se = float(np.std(spread, ddof=1) / 2)
  assert result.standard_error(1.0) == pytest.approx(se)
  assert result.close_neighbours == [2.0]  # 0.01 < one SE
  as_json = result.as_json()
  point = next(p for p in as_json['grid'] if p['lr'] == 1.0)
  assert point['per_seed'] == pytest.approx(list(0.10 + spread))
  assert as_json['close_neighbours'] == [2.0]


def test_grid_point_with_a_diverged_seed_scores_inf():
  result = protocol.search(
    lambda lr: [0.2, None] if lr > 1 else [0.3, 0.3], 1.0, 3, 2.0, 0
  )
  assert math.isinf(result.scores[2.0])
  assert result.picked == 0.5  # equal scores: the smaller lr
  assert result.close_neighbours == [1.0]  # a tie is within one SE


# ----------------------------------------------------------- convergence


def _history(train_loss, test_error):
  epochs = len(train_loss)
  return training.History(
    seeds=[0, 1],
    metrics={
      'train_loss': [[v, v] for v in train_loss],
      'train_error': [[0.0, 0.0]] * epochs,
      'test_loss': [[0.0, 0.0]] * epochs,
      'test_error': [[v, v] for v in test_error],
    },
    epoch_seconds=[1.0] * epochs,
    learning_rate=[0.1] * epochs,
  )


@pytest.mark.parametrize(
  'loss_end, error_end, moved',
  [
    (0.5, 0.2, False),
    (0.4, 0.2, True),
    (0.5, 0.21, True),
    (0.46, 0.204, False),
  ],
)
def test_convergence_flags_loss_and_error_that_still_move(
  loss_end, error_end, moved
):
  # 10 epochs: the window is the last 2, compared with epoch 7 (0-based);
  # epoch 8 differs, so a window of the wrong length changes the numbers.
  loss = [1.0] * 7 + [0.5, 0.47, loss_end]
  error = [0.5] * 7 + [0.2, 0.197, error_end]
  got = summary.convergence(_history(loss, error))
  assert got['window_epochs'] == 2
  assert got['train_loss_change'] == pytest.approx((loss_end - 0.5) / 0.5)
  assert got['error_change'] == pytest.approx(error_end - 0.2)
  assert got['moved'] is moved


def test_every_pair_of_the_bundled_optimizers_is_registered_once():
  pairs = opt_lib.baseline_pairs(opt_lib.OPTIMIZERS)
  assert pairs == [('pnm', 'sgdm'), ('adapnm', 'adam'), ('adapnm', 'adamw')]
