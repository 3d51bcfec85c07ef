"""The seq2seq evaluator (e-SNLI with FLAN-T5), and its helpers: generation over a split (`generate_tokens`), the
metrics of generated texts (`label_metrics`) and of teacher-forced tokens (`token_sums`).

Teacher-forced on the reference targets, means over real target tokens:
  nll = -log p(y_t | y_<t, x);  token_accuracy = 1[argmax p = y_t];
  against the reference (the teacher run beside the model): kl_to_teacher = KL(p_teacher || p_model) at temperature 1
  (the average token-level KL to the teacher), token_agreement = 1[argmax p_model = argmax p_teacher].
Generated (kd_jax.models.generation.generate, max data.max_target_length new tokens), at every temperature of
config.generation.temperatures, means over examples:
  label_accuracy = 1[parsed label = true label] (an unparseable output counts as wrong); unparseable = its share;
  rouge1, rouge2, rougeL = F1 of the generated explanation vs the reference (metrics.rouge_scores);
  agreement = 1[parsed label = the teacher's parsed label at the first temperature] (unparseable never agrees);
  faithfulness, las (las_leaking, las_nonleaking, las_unparseable), las_gold, faithfulness_ceiling: the
    explanations' faithfulness to the model's own labels, measured with a simulator trained on the training split's
    gold explanations, and (las: Hase et al.'s per-model definition) with one trained on the model's own outputs for
    generation.simulator_examples training examples at the first temperature (kd_jax/evaluation/faithfulness.py).
The metrics at the first temperature are the model's metrics; the students' are also given per temperature in
`by_generation_temperature` (the generation-temperature ablation: one trained model, several decodings). During
training only the teacher-forced ones are computed (no generation), unless the selection metric needs generation.
"""

import dataclasses
import functools
import itertools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import data
from kd_jax.data import pipeline
from kd_jax.evaluation import faithfulness, metrics
from kd_jax.evaluation.metrics import SPLITS
from kd_jax.models import generation
from kd_jax.parallel import inference, sharding

logger = logging.getLogger(__name__)
# The metrics of the model's own simulator (faithfulness.Simulator.of_model).
PER_MODEL_METRICS = ("las", "las_leaking", "las_nonleaking")


def generate_tokens(model, params, inputs: dict, *, mesh, batch_size: int, max_new_tokens: int,
                    temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                    seed: int = 0, eos_token_ids: tuple[int, ...] | None = None) -> np.ndarray:
  """Generated ids [N, max_new_tokens] (pad after EOS) for the sources `inputs` (input_ids, attention_mask [N, S]),
  ending at any of `eos_token_ids` (None: the model's).

  Batches are split over the mesh's data axis; batch b samples with fold_in(key(seed), b).
  """
  sources = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
  numbers = itertools.count()

  def generate(local_sources):
    batch = sharding.shard_batch(local_sources, mesh)
    return generation.generate(model, params, batch["input_ids"], batch["attention_mask"],
                               max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                               eos_token_id=eos_token_ids, rng=jax.random.fold_in(jax.random.key(seed), next(numbers)))

  return np.concatenate([tokens[:num_real] for tokens, num_real in inference.map_batches(
      generate, sources, batch_size=batch_size, num_devices=mesh.size)])


def label_metrics(texts: list[str], labels: np.ndarray, references, parse, teacher_labels=None) -> tuple[dict, list]:
  """Metrics of generated texts against the true labels and reference explanations (see the module docstring).

  Returns:
    (metrics, the parsed label of each text, None where unparseable).
  """
  parsed = [parse(text) for text in texts]
  predicted = [label for label, _ in parsed]
  result = {"label_accuracy": float(np.mean([p == y for p, y in zip(predicted, labels)])),
            "unparseable": float(np.mean([p is None for p in predicted])),
            **metrics.rouge_scores([explanation for _, explanation in parsed], list(references))}
  if teacher_labels is not None:
    result["agreement"] = float(np.mean([p is not None and p == t for p, t in zip(predicted, teacher_labels)]))
  return result, predicted


def token_sums(params, teacher_params, inputs, labels, weights, *, model, teacher_model) -> dict:
  """Sums over the real target tokens of a batch: nll, correct predictions, token count; with a teacher, the KL to
  it and the top-1 agreement with it (equal argmax)."""
  log_p = jax.nn.log_softmax(model.apply({"params": params}, inputs, train=False).astype(jnp.float32))
  nll = -jnp.take_along_axis(log_p, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
  sums = {"nll": jnp.sum(nll * weights), "correct": jnp.sum((jnp.argmax(log_p, -1) == labels) * weights),
          "tokens": jnp.sum(weights)}
  if teacher_model is not None:
    log_q = jax.nn.log_softmax(teacher_model.apply({"params": teacher_params}, inputs, train=False).astype(jnp.float32))
    sums["kl"] = jnp.sum(jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1) * weights)
    sums["agree"] = jnp.sum((jnp.argmax(log_p, -1) == jnp.argmax(log_q, -1)) * weights)
  return sums


@functools.lru_cache(maxsize=16)
def _compiled_token_sums(mesh, model, teacher_model):
  """`token_sums` of these models compiled for `mesh`: the params where they are (replicated or split), the batch
  split over the mesh."""
  batch = sharding.batch_sharded(mesh)
  return jax.jit(functools.partial(token_sums, model=model, teacher_model=teacher_model),
                 in_shardings=(None, None, batch, batch, batch))


@dataclasses.dataclass(frozen=True)
class Reference:
  """What the students are compared with: the teacher (model, params), run teacher-forced beside a student
  (kl_to_teacher, token_agreement), and its parsed labels per split ({test, validation}: a tuple, None where
  unparseable) at the first generation temperature (agreement; None for the causal LM)."""
  model: object
  params: object
  labels: dict


class Seq2SeqEvaluator:
  """Teacher-forced token metrics and generated-text metrics (see the module docstring and the interface in
  kd_jax/evaluation/__init__.py).

  Stateless between calls: what it keeps is a function of the task alone. The faithfulness simulator (trained on the
  training split's gold explanations) is trained on first use, the first generated metrics; the compiled token
  functions are cached per (mesh, model, teacher model) for the process.
  """
  METRICS = ("label_accuracy", "rouge1", "rouge2", "rougeL", "nll", "agreement", "kl_to_teacher") + faithfulness.METRICS
  GENERATED = ("label_accuracy", "rouge1", "rouge2", "rougeL", "agreement") + faithfulness.METRICS

  def __init__(self, config, task: data.TaskData, mesh):
    self._task, self._mesh = task, mesh
    self._splits = {"test": task.test, "validation": task.validation}
    assert task.causal_lm is not None or all(examples.teacher_inputs is None for examples in self._splits.values()), (
        "teacher and student of a seq2seq task share one tokenizer: the teacher's inputs are the student's")
    self._batch_size = config.data.eval_batch_size
    self._generation = config.generation
    self._seed = config.seed
    # The students' checkpoints are compared by a generated metric: generate during training too (and explain
    # training examples for the model's own simulator when that metric is its las).
    self._generate_during_training = (config.train.select == "best_validation"
                                      and config.sweep.selection_metric in self.GENERATED)
    self._simulate_during_training = (self._generate_during_training
                                      and config.sweep.selection_metric in PER_MODEL_METRICS)

  @functools.cached_property
  def _simulator(self) -> faithfulness.Simulator:
    info, train = self._task.seq2seq, self._task.train
    labeled = train.select(train.class_label >= 0)
    indices = labeled.index.tolist()
    return faithfulness.Simulator.train([info.sources[i] for i in indices], [info.explanations[i] for i in indices],
                                        labeled.class_label)

  def _model_simulator(self, model, params) -> faithfulness.Simulator | None:
    """The model's own simulator (faithfulness.Simulator.of_model): trained on its outputs, at the first generation
    temperature, for generation.simulator_examples training examples (a fixed random subset, seed 0); None when
    that is 0 or its outputs hold fewer than two labels."""
    info, train = self._task.seq2seq, self._task.train
    count = min(self._generation.simulator_examples, len(train))
    if count == 0:
      return None
    examples = train.select(np.sort(np.random.default_rng(0).permutation(len(train))[:count]))
    tokens = generate_tokens(model, params, examples.inputs, mesh=self._mesh, batch_size=self._batch_size,
                             max_new_tokens=info.max_target_length, temperature=self._generation.temperatures[0],
                             top_k=self._generation.top_k, top_p=self._generation.top_p, seed=self._seed)
    labels, explanations = zip(*(info.parse(text) for text in info.tokenizer.batch_decode(
        tokens, skip_special_tokens=True)))
    return faithfulness.Simulator.of_model([info.sources[i] for i in examples.index.tolist()], list(explanations),
                                           list(labels))

  def _examples(self, split: str, teacher_inputs: bool = False) -> data.Examples:
    """A split as the model sees it: the teacher's own tokenization with `teacher_inputs` where the task has one
    (a causal LM across tokenizers), else the split."""
    return self._splits[split].teacher_view() if teacher_inputs else self._splits[split]

  def _token_metrics(self, model, params, split: str, reference: Reference | None = None,
                     teacher_inputs: bool = False) -> dict:
    teacher_model, teacher_params = (None, None) if reference is None else (reference.model, reference.params)
    compiled = _compiled_token_sums(self._mesh, model, teacher_model)
    examples = self._examples(split, teacher_inputs)
    totals = {}
    size = inference.batch_size_for(len(examples), self._batch_size, self._mesh.size)
    for batch, num_real in pipeline.inference_batches(examples, size):
      weights = np.array(batch.token_weights)
      weights[num_real:] = 0.0  # padding rows
      sums = jax.device_get(compiled(params, teacher_params, batch.inputs, batch.label, weights))
      for name, value in sums.items():
        totals[name] = totals.get(name, 0.0) + float(value)
    result = {"nll": totals["nll"] / totals["tokens"], "token_accuracy": totals["correct"] / totals["tokens"]}
    if "kl" in totals:
      result["kl_to_teacher"] = totals["kl"] / totals["tokens"]
      result["token_agreement"] = totals["agree"] / totals["tokens"]
    return result

  def _generated(self, model, params, split: str, temperature: float, teacher_inputs: bool = False) -> list[str]:
    del teacher_inputs  # one shared tokenizer
    info = self._task.seq2seq
    tokens = generate_tokens(model, params, self._splits[split].inputs, mesh=self._mesh, batch_size=self._batch_size,
                             max_new_tokens=info.max_target_length, temperature=temperature,
                             top_k=self._generation.top_k, top_p=self._generation.top_p, seed=self._seed)
    return info.tokenizer.batch_decode(tokens, skip_special_tokens=True)

  def _text_metrics(self, texts: list[str], split: str, teacher_labels,
                    model_simulator: faithfulness.Simulator | None = None) -> tuple[dict, tuple]:
    """Label, ROUGE, faithfulness (the per-model las with `model_simulator`) and, given the teacher's parsed labels,
    agreement metrics of generated texts; and their parsed labels."""
    info, examples = self._task.seq2seq, self._splits[split]
    references = [info.explanations[i] for i in examples.index.tolist()]
    result, labels = label_metrics(texts, examples.class_label, references, info.parse, teacher_labels)
    sources = [info.sources[i] for i in examples.index.tolist()]
    explanations = [info.parse(text)[1] for text in texts]
    result.update(faithfulness.scores(
        self._simulator.predict(sources, explanations), labels,
        self._simulator.predict(sources, references)["explanation"], examples.class_label,
        model_simulated=None if model_simulator is None else model_simulator.predict(sources, explanations)))
    return result, tuple(labels)

  def teacher(self, model, params) -> tuple[dict, Reference]:
    """The teacher's {test, validation} metrics (no agreement or KL: it is the reference), and the Reference."""
    result, labels = {}, {}
    simulator = self._model_simulator(model, params)
    for split in SPLITS:
      texts = self._generated(model, params, split, self._generation.temperatures[0], teacher_inputs=True)
      text_metrics, labels[split] = self._text_metrics(texts, split, teacher_labels=None, model_simulator=simulator)
      result[split] = {**text_metrics, **self._token_metrics(model, params, split, teacher_inputs=True),
                       "num_examples": len(texts)}
      logger.info("Teacher outputs (first 3 of the %s split): %s", split, texts[:3])
    return result, Reference(model, params, labels)

  def during_training(self, model, params, reference: Reference | None = None, *, teacher_inputs: bool = False) -> dict:
    """Teacher-forced nll and token_accuracy on the validation split, with the KL and token agreement to the
    reference when given; for a student (given the reference) whose selection metric is a generated one, also the
    generated metrics at the first temperature. `teacher_inputs`: on the teacher's own tokenization (where the task
    has one)."""
    result = self._token_metrics(model, params, "validation", reference, teacher_inputs)
    if self._generate_during_training and reference is not None:
      texts = self._generated(model, params, "validation", self._generation.temperatures[0])
      simulator = self._model_simulator(model, params) if self._simulate_during_training else None
      result.update(self._text_metrics(texts, "validation", reference.labels["validation"], simulator)[0])
    return result

  def final(self, model, params, reference: Reference | None, *, teacher_inputs: bool = False) -> dict:
    """A model's metrics at every generation temperature (on the teacher's own tokenization with
    `teacher_inputs`); without a reference (a teacher from a logprobs file has no model), none against it."""
    result = {}
    simulator = self._model_simulator(model, params)
    for split in SPLITS:
      by_temperature = {}
      for temperature in self._generation.temperatures:
        texts = self._generated(model, params, split, temperature, teacher_inputs)
        by_temperature[f"{float(temperature):g}"], _ = self._text_metrics(
            texts, split, None if reference is None else reference.labels[split], simulator)
      result[split] = {**by_temperature[f"{float(self._generation.temperatures[0]):g}"],
                       **self._token_metrics(model, params, split, reference, teacher_inputs),
                       "num_examples": len(self._splits[split]), "by_generation_temperature": by_temperature}
    return result
