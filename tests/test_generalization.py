"""The generalization benchmark: CLI smoke run, optimizer construction, data
loaders (digits and a CIFAR-10 copy the test writes), models."""

import json
import math
import os
import pickle
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import data as data_lib
from benchmarks import generalization as gen
from benchmarks import models as models_lib
from tests import compat
from tests.reference import ReferencePNM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------ main job smoke


def test_main_smoke_writes_json_png_and_table(tmp_path, capsys):
  out = tmp_path / 'out'
  results = gen.main([
      '--epochs', '2', '--seeds', '2', '--optimizers', 'pnm,adamw',
      '--max-steps', '3', '--out', str(out), '--no-progress'])
  printed = capsys.readouterr().out
  cfg = results['config']
  assert cfg['dataset'] == 'digits' and cfg['steps_per_epoch'] == 3
  assert cfg['optimizers'] == ['pnm', 'adamw'] and cfg['seeds'] == [0, 1]
  assert set(results['summary']) == set(results['curves']) == {'pnm',
                                                               'adamw'}
  n_test = 450  # 25% of the 1797 digits
  for name, curves in results['curves'].items():
    assert curves['epoch'] == [1, 2]
    per_seed = np.asarray(curves['test_error'])
    assert per_seed.shape == (2, 2)
    # error rates on the 450 held-out digits: whole numbers of mistakes
    np.testing.assert_allclose(per_seed * n_test, np.round(per_seed * n_test),
                               atol=1e-9)
    final = per_seed[:, -1]
    s = results['summary'][name]
    assert s['test_error_mean'] == pytest.approx(final.mean())
    assert s['test_error_std'] == pytest.approx(final.std(ddof=1))
    assert s['best_test_error_mean'] == pytest.approx(per_seed.min(1).mean())
    assert np.all(np.isfinite(curves['train_loss']))
    assert f"{100 * final.mean():.2f} +- {100 * final.std(ddof=1):.2f}" in \
        printed
  assert 'PNM' in printed and 'AdamW' in printed and 'jax ' in printed

  with open(out / 'digits_mlp.json') as f:
    saved = json.load(f)
  assert saved['summary'] == results['summary']
  assert saved['environment']['jax'] == jax.__version__
  png = out / 'digits_mlp.png'
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  import matplotlib.image
  height, width, _ = matplotlib.image.imread(str(png)).shape
  assert height > 200 and width > 600


def test_hparams_and_b0_overrides_reach_the_config():
  args = gen.parse_args(['--hparams', '{"pnm": {"lr": 0.3}}', '--b0', '0.5',
                         '--optimizers', 'pnm,sgdm', '--batch-size', '100'])
  cfg = gen.build_config(args, num_train=1347)
  assert cfg['hparams']['pnm'] == {**gen.PAPER_HPARAMS['pnm'], 'lr': 0.3}
  assert cfg['hparams']['sgdm'] == gen.PAPER_HPARAMS['sgdm']
  assert cfg['b0'] == 0.5 and cfg['steps_per_epoch'] == 13
  with pytest.raises(ValueError, match='unknown optimizers'):
    gen.build_config(gen.parse_args(['--hparams', '{"sgd": {}}']), 100)
  with pytest.raises(ValueError, match='unknown optimizer'):
    gen.build_config(gen.parse_args(['--optimizers', 'lamb']), 100)


def test_step_schedule_is_the_papers_at_200_epochs():
  """Paper: lr * 0.1 ** (epoch // 80) over 200 epochs."""
  spe = 7
  mult = gen.lr_multiplier('step', 200 * spe, spe, 200)
  for step in (0, 80 * spe - 1, 80 * spe, 160 * spe - 1, 160 * spe,
               200 * spe - 1):
    assert float(mult(step)) == pytest.approx(0.1 ** ((step // spe) // 80))


# -------------------------------------- optimizers vs float64 references


def _tree(seed):
  rng = np.random.default_rng(seed)
  return {'w': rng.normal(size=(3, 4)), 'b': rng.normal(size=(4,))}


def _run(name, hp, b0, steps=4):
  """Runs the benchmark's optimizer for ``steps`` on float64 NumPy trees."""
  with compat.enable_x64():
    tx = gen.make_optimizer(name, hp, lambda step: 1.0, b0)
    params = jax.tree.map(jnp.asarray, _tree(0))
    state = tx.init(params)
    for t in range(steps):
      grads = jax.tree.map(jnp.asarray, _tree(100 + t))
      updates, state = tx.update(grads, state, params)
      params = jax.tree.map(lambda p, u: p + u, params, updates)
    return jax.tree.map(np.asarray, params)


def _reference(name, hp, b0, steps=4):
  """PyTorch-style updates written out in NumPy (the paper's baselines)."""
  params = _tree(0)
  lr, wd = hp['lr'], hp['weight_decay']
  if name in ('pnm', 'adapnm'):
    keys = sorted(params)
    ref = ReferencePNM([params[k] for k in keys], adaptive=name == 'adapnm',
                       b0=b0, weight_decay=wd)
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
      m_hat, v_hat = m[k] / (1 - 0.9 ** t), v[k] / (1 - 0.999 ** t)
      params[k] = p - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
  return params


@pytest.mark.parametrize('name', gen.OPTIMIZERS)
def test_benchmark_optimizers_match_pytorch_style_references(name):
  hp = dict(gen.PAPER_HPARAMS[name], weight_decay=0.05)
  b0 = 0.7
  got, want = _run(name, hp, b0), _reference(name, hp, b0)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------- data


def _write_fake_cifar(root, n_per_batch=4, n_test=3, seed=0):
  """CIFAR-10 python batches in the official format; returns the arrays."""
  rng = np.random.default_rng(seed)
  folder = root / data_lib.CIFAR10_DIR
  folder.mkdir(parents=True)
  written = {}
  for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
    n = n_test if name == 'test_batch' else n_per_batch
    rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    with open(folder / name, 'wb') as f:
      pickle.dump({b'data': rows, b'labels': labels,
                   b'batch_label': name.encode()}, f)
    written[name] = (rows, labels)
  return written


def _rows_to_nhwc(rows):
  """Independent decoding: row layout is R plane, G plane, B plane."""
  out = np.empty((rows.shape[0], 32, 32, 3), np.uint8)
  for n in range(rows.shape[0]):
    for c in range(3):
      out[n, :, :, c] = rows[n, c * 1024:(c + 1) * 1024].reshape(32, 32)
  return out


def test_cifar10_pickle_loader_parses_the_official_layout(tmp_path):
  written = _write_fake_cifar(tmp_path)
  for data_dir in (tmp_path, tmp_path / data_lib.CIFAR10_DIR):
    ds = data_lib.load_dataset('cifar10', str(data_dir))
    train_names = [f'data_batch_{i}' for i in range(1, 6)]
    want_x = np.concatenate([_rows_to_nhwc(written[n][0])
                             for n in train_names])
    want_y = np.concatenate([written[n][1] for n in train_names])
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train, want_x)
    np.testing.assert_array_equal(ds.y_train, want_y)
    np.testing.assert_array_equal(ds.x_test,
                                  _rows_to_nhwc(written['test_batch'][0]))
    np.testing.assert_array_equal(ds.y_test, written['test_batch'][1])
    assert ds.augment and ds.image_shape == (32, 32, 3)


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
  out = np.asarray(data_lib.random_crop_flip(jax.random.key(3),
                                             jnp.asarray(images)))
  assert out.shape == images.shape and out.dtype == np.uint8
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  seen = set()
  for n in range(len(images)):
    matches = [(dy, dx, flip)
               for dy in range(9) for dx in range(9) for flip in (0, 1)
               if np.array_equal(
                   out[n], (lambda c: c[:, ::-1] if flip else c)(
                       padded[n, dy:dy + 32, dx:dx + 32]))]
    assert len(matches) == 1, n
    seen.add(matches[0])
  assert {m[2] for m in seen} == {0, 1}  # both flipped and unflipped
  assert len({m[:2] for m in seen}) > 10  # many different offsets


def test_missing_cifar10_fails_with_a_clear_message(tmp_path):
  with pytest.raises(data_lib.DatasetUnavailableError) as err:
    data_lib.load_dataset('cifar10', str(tmp_path))
  message = str(err.value)
  assert 'cifar-10-batches-py' in message and '--data-dir' in message
  assert 'never downloads' in message
  # The command line exits with that message, not a traceback.
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.generalization', '--dataset',
       'cifar10', '--data-dir', str(tmp_path), '--no-progress'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert 'cifar-10-batches-py' in proc.stderr
  assert 'Traceback' not in proc.stderr


def _fake_split(n, seed):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
          rng.integers(0, 10, size=n))


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

  monkeypatch.setitem(sys.modules, 'datasets',
                      types.SimpleNamespace(load_from_disk=load_from_disk))
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


def test_main_runs_cifar10_path_on_a_local_copy(tmp_path):
  _write_fake_cifar(tmp_path, n_per_batch=8, n_test=5)
  results = gen.main([
      '--dataset', 'cifar10', '--data-dir', str(tmp_path), '--model', 'cnn',
      '--epochs', '2', '--seeds', '1', '--optimizers', 'pnm', '--batch-size',
      '8', '--no-plot', '--no-progress', '--out', str(tmp_path / 'out')])
  cfg = results['config']
  assert cfg['dataset'] == 'cifar10' and cfg['steps_per_epoch'] == 5
  errors = np.asarray(results['curves']['pnm']['test_error'])
  np.testing.assert_allclose(errors * 5, np.round(errors * 5), atol=1e-9)
  assert np.all(np.isfinite(results['curves']['pnm']['train_loss']))
  assert os.path.isfile(tmp_path / 'out' / 'cifar10_cnn.json')


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


# ------------------------------------------------------------- models


def test_resnet18_matches_the_reference_architecture():
  """11,173,962 parameters: the paper code's CIFAR ResNet-18 (PyTorch)."""
  model = nnx.eval_shape(
      lambda: models_lib.make_model('resnet18', (32, 32, 3), 10, 0))
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model,
                                                           nnx.Param)))
  assert n_params == 11_173_962
  out = jax.eval_shape(lambda m, x: m(x, train=True), model,
                       jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
  assert out.shape == (2, 10)


@pytest.mark.parametrize('name', ['mlp', 'cnn'])
def test_small_models_train_mode_updates_only_batch_stats(name):
  model = models_lib.make_model(name, (8, 8, 1), 10, 0)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 8, 8, 1)),
                  jnp.float32)
  merged = models_lib.merge(graphdef, params, rest)
  assert merged(x, train=True).shape == (16, 10)
  _, params2, rest2 = nnx.split(merged, nnx.Param, ...)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    np.testing.assert_array_equal(a, b)
  changed = [not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(rest), jax.tree.leaves(rest2))]
  assert all(changed) if name == 'cnn' else not changed


def test_validation_holdout_comes_from_the_training_set_only():
  full = data_lib.load_digits()
  ds = data_lib.holdout_validation(full, 0.2)
  assert ds.x_train.shape[0] + ds.x_test.shape[0] == full.x_train.shape[0]
  assert ds.x_test.shape[0] == math.ceil(0.2 * full.x_train.shape[0])
  pool = sorted(x.tobytes() + y.tobytes()
                for x, y in zip(full.x_train, full.y_train))
  split = sorted(x.tobytes() + y.tobytes() for x, y in
                 zip(np.concatenate([ds.x_train, ds.x_test]),
                     np.concatenate([ds.y_train, ds.y_test])))
  assert pool == split  # a partition of the training set, test untouched
  assert ds.name == 'digits-validation'
