"""Wall-clock timing: one call, the median of repeated calls, and rounds that alternate the measured sides."""

import statistics
import time


def seconds(function) -> float:
  """The wall time of one call of `function` (the compiling call's, when it is the first)."""
  start = time.perf_counter()
  function()
  return time.perf_counter() - start


def median_seconds(function, repeats: int) -> float:
  return statistics.median(seconds(function) for _ in range(repeats))


def alternating(functions: dict, rounds: int) -> tuple[dict, dict]:
  """Calls every function of `functions` (name: function) in turn, `rounds` times over, so that a change in the
  machine's load hits every side alike: the median seconds of each, and what each returned in the last round."""
  times, results = {name: [] for name in functions}, {}
  for _ in range(rounds):
    for name, function in functions.items():
      start = time.perf_counter()
      results[name] = function()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(values) for name, values in times.items()}, results
