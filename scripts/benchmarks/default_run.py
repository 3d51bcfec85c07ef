"""The default run (`main.py --config=configs/default.py`): its peak host memory and wall time."""

import os
import subprocess
import sys
import tempfile
import time

from . import REPO_ROOT


def default_run_peak_memory() -> dict:
  """Max RSS of `python main.py --config=configs/default.py` (a child process, its own rusage) in MiB, and its wall
  time."""
  with tempfile.TemporaryDirectory() as workdir:
    env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "PJRT_NPROC")}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "main.py", "--config=configs/default.py", f"--workdir={workdir}"],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
  assert status == 0, f"the default run failed (wait status {status})"
  return {"default_run_peak_host_memory_mib": usage.ru_maxrss / 1024, "default_run_wall_s": wall}
