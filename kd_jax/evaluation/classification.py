"""The classification evaluator: metrics of a model's logits (kd_jax/evaluation/metrics.py), examples labeled -1 left
out.

  accuracy, nll, ece, brier, the confusion matrix and the reliability diagram; against the reference (the teacher's
  logits on its own inputs), agreement = 1[argmax p = argmax p_teacher] and kl_to_teacher = KL(p_teacher || p) at
  temperature 1 (`metrics.classification_metrics`).
"""

import dataclasses

import numpy as np

from kd_jax import data
from kd_jax.evaluation import metrics
from kd_jax.evaluation.metrics import SPLITS
from kd_jax.parallel import inference


@dataclasses.dataclass(frozen=True)
class Reference:
  """What the students are compared with: the teacher's logits [N, C] per split ({test, validation}), computed on its
  own inputs."""
  logits: dict


class ClassificationEvaluator:
  """See the module docstring and kd_jax/evaluation/__init__.py (the interface)."""
  METRICS = ("accuracy", "nll", "ece", "brier", "agreement", "kl_to_teacher")

  def __init__(self, config, task: data.TaskData, mesh):
    self._splits = {"test": task.test, "validation": task.validation}
    self._mesh, self._batch_size = mesh, config.data.eval_batch_size

  def _examples(self, split: str, teacher_inputs: bool) -> data.Examples:
    return self._splits[split].teacher_view() if teacher_inputs else self._splits[split]

  def _logits(self, model, params, examples: data.Examples) -> np.ndarray:
    return inference.predict_logits(inference.make_predict_fn(model, self._mesh), params, examples.inputs,
                                    batch_size=self._batch_size, num_devices=self._mesh.size)

  def _metrics(self, model, params, split: str, reference: Reference | None, teacher_inputs: bool) -> dict:
    examples = self._examples(split, teacher_inputs)
    return metrics.classification_metrics(self._logits(model, params, examples), examples.label,
                                          None if reference is None else reference.logits[split])

  def teacher(self, model, params) -> tuple[dict, Reference]:
    """The teacher's {test, validation} metrics on its own inputs (agreement 1 and kl_to_teacher 0: it is its own
    reference) and its logits as the Reference."""
    views = {split: self._examples(split, teacher_inputs=True) for split in SPLITS}
    reference = Reference({split: self._logits(model, params, examples) for split, examples in views.items()})
    return {split: metrics.classification_metrics(reference.logits[split], views[split].label, reference.logits[split])
            for split in SPLITS}, reference

  def during_training(self, model, params, reference: Reference | None = None, *, teacher_inputs: bool = False) -> dict:
    result = self._metrics(model, params, "validation", reference, teacher_inputs)
    return {name: result[name] for name in self.METRICS if name in result}

  def final(self, model, params, reference: Reference, *, teacher_inputs: bool = False) -> dict:
    return {split: self._metrics(model, params, split, reference, teacher_inputs) for split in SPLITS}
