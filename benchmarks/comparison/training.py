"""Training: one compiled program per optimizer, seeds in parallel.

An epoch is a ``lax.scan`` over its steps, ``jax.vmap``-ed over the seeds,
followed by the evaluation of every seed; the Python loop over epochs calls
that one compiled function (reused across epochs, and across configurations
of the same optimizer: the hyperparameters are traced arguments). On a
multi-core CPU the seeds run as two equal groups on two threads (see
:func:`seed_groups`). Between epochs the loop logs, checks for divergence
and checkpoints.

Seed ``s`` fixes the model initialisation (``nnx.Rngs(s)``) and the data
order (``jax.random.key(s)``), the same for every optimizer.
"""

import concurrent.futures
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.comparison import data as data_lib
from benchmarks.comparison import models as models_lib
from benchmarks.comparison import optimizers as opt_lib

EVAL_BATCH = 1000
METRICS = ('train_loss', 'train_error', 'test_loss', 'test_error')

ModelFactory = Callable[[nnx.Rngs], nnx.Module]
# XLA:CPU runs one program of a model this small on little more than one
# core, but two programs from two threads side by side: on a multi-core CPU
# a configuration's seeds train as two groups, one on a worker thread (the
# default MNIST-1D run's training 1.25x faster on 2 cores).
_GROUP_WORKER = concurrent.futures.ThreadPoolExecutor(
  max_workers=1, thread_name_prefix='seed-group'
)


def seed_groups(seeds: Sequence[int]) -> list:
  """``seeds`` in contiguous groups of equal size, which share one compiled
  program: two on a multi-core CPU, else one. A group one seed short repeats
  its last seed, whose extra copy is dropped after each epoch."""
  seeds = list(seeds)
  multi_core_cpu = jax.default_backend() == 'cpu' and (os.cpu_count() or 1) > 1
  count = 2 if multi_core_cpu else 1
  size = -(-len(seeds) // count)
  groups = [seeds[i : i + size] for i in range(0, len(seeds), size)]
  return [g + g[-1:] * (size - len(g)) for g in groups]


@dataclasses.dataclass
class History:
  """What a configuration has produced so far, epoch by epoch.

  Attributes:
    seeds: the seeds trained side by side.
    metrics: ``name -> list over epochs of per-seed lists`` for
      :data:`METRICS` (errors are fractions; NaN after a seed diverged).
    epoch_seconds: wall time of each epoch (all seeds together).
    learning_rate: base lr times the schedule at each epoch's first step.
    diverged_at: per seed, the first epoch (0-based) whose training loss was
      not finite, or None.
  """

  seeds: list
  metrics: dict = dataclasses.field(
    default_factory=lambda: {k: [] for k in METRICS}
  )
  epoch_seconds: list = dataclasses.field(default_factory=list)
  learning_rate: list = dataclasses.field(default_factory=list)
  diverged_at: list = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if not self.diverged_at:
      self.diverged_at = [None] * len(self.seeds)

  @property
  def epochs_done(self) -> int:
    return len(self.epoch_seconds)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping) -> 'History':
    return cls(
      **{
        k: d[k]
        for k in (
          'seeds',
          'metrics',
          'epoch_seconds',
          'learning_rate',
          'diverged_at',
        )
      }
    )


class Checkpointer(Protocol):
  """Keeps the state of a configuration in progress (see checkpoints.py)."""

  def due(self) -> bool: ...

  def restore(self, template) -> tuple[object, History] | None: ...

  def save(self, state, history: History) -> None: ...


class EpochCallback(Protocol):
  def __call__(self, history: History, epochs: int) -> None: ...


class Trainer:
  """Trains configurations of one model on one data split.

  Args:
    dataset: the data (``x_test``/``y_test`` is what each epoch evaluates on).
    model_factory: ``rngs -> nnx.Module``; called once per seed.
    epochs: epochs per configuration.
    batch_size: examples per step.
    steps_per_epoch: default ``len(x_train) // batch_size``.
    schedule: one of :data:`optimizers.SCHEDULES`.
    decay_mask: ``'all'`` or ``'kernels'`` (no decay of biases and norms).
  """

  def __init__(
    self,
    dataset: data_lib.Dataset,
    model_factory: ModelFactory,
    *,
    epochs: int,
    batch_size: int,
    steps_per_epoch: int | None = None,
    schedule: str = 'step',
    decay_mask: str = 'all',
  ):
    n_train = dataset.x_train.shape[0]
    if not 1 <= batch_size <= n_train:
      raise ValueError(
        f'batch size must lie in [1, {n_train}] (the training '
        f'examples), got {batch_size}'
      )
    self.dataset, self.model_factory = dataset, model_factory
    self.epochs, self.batch_size = epochs, batch_size
    self.steps_per_epoch = steps_per_epoch or n_train // batch_size
    self.multiplier = opt_lib.lr_multiplier(
      schedule, epochs, self.steps_per_epoch
    )
    self.mask = opt_lib.kernels_only if decay_mask == 'kernels' else None
    template = nnx.eval_shape(lambda: model_factory(nnx.Rngs(0)))
    self.graphdef = nnx.split(template, nnx.Param, ...)[0]
    self.num_params = sum(
      x.size for x in jax.tree.leaves(nnx.state(template, nnx.Param))
    )
    self._with_train_flag = models_lib.takes_train_flag(template)
    self._train_arrays = (
      jnp.asarray(dataset.x_train),
      jnp.asarray(dataset.y_train),
    )
    self._eval_arrays = self._eval_chunks(dataset.x_test, dataset.y_test)
    self._epoch_fn = jax.jit(self._epoch, static_argnames=('name',))
    self._inits = {}

  # ---------------------------------------------------------------- pieces

  def _eval_chunks(self, x, y):
    """The evaluation set padded to whole chunks, with 0/1 weights."""
    n = x.shape[0]
    size = min(EVAL_BATCH, n)
    chunks = -(-n // size)
    pad = chunks * size - n
    weights = np.concatenate(
      [np.ones(n, np.float32), np.zeros(pad, np.float32)]
    )
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    shape = lambda a: a.reshape((chunks, size) + a.shape[1:])
    return tuple(jnp.asarray(shape(a)) for a in (x, y, weights))

  def _apply(self, params, rest, inputs, train: bool):
    model = models_lib.merge(self.graphdef, params, rest)
    x = data_lib.normalize(inputs, self.dataset)
    logits = model(x, train=train) if self._with_train_flag else model(x)
    return logits, nnx.split(model, nnx.Param, ...)[2]

  def _loss(self, params, rest, inputs, labels):
    logits, rest = self._apply(params, rest, inputs, True)
    loss = optax.softmax_cross_entropy_with_integer_labels(
      logits, labels
    ).mean()
    return loss, (rest, jnp.mean(jnp.argmax(logits, -1) != labels))

  def _evaluate(self, params, rest, eval_arrays):
    def chunk(args):
      x, y, w = args
      logits, _ = self._apply(params, rest, x, False)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return jnp.sum(loss * w), jnp.sum((jnp.argmax(logits, -1) != y) * w)

    loss_sums, wrong = jax.lax.map(chunk, eval_arrays)
    n = jnp.sum(eval_arrays[2])
    return jnp.sum(loss_sums) / n, jnp.sum(wrong) / n

  def _epoch(self, state, hp, keys, epoch, train_arrays, eval_arrays, *, name):
    """One epoch for every seed: (new state, per-seed metrics)."""
    tx = opt_lib.make_optimizer(name, hp, self.multiplier, self.mask)
    x_train, y_train = train_arrays
    steps, batch = self.steps_per_epoch, self.batch_size
    grad_fn = jax.value_and_grad(self._loss, has_aux=True)

    def one_seed(params, rest, opt_state, key):
      order_key, aug_key = jax.random.split(jax.random.fold_in(key, epoch))
      order = jax.random.permutation(order_key, x_train.shape[0])
      order = order[: steps * batch].reshape(steps, batch)

      def step(carry, inputs):
        params, rest, opt_state = carry
        idx, i = inputs
        images = x_train[idx]
        if self.dataset.augment:
          images = data_lib.random_crop_flip(
            jax.random.fold_in(aug_key, i), images
          )
        (loss, (rest, err)), grads = grad_fn(params, rest, images, y_train[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, rest, opt_state), (loss, err)

      (params, rest, opt_state), (losses, errs) = jax.lax.scan(
        step, (params, rest, opt_state), (order, jnp.arange(steps))
      )
      test_loss, test_err = self._evaluate(params, rest, eval_arrays)
      metrics = {
        'train_loss': jnp.mean(losses),
        'train_error': jnp.mean(errs),
        'test_loss': test_loss,
        'test_error': test_err,
        'finite': jnp.all(jnp.isfinite(losses)),
      }
      return (params, rest, opt_state), metrics

    params, rest, opt_state = state
    return jax.vmap(one_seed)(params, rest, opt_state, keys)

  def _initial_params(self, seeds: tuple):
    """Stacked (params, rest) of the seeds' models (cached: the same for
    every optimizer)."""
    if seeds not in self._inits:
      splits = [
        nnx.split(self.model_factory(nnx.Rngs(s)), nnx.Param, ...)[1:]
        for s in seeds
      ]
      self._inits[seeds] = jax.tree.map(lambda *xs: jnp.stack(xs), *splits)
    return self._inits[seeds]

  def initial_state(
    self, name: str, hp: Mapping[str, float], seeds: Sequence[int]
  ):
    """(params, rest, opt_state), each stacked over ``seeds``."""
    params, rest = self._initial_params(tuple(seeds))
    tx = opt_lib.make_optimizer(name, hp, self.multiplier, self.mask)
    return params, rest, jax.vmap(tx.init)(params)

  def _arguments(
    self, name: str, hp: Mapping[str, float], seeds: Sequence[int]
  ):
    """The epoch program's (state, hyperparameters, keys) for ``seeds``."""
    seeds = [int(s) for s in seeds]
    hp = {k: float(v) for k, v in hp.items()}
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    return self.initial_state(name, hp, seeds), hp, keys

  # ------------------------------------------------------------------ loop

  def train(
    self,
    name: str,
    hp: Mapping[str, float],
    seeds: Sequence[int],
    *,
    on_epoch: EpochCallback | None = None,
    checkpointer: Checkpointer | None = None,
    on_finish: Callable[[object], None] | None = None,
  ) -> History:
    """Trains optimizer ``name`` with hyperparameters ``hp`` on ``seeds``.

    Stops early when every seed has diverged. With ``checkpointer``, starts
    from its saved state if it has one, saves as it goes, and saves the last
    finished epoch when interrupted (``KeyboardInterrupt`` is re-raised).
    ``on_finish`` gets the final ``(params, rest, opt_state)``, stacked over
    ``seeds``, once training ends.
    """
    seeds = [int(s) for s in seeds]
    groups = seed_groups(seeds)
    args = [self._arguments(name, hp, g) for g in groups]
    hp = args[0][1]
    state = _trim(_concat([state for state, _, _ in args]), len(seeds))
    history = History(seeds=seeds)
    if checkpointer is not None:
      restored = checkpointer.restore(state)
      if restored is not None:
        state, history = restored
    keys = [k for _, _, k in args]
    # The groups' states between epochs; joined only to save a checkpoint.
    parts = _split(_pad(state, sum(map(len, groups))), [len(g) for g in groups])
    joined = lambda trees: _trim(_concat(trees), len(seeds))
    saved_epochs = history.epochs_done

    def epoch_of(group_state, group_keys, epoch):
      return self._epoch_fn(
        group_state,
        hp,
        group_keys,
        epoch,
        self._train_arrays,
        self._eval_arrays,
        name=name,
      )

    try:
      while history.epochs_done < self.epochs and None in history.diverged_at:
        epoch = history.epochs_done
        start = time.perf_counter()
        others = [
          _GROUP_WORKER.submit(epoch_of, part, k, epoch)
          for part, k in zip(parts[1:], keys[1:])
        ]
        results = [epoch_of(parts[0], keys[0], epoch)]
        results += [f.result() for f in others]
        metrics = jax.device_get(joined([r[1] for r in results]))
        seconds = time.perf_counter() - start
        parts = [r[0] for r in results]
        self._record(history, hp, metrics, seconds)
        if on_epoch is not None:
          on_epoch(history, self.epochs)
        if checkpointer is not None and checkpointer.due():
          checkpointer.save(joined(parts), history)
          saved_epochs = history.epochs_done
    except KeyboardInterrupt:
      if checkpointer is not None and history.epochs_done > saved_epochs:
        checkpointer.save(joined(parts), history)
      raise
    if on_finish is not None:
      on_finish(joined(parts))
    return history

  def _record(self, history: History, hp, metrics, seconds: float) -> None:
    epoch = history.epochs_done
    for s, finite in enumerate(np.asarray(metrics['finite'])):
      if not finite and history.diverged_at[s] is None:
        history.diverged_at[s] = epoch
    alive = np.array([d is None for d in history.diverged_at])
    for k in METRICS:
      values = np.where(alive, np.asarray(metrics[k], np.float64), np.nan)
      history.metrics[k].append(values.tolist())
    history.epoch_seconds.append(seconds)
    history.learning_rate.append(
      hp['lr']
      * float(
        np.asarray(self.multiplier(epoch * self.steps_per_epoch), np.float64)
      )
    )


def _concat(trees: list):
  """Trees stacked over seeds, joined along the seed axis."""
  if len(trees) == 1:
    return trees[0]
  # Leaf by leaf: nnx.State's tree metadata does not support multi-tree map.
  leaves = [jax.tree.leaves(t) for t in trees]
  return jax.tree.unflatten(
    jax.tree.structure(trees[0]), [jnp.concatenate(xs) for xs in zip(*leaves)]
  )


def _trim(tree, n: int):
  """The first ``n`` seeds of ``tree`` (drops a group's repeated seed)."""
  leaves = jax.tree.leaves(tree)
  if all(x.shape[0] == n for x in leaves):
    return tree
  return jax.tree.unflatten(jax.tree.structure(tree), [x[:n] for x in leaves])


def _pad(tree, n: int):
  """``tree`` with its last seed repeated up to ``n`` seeds."""
  leaves = jax.tree.leaves(tree)
  if all(x.shape[0] == n for x in leaves):
    return tree
  return jax.tree.unflatten(
    jax.tree.structure(tree),
    [jnp.concatenate([x] + [x[-1:]] * (n - x.shape[0])) for x in leaves],
  )


def _split(tree, sizes: list) -> list:
  """The inverse of :func:`_concat`: ``tree`` cut into ``sizes`` seeds."""
  if len(sizes) == 1:
    return [tree]
  leaves, treedef = jax.tree.flatten(tree)
  cuts = np.cumsum(sizes)[:-1]
  pieces = [jnp.split(x, cuts) for x in leaves]
  return [
    jax.tree.unflatten(treedef, [p[i] for p in pieces])
    for i in range(len(sizes))
  ]


@functools.cache
def bundled_factory(
  name: str, input_shape: tuple, num_classes: int
) -> ModelFactory:
  """``rngs -> model`` for a bundled model (cached, so trainers share it)."""
  return functools.partial(
    models_lib.make_model, name, input_shape, num_classes
  )
