"""``python -m benchmarks.speed``: the speed report (see ``step_time``)."""

from benchmarks.speed.step_time import main

if __name__ == '__main__':
  main()
