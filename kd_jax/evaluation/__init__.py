"""Evaluation on the validation and test splits: one interface, built from the task (`for_task`).

    during_training(model, params, teacher=False) -> scalars   the validation metrics written to the history at the
                                                                loop's eval steps (and what train.select compares);
                                                                teacher=True reads the teacher's own inputs
    teacher_metrics(model, params) -> {test, validation}        the teacher's final metrics; the teacher becomes the
                                                                reference of the students' agreement and KL (an
                                                                ensemble's members: member_metrics, classification)
    final(model, params) -> {test, validation}                  a student's metrics for results.json

The validation split selects (the final model, a sweep's best point); the test split only reports.
Classification (`ClassificationEvaluator`, kd_jax/evaluation/metrics.py): accuracy, nll, ece, brier, agreement and
kl_to_teacher, the confusion matrix and the reliability diagram. Seq2seq (`Seq2SeqEvaluator`, e-SNLI):
  teacher-forced on the reference targets, means over real target tokens:
    nll = -log p(y_t | y_<t, x);  token_accuracy = 1[argmax p = y_t];
    kl_to_teacher = KL(p_teacher || p_model) at temperature 1 (the average token-level KL to the teacher);
    token_agreement = 1[argmax p_model = argmax p_teacher];
  generated (kd_jax.models.hf.generate, max data.max_target_length new tokens), at every temperature of
  config.generation.temperatures, means over examples:
    label_accuracy = 1[parsed label = true label] (an unparseable output counts as wrong); unparseable = its share;
    rouge1, rouge2, rougeL = F1 of the generated explanation vs the reference (metrics.rouge_scores);
    agreement = 1[parsed label = the teacher's parsed label at the first temperature] (unparseable never agrees);
    faithfulness, las, faithfulness_ceiling: the explanations' faithfulness to the model's own labels, measured
      with a simulator trained on the training split's gold explanations (kd_jax/evaluation/faithfulness.py).
The metrics at the first temperature are the model's metrics; the students' are also given per temperature in
`by_generation_temperature` (the generation-temperature ablation: one trained model, several decodings). During
training only the teacher-forced ones are computed (no generation), unless the selection metric needs generation.
Causal LM (`CausalLMEvaluator`, kd_jax/data/causal_lm.py): the same two kinds on the reference responses,
  teacher-forced, means over real response tokens: nll, perplexity = exp(nll), token_accuracy, kl_to_teacher, and
    agreement = token_agreement (top-1 token agreement with the teacher);
  generated from the prompts (max data.max_target_length new tokens, at every generation temperature): rouge1,
    rouge2, rougeL of the response against the reference (none for plain text, which has no prompts).
"""

import functools
import logging
from typing import Protocol

import jax
import numpy as np

from kd_jax import data
from kd_jax.data import pipeline
from kd_jax.evaluation import faithfulness, metrics, seq2seq
from kd_jax.parallel import inference, sharding

logger = logging.getLogger(__name__)


SPLITS = ("test", "validation")


class Evaluator(Protocol):
  """See the module docstring."""
  METRICS: tuple[str, ...]  # the scalar metrics it reports (what a selection metric may be)

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
  if task.causal_lm is not None:
    return CausalLMEvaluator(config, task, mesh)
  return ClassificationEvaluator(config, task, mesh)


def metrics_of(data_name: str) -> tuple[str, ...]:
  """The scalar metrics the evaluator of data set `data_name` reports."""
  if data_name in data.CAUSAL_LM_TASKS:
    return CausalLMEvaluator.METRICS
  return (Seq2SeqEvaluator if data_name in data.SEQ2SEQ_TASKS else ClassificationEvaluator).METRICS


class ClassificationEvaluator:
  """Classification metrics of a model's logits (examples labeled -1 are left out)."""
  METRICS = ("accuracy", "nll", "ece", "brier", "agreement", "kl_to_teacher")

  def __init__(self, config, task: data.TaskData, mesh):
    self._splits = {"test": task.test, "validation": task.validation}
    self._mesh, self._batch_size = mesh, config.data.eval_batch_size
    self._teacher_logits = {}  # split -> [N, C] the teacher's logits, once teacher_metrics ran

  def _logits(self, model, params, split: data.Examples) -> np.ndarray:
    return inference.predict_logits(inference.make_predict_fn(model, self._mesh), params, split.inputs,
                                    batch_size=self._batch_size, num_devices=self._mesh.size)

  def _metrics(self, model, params, split: str, teacher: bool = False) -> dict:
    examples = self._splits[split].teacher_view() if teacher else self._splits[split]
    return metrics.classification_metrics(self._logits(model, params, examples), examples.label,
                                          self._teacher_logits.get(split))

  def during_training(self, model, params, *, teacher: bool = False) -> dict:
    result = self._metrics(model, params, "validation", teacher)
    return {name: result[name] for name in self.METRICS if name in result}

  def teacher_metrics(self, model, params) -> dict:
    for split, examples in self._splits.items():
      self._teacher_logits[split] = self._logits(model, params, examples.teacher_view())
    return {split: self._metrics(model, params, split, teacher=True) for split in SPLITS}

  def final(self, model, params) -> dict:
    return {split: self._metrics(model, params, split) for split in SPLITS}

  def member_metrics(self, model, params) -> dict:
    """{test, validation} metrics of one member of a teacher ensemble (kd_jax/teachers/ensemble.py), on the teacher's
    inputs; agreement and kl_to_teacher against the ensemble (after teacher_metrics of the ensemble). Ensembles are
    classification only."""
    return {split: self._metrics(model, params, split, teacher=True) for split in SPLITS}


class Seq2SeqEvaluator:
  """Teacher-forced token metrics and generated-text metrics (see the module docstring)."""
  METRICS = ("label_accuracy", "rouge1", "rouge2", "rougeL", "nll", "agreement", "kl_to_teacher") + faithfulness.METRICS
  GENERATED = ("label_accuracy", "rouge1", "rouge2", "rougeL", "agreement") + faithfulness.METRICS

  def __init__(self, config, task: data.TaskData, mesh):
    self._task, self._mesh = task, mesh
    self._splits = {"test": task.test, "validation": task.validation}
    self._batch_size = config.data.eval_batch_size
    self._generation = config.generation
    self._seed = config.seed
    # The students' checkpoints are compared by a generated metric: generate during training too.
    self._generate_during_training = (config.train.select == "best_validation"
                                      and config.sweep.selection_metric in self.GENERATED)
    self._teacher = None  # (model, params), once teacher_metrics ran
    self._teacher_labels = {}  # split -> the teacher's parsed labels at the first generation temperature
    self._simulator = None  # faithfulness.Simulator, trained on first use
    self._compiled = {}

  def _token_metrics(self, model, params, split: str, teacher=None) -> dict:
    teacher_model, teacher_params = teacher if teacher is not None else (None, None)
    key = (model, teacher_model)
    if key not in self._compiled:
      batch = sharding.batch_sharded(self._mesh)
      self._compiled[key] = jax.jit(
          functools.partial(seq2seq.token_sums, model=model, teacher_model=teacher_model),
          in_shardings=(None, None, batch, batch, batch))  # the params where they are (replicated or split)
    examples = self._splits[split]
    totals = {}
    size = inference.batch_size_for(len(examples), self._batch_size, self._mesh.size)
    for batch, num_real in pipeline.inference_batches(examples, size):
      weights = np.array(batch.token_weights)
      weights[num_real:] = 0.0  # padding rows
      sums = jax.device_get(self._compiled[key](params, teacher_params, batch.inputs, batch.label, weights))
      for name, value in sums.items():
        totals[name] = totals.get(name, 0.0) + float(value)
    result = {"nll": totals["nll"] / totals["tokens"], "token_accuracy": totals["correct"] / totals["tokens"]}
    if "kl" in totals:
      result["kl_to_teacher"] = totals["kl"] / totals["tokens"]
      result["token_agreement"] = totals["agree"] / totals["tokens"]
    return result

  def _generated(self, model, params, split: str, temperature: float) -> list[str]:
    info = self._task.seq2seq
    tokens = seq2seq.generate_tokens(model, params, self._splits[split].inputs, mesh=self._mesh,
                                     batch_size=self._batch_size, max_new_tokens=info.max_target_length,
                                     temperature=temperature, top_k=self._generation.top_k,
                                     top_p=self._generation.top_p, seed=self._seed)
    return info.tokenizer.batch_decode(tokens, skip_special_tokens=True)

  def _text_metrics(self, texts: list[str], split: str, with_agreement: bool) -> tuple[dict, list]:
    """Label, ROUGE, agreement and faithfulness metrics of generated texts; and their parsed labels."""
    info, examples = self._task.seq2seq, self._splits[split]
    references = [info.explanations[i] for i in examples.index.tolist()]
    result, labels = seq2seq.label_metrics(texts, examples.class_label, references, info.parse,
                                           self._teacher_labels.get(split) if with_agreement else None)
    sources = [info.sources[i] for i in examples.index.tolist()]
    simulator = self._trained_simulator()
    result.update(faithfulness.scores(
        simulator.predict(sources, [info.parse(text)[1] for text in texts]), labels,
        simulator.predict(sources, references)["explanation"], examples.class_label))
    return result, labels

  def _trained_simulator(self) -> faithfulness.Simulator:
    if self._simulator is None:
      info, train = self._task.seq2seq, self._task.train
      labeled = train.select(train.class_label >= 0)
      indices = labeled.index.tolist()
      self._simulator = faithfulness.Simulator.train([info.sources[i] for i in indices],
                                                     [info.explanations[i] for i in indices], labeled.class_label)
    return self._simulator

  def during_training(self, model, params, *, teacher: bool = False) -> dict:
    """Teacher-forced nll and token_accuracy on the validation split (and, when the selection metric is a
    generated one, the generated metrics at the first temperature)."""
    result = self._token_metrics(model, params, "validation", None if teacher else self._teacher)
    if self._generate_during_training and not teacher:
      texts = self._generated(model, params, "validation", self._generation.temperatures[0])
      result.update(self._text_metrics(texts, "validation", with_agreement=True)[0])
    return result

  def teacher_metrics(self, model, params) -> dict:
    result = {}
    for split in SPLITS:
      texts = self._generated(model, params, split, self._generation.temperatures[0])
      text_metrics, self._teacher_labels[split] = self._text_metrics(texts, split, with_agreement=False)
      result[split] = {**text_metrics, **self._token_metrics(model, params, split),
                       "num_examples": len(texts)}
      logger.info("Teacher outputs (first 3 of the %s split): %s", split, texts[:3])
    self._teacher = (model, params)
    return result

  def final(self, model, params) -> dict:
    """A student's metrics at every generation temperature (after teacher_metrics)."""
    assert self._teacher is not None, "teacher_metrics must run first"
    result = {}
    for split in SPLITS:
      by_temperature = {}
      for temperature in self._generation.temperatures:
        texts = self._generated(model, params, split, temperature)
        by_temperature[f"{float(temperature):g}"], _ = self._text_metrics(texts, split, with_agreement=True)
      result[split] = {**by_temperature[f"{float(self._generation.temperatures[0]):g}"],
                       **self._token_metrics(model, params, split, self._teacher),
                       "num_examples": len(self._splits[split]), "by_generation_temperature": by_temperature}
    return result


class CausalLMEvaluator(Seq2SeqEvaluator):
  """Seq2SeqEvaluator's teacher-forced token metrics (plus perplexity and top-1 agreement) on the reference responses,
  and ROUGE of the responses generated from the prompts (see the module docstring)."""
  METRICS = ("perplexity", "nll", "token_accuracy", "agreement", "kl_to_teacher", "rouge1", "rouge2", "rougeL")
  GENERATED = ("rouge1", "rouge2", "rougeL")

  def _token_metrics(self, model, params, split: str, teacher=None) -> dict:
    result = super()._token_metrics(model, params, split, teacher)
    result["perplexity"] = float(np.exp(result["nll"]))
    if teacher is not None:
      result["agreement"] = result.pop("token_agreement")
    return result

  def _generated(self, model, params, split: str, temperature: float) -> list[str]:
    info = self._task.causal_lm
    if not info.has_prompts:
      return []
    inputs = self._splits[split].inputs
    tokens = seq2seq.generate_tokens(model, params, {"input_ids": inputs["prompt_ids"],
                                                     "attention_mask": inputs["prompt_mask"]},
                                     mesh=self._mesh, batch_size=self._batch_size, max_new_tokens=info.max_new_tokens,
                                     temperature=temperature, top_k=self._generation.top_k,
                                     top_p=self._generation.top_p, seed=self._seed)
    return info.tokenizer.batch_decode(tokens, skip_special_tokens=True)

  def _text_metrics(self, texts: list[str], split: str, with_agreement: bool) -> tuple[dict, None]:
    """ROUGE of the generated responses against the references (nothing for plain text)."""
    del with_agreement  # top-1 agreement is teacher-forced (_token_metrics)
    if not texts:
      return {}, None
    references = [self._task.causal_lm.references[i] for i in self._splits[split].index.tolist()]
    return metrics.rouge_scores([text.strip() for text in texts], references), None
