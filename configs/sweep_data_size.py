"""Data-size ablation: how much data is kept (train_fraction) x how much of it is labeled (labeled_fraction).

Launch (about 10 minutes on 2 CPU cores; the report lands in runs/sweep_data_size/summary.md, results.csv, plots/):

    python main.py --config=configs/sweep_data_size.py --workdir=runs/sweep_data_size

Shows where distillation pays. train_fraction in {0.1, 0.5, 1.0} keeps that share of the digits training split;
labeled_fraction in {0.2, 0.5, 1.0} keeps the labels of that share of it, the rest being the unlabeled transfer set
that only the distillation term sees. Each cell trains its own teacher on its labeled examples (as in practice: the
teacher never sees a label the student lacks), then the KD student and the hard-label student of every seed. Read
the paired KD - hard differences along labeled_fraction (transfer set vs none) and train_fraction (data size).
The batch size is 16 so that the smallest labeled set (20% of 10%: 25 images) holds a full batch.

Arguments (`--config=configs/sweep_data_size.py:smoke`): `smoke` runs train_fraction in {0.5, 1.0} at
labeled_fraction 0.2 x 2 seeds with tiny training; the other arguments of configs/default.py apply as well. More
seeds: `--config.sweep.seeds=5`.
"""

import ml_collections

from kd_jax.config import schema
from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  config.data.batch_size = 16
  config.sweep.grid = (("data.train_fraction", (0.1, 0.5, 1.0)), ("data.labeled_fraction", (0.2, 0.5, 1.0)))
  config.sweep.seeds = 3
  if "smoke" in schema.parse_options(arg, allowed=default.OPTIONS):
    config.sweep.grid = (("data.train_fraction", (0.5, 1.0)), ("data.labeled_fraction", (0.2,)))
    config.sweep.seeds = 2
  return config
