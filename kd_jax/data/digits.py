"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): real data, available offline."""

import numpy as np

EVALUATOR = "classification"  # how it is evaluated: the name of its evaluator (kd_jax.evaluation.EVALUATORS)
NUM_CLASSES = 10
NUM_FEATURES = 64  # 8 x 8 pixels


def load(data_config):
  """Returns inputs [1797, NUM_FEATURES] float32 in [0, 1], labels [1797], 10 classes."""
  del data_config
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int32), NUM_CLASSES


def example_inputs(config) -> np.ndarray:
  """One example's inputs [1, 64] (zeros), known before the data loads."""
  del config
  return np.zeros((1, NUM_FEATURES), np.float32)
