"""Flax NNX models for the generalization benchmark.

Every model maps NHWC images to logits and takes ``train`` at call time, so
BatchNorm switches between batch and running statistics without mutating the
module's mode (this works the same across Flax versions).
"""

import inspect
from typing import Callable

from flax import nnx
import jax


class MLP(nnx.Module):
  """Two hidden layers with LayerNorm; a baseline for small images."""

  def __init__(self, in_shape, num_classes: int, *, rngs: nnx.Rngs,
               hidden: int = 256):
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

  def __init__(self, in_shape, num_classes: int, *, rngs: nnx.Rngs,
               width: int = 32):
    channels = in_shape[-1]
    self.conv1 = nnx.Conv(channels, width, (3, 3), use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
    self.conv2 = nnx.Conv(width, width, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
    self.conv3 = nnx.Conv(width, 2 * width, (3, 3), use_bias=False,
                          rngs=rngs)
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

  def __init__(self, in_planes: int, planes: int, stride: int, *,
               rngs: nnx.Rngs):
    pad = ((1, 1), (1, 1))
    self.conv1 = nnx.Conv(in_planes, planes, (3, 3), stride, padding=pad,
                          use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(planes, momentum=0.9, rngs=rngs)
    self.conv2 = nnx.Conv(planes, planes, (3, 3), 1, padding=pad,
                          use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(planes, momentum=0.9, rngs=rngs)
    self.project = stride != 1 or in_planes != planes
    if self.project:
      self.short_conv = nnx.Conv(in_planes, planes, (1, 1), stride,
                                 padding='VALID', use_bias=False, rngs=rngs)
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
    self.stem = nnx.Conv(channels, 64, (3, 3), 1, padding=((1, 1), (1, 1)),
                         use_bias=False, rngs=rngs)
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


MODELS: dict[str, Callable[..., nnx.Module]] = {
    'mlp': MLP,
    'cnn': SmallCNN,
    'resnet18': ResNet18,
}


def make_model(name: str, in_shape, num_classes: int, seed: int) -> nnx.Module:
  """Builds model ``name`` for images of ``in_shape`` (H, W, C)."""
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}; choose from {sorted(MODELS)}')
  return MODELS[name](tuple(in_shape), num_classes, rngs=nnx.Rngs(seed))


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


__all__ = ['MLP', 'SmallCNN', 'ResNet18', 'MODELS', 'make_model',
           'count_params', 'merge']
