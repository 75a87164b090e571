"""Records the PyTorch reference trajectories of PNM and AdaPNM.

Run once, by hand, in an environment with torch (pytest never imports it)::

  python -m tests.record_torch_reference

It writes ``tests/library/data/torch_reference.json``: for a few
hyperparameter settings (both weight-decay modes, amsgrad on and off, b0 from
0 to 2), the initial parameters, the gradients of every step and the
parameters after every step, all float64, with the torch version and the
date. ``tests/library/test_torch_reference.py`` runs the float64 NumPy port
(``tests/reference.py``) on the same gradients and compares, so the port is
checked against the authors' update rule without torch installed.

The two ``step`` functions below follow the authors' published PyTorch
optimizers (``pnm_optim/pnm.py`` and ``pnm_optim/adapnm.py`` of
github.com/zeke-xie/Positive-Negative-Momentum) operation by operation:
in-place decay ``p *= 1 - lr * wd`` (or ``grad += wd * p`` for L2), a
``pos``/``neg`` pair swapped by step parity, ``pos = b1^2 pos + (1 - b1^2)
grad``, the direction ``((1 + b0) pos - b0 neg) / sqrt((1 + b0)^2 + b0^2)``
and, for AdaPNM, Adam's second moment with AMSGrad, ``denom = sqrt(v) /
sqrt(1 - b2^t) + eps`` and the step ``lr / (1 - b1^t)``.
"""

import datetime
import json
import math
import pathlib

import numpy as np
import torch

OUT = (
  pathlib.Path(__file__).parent / 'library' / 'data' / 'torch_reference.json'
)
SOURCE = (
  'https://github.com/zeke-xie/Positive-Negative-Momentum '
  '(pnm_optim/pnm.py, pnm_optim/adapnm.py)'
)
SHAPES = [(3,), (2, 2), ()]
STEPS = 30
SETTINGS = [
  dict(name='pnm', lr=0.05, b1=0.9, b0=1.0, weight_decay=0.1, decoupled=True),
  dict(name='pnm', lr=0.05, b1=0.6, b0=0.5, weight_decay=0.05, decoupled=False),
  dict(name='pnm', lr=0.1, b1=0.9, b0=0.0, weight_decay=0.0, decoupled=True),
  dict(
    name='adapnm',
    lr=1e-2,
    b1=0.9,
    b2=0.999,
    b0=1.0,
    eps=1e-8,
    weight_decay=0.05,
    decoupled=True,
    amsgrad=True,
  ),
  dict(
    name='adapnm',
    lr=3e-3,
    b1=0.8,
    b2=0.95,
    b0=2.0,
    eps=1e-3,
    weight_decay=0.1,
    decoupled=False,
    amsgrad=False,
  ),
  dict(
    name='adapnm',
    lr=1e-2,
    b1=0.5,
    b2=0.9,
    b0=0.7,
    eps=1e-6,
    weight_decay=0.0,
    decoupled=True,
    amsgrad=True,
  ),
]


def pnm_step(p, grad, state, lr, b1, b0, weight_decay, decoupled):
  """One PNM step on parameter ``p`` in place (the authors' rule)."""
  if decoupled:
    p.mul_(1 - lr * weight_decay)
  else:
    grad.add_(p, alpha=weight_decay)
  if not state:
    state['step'] = 0
    state['pos'] = torch.zeros_like(p)
    state['neg'] = torch.zeros_like(p)
  state['step'] += 1
  if state['step'] % 2 == 1:
    pos, neg = state['pos'], state['neg']
  else:
    pos, neg = state['neg'], state['pos']
  pos.mul_(b1**2).add_(grad, alpha=1 - b1**2)
  noise_norm = math.sqrt((1 + b0) ** 2 + b0**2)
  delta = pos.mul(1 + b0).add(neg, alpha=-b0).mul(1 / noise_norm)
  p.add_(delta, alpha=-lr)


def adapnm_step(
  p, grad, state, lr, b1, b2, b0, eps, weight_decay, decoupled, amsgrad
):
  """One AdaPNM step on parameter ``p`` in place (the authors' rule)."""
  if decoupled:
    p.mul_(1 - lr * weight_decay)
  else:
    grad.add_(p, alpha=weight_decay)
  if not state:
    state['step'] = 0
    state['pos'] = torch.zeros_like(p)
    state['neg'] = torch.zeros_like(p)
    state['sq'] = torch.zeros_like(p)
    state['max_sq'] = torch.zeros_like(p)
  state['step'] += 1
  t = state['step']
  bias_correction1 = 1 - b1**t
  bias_correction2 = 1 - b2**t
  if t % 2 == 1:
    pos, neg = state['pos'], state['neg']
  else:
    pos, neg = state['neg'], state['pos']
  pos.mul_(b1**2).add_(grad, alpha=1 - b1**2)
  noise_norm = math.sqrt((1 + b0) ** 2 + b0**2)
  sq = state['sq']
  sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
  if amsgrad:
    torch.max(state['max_sq'], sq, out=state['max_sq'])
    denom = (state['max_sq'].sqrt() / math.sqrt(bias_correction2)).add_(eps)
  else:
    denom = (sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
  direction = pos.mul(1 + b0).add(neg, alpha=-b0).mul(1 / noise_norm)
  p.addcdiv_(direction, denom, value=-lr / bias_correction1)


def record(setting, seed):
  rng = np.random.default_rng(seed)
  init = [rng.normal(size=s) for s in SHAPES]
  params = [torch.tensor(x, dtype=torch.float64) for x in init]
  states = [{} for _ in params]
  hyper = {k: v for k, v in setting.items() if k != 'name'}
  step = adapnm_step if setting['name'] == 'adapnm' else pnm_step
  grads, trajectory = [], []
  for _ in range(STEPS):
    g = [rng.normal(size=s) for s in SHAPES]
    grads.append([x.tolist() for x in g])
    for p, x, state in zip(params, g, states):
      step(p, torch.tensor(x, dtype=torch.float64), state, **hyper)
    trajectory.append([p.numpy().tolist() for p in params])
  return setting | {
    'init': [x.tolist() for x in init],
    'grads': grads,
    'params': trajectory,
  }


def main():
  torch.set_default_dtype(torch.float64)
  data = {
    'description': (
      "PNM and AdaPNM trajectories from the authors' PyTorch update rule, "
      'float64; written by tests/record_torch_reference.py.'
    ),
    'source': SOURCE,
    'torch_version': torch.__version__,
    'recorded': datetime.date.today().isoformat(),
    'shapes': [list(s) for s in SHAPES],
    'steps': STEPS,
    'runs': [record(s, seed) for seed, s in enumerate(SETTINGS)],
  }
  OUT.parent.mkdir(parents=True, exist_ok=True)
  OUT.write_text(json.dumps(data) + '\n')
  print(f'wrote {OUT}')


if __name__ == '__main__':
  main()
