"""Fashion-MNIST with a teacher worth distilling: a wider CNN trained on every training label (docs/findings.md).

Launch (trains the teacher, then a KD and a hard-label student; wall time in docs/findings.md):

    python main.py --config=configs/findings/fashion_strong.py --workdir=runs/fashion_strong

The protocol of configs/fashion_mnist.py (the official 10,000 test images as the test split, 5% of the 60,000
training images as the validation split) with labeled_fraction 1: the teacher (conv 32 and 64 channels, a 256-unit
Dense layer, dropout 0.3; 824,458 parameters) trains on all 57,000 other training images. Its directory
(runs/fashion_strong/teacher) is what the findings sweeps restore through teacher.init, so they distill the same
teacher at any labeled fraction. The student is configs/fashion_mnist.py's (conv 4 and 8 channels, 4,266
parameters).

Arguments: `smoke` (`--config=configs/findings/fashion_strong.py:smoke`) shrinks the models and trains on 2% of the
training images for one epoch (the tests run it on tiny IDX files).
"""

import ml_collections

from kd_jax.config import schema
from configs import fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = schema.parse_options(arg, allowed=("smoke",))
  config = fashion_mnist.get_config()
  config.data.labeled_fraction = 1.0
  config.teacher.conv_features = (32, 64)
  config.teacher.hidden_sizes = (256,)
  config.teacher.dropout_rate = 0.3
  config.teacher.num_epochs = 6
  config.teacher.optim = schema.optim_config(learning_rate=2e-3, weight_decay=1e-4, warmup_ratio=0.05)
  config.train.eval_every_steps = 1000
  config.train.checkpoint_every_steps = 500

  if "smoke" in options:
    config.data.train_fraction = 0.02
    config.data.batch_size = 32
    config.teacher.conv_features = (4, 8)
    config.teacher.hidden_sizes = (16,)
    config.teacher.num_epochs = 1
    config.train.num_epochs = 1
    config.train.eval_every_steps = 50
    config.train.checkpoint_every_steps = 50
    config.train.log_every_steps = 20
  return config
