"""Parameter-tree shapes for the speed benchmark (shapes only, no models).

Each tree is a list of ``(name, shape)`` pairs; :func:`make_tree` turns one
into a dict of arrays. Only the leaf sizes matter to an optimizer step, so the
layouts mirror the real networks without building them.
"""

import math

import jax
import jax.numpy as jnp

Shapes = list[tuple[str, tuple[int, ...]]]


def _conv_bn(name: str, k: int, c_in: int, c_out: int) -> Shapes:
  """A bias-free convolution (HWIO kernel) followed by batch-norm scale/bias."""
  return [
    (f'{name}/conv', (k, k, c_in, c_out)),
    (f'{name}/bn/scale', (c_out,)),
    (f'{name}/bn/bias', (c_out,)),
  ]


def resnet18_shapes(
  num_classes: int = 10, imagenet_stem: bool = False
) -> Shapes:
  """Trainable parameters of ResNet-18 (He et al. 2016).

  The default is the CIFAR variant used in the PNM paper (3x3 stem, no
  max-pool, 10 classes): 62 leaves, 11,173,962 parameters, as
  ``len(list(model.parameters()))`` of the usual PyTorch ResNet-18: 20
  convolutions, 20 batch norms (scale and bias) and the classifier (kernel
  and bias). ``imagenet_stem=True, num_classes=1000`` gives torchvision's
  ``resnet18`` (11,689,512 parameters).
  """
  shapes = _conv_bn('stem', 7 if imagenet_stem else 3, 3, 64)
  c_in = 64
  for stage, c_out in enumerate((64, 128, 256, 512)):
    for block in range(2):
      name = f'layer{stage + 1}/block{block}'
      shapes += _conv_bn(f'{name}/conv1', 3, c_in, c_out)
      shapes += _conv_bn(f'{name}/conv2', 3, c_out, c_out)
      if block == 0 and c_in != c_out:
        shapes += _conv_bn(f'{name}/shortcut', 1, c_in, c_out)
      c_in = c_out
  shapes += [('head/kernel', (512, num_classes)), ('head/bias', (num_classes,))]
  return shapes


def transformer_shapes(
  d_model: int = 512,
  num_layers: int = 8,
  vocab_size: int = 32000,
  max_len: int = 512,
  mlp_ratio: int = 4,
) -> Shapes:
  """A GPT-2-style decoder: embeddings, pre-LN blocks, tied output head.

  Each block has LayerNorm scale/bias twice, fused QKV and output projections
  and a two-layer MLP, all with biases (12 leaves). The default is about 42M
  parameters; ``d_model=768, num_layers=12, vocab_size=50257, max_len=1024``
  is GPT-2 small (124M).
  """
  d, h = d_model, mlp_ratio * d_model
  shapes: Shapes = [
    ('embed/tokens', (vocab_size, d)),
    ('embed/positions', (max_len, d)),
  ]
  for i in range(num_layers):
    b = f'block{i}'
    shapes += [
      (f'{b}/ln1/scale', (d,)),
      (f'{b}/ln1/bias', (d,)),
      (f'{b}/attn/qkv/kernel', (d, 3 * d)),
      (f'{b}/attn/qkv/bias', (3 * d,)),
      (f'{b}/attn/out/kernel', (d, d)),
      (f'{b}/attn/out/bias', (d,)),
      (f'{b}/ln2/scale', (d,)),
      (f'{b}/ln2/bias', (d,)),
      (f'{b}/mlp/fc/kernel', (d, h)),
      (f'{b}/mlp/fc/bias', (h,)),
      (f'{b}/mlp/proj/kernel', (h, d)),
      (f'{b}/mlp/proj/bias', (d,)),
    ]
  shapes += [('final_ln/scale', (d,)), ('final_ln/bias', (d,))]
  return shapes


def many_leaves_shapes(
  num_leaves: int = 1000, widths: tuple[int, ...] = (16, 32, 64)
) -> Shapes:
  """A deep network's many small leaves: compile time grows with the count.

  Repeats a 5-leaf layer (3x3 convolution kernel, norm scale and bias, dense
  kernel and bias) with the width cycling through ``widths``, cut to exactly
  ``num_leaves`` leaves. The default is 1000 leaves and about 3.9M
  parameters: the parameters are few, the leaves many, as in a deep
  network's hundreds of kernels, biases and norms.

  Raises:
    ValueError: if ``num_leaves`` is below one.
  """
  if num_leaves < 1:
    raise ValueError(f'num_leaves must be >= 1, got {num_leaves}')
  shapes: Shapes = []
  layer = 0
  while len(shapes) < num_leaves:
    c = widths[layer % len(widths)]
    name = f'layer{layer}'
    shapes += [
      (f'{name}/conv/kernel', (3, 3, c, c)),
      (f'{name}/norm/scale', (c,)),
      (f'{name}/norm/bias', (c,)),
      (f'{name}/dense/kernel', (c, 2 * c)),
      (f'{name}/dense/bias', (2 * c,)),
    ]
    layer += 1
  return shapes[:num_leaves]


def single_leaf_shapes(num_params: int) -> Shapes:
  """One flat float leaf of ``num_params`` elements."""
  return [('w', (int(num_params),))]


TREES = {
  'resnet18': resnet18_shapes,
  'transformer': transformer_shapes,
  'many_leaves': many_leaves_shapes,
}


def num_params(shapes: Shapes) -> int:
  return sum(math.prod(s) for _, s in shapes)


def make_tree(
  shapes: Shapes, key: jax.Array, dtype=jnp.float32, scale: float = 1.0
) -> dict:
  """A dict ``name -> array`` of normal(0, scale) values with these shapes."""
  keys = jax.random.split(key, len(shapes))
  return {
    name: scale * jax.random.normal(k, shape, dtype)
    for k, (name, shape) in zip(keys, shapes)
  }


def abstract_tree(shapes: Shapes, dtype=jnp.float32) -> dict:
  """The same dict as :func:`make_tree`, as ``jax.ShapeDtypeStruct`` leaves
  (for tracing and compiling without allocating)."""
  return {name: jax.ShapeDtypeStruct(shape, dtype) for name, shape in shapes}
