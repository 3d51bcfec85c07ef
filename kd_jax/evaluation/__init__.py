"""Evaluation on the validation and test splits: evaluators by name (`EVALUATORS`), each task naming its own.

A task's data module declares `EVALUATOR = '<name>'` (kd_jax/data: `TaskData.evaluator`, `data.evaluator_of`);
`for_task` builds that evaluator from (config, task, mesh). Every evaluator is stateless between calls: what the
students are compared with is an explicit value, the reference, returned with the teacher's metrics and passed back
in. Its interface:

    teacher(model, params) -> ({test, validation}, reference)
        the teacher's final metrics, and the reference: an immutable value of the evaluator's kind (the teacher's logits
        per split; or the teacher itself and its parsed labels)
    during_training(model, params, reference=None, *, teacher_inputs=False) -> scalars
        the validation metrics written to the history at the loop's eval steps (and what train.select compares); with
        the reference, the agreement and KL to it; teacher_inputs: on the teacher's own inputs (its own training)
    final(model, params, reference, *, teacher_inputs=False) -> {test, validation}
        a model's metrics for results.json: a student's; with teacher_inputs, an ensemble's member's
        (kd_jax/teachers/ensemble.py)

The validation split selects (the final model, a sweep's best point); the test split only reports. The evaluators and
their metrics (each module's docstring states them):
  classification  classification.py: accuracy, nll, ece, brier, agreement and kl_to_teacher, the confusion matrix and
                  the reliability diagram.
  seq2seq         seq2seq.py (e-SNLI): teacher-forced token metrics and generated-text metrics (label accuracy, ROUGE,
                  agreement, faithfulness).
  causal_lm       causal_lm.py: teacher-forced token metrics (perplexity, top-1 agreement) and ROUGE of the responses
                  generated from the prompts.
A new kind of task adds a module here with its evaluator class, an entry in EVALUATORS, and its name in the task's
data module.
"""

from typing import Protocol

from kd_jax import data
from kd_jax.evaluation import causal_lm, classification, seq2seq


class Evaluator(Protocol):
  """See the module docstring."""
  METRICS: tuple[str, ...]  # the scalar metrics it reports (what a selection metric may be)

  def __init__(self, config, task: data.TaskData, mesh):
    ...

  def teacher(self, model, params) -> tuple[dict, object]:
    ...

  def during_training(self, model, params, reference=None, *, teacher_inputs: bool = False) -> dict:
    ...

  def final(self, model, params, reference, *, teacher_inputs: bool = False) -> dict:
    ...


EVALUATORS: dict[str, type[Evaluator]] = {
    "classification": classification.ClassificationEvaluator,
    "seq2seq": seq2seq.Seq2SeqEvaluator,
    "causal_lm": causal_lm.CausalLMEvaluator,
}


def for_task(config, task: data.TaskData, mesh) -> Evaluator:
  """The evaluator the task names."""
  return EVALUATORS[task.evaluator](config, task, mesh)


def metrics_of(data_name: str) -> tuple[str, ...]:
  """The scalar metrics the evaluator of data set `data_name` reports."""
  return EVALUATORS[data.evaluator_of(data_name)].METRICS
