"""The in-progress checkpoint of one configuration, at epoch granularity.

A long configuration (CIFAR-10: hours) saves its training state (parameters,
non-parameter state such as BatchNorm statistics, optimizer state, all
stacked over seeds) and its history so far to one ``.npz`` file, written to
a temporary file and renamed, so the file is always a complete epoch. A
resumed command continues that configuration from the saved epoch; the
compiled epoch is the same program, so the final numbers equal those of an
uninterrupted run.
"""

import json
import os
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.comparison import training


class ConfigurationCheckpoint:
  """Saves and restores the state of configuration ``config_id``.

  Args:
    path: the ``.npz`` file (one configuration in progress at a time).
    config_id: the configuration this checkpoint belongs to; a file saved
      for another configuration is ignored by :meth:`restore`.
    every_s: :meth:`due` is true once this many seconds have passed since
      the last save (0: after every epoch).
  """

  def __init__(self, path: str, config_id: str, every_s: float = 120.0):
    self.path, self.config_id, self.every_s = path, config_id, every_s
    self._last = time.monotonic()

  def due(self) -> bool:
    return time.monotonic() - self._last >= self.every_s

  def save(self, state, history: training.History) -> None:
    leaves = jax.tree.leaves(state)
    is_key = [jnp.issubdtype(x.dtype, jax.dtypes.prng_key) for x in leaves]
    arrays: dict[str, Any] = {
      f'leaf_{i}': np.asarray(jax.random.key_data(x) if k else x)
      for i, (x, k) in enumerate(zip(leaves, is_key))
    }
    meta = {
      'config_id': self.config_id,
      'is_key': is_key,
      'history': history.to_dict(),
    }
    arrays['meta'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    folder = os.path.dirname(os.path.abspath(self.path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
      dir=folder, suffix='.tmp', prefix='.' + os.path.basename(self.path)
    )
    try:
      with os.fdopen(fd, 'wb') as f:
        np.savez(f, *(), **arrays)
      os.replace(tmp, self.path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
    self._last = time.monotonic()

  def saved_epochs(self) -> int:
    """Epochs finished in the saved state of this configuration (0: none)."""
    if not os.path.isfile(self.path):
      return 0
    with np.load(self.path) as saved:
      meta = json.loads(saved['meta'].tobytes().decode())
    if meta['config_id'] != self.config_id:
      return 0
    return len(meta['history']['epoch_seconds'])

  def restore(self, template) -> tuple[object, training.History] | None:
    """The saved (state, history) shaped like ``template``, or None when
    there is no checkpoint of this configuration."""
    if not os.path.isfile(self.path):
      return None
    with np.load(self.path) as saved:
      meta = json.loads(saved['meta'].tobytes().decode())
      if meta['config_id'] != self.config_id:
        return None
      leaves, treedef = jax.tree.flatten(template)
      if len(meta['is_key']) != len(leaves):
        raise ValueError(
          f'checkpoint {self.path} does not match the model '
          'and optimizer state; delete it to start afresh'
        )
      restored = []
      for i, (like, is_key) in enumerate(zip(leaves, meta['is_key'])):
        value = saved[f'leaf_{i}']
        if is_key:
          value = jax.random.wrap_key_data(
            value, impl=jax.random.key_impl(like)
          )
        if value.shape != like.shape or value.dtype != like.dtype:
          raise ValueError(
            f'checkpoint {self.path} does not match the model '
            'and optimizer state; delete it to start afresh'
          )
        restored.append(jax.numpy.asarray(value))
    return (
      jax.tree.unflatten(treedef, restored),
      training.History.from_dict(meta['history']),
    )

  def remove(self) -> None:
    if os.path.exists(self.path):
      os.remove(self.path)
