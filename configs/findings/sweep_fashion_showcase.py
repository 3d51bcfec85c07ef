"""The Fashion-MNIST showcase: KD vs hard labels from a strong teacher, three student sizes, all labels and 10%.

Launch (after configs/findings/fashion_strong.py has trained its teacher into runs/fashion_strong/teacher; the
report lands in runs/findings_showcase/summary.md, results.csv, plots/; wall time in docs/findings.md):

    python main.py --config=configs/findings/sweep_fashion_showcase.py --workdir=runs/findings_showcase

Every point restores the same teacher (teacher.init: the 824,458-parameter CNN of fashion_strong.py, trained on all
57,000 training labels) and trains a KD student (0.5 CE + 0.5 T^2 KL, T = 4) and a hard-label student on the same
batches, for the student sizes (conv channels, Dense widths; parameters)

  small  (4, 8),  ()     4,266
  medium (4, 8),  (64,)  26,138
  large  (4, 8),  (320,) 129,306   (30x the small one)

(the same conv blocks, so the sizes differ in their Dense layers: the cheapest way to span 30x in parameters on 2
CPU cores, where the convolutions dominate the step's time)

for 2 epochs at data.labeled_fraction 0.1 (5,700 labels; the other 51,300 images form the unlabeled
transfer set that only the KD term sees) and 1 (every training label), each with 5 seeds (sweep.mode='vectorized' trains a size's seeds together).
Each student ends with its best step on the validation split (train.select='best_validation'); summary.md reports
test accuracy with paired KD - hard t intervals.

Arguments: `smoke` trains a tiny teacher in the sweep (no teacher directory needed) on 2% of the images, two student
sizes x 2 labeled fractions x 2 seeds, one epoch. More seeds: `--config.sweep.seeds=N`.
"""

import ml_collections

from kd_jax.config import schema
from configs.findings import fashion_strong

TEACHER_DIR = "runs/fashion_strong/teacher"
STUDENT_SIZES = ((("student.conv_features", ((4, 8), (4, 8), (4, 8))),
                  ("student.hidden_sizes", ((), (64,), (320,)))),)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = schema.parse_options(arg, allowed=("smoke",))
  config = fashion_strong.get_config(arg)
  config.teacher.init = TEACHER_DIR
  config.train.num_epochs = 2
  config.train.select = "best_validation"
  config.train.eval_every_steps = 200
  config.sweep.grid = (("data.labeled_fraction", (0.1, 1.0)),)
  config.sweep.zipped = STUDENT_SIZES
  config.sweep.seeds = 5
  config.sweep.mode = "vectorized"
  if "smoke" in options:
    config.teacher.init = "train"
    config.train.num_epochs = 1
    config.train.eval_every_steps = 10
    config.sweep.grid = (("data.labeled_fraction", (1.0, 0.3)),)
    config.sweep.zipped = ((("student.conv_features", ((4, 8), (8, 16))), ("student.hidden_sizes", ((), (16,)))),)
    config.sweep.seeds = 2
  return config
