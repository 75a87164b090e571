"""Version shims so the tests run on every supported jax (0.5 and up)."""

import jax


def enable_x64():
  """Context manager for 64-bit types: ``jax.enable_x64`` where it exists."""
  if hasattr(jax, 'enable_x64'):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64 as legacy

  return legacy(True)
