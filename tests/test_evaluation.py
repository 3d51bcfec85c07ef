"""The evaluator registry (kd_jax/evaluation/__init__.py) and the evaluators' explicit reference."""

import jax

from kd_jax import data, evaluation, models
from kd_jax.evaluation import classification
from kd_jax.parallel import sharding
from tests.helpers import load_config


def test_every_data_set_names_a_registered_evaluator():
  for name in data.names():
    assert data.evaluator_of(name) in evaluation.EVALUATORS, name
    assert evaluation.metrics_of(name) == evaluation.EVALUATORS[data.evaluator_of(name)].METRICS
  assert evaluation.metrics_of("esnli")[0] == "label_accuracy"
  assert evaluation.metrics_of("causal_lm")[0] == "perplexity"
  assert evaluation.metrics_of("digits") == ("accuracy", "nll", "ece", "brier", "agreement", "kl_to_teacher")


def test_classification_students_are_compared_with_the_reference_they_are_given():
  """Stateless: a student's metrics depend on the reference passed in, not on which teacher an evaluator saw before;
  the teacher is its own reference (agreement 1, KL 0)."""
  config = load_config()
  task = data.load_task(config)
  mesh = sharding.make_mesh()
  evaluator = evaluation.for_task(config, task, mesh)
  assert isinstance(evaluator, classification.ClassificationEvaluator)
  create = lambda seed: models.create(config.student, num_classes=task.num_classes,
                                      example_inputs=task.train.inputs[:1], rng=jax.random.PRNGKey(seed))
  (model, teacher_params), (_, student_params) = create(0), create(1)
  teacher_metrics, reference = evaluator.teacher(model, teacher_params)
  for split in ("test", "validation"):
    assert teacher_metrics[split]["agreement"] == 1.0 and teacher_metrics[split]["kl_to_teacher"] == 0.0
  final = evaluator.final(model, student_params, reference)
  # A fresh evaluator, after another teacher, gives the same metrics against the same reference.
  other = evaluation.for_task(config, task, mesh)
  other.teacher(model, student_params)
  assert other.final(model, student_params, reference) == final
  assert evaluator.during_training(model, student_params, reference)["agreement"] == final["validation"]["agreement"]
  assert "agreement" not in evaluator.during_training(model, student_params)
  _, own = evaluator.teacher(model, student_params)
  assert evaluator.final(model, student_params, own)["test"]["agreement"] == 1.0
