"""Flax NNX models for the comparison job.

MNIST-1D signals (N, 40) get the MNIST-1D paper's models: the ConvBase CNN
and the 40-100-100-10 MLP, initialised as PyTorch does (uniform in
+-1/sqrt(fan_in)), as in the paper's code. Images (NHWC) get a small MLP or
CNN (digits) or the paper's CIFAR ResNet-18. Every model takes ``train`` at
call time, so BatchNorm switches between batch and running statistics without
mutating the module's mode (this works the same across Flax versions).
"""

import inspect
import math

import jax
import jax.numpy as jnp
from flax import nnx


def _torch_uniform(fan_in: int):
  """PyTorch's default Linear/Conv initialiser: U(-1/sqrt(fan_in), +)."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
    key, shape, dtype, -bound, bound
  )


def conv1d(
  x: jax.Array, kernel: jax.Array, bias: jax.Array, stride: int, padding: int
) -> jax.Array:
  """1-D convolution (NWC input, WIO kernel) as one patch matrix times the
  kernel.

  Equals ``jax.lax.conv_general_dilated(x, kernel, (stride,),
  [(padding, padding)], dimension_numbers=('NWC', 'WIO', 'NWC')) + bias``.
  On XLA:CPU, inside a ``lax.scan`` training loop with the seeds vmapped,
  the MNIST-1D CNN's step takes 0.27 ms per seed this way, 0.53 ms as a sum
  of one matmul per tap and 2.35 ms with the convolution op. The padded input
  is split into its ``stride`` phases, so every tap reads a contiguous slice,
  whose gradient is a pad (no strided scatter).
  """
  width, in_channels, out_channels = kernel.shape
  length = x.shape[1]
  out_len = (length + 2 * padding - width) // stride + 1
  total = (
    -(-max(stride * (out_len - 1) + width, length + 2 * padding) // stride)
    * stride
  )
  padded = jnp.pad(x, ((0, 0), (padding, total - length - padding), (0, 0)))
  phases = padded.reshape(x.shape[0], total // stride, stride, in_channels)
  patches = jnp.concatenate(
    [
      phases[:, tap // stride : tap // stride + out_len, tap % stride, :]
      for tap in range(width)
    ],
    axis=-1,
  )  # (N, out_len, width * in)
  return patches @ kernel.reshape(width * in_channels, out_channels) + bias


class Conv1D(nnx.Module):
  """A 1-D convolution layer (NWC) with PyTorch's default initialisation."""

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    width: int,
    *,
    stride: int,
    padding: int,
    rngs: nnx.Rngs,
  ):
    init = _torch_uniform(in_channels * width)
    self.kernel = nnx.Param(
      init(rngs.params(), (width, in_channels, out_channels))
    )
    self.bias = nnx.Param(init(rngs.params(), (out_channels,)))
    self.stride, self.padding = stride, padding

  def __call__(self, x):
    return conv1d(
      x, self.kernel[...], self.bias[...], self.stride, self.padding
    )


def _torch_linear(fan_in: int, fan_out: int, rngs: nnx.Rngs) -> nnx.Linear:
  init = _torch_uniform(fan_in)
  return nnx.Linear(
    fan_in, fan_out, kernel_init=init, bias_init=init, rngs=rngs
  )


class ConvBase(nnx.Module):
  """The MNIST-1D paper's CNN: three stride-2 convolutions (25 channels,
  widths 5, 3, 3, padding 1) with ReLU, flattened into a linear head
  (5,210 parameters on signals of length 40)."""

  def __init__(
    self, length: int, num_classes: int, *, rngs: nnx.Rngs, channels: int = 25
  ):
    self.conv1 = Conv1D(1, channels, 5, stride=2, padding=1, rngs=rngs)
    self.conv2 = Conv1D(channels, channels, 3, stride=2, padding=1, rngs=rngs)
    self.conv3 = Conv1D(channels, channels, 3, stride=2, padding=1, rngs=rngs)
    for width in (5, 3, 3):
      length = (length + 2 - width) // 2 + 1
    self.head = _torch_linear(channels * length, num_classes, rngs)

  def __call__(self, x, train: bool = False):
    del train
    x = x[..., None]
    for conv in (self.conv1, self.conv2, self.conv3):
      x = jax.nn.relu(conv(x))
    return self.head(x.reshape(x.shape[0], -1))


class MLP1D(nnx.Module):
  """The MNIST-1D paper's MLP: 40-100-100-10 with ReLU."""

  def __init__(
    self, length: int, num_classes: int, *, rngs: nnx.Rngs, hidden: int = 100
  ):
    self.fc1 = _torch_linear(length, hidden, rngs)
    self.fc2 = _torch_linear(hidden, hidden, rngs)
    self.head = _torch_linear(hidden, num_classes, rngs)

  def __call__(self, x, train: bool = False):
    del train
    x = jax.nn.relu(self.fc1(x))
    x = jax.nn.relu(self.fc2(x))
    return self.head(x)


class MLP(nnx.Module):
  """Two hidden layers with LayerNorm; a baseline for small images."""

  def __init__(
    self, in_shape, num_classes: int, *, rngs: nnx.Rngs, hidden: int = 256
  ):
    height, width, channels = in_shape
    self.fc1 = nnx.Linear(height * width * channels, hidden, rngs=rngs)
    self.norm1 = nnx.LayerNorm(hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.norm2 = nnx.LayerNorm(hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, x, train: bool = False):
    del train
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(self.norm1(self.fc1(x)))
    x = jax.nn.relu(self.norm2(self.fc2(x)))
    return self.head(x)


class SmallCNN(nnx.Module):
  """Conv-BN-ReLU x2, pool, conv-BN-ReLU, global pool, linear (~30k params)."""

  def __init__(
    self, in_shape, num_classes: int, *, rngs: nnx.Rngs, width: int = 32
  ):
    channels = in_shape[-1]
    self.conv1 = nnx.Conv(channels, width, (3, 3), use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
    self.conv2 = nnx.Conv(width, width, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
    self.conv3 = nnx.Conv(width, 2 * width, (3, 3), use_bias=False, rngs=rngs)
    self.bn3 = nnx.BatchNorm(2 * width, momentum=0.9, rngs=rngs)
    self.head = nnx.Linear(2 * width, num_classes, rngs=rngs)

  def __call__(self, x, train: bool = False):
    avg = not train
    x = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=avg))
    x = jax.nn.relu(self.bn2(self.conv2(x), use_running_average=avg))
    x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    x = jax.nn.relu(self.bn3(self.conv3(x), use_running_average=avg))
    return self.head(x.mean(axis=(1, 2)))


class BasicBlock(nnx.Module):
  """ResNet basic block (two 3x3 convs) with a 1x1 projection shortcut."""

  def __init__(
    self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs
  ):
    pad = ((1, 1), (1, 1))
    self.conv1 = nnx.Conv(
      in_planes, planes, (3, 3), stride, padding=pad, use_bias=False, rngs=rngs
    )
    self.bn1 = nnx.BatchNorm(planes, momentum=0.9, rngs=rngs)
    self.conv2 = nnx.Conv(
      planes, planes, (3, 3), 1, padding=pad, use_bias=False, rngs=rngs
    )
    self.bn2 = nnx.BatchNorm(planes, momentum=0.9, rngs=rngs)
    self.project = stride != 1 or in_planes != planes
    if self.project:
      self.short_conv = nnx.Conv(
        in_planes,
        planes,
        (1, 1),
        stride,
        padding='VALID',
        use_bias=False,
        rngs=rngs,
      )
      self.short_bn = nnx.BatchNorm(planes, momentum=0.9, rngs=rngs)

  def __call__(self, x, train: bool):
    avg = not train
    out = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=avg))
    out = self.bn2(self.conv2(out), use_running_average=avg)
    shortcut = x
    if self.project:
      shortcut = self.short_bn(self.short_conv(x), use_running_average=avg)
    return jax.nn.relu(out + shortcut)


class ResNet18(nnx.Module):
  """CIFAR ResNet-18 as in the paper's code: 3x3 stem, no max-pool."""

  def __init__(self, in_shape, num_classes: int, *, rngs: nnx.Rngs):
    channels = in_shape[-1]
    self.stem = nnx.Conv(
      channels,
      64,
      (3, 3),
      1,
      padding=((1, 1), (1, 1)),
      use_bias=False,
      rngs=rngs,
    )
    self.stem_bn = nnx.BatchNorm(64, momentum=0.9, rngs=rngs)
    blocks, in_planes = [], 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
      for block_stride in (stride, 1):
        blocks.append(BasicBlock(in_planes, planes, block_stride, rngs=rngs))
        in_planes = planes
    self.blocks = nnx.List(blocks) if hasattr(nnx, 'List') else blocks
    self.head = nnx.Linear(512, num_classes, rngs=rngs)

  def __call__(self, x, train: bool = False):
    x = jax.nn.relu(self.stem_bn(self.stem(x), use_running_average=not train))
    for block in self.blocks:
      x = block(x, train)
    return self.head(x.mean(axis=(1, 2)))


MODELS = ('cnn', 'mlp', 'resnet18')
_SIGNAL_MODELS = {'cnn': ConvBase, 'mlp': MLP1D}
_IMAGE_MODELS = {'cnn': SmallCNN, 'mlp': MLP, 'resnet18': ResNet18}


def make_model(
  name: str, input_shape, num_classes: int, rngs: nnx.Rngs
) -> nnx.Module:
  """Builds bundled model ``name`` for inputs of ``input_shape``.

  Signals ``(length,)`` get the MNIST-1D models (``cnn``: ConvBase, ``mlp``:
  40-100-100-10); images ``(H, W, C)`` get ``mlp`` (two LayerNorm layers of
  256), ``cnn`` (a small BatchNorm CNN) or ``resnet18``.
  """
  input_shape = tuple(input_shape)
  table = _SIGNAL_MODELS if len(input_shape) == 1 else _IMAGE_MODELS
  if name not in table:
    kind = 'signals' if len(input_shape) == 1 else 'images'
    raise ValueError(
      f'model {name!r} does not take {kind} of shape '
      f'{input_shape}; choose from {sorted(table)}'
    )
  if len(input_shape) == 1:
    return table[name](input_shape[0], num_classes, rngs=rngs)
  return table[name](input_shape, num_classes, rngs=rngs)


def model_names(input_shape) -> tuple[str, ...]:
  """The bundled models that take inputs of ``input_shape``."""
  return tuple(
    sorted(_SIGNAL_MODELS if len(tuple(input_shape)) == 1 else _IMAGE_MODELS)
  )


def takes_train_flag(model: nnx.Module) -> bool:
  """Whether ``model(x, train=...)`` is accepted (bundled models; user models
  with BatchNorm or dropout); otherwise the model is called as ``model(x)``."""
  params = inspect.signature(type(model).__call__).parameters
  return 'train' in params or any(
    p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()
  )


_MERGE_HAS_COPY = 'copy' in inspect.signature(nnx.merge).parameters


def merge(graphdef, *states) -> nnx.Module:
  """``nnx.merge`` into fresh Variables, so a merged model may update its
  BatchNorm statistics inside ``jax.grad`` (needs ``copy=True`` on Flax
  versions that have it)."""
  if _MERGE_HAS_COPY:
    return nnx.merge(graphdef, *states, copy=True)
  return nnx.merge(graphdef, *states)


def count_params(model: nnx.Module) -> int:
  """Number of trainable parameters (``nnx.Param`` leaves)."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
