"""Finding 3 (Cho & Hariharan 2019, Mirzadeh et al. 2020, the capacity gap): one small student, teachers of
increasing size, an early-stopped teacher, and a teacher-assistant chain against direct distillation.

Launch (after configs/findings/fashion_strong.py has trained its teacher into runs/fashion_strong/teacher; the
report lands in runs/findings_capacity/summary.md; wall time and numbers in docs/findings.md):

    python main.py --config=configs/findings/sweep_fashion_capacity.py --workdir=runs/findings_capacity

The showcase's protocol (configs/findings/sweep_fashion_showcase.py: 2 student epochs over all 57,000 training
images, 0.5 CE + 0.5 T^2 KL at T = 4, selection on validation, test reported) with its small student (conv 4 and 8
channels, no Dense layer; 4,266 parameters) and every label (data.labeled_fraction 1): each teacher here is trained
on all 57,000 labels, as the strong one was (a teacher trained in a run learns from its labeled examples only, so
a 10% sweep would compare 5,700-label teachers with the 57,000-label strong one). One zipped factor, the teacher:

  student-size  conv (4, 8),   Dense ()      4,266 params, 6 epochs, no dropout   trained here
  medium        conv (8, 16),  Dense (64,)   52,138 params, 6 epochs, no dropout  trained here
  strong        conv (32, 64), Dense (256,)  824,458 params, 6 epochs             restored (teacher.init)
  early-stopped the strong architecture, 1 epoch (its cosine schedule over that epoch)   trained here
  strong -> assistant   the strong teacher distills the medium architecture (teacher.assistant, 2 epochs as a KD
                        student), which then teaches the student (kd_jax/teachers/assistant.py)

5 seeds. The hard-label student does not depend on the teacher: only the first teacher's points train it
(`baseline`), and every comparison pairs by seed. sweep.mode='vectorized' trains a teacher's seeds together.

Arguments: `smoke`: the showcase's smoke data (2% of the images, one epoch) with teachers of the same five kinds
at tiny widths (the medium and strong ones of the same shape, trained for 2 and 3 epochs), every one trained in the
sweep (no teacher directory needed); 2 seeds. More or fewer seeds:
`--config.sweep.seeds=N`.
"""

import ml_collections

from kd_jax.config import schema
from configs.findings import sweep_fashion_showcase

TEACHER_DIR = sweep_fashion_showcase.TEACHER_DIR
ASSISTANT = "cnn"  # teacher.assistant's model: the medium teacher's widths


def teachers(small: tuple, medium: tuple, strong: tuple, *, dropout_rates: tuple, epochs: tuple,
             strong_init: str) -> tuple:
  """The zipped teacher factor: student-size, medium, strong, early-stopped strong, strong -> assistant; each size a
  (conv_features, hidden_sizes) pair, dropout_rates and epochs (small, medium, strong, early-stopped). Only the first
  trains the hard-label student (`baseline`)."""
  return (("teacher.conv_features", (small[0], medium[0], strong[0], strong[0], strong[0])),
          ("teacher.hidden_sizes", (small[1], medium[1], strong[1], strong[1], strong[1])),
          ("teacher.dropout_rate", dropout_rates + (dropout_rates[2], dropout_rates[2])),
          ("teacher.num_epochs", epochs + (epochs[2],)),
          ("teacher.init", ("train", "train", strong_init, "train", strong_init)),
          ("teacher.assistant.name", (None, None, None, None, ASSISTANT)),
          ("baseline", (True, False, False, False, False)))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = schema.parse_options(arg, allowed=("smoke",))
  config = sweep_fashion_showcase.get_config(arg)
  config.data.labeled_fraction = 1.0
  config.student.conv_features = (4, 8)
  config.student.hidden_sizes = ()
  config.teacher.assistant.conv_features = (8, 16)
  config.teacher.assistant.hidden_sizes = (64,)
  config.sweep.grid = ()
  config.sweep.zipped = (teachers(((4, 8), ()), ((8, 16), (64,)), ((32, 64), (256,)), dropout_rates=(0.0, 0.0, 0.3),
                                  epochs=(6, 6, 6, 1), strong_init=TEACHER_DIR),)
  if "smoke" in options:  # two teacher shapes (the compiled steps are the showcase smoke's); the sizes differ in name
    config.teacher.assistant.conv_features = (4, 8)
    config.teacher.assistant.hidden_sizes = ()
    config.sweep.zipped = (teachers(((4, 8), ()), ((4, 8), (16,)), ((4, 8), (16,)), dropout_rates=(0.0, 0.3, 0.3),
                                    epochs=(1, 2, 3, 1), strong_init="train"),)
  return config
