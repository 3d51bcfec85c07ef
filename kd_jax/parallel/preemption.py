"""Preemption: SIGTERM (what preemptible VMs and cluster schedulers send) asks the run to stop at the next step.

The training loop polls `requested()` after every step; when set, it saves a checkpoint at that step and raises
`Preempted`, which main.py reports in one line before exiting with status 143 (128 + SIGTERM, what schedulers
expect from a terminated job). Rerunning the same command resumes from that checkpoint.
"""

import contextlib
import signal
import threading

_requested = threading.Event()
_depth = 0  # nesting of sigterm_requests_stop blocks (a sweep's block holds its runs')


class Preempted(Exception):
  """The run stopped on request; `str()` says where it stopped and how to resume."""


def requested() -> bool:
  """Whether SIGTERM arrived inside `sigterm_requests_stop` (cheap: poll it every step)."""
  return _requested.is_set()


def _on_sigterm(signum, frame):
  del signum, frame
  _requested.set()


@contextlib.contextmanager
def sigterm_requests_stop():
  """Within the block, SIGTERM sets `requested()` instead of killing the process; the old handler returns after.

  Blocks nest: an inner block (a run inside a sweep's block) keeps the outer one's handler and flag. Signal handlers
  can only be set from the main thread; elsewhere (e.g. a run in a worker thread) the block runs without preemption
  handling.
  """
  global _depth
  if _depth > 0 or threading.current_thread() is not threading.main_thread():
    yield
    return
  _requested.clear()
  previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
  _depth += 1
  try:
    yield
  finally:
    _depth -= 1
    signal.signal(signal.SIGTERM, previous_handler)
    _requested.clear()
