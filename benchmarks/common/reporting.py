"""Output shared by the benchmark programs: Markdown tables and JSON files.

JSON is written strictly (non-finite numbers become ``null``, which every
JSON reader accepts) and atomically (a temporary file renamed over the
target), so an interrupted program never leaves a half-written result.
"""

import json
import math
import os
import tempfile
from collections.abc import Sequence
from typing import Any


def fmt(value: float | None, spec: str, none: str = '-') -> str:
  """``format(value, spec)``, or ``none`` for None and non-finite values."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return none
  return format(value, spec)


def size_label(n: int) -> str:
  """A parameter count as people write it: ``2^24``, ``1e5`` or ``123,456``."""
  if n >= 2**10 and n & (n - 1) == 0:
    return f'2^{n.bit_length() - 1}'
  if n >= 10 and 10 ** round(math.log10(n)) == n:
    return f'1e{round(math.log10(n))}'
  return f'{n:,}'


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A Markdown table with aligned columns.

  Short rows are padded with empty cells; a row longer than ``head`` has its
  extra cells joined into the last column (a message spanning columns).
  """

  def cells(row):
    row = [str(c) for c in row]
    if len(row) > len(head):
      row = row[: len(head) - 1] + [' '.join(row[len(head) - 1 :])]
    return row + [''] * (len(head) - len(row))

  body = [cells(r) for r in rows]
  widths = [max(len(c) for c in col) for col in zip(cells(head), *body)]
  line = lambda cs: (
    '| ' + ' | '.join(c.ljust(w) for c, w in zip(cs, widths)) + ' |'
  )
  sep = '|' + '|'.join('-' * (w + 2) for w in widths) + '|'
  return '\n'.join([line(cells(head)), sep] + [line(r) for r in body])


def strict_json(value: Any) -> Any:
  """``value`` with every non-finite float replaced by None (JSON ``null``)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  return value


def write_json(path: str, value: Any) -> None:
  """Writes ``value`` as strict JSON to ``path`` atomically."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
    dir=folder, prefix='.' + os.path.basename(path), suffix='.tmp'
  )
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(strict_json(value), f, indent=1, allow_nan=False)
      f.write('\n')
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
