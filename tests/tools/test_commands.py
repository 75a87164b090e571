"""Every command that README, CONTRIBUTING and docs/ show runs as written.

The shell blocks are read from the pages; each ``python -m MODULE ARGS``
must name a module that exists, and the programs of this repository must
accept the arguments shown (their own parsers parse them, so a renamed
module or flag fails here). Running the programs is left to their own tests.
"""

import importlib.util
import re
import shlex

import pytest

from benchmarks.comparison import cli as comparison_cli
from benchmarks.speed import layouts, step_time, whole_step
from examples import sharded_training
from tests.helpers import REPO

PAGES = [REPO / 'README.md', REPO / 'CONTRIBUTING.md', *REPO.glob('docs/*.md')]

PARSERS = {
  'benchmarks.speed': step_time.parse_args,
  'benchmarks.speed.layouts': layouts.parse_args,
  'benchmarks.speed.whole_step': whole_step.parse_args,
  'benchmarks.comparison': comparison_cli.build_parser().parse_args,
  'examples.sharded_training': sharded_training.build_parser().parse_args,
}
# Placeholders the pages use for the reader's own values.
PLACEHOLDERS = {'DIR': '/tmp/data'}


def shell_commands():
  """(page, command words) of every ``python -m`` line in a bash block."""
  found = []
  for page in PAGES:
    for block in re.findall(r'```bash\n(.*?)```', page.read_text(), re.S):
      for line in block.replace('\\\n', ' ').splitlines():
        words = shlex.split(line, comments=True)
        if 'python' in words and words[words.index('python') + 1] == '-m':
          words = words[words.index('python') + 2 :]
          # The command ends at a shell operator (a background '&', a pipe).
          ends = [i for i, w in enumerate(words) if w in ('&', '&&', '|', ';')]
          found.append((page.name, words[: min(ends, default=len(words))]))
  return found


COMMANDS = shell_commands()


def test_the_pages_show_the_jobs():
  modules = {words[0] for _, words in COMMANDS}
  assert set(PARSERS) <= modules, set(PARSERS) - modules
  assert {'pytest', 'pip', 'sphinx'} <= modules


@pytest.mark.parametrize(
  'page, words', COMMANDS, ids=[' '.join(w) for _, w in COMMANDS]
)
def test_command_runs_as_written(page, words):
  module, args = words[0], [PLACEHOLDERS.get(a, a) for a in words[1:]]
  assert importlib.util.find_spec(module) is not None, (page, module)
  if module in PARSERS:
    try:
      PARSERS[module](args)
    except SystemExit as e:  # --help exits 0; a rejected flag 2
      if e.code != 0:
        pytest.fail(f'{page}: python -m {" ".join(words)} exits {e.code}')
  elif module == 'pytest':
    for arg in args:
      if arg.startswith('tests/'):
        assert (REPO / arg).exists(), (page, arg)


def test_a_renamed_flag_is_caught():
  with pytest.raises(SystemExit):
    PARSERS['benchmarks.speed'](['--no-such-flag'])


def test_examples_stand_alone():
  """An example imports pnm_optax and published packages only, so it can be
  copied out of the repository and run."""
  import ast

  for path in sorted((REPO / 'examples').glob('*.py')):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        names = [node.module or '']
      else:
        continue
      for name in names:
        assert name.split('.')[0] not in ('benchmarks', 'tests', 'examples'), (
          path.name,
          name,
        )
