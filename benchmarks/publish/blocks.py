"""Finding and replacing the generated blocks of a Markdown file."""

import re
from collections.abc import Callable, Iterator

_BLOCK = re.compile(
  r'(?P<begin><!-- begin generated: (?P<name>[\w.-]+) -->\n)'
  r'(?P<body>.*?)'
  r'(?P<end><!-- end generated: (?P=name) -->)',
  re.DOTALL,
)


def names(text: str) -> Iterator[str]:
  """The names of the generated blocks in ``text``, in order."""
  for match in _BLOCK.finditer(text):
    yield match.group('name')


def render(text: str, generate: Callable[[str], str]) -> str:
  """``text`` with each block's body replaced by ``generate(name)``."""

  def replace(match: re.Match) -> str:
    body = generate(match.group('name')).strip('\n') + '\n'
    return match.group('begin') + body + match.group('end')

  return _BLOCK.sub(replace, text)
