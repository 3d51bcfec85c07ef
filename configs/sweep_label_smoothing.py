"""Label-smoothing ablation: epsilon in {0, 0.1, 0.2} on the hard-label term, 3 seeds per value.

Launch (a few minutes on 2 CPU cores; the report lands in runs/sweep_label_smoothing/summary.md, results.csv, plots/):

    python main.py --config=configs/sweep_label_smoothing.py --workdir=runs/sweep_label_smoothing

Smoothing applies to the cross-entropy of both the KD student and the hard-label student, so each value compares
KD with a hard-label student smoothed alike. Shows whether smoothing the labels stands in for, adds to, or conflicts
with the teacher's soft targets (Mueller et al. 2019), in accuracy and in calibration (ECE, reliability diagrams).

Arguments (`--config=configs/sweep_label_smoothing.py:smoke`): `smoke` runs epsilon in {0, 0.2} x 2 seeds with tiny
training; the other arguments of configs/default.py apply as well. More seeds: `--config.sweep.seeds=5`.
"""

import ml_collections

from kd_jax.config import schema
from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  config.sweep.grid = (("distill.label_smoothing", (0.0, 0.1, 0.2)),)
  config.sweep.seeds = 3
  if "smoke" in schema.parse_options(arg, allowed=default.OPTIONS):
    config.sweep.grid = (("distill.label_smoothing", (0.0, 0.2)),)
    config.sweep.seeds = 2
  return config
