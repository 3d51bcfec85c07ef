"""Multi-process runs: joining one JAX job across hosts, and the few things its processes must agree on.

kd_jax runs as one JAX job whose processes (one per host, or per GPU) each drive their local devices; the mesh spans
the devices of all of them (`sharding.make_mesh`). `initialize` joins the job before anything touches devices. It
calls `jax.distributed.initialize` when the launch says this process is one of several:

- `--coordinator_address`, `--num_processes`, `--process_id` (or `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
  `JAX_PROCESS_ID`; what scripts/multiprocess_local.sh sets),
- a SLURM step of several tasks (`srun`; JAX reads the rest from SLURM's variables),
- `--distributed=on`, which leaves everything unset to JAX's cluster detection (TPU VM pods: scripts/tpu_vm.sh).

Every process computes the same things; process 0 alone writes files (`is_main_process`), the others wait for it
at a `barrier` when they need what it wrote. The workdir must be a file system that every process sees.
"""

import itertools
import logging
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from kd_jax.errors import UserError

logger = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
# How long a process waits at a barrier for the others (process 0 may be writing a large teacher cache meanwhile).
BARRIER_TIMEOUT_SECONDS = 3600
_barrier_counter = itertools.count()


def _environment_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise UserError(f"{name}={value}: must be an integer") from None


def _in_multi_task_slurm_step() -> bool:
  """Inside `srun` with several tasks (sbatch's own shell, and array tasks of one task each, are single runs)."""
  return "SLURM_STEP_NODELIST" in os.environ and (_environment_int("SLURM_NTASKS") or 1) > 1


def initialize(mode: str = "auto", *, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the multi-process JAX job this process was launched into, if any; call before touching devices.

  Args:
    mode: 'auto' (join when the arguments, the JAX_* variables or a multi-task SLURM step say so), 'on' (always
      call jax.distributed.initialize, letting JAX detect what is unset: TPU VM pods, SLURM, Open MPI) or 'off'.
    coordinator_address: host:port of process 0's coordinator; default $JAX_COORDINATOR_ADDRESS.
    num_processes: processes in the job; default $JAX_NUM_PROCESSES.
    process_id: this process's id in [0, num_processes); default $JAX_PROCESS_ID.

  Raises:
    UserError: an unknown mode, or an incomplete or inconsistent description of the job.
  """
  if mode not in MODES:
    raise UserError(f"--distributed={mode}: allowed: {', '.join(MODES)}")
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num_processes = num_processes if num_processes is not None else _environment_int("JAX_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _environment_int("JAX_PROCESS_ID")
  explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
  given = [name for name, value in explicit.items() if value is not None]
  if mode == "off" or (mode == "auto" and not given and not _in_multi_task_slurm_step()):
    return
  if mode == "auto" and given and len(given) < len(explicit) and not _in_multi_task_slurm_step():
    missing = sorted(set(explicit) - set(given))
    raise UserError(f"a multi-process run needs --{', --'.join(sorted(explicit))} (or JAX_COORDINATOR_ADDRESS, "
                    f"JAX_NUM_PROCESSES, JAX_PROCESS_ID); missing: --{', --'.join(missing)}")
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise UserError(f"--process_id={process_id}: must be in [0, --num_processes={num_processes})")
  # Collectives between the processes' CPU devices (tests, scripts/multiprocess_local.sh); TPUs and GPUs use their
  # own interconnect.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**explicit)
  _label_log_lines()
  logger.info("Joined a JAX job of %d processes as process %d (coordinator %s).", jax.process_count(),
              jax.process_index(), coordinator_address or "found by JAX's cluster detection")


class _ProcessLabel(logging.Filter):
  """Prefixes every log message with `[process i/N]`, so that interleaved output says who speaks."""

  def __init__(self, label: str):
    super().__init__()
    self._label = label

  def filter(self, record: logging.LogRecord) -> bool:
    if not getattr(record, "process_label", False):
      record.msg = f"{self._label} {record.msg}"
      record.process_label = True
    return True


def _label_log_lines() -> None:
  """Labels the lines of every handler logging is writing to now (the command line's, kd_jax/cli.py)."""
  label = _ProcessLabel(f"[process {jax.process_index()}/{jax.process_count()}]")
  for handler in logging.getLogger().handlers:
    handler.addFilter(label)


def is_main_process() -> bool:
  """Whether this process writes the job's files (results, configs, metric history, caches): process 0."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Blocks until every process of the job has reached the barrier `name` (returns at once in a single process).

  A barrier of JAX's coordination service (the job's control channel, waiting up to BARRIER_TIMEOUT_SECONDS), not a
  collective on the devices: gloo's CPU collectives give up after a fixed timeout while process 0 writes files.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client
  # Each barrier id is used once per job: every process passes the same barriers in the same order.
  barrier_id = f"kd_jax/{next(_barrier_counter)}/{name}"
  if client is None:  # a multi-process runtime JAX started without the coordination service
    multihost_utils.sync_global_devices(barrier_id)
  else:
    client.wait_at_barrier(barrier_id, BARRIER_TIMEOUT_SECONDS * 1000)


def any_process(flag: bool) -> bool:
  """Whether `flag` is set on any process of the job (e.g. SIGTERM reached one of them), the same on all processes."""
  if jax.process_count() == 1:
    return flag
  return bool(np.asarray(multihost_utils.process_allgather(np.asarray(flag, np.int32))).any())


def max_over_processes(value: float) -> float:
  """The largest of the processes' `value`s, the same on all processes (e.g. a measured step time, from which every
  process must derive the same chunk lengths: the processes' compiled calls must hold the same collectives)."""
  if jax.process_count() == 1:
    return value
  return float(np.asarray(multihost_utils.process_allgather(np.asarray(value, np.float64))).max())


def check_same_on_all_processes(value: bool, what: str) -> None:
  """Raises UserError unless every process found the same `value` (e.g. whether a file exists).

  Processes that decide differently (train vs. reuse, build vs. load) would wait for each other forever.
  """
  if jax.process_count() == 1:
    return
  values = np.asarray(multihost_utils.process_allgather(np.asarray(value, np.int32)))
  if len(set(values.tolist())) > 1:
    raise UserError(f"the processes of this job disagree on {what} ({values.tolist()} by process); the workdir "
                    "must be on a file system that every process sees (NFS, a GCS FUSE mount...)")
