"""Evaluation on the test split: one interface, built from the task (`for_task`), used during training and at the end.

    during_training(model, params, teacher=False) -> scalars   cheap metrics for the history (test/<name>), at the
                                                                loop's eval steps; teacher=True reads the teacher's
                                                                own inputs (its tokenizer)
    teacher_metrics(model, params) -> metrics                  the teacher's final metrics; the teacher becomes the
                                                                reference of the students' agreement and KL
    final(model, params) -> metrics                            a student's metrics for results.json

Classification (`ClassificationEvaluator`, kd_jax/metrics.py): accuracy, nll, ece, brier, agreement and
kl_to_teacher, the confusion matrix and the reliability diagram. Seq2seq (`Seq2SeqEvaluator`, e-SNLI):
  teacher-forced on the reference targets, means over real target tokens:
    nll = -log p(y_t | y_<t, x);  token_accuracy = 1[argmax p = y_t];
    kl_to_teacher = KL(p_teacher || p_model) at temperature 1 (the average token-level KL to the teacher);
  generated (kd_jax.models.hf.generate, max data.max_target_length new tokens), at every temperature of
  config.generation.temperatures, means over examples:
    label_accuracy = 1[parsed label = true label] (an unparseable output counts as wrong); unparseable = its share;
    rouge1, rouge2, rougeL = F1 of the generated explanation vs the reference (metrics.rouge_scores);
    agreement = 1[parsed label = the teacher's parsed label at the first temperature] (unparseable never agrees).
The metrics at the first temperature are the model's metrics; the students' are also given per temperature in
`by_generation_temperature` (the generation-temperature ablation: one trained model, several decodings).
"""

import functools
from typing import Protocol

import jax
import numpy as np
from absl import logging

from kd_jax import data, inference, metrics, seq2seq, sharding
from kd_jax.data import pipeline


class Evaluator(Protocol):
  """See the module docstring."""

  def during_training(self, model, params, *, teacher: bool = False) -> dict:
    ...

  def teacher_metrics(self, model, params) -> dict:
    ...

  def final(self, model, params) -> dict:
    ...


def for_task(config, task: data.TaskData, mesh) -> Evaluator:
  """The evaluator of the task's kind."""
  if task.seq2seq is not None:
    return Seq2SeqEvaluator(config, task, mesh)
  return ClassificationEvaluator(config, task, mesh)


class ClassificationEvaluator:
  """Classification metrics of a model's logits on the test split (examples labeled -1 are left out)."""
  DURING_TRAINING = ("accuracy", "nll", "ece")

  def __init__(self, config, task: data.TaskData, mesh):
    self._test, self._mesh, self._batch_size = task.test, mesh, config.data.eval_batch_size
    self._teacher_logits = None  # [N, C] the teacher's test logits, once teacher_metrics ran

  def _logits(self, model, params, split: data.Examples) -> np.ndarray:
    return inference.predict_logits(inference.make_predict_fn(model, self._mesh), params, split.inputs,
                                    batch_size=self._batch_size, num_devices=self._mesh.size)

  def during_training(self, model, params, *, teacher: bool = False) -> dict:
    split = self._test.teacher_view() if teacher else self._test
    result = metrics.classification_metrics(self._logits(model, params, split), split.label, self._teacher_logits)
    names = self.DURING_TRAINING + (("agreement",) if self._teacher_logits is not None else ())
    return {name: result[name] for name in names}

  def teacher_metrics(self, model, params) -> dict:
    self._teacher_logits = self._logits(model, params, self._test.teacher_view())
    return metrics.classification_metrics(self._teacher_logits, self._test.label, self._teacher_logits)

  def final(self, model, params) -> dict:
    return metrics.classification_metrics(self._logits(model, params, self._test), self._test.label,
                                          self._teacher_logits)


class Seq2SeqEvaluator:
  """Teacher-forced token metrics and generated-text metrics on the test split (see the module docstring)."""

  def __init__(self, config, task: data.TaskData, mesh):
    self._task, self._mesh = task, mesh
    self._batch_size = config.data.eval_batch_size
    self._generation = config.generation
    self._seed = config.seed
    self._teacher = None  # (model, params), once teacher_metrics ran
    self._teacher_labels = None  # the teacher's parsed labels at the first generation temperature
    self._compiled = {}

  def _token_metrics(self, model, params, teacher=None) -> dict:
    teacher_model, teacher_params = teacher if teacher is not None else (None, None)
    key = (model, teacher_model)
    if key not in self._compiled:
      batch = sharding.batch_sharded(self._mesh)
      self._compiled[key] = jax.jit(
          functools.partial(seq2seq.token_sums, model=model, teacher_model=teacher_model),
          in_shardings=(sharding.replicated(self._mesh), sharding.replicated(self._mesh), batch, batch, batch))
    test = self._task.test
    totals = {}
    size = inference.batch_size_for(len(test), self._batch_size, self._mesh.size)
    for batch, num_real in pipeline.inference_batches(test, size):
      weights = np.array(batch.token_weights)
      weights[num_real:] = 0.0  # padding rows
      sums = jax.device_get(self._compiled[key](params, teacher_params, batch.inputs, batch.label, weights))
      for name, value in sums.items():
        totals[name] = totals.get(name, 0.0) + float(value)
    result = {"nll": totals["nll"] / totals["tokens"], "token_accuracy": totals["correct"] / totals["tokens"]}
    if "kl" in totals:
      result["kl_to_teacher"] = totals["kl"] / totals["tokens"]
    return result

  def _generated(self, model, params, temperature: float) -> list[str]:
    info = self._task.seq2seq
    tokens = seq2seq.generate_tokens(model, params, self._task.test.inputs, mesh=self._mesh,
                                     batch_size=self._batch_size, max_new_tokens=info.max_target_length,
                                     temperature=temperature, top_k=self._generation.top_k,
                                     top_p=self._generation.top_p, seed=self._seed)
    return info.tokenizer.batch_decode(tokens, skip_special_tokens=True)

  def _label_metrics(self, texts: list[str], with_agreement: bool) -> tuple[dict, list]:
    info = self._task.seq2seq
    return seq2seq.label_metrics(texts, self._task.test.class_label, info.references, info.parse,
                                 self._teacher_labels if with_agreement else None)

  def during_training(self, model, params, *, teacher: bool = False) -> dict:
    """Teacher-forced nll and token_accuracy (cheap: no generation)."""
    del teacher  # teacher and student read the same tokens
    return self._token_metrics(model, params)

  def teacher_metrics(self, model, params) -> dict:
    texts = self._generated(model, params, self._generation.temperatures[0])
    result, self._teacher_labels = self._label_metrics(texts, with_agreement=False)
    self._teacher = (model, params)
    logging.info("Teacher outputs (first 3 of the test split): %s", texts[:3])
    return {**result, **self._token_metrics(model, params), "num_examples": len(texts)}

  def final(self, model, params) -> dict:
    """A student's metrics at every generation temperature (after teacher_metrics)."""
    assert self._teacher is not None, "teacher_metrics must run first"
    by_temperature = {}
    for temperature in self._generation.temperatures:
      texts = self._generated(model, params, temperature)
      by_temperature[f"{float(temperature):g}"], _ = self._label_metrics(texts, with_agreement=True)
    result = {**by_temperature[f"{float(self._generation.temperatures[0]):g}"],
              **self._token_metrics(model, params, self._teacher), "num_examples": len(self._task.test)}
    result["by_generation_temperature"] = by_temperature
    return result

