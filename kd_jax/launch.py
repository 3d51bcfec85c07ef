"""What `main.py` calls: one config, validated once, run as a single run or as a sweep; returns what to print."""

import jax
import logging
import ml_collections

from kd_jax import preflight, train
from kd_jax.parallel import preemption
from kd_jax.reporting import report
from kd_jax.sweeps import expansion, runner

logger = logging.getLogger(__name__)


def run(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False, sweep_index: int | None = None,
        list_points: bool = False) -> str:
  """Validates `config`, then runs it: a single run (`train.run_group`; returns its metrics table) or a sweep
  (`runner.run`; its summary, one point, or the listing of its points). Bad input raises before anything is written.

  Raises:
    errors.UserError (bad input), preemption.Preempted (SIGTERM; checkpoint saved), errors.NonFiniteError.
  """
  preflight.check(config)
  logger.info("JAX process %d of %d; local devices: %s", jax.process_index(), jax.process_count(),
              jax.local_devices())
  if sweep_index is not None or list_points or expansion.is_sweep(config):
    return runner.run(config, workdir, point_index=sweep_index, list_points=list_points)
  with preemption.sigterm_requests_stop():
    outcome = train.run_group([train.RunSpec(config, workdir)], overwrite=overwrite)[0]
  return report.metrics_table(outcome)
