"""kd_jax: knowledge distillation in JAX/Flax, from one config file to results.json, plots and sweep reports."""

import os
import re


def _size_cpu_thread_pools_for_forced_devices() -> None:
  """Gives XLA:CPU more threads than forced host devices (XLA_FLAGS=--xla_force_host_platform_device_count=N).

  XLA:CPU sizes its thread pools max(cores, N); with N fake devices on fewer cores, the collectives of a
  data-parallel step can take every pool thread while one device's share still waits for one, and the all-reduce
  deadlocks (seen with 8 devices on 2 cores). PJRT_NPROC sets the pool size; it must be set before JAX starts its
  CPU backend, so this runs when kd_jax is imported and only fills in a value the user did not set.
  """
  match = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
  if match and "PJRT_NPROC" not in os.environ and "NPROC" not in os.environ:
    os.environ["PJRT_NPROC"] = str(max(2 * int(match.group(1)), os.cpu_count() or 1))


_size_cpu_thread_pools_for_forced_devices()
