"""Runs a kd_jax config: `python main.py --config=configs/default.py --workdir=runs/default`.

Bad input (an invalid config value, unknown field, missing file) ends with one line on stderr and exit status 2.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results.json (created if missing).")
flags.mark_flag_as_required("workdir")
config_flags.DEFINE_config_file("config", "configs/default.py", "Config file, optionally `file.py:arg`.",
                                lock_config=True)

USAGE_ERROR = 2


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose errors (bad override, unknown config field, config file error) are one line, exit 2."""
  try:
    return FLAGS(argv)
  except Exception as error:  # pylint: disable=broad-except
    message = str(error).strip().splitlines()
    print(f"error: {message[-1] if message else error.__class__.__name__}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


class _QuietLibraries:
  """absl log filter: INFO from kd_jax and main.py, only WARNING and above from libraries (orbax, jax...)."""

  def filter(self, record) -> bool:
    return record.levelno >= logging.converter.STANDARD_WARNING or "kd_jax" in record.pathname or (
        record.pathname.endswith("main.py"))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from kd_jax import train  # pylint: disable=g-import-not-at-top  (kd_jax first: it sizes XLA's CPU threads)
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax.errors import UserError  # pylint: disable=g-import-not-at-top

  logging.info("JAX process %d of %d; local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
