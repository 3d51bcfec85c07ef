"""The from-scratch demo's synthetic tasks: Gaussian class clusters, and random labels (pure memorization)."""

import numpy as np

EVALUATOR = "classification"  # how it is evaluated: the name of its evaluator (kd_jax.evaluation.EVALUATORS)


def load(data_config):
  """Returns inputs [N, D] float32, labels [N], num_classes; drawn from `data.split_seed`."""
  shape = data_config.synthetic
  rng = np.random.default_rng([data_config.split_seed, 1])
  if data_config.name == "synthetic_clusters":
    centers = rng.normal(size=(shape.num_classes, shape.num_features))
    labels = rng.integers(0, shape.num_classes, size=shape.num_examples)
    inputs = centers[labels] + shape.cluster_std * rng.normal(size=(shape.num_examples, shape.num_features))
  else:
    assert data_config.name == "synthetic_random_labels", data_config.name
    inputs = rng.normal(size=(shape.num_examples, shape.num_features))
    labels = rng.integers(0, shape.num_classes, size=shape.num_examples)
  return inputs.astype(np.float32), labels.astype(np.int32), shape.num_classes
