"""Bring your own model: distill the Fashion-MNIST CNN teacher into a student written in Flax NNX, in a file of its
own beside this config (configs/models/nnx_cnn.py), named by `student.name = 'path/to/file.py:factory'`.

Launch (the Fashion-MNIST files of configs/fashion_mnist.py; docs/models.md, Bring your own model):

    python main.py --config=configs/custom_model.py --workdir=runs/custom_model

Everything else is configs/fashion_mnist.py's run: the teacher trained in the run, its cached logits, the distilled
and the hard-label student. The factory gets config.student (its conv_features and dropout_rate here) and the number
of classes, and returns an nnx.Module; kd_jax splits it into graph and parameters and trains the parameters. Expect
test accuracies near 0.867 (teacher), 0.72 (the 5,130-parameter NNX student, distilled or not: it pools globally);
847 s on 2 CPU cores shared with other jobs (docs/models.md).

Arguments: `smoke` (`--config=configs/custom_model.py:smoke`) runs on scikit-learn's digits instead (offline, the
default run's smoke MLP teacher, 8x8 images flattened to 64 features, which the CNN reshapes), in about a minute:
test accuracy 0.866 (teacher), 0.800 (the NNX student distilled), 0.635 (on hard labels).
"""

import ml_collections

from kd_jax.config import schema
from configs import default, fashion_mnist

NNX_CNN = "configs/models/nnx_cnn.py:create"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = schema.parse_options(arg, allowed=("smoke",))
  if "smoke" in options:
    config = default.get_config("smoke")
    config.student.conv_features = (8, 16)
    config.optim.learning_rate = 1e-2
  else:
    config = fashion_mnist.get_config()
    config.student.conv_features = (16, 32)
  config.student.name = NNX_CNN
  config.student.dropout_rate = 0.1
  return config
