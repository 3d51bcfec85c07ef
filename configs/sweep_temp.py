"""Temperature ablation: T in {1, 2, 3, 4} at alpha = 0.5 (the e-SNLI notebook's grid), 3 seeds per value.

Launch (a few minutes on 2 CPU cores; the report lands in runs/sweep_temp/summary.md, results.csv, plots/):

    python main.py --config=configs/sweep_temp.py --workdir=runs/sweep_temp

Shows how soft the teacher's targets should be: on the default task (digits, 10% of the training labels, the rest
an unlabeled transfer set) each T trains a distilled student and, beside it, the hard-label student of the same seed;
the summary gives the KD student's metrics per T, the best T and its paired gain over hard labels. All points share
one teacher, trained once.

Arguments (`--config=configs/sweep_temp.py:smoke`): `smoke` runs 2 temperatures x 2 seeds with tiny training; the
other arguments of configs/default.py (task names) apply as well. More seeds: `--config.sweep.seeds=5`.
"""

import ml_collections

from kd_jax.config import schema
from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  config.sweep.grid = (("distill.temperature", (1.0, 2.0, 3.0, 4.0)),)
  config.sweep.seeds = 3
  if "smoke" in schema.parse_options(arg, allowed=default.OPTIONS):
    config.sweep.grid = (("distill.temperature", (1.0, 4.0)),)
    config.sweep.seeds = 2
  return config
