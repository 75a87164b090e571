"""Mutation testing: does the library suite catch each mutant of pnm_optax?

  python -m tests.mutants            # every mutant
  python -m tests.mutants NAME ...   # some of them
  python -m tests.mutants --list     # their names

Each mutant is one textual change to one file of ``pnm_optax`` (a mask
ignored, a bias correction dropped, a buffer stored in the wrong dtype, ...).
For each, the tool copies the tracked files to a temporary folder, applies
the mutant there (the working tree is never touched), runs
``python -m pytest tests/library -x -q -p no:randomly`` in the copy (the
files in ``FIRST`` first) and
prints one line: ``caught`` and the first failing test, or ``SURVIVED``.
It exits 1 if any mutant survived, 2 for an unknown name or a mutant whose
text no longer matches the source.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TRANSFORM, ALIAS = 'pnm_optax/transform.py', 'pnm_optax/alias.py'
# The files that catch most mutants soonest run first (-x stops at the first
# failure); the rest of tests/library follows.
FIRST = [
  'tests/library/test_properties.py',
  'tests/library/test_precision.py',
  'tests/library/test_edge_cases.py',
]

# name -> (file, text, replacement); the text occurs exactly once.
MUTANTS = {
  # From the issue.
  'mask_ignored': (
    ALIAS,
    '  decay = optax.add_decayed_weights(\n    0.0 if weight_decay is None else weight_decay, mask\n  )',
    '  decay = optax.add_decayed_weights(\n    0.0 if weight_decay is None else weight_decay, None\n  )',
  ),
  'mask_ignored_l2': (
    ALIAS,
    '  decay = _add_decayed_weights(weight_decay, mask)',
    "  decay = _add_decayed_weights(\n    weight_decay, mask if weight_decay_mode == 'decoupled' else None\n  )",
  ),
  'wd_schedule_cast_to_grad_dtype': (
    ALIAS,
    'u.astype(jnp.result_type(g, p)) if m else u',
    'u.astype(g.dtype) if m else u',
  ),
  'rounding_check_param_dtype': (
    TRANSFORM,
    '_checks.check_rounding(_compute_dtypes(params, mu_dtype), b1=b1)',
    '_checks.check_rounding(_compute_dtypes(params), b1=b1)',
  ),
  'eps_root_zero_when_eps_zero': (
    TRANSFORM,
    '  eps_root_is_zero = _checks.is_zero(eps_root)\n',
    '  eps_root_is_zero = _checks.is_zero(eps_root) or _checks.is_zero(eps)\n',
  ),
  # Dtypes of the buffers and the computation.
  'mu_stored_in_grad_dtype': (
    TRANSFORM,
    'return direction, a.astype(mu_odd.dtype), b.astype(mu_even.dtype)',
    'return direction, a.astype(g.dtype), b.astype(g.dtype)',
  ),
  'mu_even_stored_in_compute_dtype': (
    TRANSFORM,
    'return direction, a.astype(mu_odd.dtype), b.astype(mu_even.dtype)',
    'return direction, a.astype(mu_odd.dtype), b',
  ),
  'compute_not_widened_by_mu': (
    TRANSFORM,
    'dtype = _compute_dtype(g.dtype, mu_odd.dtype, *wider)',
    'dtype = _compute_dtype(g.dtype, *wider)',
  ),
  'compute_not_widened_by_nu': (
    TRANSFORM,
    'lambda dtype: scalars(dtype).pn, nu.dtype\n',
    'lambda dtype: scalars(dtype).pn\n',
  ),
  'nu_stored_in_compute_dtype': (
    TRANSFORM,
    'new = (update, mu_odd, mu_even, nu_new.astype(nu.dtype))',
    'new = (update, mu_odd, mu_even, nu_new)',
  ),
  'nu_max_stored_in_nu_dtype_of_param': (
    TRANSFORM,
    'nu_max = nu_hat.astype(nu_max.dtype)',
    'nu_max = nu_hat.astype(g.dtype)',
  ),
  'float16_nu_not_widened': (
    TRANSFORM,
    'return jnp.dtype(jnp.float32) if real == jnp.float16 else real',
    'return real',
  ),
  'direction_not_cast_back': (
    TRANSFORM,
    '    direction = optax.tree.cast_like(direction, updates)\n',
    '',
  ),
  'mu_dtype_ignored_at_init': (
    TRANSFORM,
    '      mu_odd=optax.tree.zeros_like(params, dtype=mu_dtype),\n      mu_even=optax.tree.zeros_like(params, dtype=mu_dtype),\n    )',
    '      mu_odd=optax.tree.zeros_like(params),\n      mu_even=optax.tree.zeros_like(params),\n    )',
  ),
  'rounding_check_ignores_mu_dtype_adapnm': (
    TRANSFORM,
    '_compute_dtypes(params, mu_dtype, nu_dtype), b1=b1, b2=b2',
    '_compute_dtypes(params, None, nu_dtype), b1=b1, b2=b2',
  ),
  'rounding_check_ignores_nu_dtype': (
    TRANSFORM,
    '_compute_dtypes(params, mu_dtype, nu_dtype), b1=b1, b2=b2',
    '_compute_dtypes(params, mu_dtype), b1=b1, b2=b2',
  ),
  # Bias corrections.
  'no_bias_correction1': (
    TRANSFORM,
    'scale = jnp.sqrt(bc2) / (1 - jnp.asarray(b1, dtype) ** t)',
    'scale = jnp.sqrt(bc2)',
  ),
  'bias_correction1_b1_squared': (
    TRANSFORM,
    'scale = jnp.sqrt(bc2) / (1 - jnp.asarray(b1, dtype) ** t)',
    'scale = jnp.sqrt(bc2) / (1 - jnp.asarray(b1, dtype) ** (2 * t))',
  ),
  'no_bias_correction2': (
    TRANSFORM,
    'scale = jnp.sqrt(bc2) / (1 - jnp.asarray(b1, dtype) ** t)',
    'scale = 1 / (1 - jnp.asarray(b1, dtype) ** t)',
  ),
  'bias_correction_t_off_by_one': (
    TRANSFORM,
    't = state.count.astype(dtype) + 1',
    't = state.count.astype(dtype) + 2',
  ),
  # eps and eps_root.
  'eps_times_bc2': (
    TRANSFORM,
    'eps_sqrt_bc2=jnp.asarray(eps, dtype) * jnp.sqrt(bc2)',
    'eps_sqrt_bc2=jnp.asarray(eps, dtype) * bc2',
  ),
  'eps_root_times_sqrt_bc2': (
    TRANSFORM,
    'eps_root_bc2=jnp.asarray(eps_root, dtype) * bc2',
    'eps_root_bc2=jnp.asarray(eps_root, dtype) * jnp.sqrt(bc2)',
  ),
  'eps_root_ignored': (
    TRANSFORM,
    '        nu_hat = nu_hat + s.eps_root_bc2\n',
    '        pass\n',
  ),
  'eps_root_outside_max': (
    TRANSFORM,
    '        nu_hat = jnp.maximum(nu_max.astype(real), nu_new)\n        nu_max = nu_hat.astype(nu_max.dtype)',
    '        nu_hat = jnp.maximum(nu_max.astype(real), nu_new)\n        nu_max = (nu_hat + s.eps_root_bc2).astype(nu_max.dtype)',
  ),
  # AMSGrad.
  'amsgrad_max_not_kept': (
    TRANSFORM,
    '        nu_max = nu_hat.astype(nu_max.dtype)',
    '        nu_max = nu_new.astype(nu_max.dtype)',
  ),
  'amsgrad_max_not_used': (
    TRANSFORM,
    '        nu_hat = jnp.maximum(nu_max.astype(real), nu_new)\n',
    '        nu_hat = nu_new\n        nu_hat = jnp.maximum(nu_max.astype(real), nu_new) * 0 + nu_hat\n',
  ),
  # Parity and the step count.
  'parity_swapped': (
    TRANSFORM,
    'odd=pick(1, 0).astype(bool)',
    'odd=pick(0, 1).astype(bool)',
  ),
  'coefficients_swapped': (
    TRANSFORM,
    '    coef_odd=pick(pos, -neg),\n    coef_even=pick(-neg, pos),',
    '    coef_odd=pick(-neg, pos),\n    coef_even=pick(pos, -neg),',
  ),
  'count_saturates': (
    TRANSFORM,
    'return jnp.where(count == _INT32_MAX, count - 1, count + 1)',
    'return optax.safe_increment(count)',
  ),
  'one_minus_beta_not_squared': (
    TRANSFORM,
    '    one_minus_beta=1 - beta,',
    '    one_minus_beta=1 - jnp.asarray(b1, dtype),',
  ),
  'complex_nu_g_squared': (
    TRANSFORM,
    'sq = jnp.real(g * jnp.conj(g)) if jnp.iscomplexobj(g) else g * g',
    'sq = jnp.real(g * g)',
  ),
  # Schedules and b0.
  'b0_schedule_next_count': (
    TRANSFORM,
    'b0 = jnp.asarray(b0(count) if callable(b0) else b0, dtype)',
    'b0 = jnp.asarray(b0(count + 1) if callable(b0) else b0, dtype)',
  ),
  'negative_b0_not_nan': (
    TRANSFORM,
    'b0 >= -b0_rounding, scale / jnp.sqrt',
    'True, scale / jnp.sqrt',
  ),
  # Weight decay, masks and leaves.
  'callable_mask_ignored': (
    ALIAS,
    '  decay = _add_decayed_weights(weight_decay, mask)',
    '  decay = _add_decayed_weights(weight_decay, None if callable(mask) else mask)',
  ),
  'decoupled_as_l2': (
    ALIAS,
    "  steps = (scale, decay) if weight_decay_mode == 'decoupled' else (decay, scale)",
    '  steps = (decay, scale)',
  ),
  'masked_out_schedule_leaves_promoted': (
    ALIAS,
    'u.astype(jnp.result_type(g, p)) if m else u',
    'u.astype(jnp.result_type(g, p))',
  ),
  'python_scalar_leaf_nu': (
    TRANSFORM,
    'lambda p: jnp.zeros_like(p, _nu_dtype_for(p, nu_dtype)), params',
    'lambda p: jnp.zeros_like(p, _nu_dtype_for(p.dtype, nu_dtype)), params',
  ),
  'mask_check_removed': (ALIAS, '  _checks.check_mask(mask)\n', ''),
}


def _copy_tree(dest: pathlib.Path) -> None:
  files = subprocess.run(
    ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
    cwd=REPO,
    capture_output=True,
    check=True,
  ).stdout.split(b'\0')
  for name in filter(None, files):
    source = REPO / os.fsdecode(name)
    if source.is_file():
      target = dest / os.fsdecode(name)
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(source, target)


def _ordered(copy: pathlib.Path) -> list[str]:
  """The library's test files, those in FIRST first (pytest would run a
  folder given beside them in its own order)."""
  rest = sorted(
    str(p.relative_to(copy)) for p in (copy / 'tests/library').glob('test_*.py')
  )
  return FIRST + [f for f in rest if f not in FIRST]


def run(name: str, copy: pathlib.Path, pytest_args) -> tuple[bool, str]:
  """Applies mutant ``name`` in ``copy``, runs the tests, reverts."""
  path, old, new = MUTANTS[name]
  target = copy / path
  text = target.read_text()
  target.write_text(text.replace(old, new))
  try:
    out = subprocess.run(
      [
        sys.executable,
        '-m',
        'pytest',
        '-x',
        '-q',
        '-p',
        'no:randomly',
        '-p',
        'no:cacheprovider',
        *pytest_args,
      ],
      cwd=copy,
      capture_output=True,
      text=True,
      env={**os.environ, 'PYTHONPATH': str(copy)},
    )
  finally:
    target.write_text(text)
  failed = [
    line.split()[1]
    for line in out.stdout.splitlines()
    if line.startswith(('FAILED ', 'ERROR '))
  ]
  return out.returncode != 0, (failed or [out.stdout.strip()[-200:]])[0]


def main(argv) -> int:
  if argv == ['--list']:
    print('\n'.join(MUTANTS))
    return 0
  names = argv or list(MUTANTS)
  for name in names:
    if name not in MUTANTS:
      print(f'unknown mutant {name!r}; --list names them', file=sys.stderr)
      return 2
    path, old, _ = MUTANTS[name]
    if (REPO / path).read_text().count(old) != 1:
      print(f'mutant {name!r} no longer matches {path}', file=sys.stderr)
      return 2
  survived = 0
  with tempfile.TemporaryDirectory() as tmp:
    copy = pathlib.Path(tmp)
    _copy_tree(copy)
    for name in names:
      start = time.monotonic()
      caught, by = run(name, copy, _ordered(copy))
      survived += not caught
      seconds = time.monotonic() - start
      verdict = f'caught by {by}' if caught else 'SURVIVED'
      print(f'{name}: {verdict} ({seconds:.0f} s)', flush=True)
  return 1 if survived else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
