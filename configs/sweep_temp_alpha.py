"""Temperature x weight grid: T in {1, 2, 4} x alpha in {0.5, 0.9} (the SST-2 notebook's grid), 3 seeds per cell.

Launch (a few minutes on 2 CPU cores; the report lands in runs/sweep_temp_alpha/summary.md, results.csv, plots/):

    python main.py --config=configs/sweep_temp_alpha.py --workdir=runs/sweep_temp_alpha

Every point also trains the hard-label-only run (config.baseline, the same student on CE alone with the same seed),
so the grid comes with its hard-only baseline: the summary gives KD - hard per cell with a bootstrap interval, the
plots one line per alpha against T and a heatmap of the gain. All points share one teacher, trained once.

Arguments (`--config=configs/sweep_temp_alpha.py:smoke`): `smoke` runs T in {1, 4} at alpha = 0.9 x 2 seeds with
tiny training; the other arguments of configs/default.py apply as well. More seeds: `--config.sweep.seeds=5`.
"""

import ml_collections

from kd_jax.config import schema
from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  config.sweep.grid = (("distill.temperature", (1.0, 2.0, 4.0)), ("distill.alpha", (0.5, 0.9)))
  config.sweep.seeds = 3
  if "smoke" in schema.parse_options(arg, allowed=default.OPTIONS):
    config.sweep.grid = (("distill.temperature", (1.0, 4.0)), ("distill.alpha", (0.9,)))
    config.sweep.seeds = 2
  return config
