"""Student-size ablation: MLP students of width 8 to 128 with one hidden layer, and two deeper ones; 3 seeds each.

Launch (several minutes on 2 CPU cores; the report lands in runs/sweep_student_size/summary.md, results.csv, plots/):

    python main.py --config=configs/sweep_student_size.py --workdir=runs/sweep_student_size

student.hidden_sizes in {8, 16, 32, 64, 128, 64x64, 128x128} (one entry per hidden layer) against the same teacher
(2x1200), trained once. Shows how the gain of distillation over hard labels, and the gap to the teacher, change with
the student's capacity.

Arguments (`--config=configs/sweep_student_size.py:smoke`): `smoke` runs widths {8, 64} x 2 seeds with tiny
training; the other arguments of configs/default.py apply as well. More seeds: `--config.sweep.seeds=5`.
"""

import ml_collections

from kd_jax.config import schema
from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  config.sweep.grid = (("student.hidden_sizes", ((8,), (16,), (32,), (64,), (128,), (64, 64), (128, 128))),)
  config.sweep.seeds = 3
  if "smoke" in schema.parse_options(arg, allowed=default.OPTIONS):
    config.sweep.grid = (("student.hidden_sizes", ((8,), (64,))),)
    config.sweep.seeds = 2
  return config
