"""What must be set before JAX starts (and the process's garbage-collector thresholds), set by the entry points
(main.py, the tests' conftest, the scripts) and never on `import kd_jax`. Imports nothing of jax.
"""

import gc
import os
import re

# Python's collector runs a young-generation pass every 700 container allocations by default; tracing and lowering a
# train step allocates millions, so those passes were ~5% of a compile-bound run's CPU time (perf, 2026-12-07). A
# larger first threshold keeps the same collector with fewer, larger passes.
GC_THRESHOLDS = (100_000, 50, 100)
_PYTHON_DEFAULT_GC_THRESHOLDS = (700, 10, 10)


def prepare() -> None:
  """Fills in, where the user has not set them, the variables read when JAX and TensorFlow start.

  - PJRT_NPROC, with forced host devices (XLA_FLAGS=--xla_force_host_platform_device_count=N): XLA:CPU sizes its
    thread pools max(cores, N); with N fake devices on fewer cores, the collectives of a data-parallel step can take
    every pool thread while one device's share still waits for one, and the all-reduce deadlocks (seen with 8
    devices on 2 cores). Twice the forced devices avoids it. Read when JAX starts its CPU backend.
  - TF_CPP_MIN_LOG_LEVEL=2: TensorFlow (imported for tf.data only) prints its C++ INFO lines on stderr otherwise.
    Importing jax sets it to 1 when unset, so it is set here, before jax.
  - TF_ENABLE_ONEDNN_OPTS=0: TensorFlow 2.21 announces its oneDNN kernels on stderr whatever the log level (twice a
    run). kd_jax's TensorFlow computes no math (tf.data shuffles, gathers and batches), so the kernels do not matter.
  - TF_USE_LEGACY_KERAS=1: importing TensorFlow otherwise imports Keras 3's optimizers, and with them scikit-learn:
    2 of the import's 5.5 CPU seconds (measured 2026-12-07), paid by every process that builds a batch. kd_jax uses
    no Keras; with this set TensorFlow looks for tf_keras instead, which is not installed, and skips it.
  - The garbage collector's thresholds (GC_THRESHOLDS), where the program has not changed Python's defaults.
  """
  match = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
  if match and "PJRT_NPROC" not in os.environ and "NPROC" not in os.environ:
    os.environ["PJRT_NPROC"] = str(max(2 * int(match.group(1)), os.cpu_count() or 1))
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
  if gc.get_threshold() == _PYTHON_DEFAULT_GC_THRESHOLDS:
    gc.set_threshold(*GC_THRESHOLDS)
