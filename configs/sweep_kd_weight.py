"""Weight ablation, explicit form: ce_weight = 1 and kd_weight (beta) in {0, 0.3, 0.5, 0.7} at T = 4, 3 seeds.

Launch (a few minutes on 2 CPU cores; the report lands in runs/sweep_kd_weight/summary.md, results.csv, plots/):

    python main.py --config=configs/sweep_kd_weight.py --workdir=runs/sweep_kd_weight

The loss is CE + beta * T^2 * KL (distill.alpha = None selects this form): unlike the Hinton form, adding the
distillation term does not take weight away from the labels. beta = 0 is the hard-label baseline (paired difference
exactly 0). The summary shows whether the soft targets help on top of full-weight labels.

Arguments (`--config=configs/sweep_kd_weight.py:smoke`): `smoke` runs beta in {0, 0.7} x 2 seeds with tiny
training; the other arguments of configs/default.py apply as well. More seeds: `--config.sweep.seeds=5`.
"""

import ml_collections

from kd_jax.config import schema
from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  config.distill.alpha = None
  config.distill.ce_weight = 1.0
  config.distill.kd_weight = 0.5
  config.sweep.grid = (("distill.kd_weight", (0.0, 0.3, 0.5, 0.7)),)
  config.sweep.seeds = 3
  if "smoke" in schema.parse_options(arg, allowed=default.OPTIONS):
    config.sweep.grid = (("distill.kd_weight", (0.0, 0.7)),)
    config.sweep.seeds = 2
  return config
