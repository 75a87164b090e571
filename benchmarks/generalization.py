"""Generalization benchmark: PNM and AdaPNM against SGD-M, Adam and AdamW.

Trains one Flax NNX model per (optimizer, seed) under the same epoch budget,
batch size and learning-rate schedule, evaluates on the held-out test set
after every epoch, prints a table of test error mean +- std over seeds, and
writes a JSON of all results and a PNG of the training/test curves.

The default (``python -m benchmarks.generalization``) needs no download:
scikit-learn's bundled 8x8 digits with a small MLP (``--model cnn`` for a
small CNN). ``--dataset cifar10``
runs the paper's setting (ResNet-18, batch 128, 200 epochs, learning rate
divided by 10 at epochs 80 and 160, weight decay 5e-4) when CIFAR-10 is on
disk; see ``benchmarks/data.py`` for the accepted layouts.

Per-optimizer hyperparameters default to the authors' CIFAR-10 code and can be
overridden with ``--hparams '{"pnm": {"lr": 0.5}, "adam": {"lr": 3e-4}}'``
(keys: lr, weight_decay, and b1/b2/eps/momentum where they apply).
"""

import argparse
import functools
import json
import os
import platform
import sys
import time
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pnm_optax
from benchmarks import data as data_lib
from benchmarks import environment as environment_lib
from benchmarks import models as models_lib

OPTIMIZERS = ('pnm', 'adapnm', 'sgdm', 'adam', 'adamw')
LABELS = {'pnm': 'PNM', 'adapnm': 'AdaPNM', 'sgdm': 'SGD-M', 'adam': 'Adam',
          'adamw': 'AdamW'}

# The authors' CIFAR-10 settings (pnm_cifar10_demo.ipynb): base weight decay
# 5e-4; SGD-M and Adam add it to the gradient (L2, PyTorch style); PNM decays
# decoupled with lr 1 (5e-4 per step); AdamW and AdaPNM get 5e-4 / lr, i.e.
# the same 5e-4 shrink per step at their lr 1e-3.
PAPER_HPARAMS = {
    'pnm': {'lr': 1.0, 'weight_decay': 5e-4, 'b1': 0.9},
    'adapnm': {'lr': 1e-3, 'weight_decay': 0.5, 'b1': 0.9, 'b2': 0.999,
               'eps': 1e-8},
    'sgdm': {'lr': 0.1, 'weight_decay': 5e-4, 'momentum': 0.9},
    'adam': {'lr': 1e-3, 'weight_decay': 5e-4, 'b1': 0.9, 'b2': 0.999,
             'eps': 1e-8},
    'adamw': {'lr': 1e-3, 'weight_decay': 0.5, 'b1': 0.9, 'b2': 0.999,
              'eps': 1e-8},
}

DATASET_DEFAULTS = {
    'digits': {'model': 'mlp', 'epochs': 30, 'batch_size': 64},
    'cifar10': {'model': 'resnet18', 'epochs': 200, 'batch_size': 128},
}
EVAL_BATCH = 1000


# --------------------------------------------------------------------------
# Optimizers and schedule.


def lr_multiplier(schedule: str, total_steps: int, steps_per_epoch: int,
                  epochs: int) -> optax.Schedule:
  """Shared schedule, as a multiplier of each optimizer's base lr.

  ``step``: x0.1 at 40% and 80% of the epochs (epochs 80 and 160 of 200, as
  the paper). ``cosine``: cosine decay to 0 over all steps. ``constant``.
  """
  if schedule == 'step':
    bounds = {int(round(f * epochs)) * steps_per_epoch: 0.1
              for f in (0.4, 0.8)}
    bounds = {b: s for b, s in bounds.items() if 0 < b < total_steps}
    return optax.piecewise_constant_schedule(1.0, bounds)
  if schedule == 'cosine':
    return optax.cosine_decay_schedule(1.0, max(total_steps, 1))
  if schedule == 'constant':
    return optax.constant_schedule(1.0)
  raise ValueError(f'unknown schedule {schedule!r}')


def kernels_only(params):
  """Weight-decay mask: decay weight matrices/kernels, not biases or norms."""
  return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def make_optimizer(name: str, hp: dict, multiplier: optax.Schedule,
                   b0: float, mask=None) -> optax.GradientTransformation:
  """The optax transformation for optimizer ``name`` with hyperparameters
  ``hp`` and learning rate ``hp['lr'] * multiplier(step)``."""
  base_lr = hp['lr']
  lr = lambda step: base_lr * multiplier(step)
  wd = hp.get('weight_decay', 0.0)
  if name == 'pnm':
    return pnm_optax.pnm(lr, b1=hp.get('b1', 0.9), b0=b0, weight_decay=wd,
                         mask=mask)
  if name == 'adapnm':
    return pnm_optax.adapnm(lr, b1=hp.get('b1', 0.9), b2=hp.get('b2', 0.999),
                            b0=b0, eps=hp.get('eps', 1e-8), weight_decay=wd,
                            mask=mask)
  if name == 'sgdm':
    return optax.chain(optax.add_decayed_weights(wd, mask),
                       optax.sgd(lr, momentum=hp.get('momentum', 0.9)))
  if name == 'adam':
    return optax.chain(optax.add_decayed_weights(wd, mask),
                       optax.adam(lr, b1=hp.get('b1', 0.9),
                                  b2=hp.get('b2', 0.999),
                                  eps=hp.get('eps', 1e-8)))
  if name == 'adamw':
    return optax.adamw(lr, b1=hp.get('b1', 0.9), b2=hp.get('b2', 0.999),
                       eps=hp.get('eps', 1e-8), weight_decay=wd, mask=mask)
  raise ValueError(f'unknown optimizer {name!r}; choose from {OPTIMIZERS}')


# --------------------------------------------------------------------------
# Training: one jitted step, a Python loop over the batches. (A lax.scan over
# the epoch runs convolutions ~15x slower on XLA:CPU, so the loop it is.)


def make_train_epoch(graphdef, tx, dataset: data_lib.Dataset,
                     batch_size: int, steps: int) -> Callable:
  """Returns ``train_epoch(params, rest, opt_state, key, x, y)``.

  ``rest`` is the model's non-parameter state (BatchNorm statistics). The
  epoch shuffles with ``key``, runs ``steps`` batches, and returns the new
  state plus the mean training loss and error over those batches.
  """

  def loss_fn(params, rest, images, labels):
    model = models_lib.merge(graphdef, params, rest)
    logits = model(images, train=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()
    errors = jnp.mean(jnp.argmax(logits, -1) != labels)
    return loss, (nnx.split(model, nnx.Param, ...)[2], errors)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
  def train_step(params, rest, opt_state, x, y, idx, aug_key):
    images = x[idx]
    if dataset.augment:
      images = data_lib.random_crop_flip(aug_key, images)
    images = data_lib.normalize(images, dataset)
    (loss, (rest, err)), grads = grad_fn(params, rest, images, y[idx])
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, rest, opt_state, loss, err

  @jax.jit
  def batch_order(key, n):
    order = jax.random.permutation(key, n)
    return order[:steps * batch_size].reshape(steps, batch_size)

  def train_epoch(params, rest, opt_state, key, x, y):
    perm_key, aug_key = jax.random.split(key)
    order = batch_order(perm_key, jnp.arange(x.shape[0]))
    losses, errs = [], []
    for i in range(steps):
      params, rest, opt_state, loss, err = train_step(
          params, rest, opt_state, x, y, order[i],
          jax.random.fold_in(aug_key, i))
      losses.append(loss)
      errs.append(err)
    return (params, rest, opt_state, float(jnp.mean(jnp.stack(losses))),
            float(jnp.mean(jnp.stack(errs))))

  return train_epoch


def make_evaluate(graphdef, dataset: data_lib.Dataset) -> Callable:
  """Returns ``evaluate(params, rest, x, y) -> (mean loss, error rate)``."""

  @jax.jit
  def batch_sums(params, rest, images, labels):
    model = models_lib.merge(graphdef, params, rest)
    logits = model(data_lib.normalize(images, dataset), train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return loss.sum(), jnp.sum(jnp.argmax(logits, -1) != labels)

  def evaluate(params, rest, x, y):
    loss_sum, wrong = 0.0, 0
    for start in range(0, x.shape[0], EVAL_BATCH):
      l, w = batch_sums(params, rest, x[start:start + EVAL_BATCH],
                        y[start:start + EVAL_BATCH])
      loss_sum += float(l)
      wrong += int(w)
    return loss_sum / x.shape[0], wrong / x.shape[0]

  return evaluate


def make_runner(opt_name: str, cfg: dict, dataset, multiplier) -> Callable:
  """Returns ``run(seed, arrays, progress) -> curves`` for one optimizer.

  The jitted step and evaluation are built once and shared by all seeds.
  """
  template = nnx.eval_shape(lambda: models_lib.make_model(
      cfg['model'], dataset.image_shape, dataset.num_classes, 0))
  graphdef = nnx.split(template, nnx.Param, ...)[0]
  mask = kernels_only if cfg['decay_mask'] == 'kernels' else None
  tx = make_optimizer(opt_name, cfg['hparams'][opt_name], multiplier,
                      cfg['b0'], mask)
  train_epoch = make_train_epoch(graphdef, tx, dataset, cfg['batch_size'],
                                 cfg['steps_per_epoch'])
  evaluate = make_evaluate(graphdef, dataset)

  def run(seed: int, arrays, progress) -> dict:
    model = models_lib.make_model(cfg['model'], dataset.image_shape,
                                  dataset.num_classes, seed)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)
    x_train, y_train, x_test, y_test = arrays
    curves = {k: [] for k in ('train_loss', 'train_error', 'test_loss',
                              'test_error', 'seconds')}
    key = jax.random.key(seed)
    start = time.perf_counter()
    for epoch in range(cfg['epochs']):
      params, rest, opt_state, loss, err = train_epoch(
          params, rest, opt_state, jax.random.fold_in(key, epoch), x_train,
          y_train)
      test_loss, test_err = evaluate(params, rest, x_test, y_test)
      for k, v in (('train_loss', loss), ('train_error', err),
                   ('test_loss', test_loss), ('test_error', test_err),
                   ('seconds', time.perf_counter() - start)):
        curves[k].append(float(v))
      progress.set_postfix_str(
          f'{LABELS[opt_name]} seed {seed} test err {100 * test_err:.2f}%')
      progress.update(1)
    return curves

  return run


# --------------------------------------------------------------------------
# Results: summary, table, JSON, plot.


def _mean_std(values) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
  arr = np.asarray(values, np.float64)
  std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
  return float(arr.mean()), std


def summarize(runs: dict) -> dict:
  """Per optimizer: final/best test error, final train loss, over seeds."""
  summary = {}
  for name, per_seed in runs.items():
    final = [c['test_error'][-1] for c in per_seed]
    best = [min(c['test_error']) for c in per_seed]
    train_loss = [c['train_loss'][-1] for c in per_seed]
    seconds = [c['seconds'][-1] for c in per_seed]
    summary[name] = {
        'test_error_mean': _mean_std(final)[0],
        'test_error_std': _mean_std(final)[1],
        'best_test_error_mean': _mean_std(best)[0],
        'best_test_error_std': _mean_std(best)[1],
        'train_loss_mean': _mean_std(train_loss)[0],
        'train_loss_std': _mean_std(train_loss)[1],
        'seconds_per_run_median': float(np.median(seconds)),
        'test_error_per_seed': final,
    }
  return summary


def curves_by_optimizer(runs: dict, epochs: int) -> dict:
  """Per optimizer: per-seed lists and their mean per epoch."""
  out = {}
  for name, per_seed in runs.items():
    entry: dict[str, Any] = {'epoch': list(range(1, epochs + 1))}
    for k in ('train_loss', 'train_error', 'test_loss', 'test_error'):
      entry[k] = [c[k] for c in per_seed]
      entry[k + '_mean'] = np.mean(entry[k], axis=0).tolist()
    out[name] = entry
  return out


def format_table(summary: dict, cfg: dict) -> str:
  """Markdown table of test error (%) mean +- std over seeds."""
  split = cfg.get('evaluated_on', 'test')
  rows = [
      f'| optimizer | lr | weight decay | final {split} error % | '
      f'best {split} error % | final train loss | s/run (median) |',
      '|---|---|---|---|---|---|---|',
  ]
  for name, s in summary.items():
    hp = cfg['hparams'][name]
    rows.append(
        f"| {LABELS[name]} | {hp['lr']:g} | {hp.get('weight_decay', 0):g} | "
        f"{100 * s['test_error_mean']:.2f} +- {100 * s['test_error_std']:.2f}"
        f" | {100 * s['best_test_error_mean']:.2f} +- "
        f"{100 * s['best_test_error_std']:.2f} | "
        f"{s['train_loss_mean']:.4f} | {s['seconds_per_run_median']:.1f} |")
  return '\n'.join(rows)


def environment() -> dict:
  """Machine and library versions, recorded with every result."""
  import flax
  return {
      'python': platform.python_version(),
      'platform': platform.platform(),
      'processor': environment_lib.cpu_name(),
      'cpu_count': os.cpu_count(),
      'jax': jax.__version__,
      'jax_backend': jax.default_backend(),
      'devices': [str(d.device_kind) for d in jax.devices()],
      'flax': flax.__version__,
      'optax': optax.__version__,
      'pnm_optax': pnm_optax.__version__,
      'numpy': np.__version__,
  }


def plot_curves(curves: dict, path: str, title: str) -> None:
  """Train loss, train error and test error per epoch (mean over seeds, with
  the min-max band over seeds)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  panels = (('train_loss', 'training loss', True),
            ('train_error', 'training error', False),
            ('test_error', 'test error (log scale)', True))
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  for ax, (key, label, log) in zip(axes, panels):
    for name, c in curves.items():
      per_seed = np.asarray(c[key])
      line, = ax.plot(c['epoch'], per_seed.mean(0), label=LABELS[name])
      ax.fill_between(c['epoch'], per_seed.min(0), per_seed.max(0),
                      color=line.get_color(), alpha=0.2)
    ax.set_xlabel('epoch')
    ax.set_ylabel(label)
    if log:
      ax.set_yscale('log')
    ax.grid(alpha=0.3)
  axes[-1].legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# --------------------------------------------------------------------------
# CLI.


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows defaults, except the per-dataset ones (None here)."""

  def _get_help_string(self, action):
    if action.default is None:
      return action.help
    return super()._get_help_string(action)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.generalization',
      description=__doc__.split('\n\n')[0],
      formatter_class=_HelpFormatter)
  parser.add_argument('--dataset', choices=('digits', 'cifar10'),
                      default='digits', help='digits is bundled with '
                      'scikit-learn; cifar10 must be on disk (--data-dir)')
  per_dataset = lambda key: 'default: ' + ', '.join(
      f'{d[key]} for {name}' for name, d in DATASET_DEFAULTS.items())
  parser.add_argument('--model', choices=sorted(models_lib.MODELS),
                      help=per_dataset('model'))
  parser.add_argument('--epochs', type=int, help=per_dataset('epochs'))
  parser.add_argument('--batch-size', type=int,
                      help=per_dataset('batch_size'))
  parser.add_argument('--seeds', type=int, default=3,
                      help='number of seeds (0 .. N-1); each seed fixes the '
                      'initialisation and data order, shared by optimizers')
  parser.add_argument('--optimizers', default=','.join(OPTIMIZERS),
                      help='comma list from ' + ','.join(OPTIMIZERS))
  parser.add_argument('--schedule', choices=('step', 'cosine', 'constant'),
                      default='step', help='shared lr schedule (multiplier '
                      'of each base lr); step = x0.1 at 40%% and 80%%')
  parser.add_argument('--b0', type=float, default=1.0,
                      help='PNM/AdaPNM positive-negative coefficient')
  parser.add_argument('--hparams', default=None,
                      help='JSON object (or path to a JSON file) overriding '
                      'per-optimizer hyperparameters, e.g. '
                      '\'{"pnm": {"lr": 0.5, "weight_decay": 1e-3}}\'')
  parser.add_argument('--decay-mask', choices=('all', 'kernels'),
                      default='all', help='decay all parameters (as the '
                      'paper) or only kernels (not biases/norm scales)')
  parser.add_argument('--max-steps-per-epoch', '--max-steps', type=int,
                      default=None, dest='max_steps_per_epoch',
                      help='cap on steps per epoch (small budgets, smoke '
                      'tests)')
  parser.add_argument('--validation-fraction', type=float, default=0.0,
                      help='if > 0, hold out this stratified fraction of the '
                      'training set and evaluate on it instead of the test '
                      'set (for tuning hyperparameters)')
  parser.add_argument('--data-dir', default=None,
                      help='where CIFAR-10 lives (see benchmarks/data.py)')
  parser.add_argument('--out', default=os.path.join('results',
                                                    'generalization'),
                      help='folder for <dataset>_<model>.json and .png')
  parser.add_argument('--no-plot', action='store_true',
                      help='skip the PNG of the curves')
  parser.add_argument('--no-progress', action='store_true',
                      help='no progress bar (it is off anyway when stderr '
                      'is not a terminal)')
  return parser.parse_args(argv)


def _load_hparams(text: str | None) -> dict:
  if not text:
    return {}
  if os.path.isfile(text):
    with open(text) as f:
      text = f.read()
  overrides = json.loads(text)
  unknown = set(overrides) - set(OPTIMIZERS)
  if unknown:
    raise ValueError(f'--hparams: unknown optimizers {sorted(unknown)}')
  return overrides


def build_config(args: argparse.Namespace, num_train: int) -> dict:
  """Resolves defaults into the full run configuration."""
  defaults = DATASET_DEFAULTS[args.dataset]
  optimizers = [o.strip() for o in args.optimizers.split(',') if o.strip()]
  for o in optimizers:
    if o not in OPTIMIZERS:
      raise ValueError(f'unknown optimizer {o!r}; choose from {OPTIMIZERS}')
  overrides = _load_hparams(args.hparams)
  hparams = {o: {**PAPER_HPARAMS[o], **overrides.get(o, {})}
             for o in optimizers}
  batch_size = args.batch_size or defaults['batch_size']
  steps = num_train // batch_size
  if args.max_steps_per_epoch:
    steps = min(steps, args.max_steps_per_epoch)
  if steps < 1:
    raise ValueError(f'batch size {batch_size} exceeds the {num_train} '
                     'training examples')
  return {
      'dataset': args.dataset,
      'model': args.model or defaults['model'],
      'epochs': args.epochs or defaults['epochs'],
      'batch_size': batch_size,
      'steps_per_epoch': steps,
      'seeds': list(range(args.seeds)),
      'optimizers': optimizers,
      'schedule': args.schedule,
      'b0': args.b0,
      'decay_mask': args.decay_mask,
      'hparams': hparams,
  }


def main(argv: list[str] | None = None) -> dict:
  """Runs the benchmark; prints the table, writes JSON (+ PNG).

  Args:
    argv: command-line flags (``None``: ``sys.argv[1:]``).

  Returns:
    ``{'config', 'environment', 'summary', 'curves', 'table', 'json_path',
    'png_path'}``. ``summary[opt]`` holds ``test_error_mean``/``_std``
    (after the last epoch), ``best_test_error_mean``/``_std``,
    ``train_loss_mean``/``_std``, ``seconds_per_run_median`` and
    ``test_error_per_seed``. ``curves[opt]`` holds ``epoch`` (1..E) and, for
    ``train_loss``, ``train_error``, ``test_loss`` and ``test_error``, one
    list per seed plus the ``<name>_mean`` list over seeds. Errors are
    fractions in [0, 1].
  """
  from tqdm.auto import tqdm

  args = parse_args(argv)
  if args.seeds < 1:
    raise ValueError('--seeds must be >= 1')
  dataset = data_lib.load_dataset(args.dataset, args.data_dir)
  if args.validation_fraction > 0:
    dataset = data_lib.holdout_validation(dataset, args.validation_fraction)
  cfg = build_config(args, dataset.x_train.shape[0])
  cfg['evaluated_on'] = ('validation' if args.validation_fraction > 0
                         else 'test')
  env = environment()
  total_steps = cfg['epochs'] * cfg['steps_per_epoch']
  multiplier = lr_multiplier(cfg['schedule'], total_steps,
                             cfg['steps_per_epoch'], cfg['epochs'])
  arrays = tuple(jnp.asarray(a) for a in (dataset.x_train, dataset.y_train,
                                          dataset.x_test, dataset.y_test))
  print(f"{cfg['dataset']}: {dataset.x_train.shape[0]} train / "
        f"{dataset.x_test.shape[0]} {cfg['evaluated_on']} images; "
        f"model {cfg['model']}; "
        f"{cfg['epochs']} epochs x {cfg['steps_per_epoch']} steps of "
        f"{cfg['batch_size']}; schedule {cfg['schedule']}; "
        f"seeds {cfg['seeds']}; b0 {cfg['b0']}")
  print(f"jax {env['jax']} ({env['jax_backend']}: {env['devices'][0]}), "
        f"flax {env['flax']}, optax {env['optax']}, "
        f"pnm_optax {env['pnm_optax']}, python {env['python']}, "
        f"{env['processor']} x{env['cpu_count']}")

  runs = {o: [] for o in cfg['optimizers']}
  total = len(cfg['optimizers']) * len(cfg['seeds']) * cfg['epochs']
  with tqdm(total=total, unit='epoch', file=sys.stderr,
            disable=True if args.no_progress else None) as progress:
    for name in cfg['optimizers']:
      run = make_runner(name, cfg, dataset, multiplier)
      for seed in cfg['seeds']:
        runs[name].append(run(seed, arrays, progress))

  summary = summarize(runs)
  curves = curves_by_optimizer(runs, cfg['epochs'])
  table = format_table(summary, cfg)
  print(f"\n{cfg['evaluated_on'].capitalize()} error after {cfg['epochs']} "
        f"epochs, mean +- std over "
        f"{len(cfg['seeds'])} seeds ({cfg['dataset']}, {cfg['model']}):")
  print(table)

  os.makedirs(args.out, exist_ok=True)
  stem = os.path.join(args.out, f"{dataset.name}_{cfg['model']}")
  results = {'config': cfg, 'environment': env, 'summary': summary,
             'curves': curves, 'table': table,
             'json_path': stem + '.json',
             'png_path': None if args.no_plot else stem + '.png'}
  if not args.no_plot:
    plot_curves(curves, stem + '.png',
                f"{cfg['dataset']} / {cfg['model']}: mean over "
                f"{len(cfg['seeds'])} seeds (band: min-max)")
  with open(stem + '.json', 'w') as f:
    json.dump(results, f, indent=1)
  print(f"\nwrote {results['json_path']}"
        + (f" and {results['png_path']}" if results['png_path'] else ''))
  return results


if __name__ == '__main__':
  try:
    main()
  except data_lib.DatasetUnavailableError as e:
    sys.exit(f'error: {e}')
