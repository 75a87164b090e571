"""The comparison job's parts, each against an independent reference:
MNIST-1D and its isolation, the MNIST-1D models and the 1-D convolution,
statistics against formulas, the lr protocol on a cheap objective, plots."""

import io
import math
import random
import warnings

import chex
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from benchmarks.comparison import data as data_lib
from benchmarks.comparison import models as models_lib
from benchmarks.comparison import plots, protocol, statistics, training
from benchmarks.comparison import progress as progress_lib

# ------------------------------------------------------------------ MNIST-1D


def test_mnist1d_is_generated_offline_and_leaves_global_generators_alone():
  np.random.seed(1234)
  random.seed(99)
  np_before, py_before = np.random.get_state(), random.getstate()
  data_lib._mnist1d_arrays.cache_clear()  # generate (and import) afresh
  ds = data_lib.load_mnist1d()
  np_after, py_after = np.random.get_state(), random.getstate()
  assert np_before[0] == np_after[0] and np_before[2:] == np_after[2:]
  np.testing.assert_array_equal(np_before[1], np_after[1])
  assert py_before == py_after
  assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert set(np.unique(ds.y_train)) == set(range(10))
  again = data_lib.load_mnist1d()
  np.testing.assert_array_equal(again.x_test, ds.x_test)  # identical data
  again.x_test[0] = 0  # a copy: the cache cannot be corrupted
  assert data_lib.load_mnist1d().x_test[0].any()


# ------------------------------------------------------------------ models


def test_mnist1d_models_have_the_papers_parameter_counts():
  # ConvBase: 1*25*5+25 + 2*(25*25*3+25) + 125*10+10 = 5,210.
  cnn = models_lib.make_model('cnn', (40,), 10, nnx.Rngs(0))
  assert models_lib.count_params(cnn) == 5_210
  # MLP 40-100-100-10: 40*100+100 + 100*100+100 + 100*10+10 = 15,210.
  mlp = models_lib.make_model('mlp', (40,), 10, nnx.Rngs(0))
  assert models_lib.count_params(mlp) == 15_210
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 40)), jnp.float32)
  assert cnn(x).shape == mlp(x).shape == (3, 10)


def test_mnist1d_models_initialise_as_pytorch():
  """Weights and biases uniform in +-1/sqrt(fan_in) (PyTorch defaults)."""
  cnn = models_lib.make_model('cnn', (40,), 10, nnx.Rngs(3))
  for layer, fan_in in ((cnn.conv1, 5), (cnn.conv2, 75), (cnn.conv3, 75)):
    for p in (layer.kernel[...], layer.bias[...]):
      bound = 1 / math.sqrt(fan_in)
      assert np.abs(p).max() <= bound and np.abs(p).max() > 0.8 * bound


@pytest.mark.parametrize(
  'length,channels,width,stride,padding',
  [
    (40, 1, 5, 2, 1),
    (19, 25, 3, 2, 1),
    (10, 25, 3, 2, 1),
    (17, 3, 4, 1, 0),
    (23, 2, 3, 3, 2),
  ],
)
def test_conv1d_equals_xla_convolution(
  length, channels, width, stride, padding
):
  rng = np.random.default_rng(length)
  x = rng.normal(size=(6, length, channels)).astype(np.float32)
  kernel = rng.normal(size=(width, channels, 4)).astype(np.float32)
  bias = rng.normal(size=(4,)).astype(np.float32)
  got = models_lib.conv1d(
    jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias), stride, padding
  )
  want = (
    jax.lax.conv_general_dilated(
      x,
      kernel,
      (stride,),
      [(padding, padding)],
      dimension_numbers=('NWC', 'WIO', 'NWC'),
    )
    + bias
  )
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # and its gradient (the training loop differentiates through it)
  f = lambda k, conv: jnp.sum(jnp.sin(conv(k)))
  g_got = jax.grad(f)(
    jnp.asarray(kernel),
    lambda k: models_lib.conv1d(jnp.asarray(x), k, bias, stride, padding),
  )
  g_want = jax.grad(f)(
    jnp.asarray(kernel),
    lambda k: (
      jax.lax.conv_general_dilated(
        x,
        k,
        (stride,),
        [(padding, padding)],
        dimension_numbers=('NWC', 'WIO', 'NWC'),
      )
      + bias
    ),
  )
  np.testing.assert_allclose(g_got, g_want, rtol=1e-4, atol=1e-4)


def test_resnet18_matches_the_reference_architecture():
  """11,173,962 parameters: the paper code's CIFAR ResNet-18 (PyTorch)."""
  model = nnx.eval_shape(
    lambda: models_lib.make_model('resnet18', (32, 32, 3), 10, nnx.Rngs(0))
  )
  assert models_lib.count_params(model) == 11_173_962
  out = jax.eval_shape(
    lambda m, x: m(x, train=True),
    model,
    jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32),
  )
  assert out.shape == (2, 10)


def test_models_refuse_inputs_they_do_not_take():
  with pytest.raises(ValueError, match='resnet18'):
    models_lib.make_model('resnet18', (40,), 10, nnx.Rngs(0))


# -------------------------------------------------------------- statistics


def test_mean_std_skips_missing_values_and_uses_the_sample_std():
  mean, std = statistics.mean_std([0.1, None, 0.3, float('nan'), 0.2])
  assert mean == pytest.approx(0.2)
  assert std == pytest.approx(math.sqrt(((0.1**2) * 2) / 2))
  assert statistics.mean_std([0.5]) == (0.5, 0.0)
  assert statistics.mean_std([None]) == (None, None)


def test_paired_difference_against_the_t_formula():
  rng = np.random.default_rng(0)
  b = {s: 0.1 + 0.02 * rng.normal() for s in range(9)}
  a = {s: b[s] - 0.01 + 0.01 * rng.normal() for s in range(9)}
  a[3] = b[3]  # a tie
  a[9], b[10] = 0.5, 0.5  # unpaired seeds are left out
  a[4] = None  # a diverged seed is left out
  got = statistics.paired_difference(a, b)
  seeds = [0, 1, 2, 3, 5, 6, 7, 8]
  d = np.array([a[s] - b[s] for s in seeds])
  n = len(d)
  t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
  p = 2 * stats.t.sf(abs(t), n - 1)
  assert got['n'] == n
  assert got['mean'] == pytest.approx(d.mean())
  assert got['std'] == pytest.approx(d.std(ddof=1))
  assert got['p_value'] == pytest.approx(p, rel=1e-9)
  assert got['ties'] == 1
  assert got['a_wins'] == int((d < 0).sum()) and got['b_wins'] == int(
    (d > 0).sum()
  )
  assert got['a_wins'] + got['b_wins'] + got['ties'] == n
  same = statistics.paired_difference({0: 0.1, 1: 0.2}, {0: 0.1, 1: 0.2})
  assert same['p_value'] is None and same['ties'] == 2


# ---------------------------------------------------------------- protocol


def _bowl(best_lr, calls):
  """Validation error with its minimum at ``best_lr`` (cheap stand-in for
  training); diverges above 8x the best."""

  def score(lr):
    calls.append(lr)
    if lr > 8 * best_lr:
      return float('inf')
    return 0.1 + 0.01 * math.log2(lr / best_lr) ** 2

  return score


def test_grid_search_picks_the_best_interior_point_without_extending():
  calls = []
  result = protocol.search(
    _bowl(0.1, calls), center=0.1, points=5, ratio=2.0, max_extensions=3
  )
  assert result.grid == [0.025, 0.05, 0.1, 0.2, 0.4]
  assert result.picked == 0.1 and result.extensions == 0
  assert result.at_edge is None and sorted(calls) == result.grid


def test_grid_search_extends_past_diverged_points_towards_the_best():
  calls = []
  result = protocol.search(
    _bowl(0.004, calls), center=0.1, points=3, ratio=2.0, max_extensions=10
  )
  # 0.05, 0.1, 0.2 all diverge (> 0.032): grow downwards; 0.025 is finite
  # and at the edge, ... until 0.003125 is interior (0.0015625 is worse).
  assert calls == [0.05, 0.1, 0.2, 0.025, 0.0125, 0.00625, 0.003125, 0.0015625]
  assert result.picked == 0.003125 and result.extensions == 5
  assert result.at_edge is None


def test_grid_search_says_when_the_pick_is_still_at_the_edge():
  result = protocol.search(
    _bowl(1e-4, []), center=0.1, points=3, ratio=2.0, max_extensions=2
  )
  assert result.extensions == 2 and result.at_edge == 'low'
  assert result.picked == min(result.grid) == 0.0125
  high = protocol.search(
    _bowl(10.0, []), center=0.1, points=3, ratio=2.0, max_extensions=1
  )
  assert high.at_edge == 'high' and high.picked == 0.4


def test_grid_search_stops_at_the_divergence_edge():
  calls = []
  # best at 0.4 (the high edge of the first grid); 0.8 is finite and worse
  result = protocol.search(
    _bowl(0.4, calls), center=0.1, points=5, ratio=2.0, max_extensions=3
  )
  assert result.picked == 0.4 and result.at_edge is None
  assert calls[-1] == 0.8 and result.extensions == 1


# ------------------------------------------------------------------- plots


def _curves(epochs, seeds, rng):
  return {
    'epoch': list(range(1, epochs + 1)),
    **{
      k: rng.uniform(0.05, 0.5, size=(seeds, epochs)).tolist()
      for k in ('train_loss', 'train_error', 'test_error')
    },
  }


def test_curves_figure_bands_markers_and_lr_drops():
  backend = matplotlib.get_backend()
  rng = np.random.default_rng(0)
  curves = {'pnm': _curves(10, 3, rng), 'sgdm': _curves(10, 3, rng)}
  curves['pnm']['test_error'][1][5:] = [float('nan')] * 5  # a diverged seed
  fig = plots.curves_figure(curves, title='t', lr_drops=[4, 8])
  axes = fig.axes
  assert len(axes) == 3
  test_ax = axes[2]
  assert '%' in test_ax.get_ylabel() and '%' in axes[1].get_ylabel()
  lines = [l for l in test_ax.get_lines() if l.get_label() in ('PNM', 'SGD-M')]
  assert len(lines) == 2 and all(l.get_marker() == 'o' for l in lines)
  # plotted in percent: the mean over seeds (finite ones) times 100
  per_seed = np.array(curves['sgdm']['test_error'])
  sgdm = next(l for l in lines if l.get_label() == 'SGD-M')
  np.testing.assert_allclose(sgdm.get_ydata(), 100 * per_seed.mean(0))
  # one +-std band per optimizer and panel
  assert len(test_ax.collections) == 2
  band = test_ax.collections[1].get_paths()[0].vertices[:, 1]
  std = 100 * per_seed.std(0, ddof=1)
  assert band.max() == pytest.approx((100 * per_seed.mean(0) + std).max())
  # dotted lines between the epochs before and after each lr drop
  drops = [
    l.get_xdata()[0] for l in test_ax.get_lines() if l.get_linestyle() == ':'
  ]
  assert drops == [4.5, 8.5]
  assert matplotlib.get_backend() == backend  # no backend switch


def test_one_epoch_run_draws_visible_points(tmp_path):
  rng = np.random.default_rng(1)
  fig = plots.curves_figure({'adam': _curves(1, 2, rng)})
  line = fig.axes[2].get_lines()[0]
  assert len(line.get_xdata()) == 1 and line.get_marker() == 'o'
  fig.savefig(tmp_path / 'one.png')
  assert (tmp_path / 'one.png').read_bytes()[:4] == b'\x89PNG'


def test_final_errors_figure_shows_reference_marks():
  summary = {
    'pnm': {'test_error_mean': 0.05, 'test_error_std': 0.01},
    'sgdm': {'test_error_mean': None, 'test_error_std': None},
  }
  fig = plots.final_errors_figure(summary, reference={'pnm': 4.48})
  ax = fig.axes[0]
  assert [round(b.get_height(), 6) for b in ax.patches][0] == 5.0
  marks = [l for l in ax.get_lines() if l.get_label() == 'reference']
  assert len(marks) == 1 and list(marks[0].get_ydata()) == [4.48]
  assert list(marks[0].get_xdata()) == [0]


def test_figures_display_as_png_in_any_notebook():
  fig = plots.final_errors_figure(
    {'pnm': {'test_error_mean': 0.05, 'test_error_std': 0.01}}
  )
  assert fig._repr_png_()[:8] == b'\x89PNG\r\n\x1a\n'  # what display() shows


# ---------------------------------------------------------------- progress


class _Stream(io.StringIO):
  def __init__(self, tty):
    super().__init__()
    self._tty = tty

  def isatty(self):
    return self._tty


def _history(epochs_done, errors=(0.1, 0.3)):
  h = training.History(seeds=[0, 1])
  for _ in range(epochs_done):
    for k in training.METRICS:
      h.metrics[k].append(list(errors))
    h.epoch_seconds.append(0.5)
    h.learning_rate.append(0.1)
  return h


def test_progress_off_a_terminal_prints_plain_lines_without_warnings():
  stream = _Stream(tty=False)
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # any warning (tqdm's included) fails
    progress = progress_lib.Progress(stream=stream, interval_s=0.0)
    progress.start('PNM lr 1', epochs=3)
    for done in (1, 2, 3):
      progress.epoch(_history(done), 3)
    progress.finish(_history(3))
  lines = stream.getvalue().splitlines()
  assert lines == [
    'PNM lr 1: epoch 1/3, error 20.00% (mean of 2), 0.50 s/epoch',
    'PNM lr 1: epoch 2/3, error 20.00% (mean of 2), 0.50 s/epoch',
    'PNM lr 1: 3 epochs, error 20.00% (mean of 2), 1.5 s',
  ]


def test_progress_on_a_terminal_draws_a_bar():
  stream = _Stream(tty=True)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    progress = progress_lib.Progress(stream=stream)
    progress.start('SGD-M lr 0.1', epochs=2)
    progress.epoch(_history(1), 2)
    progress.epoch(_history(2, errors=(float('nan'), 0.2)), 2)
    progress.finish(_history(2))
  text = stream.getvalue()
  assert '\rSGD-M lr 0.1:   0%|' in text and '0/2 [' in text  # the bar
  assert text.endswith(
    '\rSGD-M lr 0.1: 2 epochs, error 20.00% (mean of 2), 1.0 s\n'
  )  # bar cleared, then the plain summary


@pytest.mark.parametrize(
  'cpus,seeds,expected',
  [
    (2, range(5), [[0, 1, 2], [3, 4, 4]]),
    (2, range(4), [[0, 1], [2, 3]]),
    (2, [7], [[7]]),
    (1, range(5), [[0, 1, 2, 3, 4]]),
  ],
)
def test_seed_groups_share_one_program(monkeypatch, cpus, seeds, expected):
  """Equal groups (one compiled program); a short group repeats a seed."""
  monkeypatch.setattr(training.os, 'cpu_count', lambda: cpus)
  assert training.seed_groups(seeds) == expected


def test_seed_group_padding_round_trips():
  tree = {'w': jnp.arange(10.0).reshape(5, 2), 'n': jnp.arange(5)}
  padded = training._pad(tree, 6)
  np.testing.assert_array_equal(padded['w'][5], tree['w'][4])
  parts = training._split(padded, [3, 3])
  back = training._trim(training._concat(parts), 5)
  chex.assert_trees_all_equal(back, tree)
