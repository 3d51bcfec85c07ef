"""Runs a kd_jax config: `python main.py --config=configs/default.py --workdir=runs/default`.

Bad input (an invalid config value, an unknown field, a missing file) ends with one line on stderr and exit
status 2, before anything is written to the workdir.
"""

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

USAGE_ERROR = 2
PREEMPTED = 143  # 128 + SIGTERM: the job was terminated, and its checkpoint saved
FLAGS = flags.FLAGS


def exit_with_usage_error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(USAGE_ERROR)


def describe_config_error(error: Exception) -> str:
  """One line for an error raised while loading the config file or applying `--config.*` overrides."""
  config_arg = next((arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("--config=")), None)
  if config_arg is not None and not os.path.isfile(config_arg.split(":", 1)[0]):
    return f"--config={config_arg}: no such config file"
  text = " ".join(str(error).replace("\\n", "\n").split())
  for arg in sys.argv[1:]:
    if not arg.startswith("--config."):
      continue
    field = arg.split("=", 1)[0][len("--config."):]
    if isinstance(error, (KeyError, AttributeError)) and re.search(rf"\b{re.escape(field.rsplit('.', 1)[-1])}\b", text):
      suggestion = re.search(r'Did you mean "([^"]+)"', text)
      hint = f'; did you mean "{suggestion.group(1)}"?' if suggestion else " (see configs/default.py)"
      return f"{arg}: unknown config field config.{field}{hint}"
  return f"config: {text or error.__class__.__name__}"


flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results.json (created if missing).")
flags.mark_flag_as_required("workdir")
flags.DEFINE_bool("overwrite", False, "If --workdir holds a run of another config, move it aside (to "
                  "<workdir>.replaced-<time>) and start over instead of refusing.")
flags.DEFINE_integer("sweep_index", None, "Run only this point of the config's sweep (one per cluster array task).")
flags.DEFINE_bool("list_points", False, "Print the sweep's points (index, status, name) without running anything.")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                 "Join a multi-process JAX job (jax.distributed.initialize): 'auto' when the flags below, their "
                 "JAX_* variables or a multi-task SLURM step say so; 'on' always, detecting the rest (TPU VM pods).")
flags.DEFINE_string("coordinator_address", None, "Multi-process runs: host:port of process 0 "
                    "(default $JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes (default $JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's id (default $JAX_PROCESS_ID).")
try:
  # The config flag applies `--config.*` overrides as soon as it is defined: an unknown field fails here.
  config_flags.DEFINE_config_file("config", "configs/default.py", "Config file, optionally `file.py:arg`.",
                                  lock_config=True)
except Exception as define_error:  # pylint: disable=broad-except
  exit_with_usage_error(describe_config_error(define_error))


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose errors (bad override, missing flag, config file error) are one line, exit 2."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    lines = str(error).strip().splitlines()
    exit_with_usage_error(lines[-1] if lines else error.__class__.__name__)
  except Exception as error:  # pylint: disable=broad-except  (config file or override errors)
    exit_with_usage_error(describe_config_error(error))


class _QuietLibraries:
  """absl log filter: INFO from kd_jax and main.py, only WARNING and above from libraries (orbax, jax...)."""

  def filter(self, record) -> bool:
    return record.levelno >= logging.converter.STANDARD_WARNING or "kd_jax" in record.pathname or (
        record.pathname.endswith("main.py"))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    exit_with_usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = FLAGS.config
    config.keys()  # the config flag defers loading errors to the first access
  except Exception as error:  # pylint: disable=broad-except
    exit_with_usage_error(describe_config_error(error))
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # kd_jax before jax: importing kd_jax sizes XLA's CPU thread pools for forced host devices.
  from kd_jax import launch  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import distributed
  from kd_jax.errors import NonFiniteError, UserError  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel.preemption import Preempted  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(FLAGS.workdir)  # checkpoints need absolute paths; the log then says where it went
  try:
    distributed.initialize(FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                           num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    output = launch.run(config, workdir, overwrite=FLAGS.overwrite, sweep_index=FLAGS.sweep_index,
                        list_points=FLAGS.list_points)
  except UserError as error:
    exit_with_usage_error(str(error))
  except Preempted as stop:
    print(f"preempted: {stop}", file=sys.stderr)
    sys.exit(PREEMPTED)
  except NonFiniteError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)
  if output and distributed.is_main_process():
    print(output)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
