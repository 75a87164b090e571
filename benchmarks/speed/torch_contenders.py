"""PyTorch optimizers for the speed comparison (imported only if torch is).

:class:`TorchPNM` is written from the PNM paper in the style of the authors'
reference code: a Python loop over parameters, in-place tensor ops, and the
buffer pair swapped by step parity. ``pytorch_optimizer``'s ``PNM`` and
``AdaPNM`` are the implementations PyTorch users install; they are set to the
JAX optimizers' hyperparameters (``benchmarks.speed.contenders``).
"""

import math

import torch  # pyright: ignore[reportMissingImports]  (optional)


class TorchPNM(torch.optim.Optimizer):
  """Stochastic PNM, per-parameter loop (decoupled weight decay)."""

  def __init__(
    self, params, lr: float, betas=(0.9, 1.0), weight_decay: float = 0.0
  ):
    super().__init__(
      params, dict(lr=lr, betas=betas, weight_decay=weight_decay)
    )

  @torch.no_grad()
  def step(self, closure=None):
    for group in self.param_groups:
      beta1, beta0 = group['betas']
      noise_norm = math.sqrt((1 + beta0) ** 2 + beta0**2)
      for p in group['params']:
        if p.grad is None:
          continue
        if group['weight_decay'] != 0:
          p.mul_(1 - group['lr'] * group['weight_decay'])
        state = self.state[p]
        if not state:
          state['step'] = 0
          state['pos_momentum'] = torch.zeros_like(p)
          state['neg_momentum'] = torch.zeros_like(p)
        state['step'] += 1
        if state['step'] % 2 == 1:
          pos, neg = state['pos_momentum'], state['neg_momentum']
        else:
          pos, neg = state['neg_momentum'], state['pos_momentum']
        pos.mul_(beta1**2).add_(p.grad, alpha=1 - beta1**2)
        delta = pos.mul(1 + beta0).add_(neg, alpha=-beta0).mul_(1 / noise_norm)
        p.add_(delta, alpha=-group['lr'])


def make(name: str, params, lr: float) -> torch.optim.Optimizer:
  """A PyTorch optimizer of ``benchmarks.speed.contenders.TORCH_OPTIMIZERS``."""
  if name == 'torch_sgd_foreach':
    return torch.optim.SGD(params, lr=lr, momentum=0.9, foreach=True)
  if name == 'torch_sgd_fused':
    return torch.optim.SGD(params, lr=lr, momentum=0.9, fused=True)
  if name == 'torch_pnm':
    return TorchPNM(params, lr=lr)
  if name.startswith('pytorch_optimizer_'):
    import pytorch_optimizer  # pyright: ignore[reportMissingImports]

    if name == 'pytorch_optimizer_pnm':
      return pytorch_optimizer.PNM(
        params, lr=lr, betas=(0.9, 1.0), weight_decay=0.0
      )
    if name == 'pytorch_optimizer_adapnm':
      return pytorch_optimizer.AdaPNM(
        params,
        lr=lr,
        betas=(0.9, 0.999, 1.0),
        weight_decay=0.0,
        ams_bound=True,
        eps=1e-8,
      )
  raise ValueError(f'unknown PyTorch optimizer {name!r}')
