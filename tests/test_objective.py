"""The objective of a training phase (kd_jax/training/objective.py): numbers as leaves, kinds as static structure."""

import jax

from kd_jax.config import schema
from kd_jax.training.objective import Objective


def test_objectives_differing_in_numbers_share_a_tree_structure_and_kinds_do_not():
  """Runs whose objectives differ in numbers only share compiled steps and stack in a vectorized sweep; another
  divergence is another program."""
  config, other = schema.default_config(), schema.default_config()
  other.distill.temperature, other.distill.alpha, other.distill.label_smoothing = 8.0, 0.3, 0.1
  objective = Objective.from_config(config, num_steps=10)
  assert jax.tree.structure(Objective.from_config(other, num_steps=10)) == jax.tree.structure(objective)
  other.distill.divergence = "reverse_kl"
  assert jax.tree.structure(Objective.from_config(other, num_steps=10)) != jax.tree.structure(objective)
  assert objective.feature_loss is None and objective.on_policy is None


def test_without_distillation_the_objective_is_the_cross_entropy_with_the_configs_smoothing():
  config = schema.default_config()
  config.distill.update(label_smoothing=0.1, schedule="linear", temperature_end=1.0)
  baseline = Objective.from_config(config, num_steps=10, distills=False)
  assert float(baseline.logit_loss.hard_weight) == 1.0 and float(baseline.logit_loss.soft_weight) == 0.0
  assert abs(float(baseline.logit_loss.label_smoothing) - 0.1) < 1e-7
  assert baseline.logit_loss.schedule == "constant" and baseline.schedule_table() == {}
  assert baseline.feature_loss is None and baseline.on_policy is None
