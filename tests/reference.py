"""Float64 NumPy reference for PNM and AdaPNM, ported from the spec.

A literal, per-parameter port of the authors' PyTorch step: a ``pos``/``neg``
pair swapped by step parity, in-place updates, decoupled decay as
``p *= 1 - lr * wd``. It shares no code with ``pnm_optax`` on purpose.

Beyond the authors' code it takes Adam's ``eps_root`` (inside the square
root, as ``optax.adam``), a weight-decay mask and a per-step weight decay
(for schedules), and records each step's error scale (see ``step``).
"""

import math

import numpy as np


class ReferencePNM:
  """PNM / AdaPNM on a list of float64 (or complex128) arrays."""

  def __init__(
    self,
    params,
    adaptive=False,
    b1=0.9,
    b2=0.999,
    b0=1.0,
    eps=1e-8,
    weight_decay=0.0,
    decoupled=True,
    amsgrad=True,
    eps_root=0.0,
    decay_mask=None,
  ):
    self.params = [
      np.array(p, dtype=np.result_type(p, np.float64)) for p in params
    ]
    self.adaptive, self.amsgrad = adaptive, amsgrad
    self.b1, self.b2, self.b0, self.eps = b1, b2, b0, eps
    self.eps_root = eps_root
    self.weight_decay, self.decoupled = weight_decay, decoupled
    self.decay_mask = (
      [True] * len(self.params) if decay_mask is None else list(decay_mask)
    )
    self.step_count = 0
    self.scale = [np.zeros(p.shape) for p in self.params]
    self.buffers = [
      {
        'pos': np.zeros_like(p),
        'neg': np.zeros_like(p),
        'sq': np.zeros(p.shape),
        'max_sq': np.zeros(p.shape),
        'pos_abs': np.zeros(p.shape),
        'neg_abs': np.zeros(p.shape),
      }
      for p in self.params
    ]

  def step(
    self, grads, lr, b0=None, weight_decay=None, scale_lr=None, scale_wd=None
  ):
    """One step with learning rate ``lr`` (and optionally this step's b0 and
    weight decay).

    Also sets ``self.scale``: per parameter, the step computed with the
    absolute values of every term (gradients, decay, buffers' contributions,
    before any of them cancel), the size that rounding errors of a correct
    implementation are relative to. ``scale_lr`` and ``scale_wd`` replace
    ``lr`` and the decay there (e.g. by the size of a schedule's terms, which
    a float32 schedule rounds relative to).
    """
    b0 = self.b0 if b0 is None else b0
    wd = self.weight_decay if weight_decay is None else weight_decay
    scale_lr = lr if scale_lr is None else scale_lr
    scale_wd = wd if scale_wd is None else scale_wd
    b1, b2 = self.b1, self.b2
    self.step_count += 1
    t = self.step_count
    noise_norm = math.sqrt((1 + b0) ** 2 + b0**2)
    self.scale = []
    for p, g, buf, decayed in zip(
      self.params, grads, self.buffers, self.decay_mask
    ):
      g = np.array(g, dtype=p.dtype)
      g_abs, decay_scale = np.abs(g), np.zeros(p.shape)
      if (wd or scale_wd) and decayed:
        if self.decoupled:
          decay_scale = scale_lr * scale_wd * np.abs(p)
          p *= 1 - lr * wd
        else:
          g_abs = g_abs + scale_wd * np.abs(p)
          g = g + wd * p
      if t % 2 == 1:
        pos, neg = buf['pos'], buf['neg']
        pos_abs, neg_abs = buf['pos_abs'], buf['neg_abs']
      else:
        neg, pos = buf['pos'], buf['neg']
        neg_abs, pos_abs = buf['pos_abs'], buf['neg_abs']
      pos *= b1**2
      pos += (1 - b1**2) * g
      pos_abs *= b1**2
      pos_abs += (1 - b1**2) * g_abs
      direction = ((1 + b0) * pos - b0 * neg) * (1 / noise_norm)
      magnitude = ((1 + b0) * pos_abs + b0 * neg_abs) / noise_norm
      if not self.adaptive:
        p -= lr * direction
        self.scale.append(scale_lr * magnitude + decay_scale)
        continue
      buf['sq'] *= b2
      buf['sq'] += (1 - b2) * np.abs(g) ** 2
      if self.amsgrad:
        np.maximum(buf['max_sq'], buf['sq'], out=buf['max_sq'])
        sq = buf['max_sq']
      else:
        sq = buf['sq']
      if self.eps_root:
        denom = np.sqrt(sq / (1 - b2**t) + self.eps_root) + self.eps
      else:
        denom = np.sqrt(sq) / math.sqrt(1 - b2**t) + self.eps
      p -= lr / (1 - b1**t) * direction / denom
      self.scale.append(
        scale_lr / (1 - b1**t) * magnitude / denom + decay_scale
      )
    return self.params
