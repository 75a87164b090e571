"""Data sets for the comparison job: MNIST-1D, digits, CIFAR-10, user arrays.

Inputs are NumPy arrays with the example axis first: ``float32`` signals of
length 40 for MNIST-1D, ``float32`` NHWC images in [0, 1] for digits, and
``uint8`` NHWC images for CIFAR-10 (normalised on the device, batch by batch,
to keep host and device memory small). Nothing is ever downloaded.
"""

import dataclasses
import functools
import os
import pickle
import random
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# Per-channel statistics used by the paper's code (torchvision transforms).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR10_DIR = 'cifar-10-batches-py'
CIFAR10_FILES = tuple(f'data_batch_{i}' for i in range(1, 6)) + ('test_batch',)
CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
CIFAR10_HELP = (
  f'give --data-dir a folder holding {CIFAR10_DIR}/ (the python version, '
  f'{CIFAR10_URL}, extracted), a Hugging Face save_to_disk copy or a '
  'prepared TensorFlow Datasets cifar10; this job never downloads'
)


class DatasetUnavailableError(RuntimeError):
  """The requested data set is not on this machine (message: one line)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test arrays plus how to preprocess a batch on the device."""

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  augment: bool = False  # random crop (pad 4) + horizontal flip, images only
  mean: tuple[float, ...] | None = None  # per channel, for uint8 images
  std: tuple[float, ...] | None = None

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


def from_arrays(
  x_train,
  y_train,
  x_test,
  y_test,
  *,
  name: str = 'arrays',
  num_classes: int | None = None,
  augment: bool = False,
  mean=None,
  std=None,
) -> Dataset:
  """A :class:`Dataset` from user arrays, checked.

  Args:
    x_train, x_test: inputs, example axis first (float, or uint8 images that
      are scaled to [0, 1] and normalised by ``mean``/``std`` on the device).
    y_train, y_test: integer class labels in ``[0, num_classes)``.
    name: recorded with the results.
    num_classes: default ``max(label) + 1``.
    augment: random crop + flip (NHWC images only).
    mean, std: per-channel statistics for uint8 images.

  Raises:
    ValueError: naming the array that is wrong and what is expected.
  """
  arrays = {
    'x_train': np.asarray(x_train),
    'y_train': np.asarray(y_train),
    'x_test': np.asarray(x_test),
    'y_test': np.asarray(y_test),
  }
  for split in ('train', 'test'):
    x, y = arrays['x_' + split], arrays['y_' + split]
    if x.ndim < 2 or x.shape[0] == 0:
      raise ValueError(
        f'x_{split} must have an example axis and at least one '
        f'feature axis with examples, got shape {x.shape}'
      )
    if y.shape != (x.shape[0],):
      raise ValueError(
        f'y_{split} must have shape ({x.shape[0]},) to match '
        f'x_{split}, got {y.shape}'
      )
    if not np.issubdtype(y.dtype, np.integer):
      raise ValueError(
        f'y_{split} must hold integer class labels, got {y.dtype}'
      )
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
      raise ValueError(f'x_{split} must be float or uint8, got {x.dtype}')
  if arrays['x_train'].shape[1:] != arrays['x_test'].shape[1:]:
    raise ValueError(
      'x_train and x_test must have the same input shape, got '
      f'{arrays["x_train"].shape[1:]} and '
      f'{arrays["x_test"].shape[1:]}'
    )
  labels = np.concatenate([arrays['y_train'], arrays['y_test']])
  if num_classes is None:
    num_classes = int(labels.max()) + 1
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(
      f'labels must lie in [0, {num_classes}), got '
      f'[{labels.min()}, {labels.max()}]'
    )
  if augment and arrays['x_train'].ndim != 4:
    raise ValueError(
      'augment=True needs NHWC images, got inputs of shape '
      f'{arrays["x_train"].shape[1:]}'
    )
  cast = lambda x: x if x.dtype == np.uint8 else x.astype(np.float32)
  return Dataset(
    name,
    cast(arrays['x_train']),
    arrays['y_train'].astype(np.int32),
    cast(arrays['x_test']),
    arrays['y_test'].astype(np.int32),
    int(num_classes),
    augment,
    None if mean is None else tuple(mean),
    None if std is None else tuple(std),
  )


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, ...]:
  """Generates MNIST-1D offline with the package's default arguments.

  ``mnist1d`` seeds NumPy's and Python's global generators while it builds
  the data; both states are restored, so the caller's random streams are
  untouched.
  """
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    try:
      from mnist1d import data as mnist1d_data
    except ImportError as e:
      raise DatasetUnavailableError(
        'MNIST-1D needs the mnist1d package: pip install mnist1d'
      ) from e
    raw = mnist1d_data.make_dataset(mnist1d_data.get_dataset_args())
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  return (
    raw['x'].astype(np.float32),
    raw['y'].astype(np.int32),
    raw['x_test'].astype(np.float32),
    raw['y_test'].astype(np.int32),
  )


def load_mnist1d() -> Dataset:
  """MNIST-1D (Greydanus 2020): 4000 train / 1000 test signals of length 40,
  generated offline by the ``mnist1d`` package (identical on every call)."""
  x_train, y_train, x_test, y_test = (a.copy() for a in _mnist1d_arrays())
  return Dataset('mnist1d', x_train, y_train, x_test, y_test, num_classes=10)


def load_digits(test_fraction: float = 0.25, split_seed: int = 0) -> Dataset:
  """scikit-learn's bundled 8x8 digits (1797 images), stratified split."""
  from sklearn.datasets import load_digits as sk_load_digits
  from sklearn.model_selection import train_test_split

  pixels, target = sk_load_digits(return_X_y=True)
  images = (np.asarray(pixels).reshape(-1, 8, 8) / 16.0).astype(np.float32)
  labels = np.asarray(target).astype(np.int32)
  x_train, x_test, y_train, y_test = train_test_split(
    images[..., None],
    labels,
    test_size=test_fraction,
    random_state=split_seed,
    stratify=labels,
  )
  return Dataset(
    'digits',
    np.asarray(x_train),
    np.asarray(y_train),
    np.asarray(x_test),
    np.asarray(y_test),
    num_classes=10,
  )


def parse_cifar_batch(batch: dict) -> tuple[np.ndarray, np.ndarray]:
  """A CIFAR python batch (rows of 3072 bytes, CHW) to NHWC uint8 + labels."""
  data = np.asarray(batch[b'data'], dtype=np.uint8)
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  labels = np.asarray(batch[b'labels'], dtype=np.int32)
  return np.ascontiguousarray(images), labels


def find_cifar10_pickles(data_dir: str) -> str | None:
  """The folder of CIFAR-10 python batches under ``data_dir``, or None.

  Raises:
    DatasetUnavailableError: a batch folder exists but lacks some files.
  """
  for candidate in (os.path.join(data_dir, CIFAR10_DIR), data_dir):
    present = [
      f for f in CIFAR10_FILES if os.path.isfile(os.path.join(candidate, f))
    ]
    if present and len(present) < len(CIFAR10_FILES):
      missing = [f for f in CIFAR10_FILES if f not in present]
      raise DatasetUnavailableError(
        f'CIFAR-10 in {candidate} is incomplete: missing '
        f'{", ".join(missing)} (need {", ".join(CIFAR10_FILES)})'
      )
    if present:
      return candidate
  return None


def load_cifar10_pickles(directory: str) -> tuple[np.ndarray, ...]:
  """Reads data_batch_1..5 and test_batch from ``directory``."""

  def read(name):
    with open(os.path.join(directory, name), 'rb') as f:
      return parse_cifar_batch(pickle.load(f, encoding='bytes'))

  train = [read(f) for f in CIFAR10_FILES[:-1]]
  x_test, y_test = read('test_batch')
  return (
    np.concatenate([x for x, _ in train]),
    np.concatenate([y for _, y in train]),
    x_test,
    y_test,
  )


def _load_cifar10_tfds(data_dir: str | None):
  """From a prepared TFDS directory; None if tfds is missing or unprepared."""
  try:
    import tensorflow_datasets as tfds  # pyright: ignore[reportMissingImports]
  except ImportError:
    return None
  try:
    splits = [
      tfds.as_numpy(
        tfds.load(
          'cifar10', split=s, batch_size=-1, data_dir=data_dir, download=False
        )
      )
      for s in ('train', 'test')
    ]
  except Exception:  # not prepared: tfds raises various errors
    return None
  train, test = splits
  return (
    np.asarray(train['image'], np.uint8),
    np.asarray(train['label'], np.int32),
    np.asarray(test['image'], np.uint8),
    np.asarray(test['label'], np.int32),
  )


def _load_cifar10_hf(data_dir: str | None):
  """From a ``save_to_disk`` copy; None if missing or not importable."""
  if data_dir is None or not os.path.isfile(
    os.path.join(data_dir, 'dataset_dict.json')
  ):
    return None
  try:
    import datasets  # pyright: ignore[reportMissingImports]
  except ImportError:
    return None
  ds = datasets.load_from_disk(data_dir).with_format('numpy')
  image_key = 'img' if 'img' in ds['train'].column_names else 'image'
  return tuple(
    np.asarray(ds[split][key], dtype)
    for split in ('train', 'test')
    for key, dtype in ((image_key, np.uint8), ('label', np.int32))
  )


def load_cifar10(data_dir: str | None) -> Dataset:
  """CIFAR-10 from local files; raises DatasetUnavailableError otherwise."""
  arrays = None
  if data_dir is not None:
    pickle_dir = find_cifar10_pickles(data_dir)
    if pickle_dir is not None:
      arrays = load_cifar10_pickles(pickle_dir)
  if arrays is None:
    arrays = _load_cifar10_hf(data_dir)
  if arrays is None:
    arrays = _load_cifar10_tfds(data_dir)
  if arrays is None:
    raise DatasetUnavailableError(
      f'CIFAR-10 not found in --data-dir {data_dir!r}: {CIFAR10_HELP}'
    )
  x_train, y_train, x_test, y_test = arrays
  return Dataset(
    'cifar10',
    x_train,
    y_train,
    x_test,
    y_test,
    num_classes=10,
    augment=True,
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
  )


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One data set of the comparison job.

  Attributes:
    name: the name on the command line (``--dataset``).
    load: ``data_dir -> Dataset`` (raises :class:`DatasetUnavailableError`
      when the data are not on this machine; never downloads).
    model: the default bundled model.
    epochs, batch_size: the default budget.
    description: one line for ``--help``.
  """

  name: str
  load: Callable[[str | None], Dataset]
  model: str
  epochs: int
  batch_size: int
  description: str = ''


SPECS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
  """Adds ``spec`` to the registry (a name taken already is an error)."""
  if spec.name in SPECS:
    raise ValueError(f'data set {spec.name!r} is registered already')
  SPECS[spec.name] = spec
  return spec


register(
  DatasetSpec(
    'mnist1d',
    lambda _: load_mnist1d(),
    'cnn',
    60,
    100,
    'generated offline by the mnist1d package',
  )
)
register(
  DatasetSpec(
    'digits',
    lambda _: load_digits(),
    'mlp',
    30,
    64,
    'ships with scikit-learn',
  )
)
register(
  DatasetSpec(
    'cifar10',
    load_cifar10,
    'resnet18',
    200,
    128,
    'must be on disk (--data-dir)',
  )
)
# The bundled data sets.
DATASETS = tuple(SPECS)


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
  """Loads a registered data set (:data:`SPECS`)."""
  if name not in SPECS:
    raise ValueError(
      f'unknown dataset {name!r}; choose from {", ".join(SPECS)}'
    )
  return SPECS[name].load(data_dir)


def holdout_validation(
  dataset: Dataset, fraction: float, seed: int = 0
) -> Dataset:
  """Replaces the test set by a stratified ``fraction`` of the training set,
  for choosing hyperparameters without looking at the test set."""
  from sklearn.model_selection import train_test_split

  if not 0.0 < fraction < 1.0:
    raise ValueError(f'validation fraction must lie in (0, 1), got {fraction}')
  x_train, x_val, y_train, y_val = train_test_split(
    dataset.x_train,
    dataset.y_train,
    test_size=fraction,
    random_state=seed,
    stratify=dataset.y_train,
  )
  return dataclasses.replace(
    dataset,
    name=dataset.name + '-validation',
    x_train=x_train,
    y_train=y_train,
    x_test=x_val,
    y_test=y_val,
  )


def normalize(inputs: jax.Array, dataset: Dataset) -> jax.Array:
  """uint8 images to float32 ``(x / 255 - mean) / std``; floats as float32."""
  if inputs.dtype != jnp.uint8:
    return inputs.astype(jnp.float32)
  x = inputs.astype(jnp.float32) / 255.0
  if dataset.mean is not None:
    x = (x - jnp.asarray(dataset.mean)) / jnp.asarray(dataset.std)
  return x


def random_crop_flip(
  key: jax.Array, images: jax.Array, pad: int = 4
) -> jax.Array:
  """Per image: zero-pad by ``pad``, crop back at a random offset, and flip
  horizontally with probability 1/2 (torchvision's RandomCrop + Flip)."""
  n, h, w, _ = images.shape
  crop_key, flip_key = jax.random.split(key)
  offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * pad + 1)
  flips = jax.random.bernoulli(flip_key, 0.5, (n,))
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

  def one(image, offset, flip):
    crop = jax.lax.dynamic_slice(
      image, (offset[0], offset[1], 0), (h, w, image.shape[-1])
    )
    return jnp.where(flip, crop[:, ::-1], crop)

  return jax.vmap(one)(padded, offsets, flips)
