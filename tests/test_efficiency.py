"""Size and speed of models: parameter counts, FLOPs against a hand count, latency, compression."""

import jax
import numpy as np
import pytest

from kd_jax import models
from kd_jax.reporting import efficiency
from tests.helpers import load_config


def test_mlp_counts_flops_and_speed():
  """The default student (64 inputs, 32 hidden, 10 classes): 64*32 + 32 + 32*10 + 10 parameters; a forward pass is
  2 (64*32 + 32*10) multiply-adds' FLOPs plus the bias adds and the ReLU."""
  config = load_config()
  inputs = np.zeros((1, 64), np.float32)
  model, params = models.create(config.student, num_classes=10, example_inputs=inputs, rng=jax.random.PRNGKey(0))
  measured = efficiency.measure(model, params, inputs, device=jax.devices()[0], batch_size=32)
  leaves = jax.tree.leaves(params)
  assert measured["params"] == sum(leaf.size for leaf in leaves) == 64 * 32 + 32 + 32 * 10 + 10
  assert measured["trainable_params"] == measured["params"]
  assert measured["param_bytes"] == 4 * measured["params"]
  hand_count = 2 * (64 * 32 + 32 * 10) + (32 + 10) + 32
  assert measured["flops_per_example"] == pytest.approx(hand_count, rel=0.1)
  assert measured["latency_ms"] > 0 and measured["throughput_per_s"] > 0


def test_a_wider_teacher_costs_more_and_the_student_is_compressed():
  config = load_config()
  inputs = np.zeros((1, 64), np.float32)
  costs = {}
  for section in ("teacher", "student"):
    model, params = models.create(config[section], num_classes=10, example_inputs=inputs, rng=jax.random.PRNGKey(0))
    costs[section] = efficiency.measure(model, params, inputs, device=jax.devices()[0], batch_size=32)
  assert costs["teacher"]["params"] == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10  # the smoke teacher
  assert costs["teacher"]["flops_per_example"] > 20 * costs["student"]["flops_per_example"]
  ratios = efficiency.compression(costs["teacher"], costs["student"])
  assert ratios["compression_params"] == costs["teacher"]["params"] / costs["student"]["params"]
  assert ratios["latency_speedup"] == costs["teacher"]["latency_ms"] / costs["student"]["latency_ms"]


def test_parameter_counts_of_mixed_dtypes():
  params = {"a": np.zeros((3, 4), np.float32), "b": {"c": np.zeros(5, np.dtype("bfloat16"))}}
  assert efficiency.parameter_counts(params) == {"params": 17, "trainable_params": 17, "param_bytes": 48 + 10}
  assert efficiency.parameter_counts(params, trainable_params=5)["trainable_params"] == 5
