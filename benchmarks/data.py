"""Data sets for the generalization benchmark: digits (bundled) and CIFAR-10.

Images are returned as NumPy arrays in NHWC layout: ``uint8`` for CIFAR-10
(normalised on the device, batch by batch, to keep host and device memory
small) and ``float32`` in [0, 1] for digits. Nothing is ever downloaded.
"""

import dataclasses
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np

# Per-channel statistics used by the paper's code (torchvision transforms).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR10_DIR = 'cifar-10-batches-py'

CIFAR10_HELP = (
    'CIFAR-10 is not available locally (this benchmark never downloads). '
    'Provide it in one of these ways:\n'
    '  1. the python pickle batches: download '
    'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extract it and '
    f'pass --data-dir DIR where DIR or DIR/{CIFAR10_DIR} holds data_batch_1 '
    '... data_batch_5 and test_batch;\n'
    '  2. TensorFlow Datasets: pip install tensorflow-datasets, prepare it once '
    'with `tfds build cifar10 --data_dir DIR` and pass --data-dir DIR;\n'
    '  3. Hugging Face datasets: pip install datasets, then '
    "datasets.load_dataset('uoft-cs/cifar10').save_to_disk(DIR) once and pass "
    '--data-dir DIR.')


class DatasetUnavailableError(RuntimeError):
  """The requested data set is not on this machine."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test arrays plus how to preprocess a batch on the device."""

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  augment: bool  # random crop (pad 4) + horizontal flip when training
  mean: tuple[float, ...] | None = None  # per channel, images in [0, 1]
  std: tuple[float, ...] | None = None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.x_train.shape[1:])


def load_digits(test_fraction: float = 0.25, split_seed: int = 0) -> Dataset:
  """scikit-learn's bundled 8x8 digits (1797 images), stratified split."""
  from sklearn.datasets import load_digits as sk_load_digits
  from sklearn.model_selection import train_test_split

  bunch = sk_load_digits()
  images = (bunch.images / 16.0).astype(np.float32)[..., None]
  x_train, x_test, y_train, y_test = train_test_split(
      images, bunch.target.astype(np.int32), test_size=test_fraction,
      random_state=split_seed, stratify=bunch.target)
  return Dataset('digits', x_train, y_train, x_test, y_test, num_classes=10,
                 augment=False)


def _unpickle(path: str) -> dict:
  with open(path, 'rb') as f:
    return pickle.load(f, encoding='bytes')


def parse_cifar_batch(batch: dict) -> tuple[np.ndarray, np.ndarray]:
  """A CIFAR python batch (rows of 3072 bytes, CHW) to NHWC uint8 + labels."""
  data = np.asarray(batch[b'data'], dtype=np.uint8)
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  labels = np.asarray(batch[b'labels'], dtype=np.int32)
  return np.ascontiguousarray(images), labels


def _find_pickle_dir(data_dir: str) -> str | None:
  for candidate in (os.path.join(data_dir, CIFAR10_DIR), data_dir):
    if os.path.isfile(os.path.join(candidate, 'test_batch')):
      return candidate
  return None


def load_cifar10_pickles(directory: str) -> tuple[np.ndarray, ...]:
  """Reads data_batch_1..5 and test_batch from ``directory``."""
  train = [parse_cifar_batch(_unpickle(os.path.join(directory,
                                                    f'data_batch_{i}')))
           for i in range(1, 6)]
  x_test, y_test = parse_cifar_batch(_unpickle(os.path.join(directory,
                                                            'test_batch')))
  x_train = np.concatenate([x for x, _ in train])
  y_train = np.concatenate([y for _, y in train])
  return x_train, y_train, x_test, y_test


def _load_cifar10_tfds(data_dir: str | None):
  """From a prepared TFDS directory; None if tfds is missing or unprepared."""
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    return None
  try:
    splits = [tfds.as_numpy(tfds.load('cifar10', split=s, batch_size=-1,
                                      data_dir=data_dir, download=False))
              for s in ('train', 'test')]
  except Exception:  # not prepared: tfds raises various errors  pylint: disable=broad-except
    return None
  (train, test) = splits
  return (np.asarray(train['image'], np.uint8),
          np.asarray(train['label'], np.int32),
          np.asarray(test['image'], np.uint8),
          np.asarray(test['label'], np.int32))


def _load_cifar10_hf(data_dir: str | None):
  """From a ``save_to_disk`` copy; None if missing or not importable."""
  if data_dir is None or not os.path.isfile(
      os.path.join(data_dir, 'dataset_dict.json')):
    return None
  try:
    import datasets
  except ImportError:
    return None
  ds = datasets.load_from_disk(data_dir).with_format('numpy')
  image_key = 'img' if 'img' in ds['train'].column_names else 'image'
  return tuple(
      np.asarray(ds[split][key], dtype)
      for split in ('train', 'test')
      for key, dtype in ((image_key, np.uint8), ('label', np.int32)))


def load_cifar10(data_dir: str | None) -> Dataset:
  """CIFAR-10 from local files; raises DatasetUnavailableError otherwise."""
  arrays = None
  if data_dir is not None:
    pickle_dir = _find_pickle_dir(data_dir)
    if pickle_dir is not None:
      arrays = load_cifar10_pickles(pickle_dir)
  if arrays is None:
    arrays = _load_cifar10_hf(data_dir)
  if arrays is None:
    arrays = _load_cifar10_tfds(data_dir)
  if arrays is None:
    raise DatasetUnavailableError(
        f'{CIFAR10_HELP}\n(looked in --data-dir={data_dir!r})')
  x_train, y_train, x_test, y_test = arrays
  return Dataset('cifar10', x_train, y_train, x_test, y_test, num_classes=10,
                 augment=True, mean=CIFAR10_MEAN, std=CIFAR10_STD)


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
  """Loads ``'digits'`` or ``'cifar10'``."""
  if name == 'digits':
    return load_digits()
  if name == 'cifar10':
    return load_cifar10(data_dir)
  raise ValueError(f"unknown dataset {name!r}; choose 'digits' or 'cifar10'")


def holdout_validation(dataset: Dataset, fraction: float,
                       seed: int = 0) -> Dataset:
  """Replaces the test set by a stratified ``fraction`` of the training set,
  for tuning hyperparameters without looking at the test set."""
  from sklearn.model_selection import train_test_split

  x_train, x_val, y_train, y_val = train_test_split(
      dataset.x_train, dataset.y_train, test_size=fraction,
      random_state=seed, stratify=dataset.y_train)
  return dataclasses.replace(dataset, name=dataset.name + '-validation',
                             x_train=x_train, y_train=y_train, x_test=x_val,
                             y_test=y_val)


def normalize(images: jax.Array, dataset: Dataset) -> jax.Array:
  """uint8 images to float32 ``(x / 255 - mean) / std``; floats unchanged."""
  if images.dtype != jnp.uint8:
    return images.astype(jnp.float32)
  x = images.astype(jnp.float32) / 255.0
  if dataset.mean is not None:
    x = (x - jnp.asarray(dataset.mean)) / jnp.asarray(dataset.std)
  return x


def random_crop_flip(key: jax.Array, images: jax.Array,
                     pad: int = 4) -> jax.Array:
  """Per image: zero-pad by ``pad``, crop back at a random offset, and flip
  horizontally with probability 1/2 (torchvision's RandomCrop + Flip)."""
  n, h, w, _ = images.shape
  crop_key, flip_key = jax.random.split(key)
  offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * pad + 1)
  flips = jax.random.bernoulli(flip_key, 0.5, (n,))
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

  def one(image, offset, flip):
    crop = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0),
                                 (h, w, image.shape[-1]))
    return jnp.where(flip, crop[:, ::-1], crop)

  return jax.vmap(one)(padded, offsets, flips)


__all__ = [
    'CIFAR10_HELP', 'CIFAR10_MEAN', 'CIFAR10_STD', 'Dataset',
    'DatasetUnavailableError', 'holdout_validation', 'load_cifar10', 'load_cifar10_pickles',
    'load_dataset', 'load_digits', 'normalize', 'parse_cifar_batch',
    'random_crop_flip'
]
