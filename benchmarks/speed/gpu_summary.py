"""Gathers one ``gpu_check.sh`` run into ``gpu_check.json``.

``python -m benchmarks.speed.gpu_summary OUT STATUS``: reads the parts'
exit statuses (``STATUS``: lines ``name rc seconds [note]``; rc -1: not
run), their JSON results
and the library tests' summary line from ``OUT``, and writes
``OUT/gpu_check.json``: the machine and versions, each part's status and the
whole-step and step-time results (the file ``benchmarks/speed/published.py``
reads from ``benchmarks/speed/results/``).
"""

import json
import os
import re
import sys

from benchmarks.common import environment, reporting


def _load(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _tests_line(path: str) -> str | None:
  """pytest's last summary line (``N passed, ... in S s``), if any."""
  try:
    with open(path) as f:
      lines = f.read().splitlines()
  except OSError:
    return None
  found = [
    ln.strip('= ')
    for ln in lines
    if re.search(r'\d+ (passed|failed|error)', ln)
  ]
  return found[-1] if found else None


def summarize(out: str, status: str) -> dict:
  parts = {}
  with open(status) as f:
    for line in f:
      name, rc, seconds, note = (line.rstrip('\n').split(' ', 3) + [''])[:4]
      parts[name] = dict(rc=int(rc), seconds=int(seconds))
      if note:
        parts[name]['note'] = note
  step_time = _load(os.path.join(out, 'step_time.json'))
  if step_time:
    for row in step_time.get('rows', []):
      row.pop('samples', None)
  default = _load(os.path.join(out, 'default', 'step_time.json'))
  return dict(
    kind='gpu_check',
    tiny=os.environ.get('GPU_CHECK_TINY') == '1',
    meta=environment.collect('bash benchmarks/speed/gpu_check.sh'),
    parts=parts,
    whole_step=_load(os.path.join(out, 'whole_step.json')),
    step_time=step_time,
    library_tests=_tests_line(os.path.join(out, 'library_tests.log')),
    default_report=default
    and dict(
      complete=default.get('complete'),
      seconds=default.get('seconds'),
      budget_s=default.get('budget_s'),
      skipped=default.get('skipped'),
      key_ratios=default.get('key_ratios'),
    ),
  )


def main(argv=None) -> None:
  out, status = (sys.argv[1:] if argv is None else argv)[:2]
  result = summarize(out, status)
  reporting.write_json(os.path.join(out, 'gpu_check.json'), result)
  print(json.dumps(result['parts']))
  print(f'# library tests: {result["library_tests"]}')


if __name__ == '__main__':
  main()
