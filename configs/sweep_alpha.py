"""Weight ablation, Hinton form: alpha in {0, 0.3, 0.5, 0.7, 0.9, 1.0} at T = 4, 3 seeds per value.

Launch (several minutes on 2 CPU cores; the report lands in runs/sweep_alpha/summary.md, results.csv, plots/):

    python main.py --config=configs/sweep_alpha.py --workdir=runs/sweep_alpha

The loss is (1 - alpha) * CE + alpha * T^2 * KL. alpha = 0 is training on hard labels only: that point's KD student
is the hard-label baseline itself (same seed, same batches), so its paired difference is exactly 0, a built-in check.
alpha = 1 ignores the labels altogether. On the default task (10% labels plus a transfer set) the summary shows how
much weight the teacher's soft targets should get.

Arguments (`--config=configs/sweep_alpha.py:smoke`): `smoke` runs alpha in {0, 0.9} x 2 seeds with tiny training;
the other arguments of configs/default.py apply as well. More seeds: `--config.sweep.seeds=5`.
"""

import ml_collections

from kd_jax.config import schema
from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  config.sweep.grid = (("distill.alpha", (0.0, 0.3, 0.5, 0.7, 0.9, 1.0)),)
  config.sweep.seeds = 3
  if "smoke" in schema.parse_options(arg, allowed=default.OPTIONS):
    config.sweep.grid = (("distill.alpha", (0.0, 0.9)),)
    config.sweep.seeds = 2
  return config
