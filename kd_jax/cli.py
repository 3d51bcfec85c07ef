"""The command line, callable in-process: `main(argv)` returns the exit status and prints what the CLI prints.

`python main.py --config=configs/default.py --workdir=runs/default` is `sys.exit(cli.main(sys.argv))`. The flags are
absl flags on a FlagValues of each call, the config an ml_collections config file with `--config.<field>=<value>`
overrides; `run` validates the config and runs it as a single run or a sweep.

Exit statuses: 0 done; 2 bad input (one line on stderr naming the flag or field, the value and what is allowed;
nothing written); 143 preempted by SIGTERM (checkpoint saved: rerun the same command to resume); 1 training stopped
at a NaN or Inf.
"""

import contextlib
import difflib
import logging
import os
import re
import sys
import textwrap
from typing import Sequence

import ml_collections
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from kd_jax.config import schema

USAGE_ERROR = 2
PREEMPTED = 143  # 128 + SIGTERM: the job was terminated, and its checkpoint saved
NON_FINITE = 1
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USAGE = """usage: python main.py --config=configs/<file>.py[:<options>] --workdir=<dir> [--config.<field>=<value> ...]

Trains (or loads) a teacher, caches its signal, distills a student and trains the hard-label baseline, evaluates
them and writes results.json in --workdir; a sweep config runs each of its points and writes a report. Rerunning the
same command resumes a stopped run.
"""


def _define_flags(flag_values: flags.FlagValues, argv: Sequence[str]) -> None:
  """The command line's flags on `flag_values`; `--config.*` overrides are read from `argv`."""
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results.json (created if missing).",
                      flag_values=flag_values)
  flags.DEFINE_bool("overwrite", False, "If --workdir holds a run of another config, move it aside (to "
                    "<workdir>.replaced-<time>) and start over instead of refusing.", flag_values=flag_values)
  flags.DEFINE_integer("sweep_index", None, "Run only this point of the config's sweep (one per cluster array "
                       "task).", flag_values=flag_values)
  flags.DEFINE_bool("list_points", False, "Print the sweep's points (index, status, name) without running anything.",
                    flag_values=flag_values)
  flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                    "Join a multi-process JAX job (jax.distributed.initialize): 'auto' when the flags below, their "
                    "JAX_* variables or a multi-task SLURM step say so; 'on' always, detecting the rest (TPU VM "
                    "pods).", flag_values=flag_values)
  flags.DEFINE_string("coordinator_address", None, "Multi-process runs: host:port of process 0 "
                      "(default $JAX_COORDINATOR_ADDRESS).", flag_values=flag_values)
  flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes (default $JAX_NUM_PROCESSES).",
                       flag_values=flag_values)
  flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's id (default $JAX_PROCESS_ID).",
                       flag_values=flag_values)
  config_flags.DEFINE_config_file("config", "configs/default.py", "Config file, optionally `file.py:<options>`; "
                                  "override any field with --config.<field>=<value>.", flag_values=flag_values,
                                  lock_config=True, sys_argv=list(argv))


def usage(flag_values: flags.FlagValues | None = None) -> str:
  """What `--help` prints: the usage line, the config files and where their fields are documented, the flags."""
  configs_dir = os.path.join(REPO_ROOT, "configs")
  names = sorted(name for name in os.listdir(configs_dir) if name.endswith(".py")) if os.path.isdir(configs_dir) else []
  flag_help = []
  if flag_values is not None:
    for name in ("config", "workdir", "overwrite", "list_points", "sweep_index", "distributed", "coordinator_address",
                 "num_processes", "process_id"):
      flag_help += textwrap.wrap(f"--{name}: {flag_values[name].help}", width=116, initial_indent="  ",
                                 subsequent_indent="      ")
  config_files = textwrap.wrap(", ".join(names), width=116, initial_indent="  ", subsequent_indent="  ")
  return "\n".join([USAGE, "config files (configs/; options after ':', e.g. :smoke for a tiny offline run):",
                    *config_files, "config fields, their defaults and allowed values: docs/config.md", "", "flags:",
                    *flag_help])


def describe_config_error(error: Exception, argv: Sequence[str]) -> str:
  """One line for an error raised while loading the config file or applying `--config.*` overrides."""
  config_arg = next((arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("--config=")), None)
  if config_arg is not None and not os.path.isfile(config_arg.split(":", 1)[0]):
    return f"--config={config_arg}: no such config file"
  for arg in argv[1:]:
    if arg.startswith("--config."):
      unknown = _unknown_field(arg.split("=", 1)[0][len("--config."):])
      if unknown:
        return f"{arg}: {unknown}"
  lines = str(error).replace("\\n", "\n").strip().splitlines()
  if config_arg is not None and "Error whilst parsing config file" in str(error):
    # What get_config raised (e.g. an unknown option after ':'): the traceback's last line, without its type.
    return f"--config={config_arg}: {re.sub(r'^[A-Za-z_.]*(Error|Exception): ', '', lines[-1].strip())}"
  text = " ".join(" ".join(lines).split())
  flag_error = re.match(r"^flag (--config[^\s:]*=[^:]*): (.*)$", text)
  if flag_error:  # a value the override's type rejects
    return f"{flag_error.group(1)}: {flag_error.group(2)}"
  return f"config: {text or error.__class__.__name__}"


def _unknown_field(field: str) -> str | None:
  """What is wrong with dotted path `field` (e.g. 'distil.temperature') in the schema, with the closest name; None if
  it names a field."""
  section = schema.default_config()
  parts = field.split(".")
  for depth, part in enumerate(parts):
    path = "config." + ".".join(parts[:depth + 1])
    if not isinstance(section, ml_collections.ConfigDict):
      return f"unknown config field {path}: config.{'.'.join(parts[:depth])} is a field, not a section"
    if part not in section:
      kind = "field" if depth == len(parts) - 1 else "section"
      close = difflib.get_close_matches(part, list(section.keys()), n=1)
      hint = f'; did you mean "{close[0]}"?' if close else " (see docs/config.md)"
      return f"unknown config {kind} {path}{hint}"
    section = section[part]
  return None


class _KdJaxLogs(logging.Filter):
  """INFO from kd_jax's loggers (named after its modules), only WARNING and above from libraries (orbax, jax...)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING or record.name == "kd_jax" or record.name.startswith("kd_jax.")
            or record.name == "__main__")


@contextlib.contextmanager
def _logging_to_stderr():
  """While running: log lines on this call's stderr in absl's format, kd_jax's INFO and everyone's warnings."""
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(absl_logging.PythonFormatter())
  handler.addFilter(_KdJaxLogs())
  root = logging.getLogger()
  level = root.level
  root.addHandler(handler)
  root.setLevel(logging.INFO)
  try:
    yield
  finally:
    root.removeHandler(handler)
    root.setLevel(level)


def _check_workdir(workdir: str) -> str | None:
  """What makes `workdir` unusable before any work starts (it, or the nearest existing ancestor, is not a directory);
  None if it can be used."""
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    what = "is a file" if path == os.path.abspath(workdir) else f"lies under {path}, which is a file"
    return f"--workdir={workdir}: {what}, not a directory"
  return None


def main(argv: Sequence[str]) -> int:
  """Runs the command line `argv` (argv[0] is the program); returns its exit status (see the module docstring)."""
  argv = list(argv)
  if any(arg in ("--help", "-h", "--helpfull", "-?") for arg in argv[1:]):
    print(usage(_flags_for_help()))
    return 0
  flag_values = flags.FlagValues()
  try:
    _define_flags(flag_values, argv)  # an override of an unknown field can fail here already
    rest = flag_values(argv)
    config = flag_values.config
    config.keys()  # the config flag defers loading errors to the first access
  except flags.Error as error:
    lines = str(error).strip().splitlines()
    return _usage_error(describe_config_error(error, argv) if _is_config_error(error, argv) else
                        (lines[-1] if lines else error.__class__.__name__))
  except Exception as error:  # pylint: disable=broad-except  (config file or override errors)
    return _usage_error(describe_config_error(error, argv))
  if len(rest) > 1:
    return _usage_error(f"unexpected arguments: {' '.join(rest[1:])}")
  if flag_values.workdir is None:
    return _usage_error("--workdir: required (the directory for checkpoints, metrics and results.json)")
  problem = _check_workdir(flag_values.workdir)
  if problem:
    return _usage_error(problem)
  with _logging_to_stderr():
    return _run(config, flag_values)


def _is_config_error(error: flags.Error, argv: Sequence[str]) -> bool:
  """Whether a flags.Error is about the config flag or one of its overrides (not, e.g., a malformed integer flag)."""
  text = str(error)
  return "--config" in text.split(":", 1)[0] or any(
      re.search(rf"\b{re.escape(arg.split('=', 1)[0].lstrip('-'))}\b", text) for arg in argv[1:]
      if arg.startswith("--config"))


def _flags_for_help() -> flags.FlagValues:
  flag_values = flags.FlagValues()
  _define_flags(flag_values, [])
  return flag_values


def _usage_error(message: str) -> int:
  print(f"error: {message}", file=sys.stderr)
  return USAGE_ERROR


def _run(config: ml_collections.ConfigDict, flag_values: flags.FlagValues) -> int:
  """Joins the JAX job, runs the config; the exit status of its outcome."""
  # jax and the library load here, after the flags: --help and bad flags answer at once.
  from kd_jax.errors import NonFiniteError, UserError  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel.preemption import Preempted  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(flag_values.workdir)  # checkpoints need absolute paths; the log then says where it went
  try:
    distributed.initialize(flag_values.distributed, coordinator_address=flag_values.coordinator_address,
                           num_processes=flag_values.num_processes, process_id=flag_values.process_id)
    output = run(config, workdir, overwrite=flag_values.overwrite, sweep_index=flag_values.sweep_index,
                 list_points=flag_values.list_points)
  except UserError as error:
    return _usage_error(str(error))
  except Preempted as stop:
    print(f"preempted: {stop}", file=sys.stderr)
    return PREEMPTED
  except NonFiniteError as error:
    print(f"error: {error}", file=sys.stderr)
    return NON_FINITE
  if output and distributed.is_main_process():
    print(output)
  return 0


def run(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False, sweep_index: int | None = None,
        list_points: bool = False) -> str:
  """Checks `config` (kd_jax/preflight.py), then runs it: a single run (`train.run_group`; returns its metrics table) or
  a sweep (`sweeps.runner.run`; its summary, one point, or the listing of its points). Bad input raises before anything
  is written.

  Raises:
    errors.UserError (bad input), preemption.Preempted (SIGTERM; checkpoint saved), errors.NonFiniteError.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax import preflight, train  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import preemption  # pylint: disable=g-import-not-at-top
  from kd_jax.reporting import report  # pylint: disable=g-import-not-at-top
  from kd_jax.sweeps import expansion, runner  # pylint: disable=g-import-not-at-top
  preflight.check(config)
  logging.getLogger(__name__).info("JAX process %d of %d; local devices: %s", jax.process_index(),
                                   jax.process_count(), jax.local_devices())
  if sweep_index is not None or list_points or expansion.is_sweep(config):
    return runner.run(config, workdir, point_index=sweep_index, list_points=list_points)
  with preemption.sigterm_requests_stop():
    outcome = train.run_group([train.RunSpec(config, workdir)], overwrite=overwrite)[0]
  return report.metrics_table(outcome)
