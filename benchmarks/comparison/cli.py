"""The command line: ``python -m benchmarks.comparison``.

Every flag is checked before anything is trained: a wrong one ends the
command with exit status 2 and one line saying what is wrong and what is
allowed. Ctrl-C ends it with exit status 130, keeping the finished
configurations (and the one in progress, at its last saved epoch); the same
command run again resumes.
"""

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence

from benchmarks.comparison import api
from benchmarks.comparison import data as data_lib
from benchmarks.comparison import models as models_lib
from benchmarks.comparison import optimizers as opt_lib
from benchmarks.comparison import progress as progress_lib
from benchmarks.comparison import settings as settings_lib

DESCRIPTION = (
  'Compares PNM and AdaPNM with SGD-M, Adam and AdamW: same '
  'initialisation, data order, budget and schedule per seed; '
  'seeds trained side by side; results saved per configuration.'
)


class _Parser(argparse.ArgumentParser):
  """argparse with its errors on one line (and exit status 2)."""

  def error(self, message):
    self.exit(2, f'error: {message} (see --help)\n')


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows defaults, except the per-data-set ones (None here)."""

  def _get_help_string(self, action):
    if action.default is None or action.default is False:
      return action.help
    return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
  p = _Parser(
    prog='python -m benchmarks.comparison',
    description=DESCRIPTION,
    formatter_class=_HelpFormatter,
  )
  per_data = lambda key: (
    'default: '
    + ', '.join(
      f'{getattr(d, key)} for {name}' for name, d in data_lib.SPECS.items()
    )
  )
  p.add_argument(
    '--dataset',
    choices=tuple(data_lib.SPECS),
    default='mnist1d',
    help='; '.join(f'{n}: {d.description}' for n, d in data_lib.SPECS.items()),
  )
  p.add_argument(
    '--model',
    choices=models_lib.MODELS,
    help=per_data('model') + ' (mnist1d: cnn = the MNIST-1D '
    "paper's ConvBase, mlp = 40-100-100-10)",
  )
  p.add_argument('--epochs', type=int, help=per_data('epochs'))
  p.add_argument('--batch-size', type=int, help=per_data('batch_size'))
  p.add_argument(
    '--seeds',
    type=int,
    help='seeds 0..N-1, trained side by side; each fixes the '
    'initialisation and data order, shared by all optimizers '
    '(default 5; 20 with --study full and --study noise)',
  )
  p.add_argument(
    '--optimizers',
    default=','.join(opt_lib.OPTIMIZERS),
    help='comma-separated, from ' + ','.join(opt_lib.SPECS),
  )
  p.add_argument(
    '--hparams',
    help='JSON object (or path to a JSON file) of '
    'per-optimizer values replacing the defaults, e.g. '
    '\'{"pnm": {"lr": 0.5, "b0": 2}}\'; keys: '
    + '; '.join(f'{n}: {",".join(o.keys)}' for n, o in opt_lib.SPECS.items()),
  )
  p.add_argument(
    '--schedule',
    choices=opt_lib.SCHEDULES,
    default='step',
    help='shared lr schedule, a multiplier of each base lr; '
    'step = x0.1 at 40%% and 80%% of the epochs',
  )
  p.add_argument(
    '--b0',
    type=float,
    default=1.0,
    help='PNM/AdaPNM positive-negative coefficient',
  )
  p.add_argument(
    '--decay-per-step',
    type=float,
    help='match decoupled weight decay per step: PNM, AdaPNM '
    'and AdamW get weight_decay = D / lr, so each shrinks the '
    'weights by 1 - D per step at its base lr; SGD-M and Adam '
    'keep their weight_decay as an L2 term',
  )
  p.add_argument(
    '--decay-mask',
    choices=('all', 'kernels'),
    default='all',
    help='decay all parameters (as the paper) or only kernels',
  )
  p.add_argument(
    '--lr-grid',
    type=int,
    default=0,
    help='if N > 0, pick each lr from a grid of N points '
    '(ratio --lr-grid-ratio, centred on the default lr) on a '
    'validation split, extending the grid while the best point '
    'is at an edge, then retrain at the pick on the full '
    'training set and report test error',
  )
  p.add_argument(
    '--lr-grid-ratio',
    type=float,
    default=2.0,
    help='ratio between neighbouring grid points',
  )
  p.add_argument(
    '--max-grid-extensions',
    type=int,
    default=3,
    help='most points added beyond the grid edges',
  )
  p.add_argument(
    '--grid-seeds', type=int, default=4, help='seeds per grid point'
  )
  p.add_argument(
    '--validation-fraction',
    type=float,
    help='stratified part of the training set held out for '
    'validation (default 0.2 with --lr-grid); without --lr-grid '
    'the run evaluates on it instead of the test set',
  )
  p.add_argument(
    '--b0-sweep',
    help='comma-separated b0 values: PNM/AdaPNM '
    'at each b0 at a fixed lr and at the lr that keeps the mean '
    'step (pnm_optax.b0_matched_learning_rate), side by side',
  )
  p.add_argument(
    '--max-steps-per-epoch',
    type=int,
    help='cap on steps per epoch (small budgets, smoke tests)',
  )
  p.add_argument('--data-dir', help='where CIFAR-10 lives')
  p.add_argument(
    '--out',
    default=settings_lib.DEFAULT_OUT,
    help='folder of the results <data>_<model>_<id>.json, its '
    '.png and the in-progress checkpoint',
  )
  p.add_argument(
    '--overwrite',
    action='store_true',
    help='discard earlier results of this same experiment '
    'instead of resuming them',
  )
  p.add_argument(
    '--checkpoint-every',
    type=float,
    default=120.0,
    help='seconds between in-progress checkpoints (0: every epoch)',
  )
  p.add_argument('--no-plot', action='store_true', help='skip the PNG')
  p.add_argument(
    '--no-progress',
    action='store_true',
    help='plain lines instead of a progress bar (the default off a terminal)',
  )
  p.add_argument(
    '--study',
    choices=('full', 'noise'),
    help='full: the MNIST-1D study behind docs/comparison.md '
    '(CNN and MLP, every optimizer its own lr from a grid with 4 seeds '
    'per point, then 20 seeds; 95%% intervals, Holm-adjusted p); noise: '
    'the b0 map of docs/noise.md (MLP and CNN, PNM at b0 0..3 each at its '
    'own lr and at a matched mean step, SGD-M 0.9 and 0.81, Hessian '
    'trace; 20 seeds). Both combine with --seeds, --out, --overwrite, '
    '--no-plot, --no-progress, --epochs and --max-steps-per-epoch '
    '(smoke runs)',
  )
  return p


def _load_hparams(text: str | None) -> dict:
  if text is None:
    return {}
  source = 'the --hparams value'
  if os.path.isfile(text):
    source = text
    with open(text) as f:
      text = f.read()
  try:
    value = json.loads(text)
  except ValueError as e:
    raise settings_lib.SettingsError(
      'hparams',
      f'is not valid JSON ({source}: {e}); give an object such '
      'as \'{"pnm": {"lr": 0.5}}\' or a path to a JSON file',
    ) from e
  if not isinstance(value, dict) or not all(
    isinstance(v, dict) for v in value.values()
  ):
    raise settings_lib.SettingsError(
      'hparams',
      'must be a JSON object of objects, such as \'{"pnm": {"lr": 0.5}}\'',
    )
  return value


def _floats(flag: str, text: str | None):
  if text is None:
    return None
  try:
    return tuple(float(v) for v in text.split(',') if v.strip())
  except ValueError as e:
    raise settings_lib.SettingsError(
      flag, f'must be comma-separated numbers, got {text!r}'
    ) from e


def settings_from_args(args: argparse.Namespace) -> settings_lib.Settings:
  """The (unresolved) settings the flags describe."""
  return settings_lib.Settings(
    data=args.dataset,
    model=args.model,
    optimizers=tuple(
      o.strip() for o in args.optimizers.split(',') if o.strip()
    ),
    hparams=_load_hparams(args.hparams),
    seeds=5 if args.seeds is None else args.seeds,
    epochs=args.epochs,
    batch_size=args.batch_size,
    max_steps_per_epoch=args.max_steps_per_epoch,
    schedule=args.schedule,
    b0=args.b0,
    decay_per_step=args.decay_per_step,
    decay_mask=args.decay_mask,
    lr_grid=args.lr_grid,
    lr_grid_ratio=args.lr_grid_ratio,
    max_grid_extensions=args.max_grid_extensions,
    grid_seeds=args.grid_seeds,
    validation_fraction=args.validation_fraction,
    b0_sweep=_floats('b0_sweep', args.b0_sweep),
    data_dir=args.data_dir,
    out=args.out,
    overwrite=args.overwrite,
    plot=not args.no_plot,
    progress=False if args.no_progress else None,
    checkpoint_every_s=args.checkpoint_every,
  )


def check_writable(folder: str) -> None:
  """Creates ``folder`` if needed and proves a file can be written there."""
  try:
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    raise settings_lib.SettingsError(
      'out',
      f'{folder!r} cannot be written ({e.strerror or e}); give a '
      'writable folder',
    ) from e


def _study_conflicts(args: argparse.Namespace) -> list[str]:
  allowed = {
    'study',
    'seeds',
    'out',
    'overwrite',
    'no_plot',
    'no_progress',
    'epochs',
    'max_steps_per_epoch',
  }
  defaults = vars(build_parser().parse_args([]))
  return [
    '--' + k.replace('_', '-')
    for k, v in vars(args).items()
    if k not in allowed and v != defaults[k]
  ]


_FLAGS = {'checkpoint_every_s': 'checkpoint-every', 'data': 'dataset'}


def _flag(error: settings_lib.SettingsError) -> str:
  flag = _FLAGS.get(error.field, error.field.replace('_', '-'))
  return f'--{flag} {error.reason}'


def enable_compilation_cache(folder: str) -> None:
  """Keeps compiled programs in ``<folder>/.jax-cache``, so that running
  again (a resume, more seeds of the same settings) skips most compilation.
  Only where this process has not chosen a cache already."""
  import jax

  # a flag jax defines at run time, hence getattr
  if getattr(jax.config, 'jax_compilation_cache_dir', None) is None:
    jax.config.update(
      'jax_compilation_cache_dir',
      os.path.join(os.path.abspath(folder), '.jax-cache'),
    )
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def main(
  argv: Sequence[str] | None = None, *, compilation_cache: bool = False
) -> int:
  """Runs the command; returns its exit status (0, 2 or 130).

  Args:
    argv: the flags (default ``sys.argv[1:]``).
    compilation_cache: keep compiled programs under ``--out`` (the command
      line does; in-process callers keep their own JAX configuration).
  """
  args = build_parser().parse_args(argv)
  try:
    return _run(args, compilation_cache)
  except KeyboardInterrupt:
    print(
      f'\ninterrupted: finished configurations are kept in '
      f'{args.out}; run the same command again to resume',
      file=sys.stderr,
    )
    return 130


def _run(args: argparse.Namespace, compilation_cache: bool) -> int:
  reporter = progress_lib.Progress(bar=False if args.no_progress else None)
  try:
    if args.study:
      from benchmarks.comparison import noise, study

      conflicts = _study_conflicts(args)
      if conflicts:
        extra = ', --epochs, --max-steps-per-epoch'
        raise settings_lib.SettingsError(
          'study',
          f'{args.study} fixes the experiment; drop {", ".join(conflicts)} '
          '(it combines with --seeds, --out, --overwrite, --no-plot, '
          f'--no-progress{extra})',
        )
      default_seeds = study.SEEDS if args.study == 'full' else noise.SEEDS
      seeds = default_seeds if args.seeds is None else args.seeds
      if seeds < 2:
        raise settings_lib.SettingsError(
          'seeds', f'must be >= 2 for the study (paired tests), got {seeds}'
        )
      for flag, value in (
        ('epochs', args.epochs),
        ('max_steps_per_epoch', args.max_steps_per_epoch),
      ):
        if value is not None and value < 1:
          raise settings_lib.SettingsError(
            flag, f'must be an integer >= 1, got {value}'
          )
      check_writable(args.out)
      if args.study == 'full':
        task = lambda: study.run_study(
          out=args.out,
          seeds=seeds,
          overwrite=args.overwrite,
          plot=not args.no_plot,
          reporter=reporter,
          epochs=args.epochs or study.EPOCHS,
          steps_cap=args.max_steps_per_epoch,
        )
      else:
        task = lambda: noise.run_noise_study(
          out=args.out,
          seeds=seeds,
          overwrite=args.overwrite,
          plot=not args.no_plot,
          reporter=reporter,
          epochs=args.epochs or noise.EPOCHS,
          steps_cap=args.max_steps_per_epoch,
        )
    else:
      settings = settings_from_args(args).resolved()
      check_writable(args.out)
      comparison = api.prepare(settings, reporter)
      task = comparison.run
  except settings_lib.SettingsError as e:
    print(f'error: {_flag(e)}', file=sys.stderr)
    return 2
  except (data_lib.DatasetUnavailableError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if compilation_cache:
    enable_compilation_cache(args.out)
  report = task()
  if not args.study:
    _print_report(report)
  return 0


def _print_report(report: dict) -> None:
  split = report['evaluated_on']
  seeds = len(next(iter(report['summary'].values()))['seeds'])
  print(
    f'\n{split.capitalize()} error after '
    f'{report["settings"].epochs} epochs, mean +- std over {seeds} '
    f'seeds ({report["data"]}, {report["model"]}):'
  )
  print(report['tables']['results'])
  if report['paired']:
    print('\nPaired by seed (negative: PNM/AdaPNM lower error):')
    print(report['tables']['paired'])
  if 'grid' in report['tables']:
    print('\nLearning rates picked on the validation split:')
    print(report['tables']['grid'])
  if 'b0' in report['tables']:
    print('\nb0 at a fixed lr and at a matched mean step:')
    print(report['tables']['b0'])
  paths = [p for p in (report['json_path'], report['png_path']) if p]
  print(
    f'\nwall time {report["wall_seconds"]:.1f} s'
    + (f'; wrote {" and ".join(paths)}' if paths else '')
  )
