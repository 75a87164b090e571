"""Where and with what a benchmark ran: one collector for every program.

Every report (speed, comparison job, sharded example) records the same facts
so that two result files can be compared: the command, the time, the git
commit, the machine and the library versions.
"""

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys

import jax

REPO_ROOT = os.path.dirname(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
_VERSIONED = (
  'jax',
  'jaxlib',
  'optax',
  'flax',
  'numpy',
  'torch',
  'pytorch_optimizer',
  'pnm_optax',
)


def cpu_name() -> str:
  """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or 'unknown'


def mem_total_gib() -> float | None:
  """Physical memory of the host, GiB (None where the OS does not say)."""
  try:
    return round(
      os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30, 1
    )
  except (ValueError, OSError, AttributeError):
    return None


def git_commit() -> str | None:
  """The checkout's commit, with ``+dirty`` for local changes; else None."""
  try:

    def git(*args):
      return subprocess.run(
        ('git', '-C', REPO_ROOT) + args,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
      ).stdout.strip()

    commit = git('rev-parse', 'HEAD')
    dirty = git('status', '--porcelain', '--untracked-files=no')
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ('+dirty' if dirty else '')


def versions() -> dict:
  """``name -> version`` of the libraries a result depends on (None if the
  library is not installed).

  A module already imported answers with its ``__version__``; any other is
  looked up in the installed packages' metadata, so nothing is imported
  (importing torch alone takes seconds).
  """
  out: dict[str, str | None] = {'python': platform.python_version()}
  for name in _VERSIONED:
    version = getattr(sys.modules.get(name), '__version__', None)
    if version is None:
      try:
        version = importlib.metadata.version(name)
      except importlib.metadata.PackageNotFoundError:
        version = None
    out[name] = version
  return out


def collect(command: str | None = None) -> dict:
  """Facts about this run: command, UTC time, commit, machine, versions.

  Args:
    command: how the program was started; default ``python -m <main module>``
      followed by ``sys.argv[1:]``.

  Returns:
    A JSON-serialisable dict.
  """
  if command is None:
    main = sys.modules.get('__main__')
    prog = getattr(getattr(main, '__spec__', None), 'name', None)
    prog = f'python -m {prog}' if prog else ' '.join(sys.argv[:1])
    command = ' '.join([prog] + sys.argv[1:])
  devices = jax.devices()
  return dict(
    command=command,
    timestamp_utc=datetime.datetime.now(datetime.UTC).strftime(
      '%Y-%m-%d %H:%M:%S UTC'
    ),
    git_commit=git_commit(),
    backend=jax.default_backend(),
    device=str(devices[0].device_kind),
    num_devices=len(devices),
    process_count=jax.process_count(),
    cpu=cpu_name(),
    cpu_count=os.cpu_count(),
    mem_total_gib=mem_total_gib(),
    platform=platform.platform(),
    loadavg=[round(x, 2) for x in os.getloadavg()],
    versions=versions(),
  )


def header_lines(info: dict) -> list:
  """The facts of :func:`collect` as a few ``# ...`` lines for a report."""
  v = info['versions']
  libs = ', '.join(f'{k} {val}' for k, val in v.items() if val is not None)
  return [
    f'# {info["timestamp_utc"]}; commit {info["git_commit"] or "unknown"}',
    f'# machine: {info["cpu"]} ({info["cpu_count"]} cores, '
    f'{info["mem_total_gib"]} GiB); JAX backend {info["backend"]} '
    f'[{info["device"]} x{info["num_devices"]}]; load average '
    f'{info["loadavg"]}',
    f'# versions: {libs}',
    f'# command: {info["command"]}',
  ]
