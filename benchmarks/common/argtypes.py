"""Argument types shared by the benchmark programs' command lines.

Each type raises ``argparse.ArgumentTypeError``, so a bad value ends the
program through argparse: exit status 2 and one ``error:`` line after the
usage, never a traceback. Nothing here imports JAX, so a program can parse
its flags (and set ``XLA_FLAGS``) before JAX starts.
"""

import argparse
import math
import re
import sys
from collections.abc import Callable, Iterable
from typing import NoReturn


def parse_size(text: str) -> int:
  """``'1e5'``, ``'2^24'``, ``'2**24'`` or ``'16777216'`` -> a positive int.

  Raises:
    ValueError: for anything else, or a count below one.
  """
  text = text.strip()
  match = re.fullmatch(r'(\d+)\s*(?:\^|\*\*)\s*(\d+)', text)
  try:
    value = int(match.group(1)) ** int(match.group(2)) if match else float(text)
  except ValueError:
    raise ValueError(
      f'{text!r} is not a size: write 1e5, 2^24, 2**24 or 16777216'
    ) from None
  if not math.isfinite(value) or value != int(value) or value < 1:
    raise ValueError(f'{text!r} is not a positive whole number of parameters')
  return int(value)


def size(text: str) -> int:
  """argparse type: one size, see :func:`parse_size`."""
  try:
    return parse_size(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def size_list(text: str) -> list[int]:
  """argparse type: comma-separated sizes, or ``none`` for no sizes."""
  if text.strip().lower() in ('', 'none'):
    return []
  return [size(s) for s in text.split(',') if s.strip()]


def name_list(
  choices: Iterable[str], allow_none: bool = False
) -> Callable[[str], list[str]]:
  """argparse type: comma-separated names, each one of ``choices``."""
  choices = list(choices)

  def parse(text: str) -> list[str]:
    if allow_none and text.strip().lower() in ('', 'none'):
      return []
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
      raise argparse.ArgumentTypeError(
        f'unknown name(s) {", ".join(map(repr, unknown)) or repr(text)}; '
        f'choose from {",".join(choices)}'
        + (" or 'none'" if allow_none else '')
      )
    return list(dict.fromkeys(names))

  return parse


def _number(text: str, cast, what: str):
  try:
    return cast(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not {what}') from None


def positive_int(text: str) -> int:
  """argparse type: an integer >= 1."""
  value = _number(text, int, 'an integer')
  if value < 1:
    raise argparse.ArgumentTypeError(f'{value} is not >= 1')
  return value


def positive_float(text: str) -> float:
  """argparse type: a finite number > 0."""
  value = _number(text, float, 'a number')
  if not 0 < value < float('inf'):
    raise argparse.ArgumentTypeError(f'{text} is not a finite number > 0')
  return value


def fraction(text: str) -> float:
  """argparse type: a number in (0, 1]."""
  value = positive_float(text)
  if value > 1:
    raise argparse.ArgumentTypeError(f'{text} is not in (0, 1]')
  return value


def fail(prog: str, message: str) -> NoReturn:
  """Ends the program like an argparse error: one line, exit status 2."""
  print(f'{prog}: error: {message}', file=sys.stderr)
  sys.exit(2)
