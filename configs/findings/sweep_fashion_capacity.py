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
  medium        conv (8, 16),  Dense (64,)   51,946 params, 6 epochs, no dropout  trained here
  strong        conv (32, 64), Dense (256,)  824,458 params, 6 epochs             restored (teacher.init)
  early-stopped the strong architecture, 1 epoch (its cosine schedule over that epoch)   trained here
  strong -> assistant   the strong teacher distills the medium architecture (teacher.assistant, 2 epochs as a KD
                        student), which then teaches the student (kd_jax/teachers/assistant.py)

5 seeds. The hard-label student does not depend on the teacher: only the first teacher's points train it
(`baseline`), and every comparison pairs by seed. sweep.mode='vectorized' trains a teacher's seeds together.

Arguments: `smoke`: the showcase's smoke data (2% of the images, one epoch) with a trained tiny strong teacher,
teachers (4, 8) and the strong architecture, the strong teacher early-stopped (one step short of... no: num_steps
as its epochs allow) and the chain, 2 seeds.
"""

import ml_collections

from kd_jax.config import schema
from configs.findings import sweep_fashion_showcase

TEACHER_DIR = sweep_fashion_showcase.TEACHER_DIR
ASSISTANT = "cnn"  # teacher.assistant: conv (8, 16), Dense (64,) (the schema's default widths), the medium teacher's


def teachers(strong_init: str, strong_conv: tuple, strong_hidden: tuple, strong_epochs: int,
             small_epochs: int) -> tuple:
  """The zipped teacher factor: student-size, medium, strong, early-stopped strong, strong -> assistant."""
  return (("teacher.conv_features", ((4, 8), (8, 16), strong_conv, strong_conv, strong_conv)),
          ("teacher.hidden_sizes", ((), (64,), strong_hidden, strong_hidden, strong_hidden)),
          ("teacher.dropout_rate", (0.0, 0.0, 0.3, 0.3, 0.3)),
          ("teacher.num_epochs", (small_epochs, small_epochs, strong_epochs, 1, strong_epochs)),
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
  config.sweep.zipped = (teachers(TEACHER_DIR, (32, 64), (256,), 6, 6),)
  if "smoke" in options:
    config.teacher.assistant.conv_features = (4, 8)
    config.teacher.assistant.hidden_sizes = (8,)
    config.sweep.zipped = (teachers("train", (8, 16), (16,), 2, 1),)
  return config
