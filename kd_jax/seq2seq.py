"""Seq2seq tasks (e-SNLI with FLAN-T5): evaluation by generation, the top-k teacher cache, sequence-level targets.

Evaluation of a model on the test split (`Evaluation`):
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

Sequence-level distillation (Kim & Rush 2016, `distill.strategy='sequence'`): the teacher's greedy outputs for the
training split replace the reference targets, generated once and cached as tokens (kd_jax/seq2seq_cache.py).
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from kd_jax import data, fingerprints, metrics, seq2seq_cache, sharding, teacher_cache
from kd_jax.data import pipeline
from kd_jax.models import hf


def _batch_size(num_examples: int, batch_size: int, num_devices: int) -> int:
  """batch_size, or fewer rows (a multiple of the device count) for a small split."""
  return min(batch_size, -(-num_examples // num_devices) * num_devices)


def generate_tokens(model, params, inputs: dict, *, mesh, batch_size: int, max_new_tokens: int,
                    temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                    seed: int = 0) -> np.ndarray:
  """Generated ids [N, max_new_tokens] (pad after EOS) for the sources `inputs` (input_ids, attention_mask [N, S]).

  Batches are split over the mesh's data axis; batch b samples with fold_in(key(seed), b).
  """
  sources = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
  size = _batch_size(len(sources["input_ids"]), batch_size, mesh.size)
  outputs = []
  for number, (batch, num_real) in enumerate(pipeline.inference_batches(sources, size)):
    batch = jax.device_put(batch, sharding.batch_sharded(mesh))
    tokens = hf.generate(model.module, params, batch["input_ids"], batch["attention_mask"],
                         max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         rng=jax.random.fold_in(jax.random.key(seed), number))
    outputs.append(np.asarray(tokens)[:num_real])
  return np.concatenate(outputs)


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


def _token_sums(params, teacher_params, inputs, labels, weights, *, model, teacher_model) -> dict:
  """Sums over the real target tokens of a batch: nll, correct predictions, KL to the teacher, token count."""
  log_p = jax.nn.log_softmax(model.apply({"params": params}, inputs, train=False).astype(jnp.float32))
  nll = -jnp.take_along_axis(log_p, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
  sums = {"nll": jnp.sum(nll * weights), "correct": jnp.sum((jnp.argmax(log_p, -1) == labels) * weights),
          "tokens": jnp.sum(weights)}
  if teacher_model is not None:
    log_q = jax.nn.log_softmax(teacher_model.apply({"params": teacher_params}, inputs, train=False).astype(jnp.float32))
    sums["kl"] = jnp.sum(jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1) * weights)
  return sums


class Evaluation:
  """Evaluates seq2seq models on a task's test split (see the module docstring)."""

  def __init__(self, config, task: data.TaskData, mesh):
    self._task, self._mesh = task, mesh
    self._batch_size = config.data.eval_batch_size
    self._generation = config.generation
    self._seed = config.seed
    self._teacher_labels = None
    self._compiled = {}

  def _token_metrics(self, model, params, teacher_model=None, teacher_params=None) -> dict:
    key = (model, teacher_model)
    if key not in self._compiled:
      batch = sharding.batch_sharded(self._mesh)
      self._compiled[key] = jax.jit(
          functools.partial(_token_sums, model=model, teacher_model=teacher_model),
          in_shardings=(sharding.replicated(self._mesh), sharding.replicated(self._mesh), batch, batch, batch))
    test = self._task.test
    examples = {"inputs": test["inputs"], "label": test["label"], "token_weights": test["token_weights"]}
    totals = {}
    size = _batch_size(len(test["index"]), self._batch_size, self._mesh.size)
    for batch, num_real in pipeline.inference_batches(examples, size):
      batch["token_weights"][num_real:] = 0.0  # padding rows
      sums = jax.device_get(self._compiled[key](params, teacher_params, batch["inputs"], batch["label"],
                                                batch["token_weights"]))
      for name, value in sums.items():
        totals[name] = totals.get(name, 0.0) + float(value)
    result = {"nll": totals["nll"] / totals["tokens"], "token_accuracy": totals["correct"] / totals["tokens"]}
    if "kl" in totals:
      result["kl_to_teacher"] = totals["kl"] / totals["tokens"]
    return result

  def _generated(self, model, params, temperature: float) -> list[str]:
    info = self._task.seq2seq
    tokens = generate_tokens(model, params, self._task.test["inputs"], mesh=self._mesh, batch_size=self._batch_size,
                             max_new_tokens=info.max_target_length, temperature=temperature,
                             top_k=self._generation.top_k, top_p=self._generation.top_p, seed=self._seed)
    return info.tokenizer.batch_decode(tokens, skip_special_tokens=True)

  def _label_metrics(self, texts: list[str], with_agreement: bool) -> tuple[dict, list]:
    info = self._task.seq2seq
    return label_metrics(texts, self._task.test["class_label"], info.references, info.parse,
                         self._teacher_labels if with_agreement else None)

  def during_training(self, model, params) -> dict:
    """Teacher-forced nll and token_accuracy (cheap: no generation), for the periodic test evaluations."""
    return self._token_metrics(model, params)

  def teacher_metrics(self, model, params) -> dict:
    """The teacher's metrics; keeps its parsed labels as the reference of the students' agreement."""
    texts = self._generated(model, params, self._generation.temperatures[0])
    result, self._teacher_labels = self._label_metrics(texts, with_agreement=False)
    logging.info("Teacher outputs (first 3 of the test split): %s", texts[:3])
    return {**result, **self._token_metrics(model, params), "num_examples": len(texts)}

  def final(self, model, params, teacher_model, teacher_params) -> dict:
    """A student's metrics (after teacher_metrics), at every generation temperature."""
    assert self._teacher_labels is not None, "teacher_metrics must run first"
    by_temperature = {}
    for temperature in self._generation.temperatures:
      texts = self._generated(model, params, temperature)
      by_temperature[f"{float(temperature):g}"], _ = self._label_metrics(texts, with_agreement=True)
    result = {**by_temperature[f"{float(self._generation.temperatures[0]):g}"],
              **self._token_metrics(model, params, teacher_model, teacher_params),
              "num_examples": len(self._task.test["index"])}
    result["by_generation_temperature"] = by_temperature
    return result


def _cache_metadata(task: data.TaskData, teacher_params, vocab_size: int) -> dict:
  return teacher_cache.expected_metadata(
      data_name=task.name, split="train", data_fingerprint=task.fingerprint, size=len(task.train["index"]),
      num_classes=vocab_size, teacher_fingerprint=fingerprints.fingerprint_tree(jax.device_get(teacher_params)))


def build_topk_cache(config, task: data.TaskData, teacher_model, teacher_params, mesh,
                     cache_root: str) -> tuple[seq2seq_cache.ArrayCache, dict]:
  """Loads or computes the teacher's top-k logits for every target token of the training split."""
  distill = config.distill
  vocab_size = teacher_model.module.dims.vocab_size
  k = min(distill.topk, vocab_size)
  target_length = task.train["label"].shape[1]
  metadata = seq2seq_cache.topk_metadata(_cache_metadata(task, teacher_params, vocab_size), k=k,
                                         values_dtype=distill.topk_dtype, target_length=target_length)
  cache_dir = f"{cache_root}/topk_cache/{task.fingerprint}-k{k}-{distill.topk_dtype}"
  topk_fn = seq2seq_cache.make_topk_fn(teacher_model, mesh, k=k, values_dtype=distill.topk_dtype)
  compute = seq2seq_cache.batched(lambda inputs: topk_fn(teacher_params, inputs),
                                  batch_size=config.data.eval_batch_size, num_devices=mesh.size)
  start_time = time.time()
  cache, built = seq2seq_cache.load_or_build(cache_dir, metadata, task.train, seq2seq_cache.TOPK_ARRAYS, compute)
  wall_s = time.time() - start_time
  logging.info("Top-%d teacher cache %s: %s %d examples in %.2fs (%d bytes per example).", k, cache_dir,
               "built for" if built else "loaded", len(cache.index), wall_s, cache.bytes_per_example)
  return cache, {"path": cache_dir, "built": built, "wall_s": wall_s, "k": k, "dtype": distill.topk_dtype,
                 "bytes_per_example": cache.bytes_per_example}


def targets_from_generations(tokens: np.ndarray, *, eos_token_id: int, pad_token_id: int,
                             decoder_start_token_id: int) -> dict:
  """Teacher-forcing arrays of generated ids [N, T]: every token up to and including the first EOS is real.

  Returns:
    label (-1 after the first EOS), token_weights, decoder_input_ids (label shifted right behind the start token).
  """
  is_eos = tokens == eos_token_id
  real = (np.cumsum(is_eos, axis=1) - is_eos) == 0
  label = np.where(real, tokens, -1).astype(np.int32)
  shifted = np.where(real, tokens, pad_token_id)[:, :-1]
  decoder_input_ids = np.concatenate([np.full_like(tokens[:, :1], decoder_start_token_id), shifted], axis=1)
  return {"label": label, "token_weights": real.astype(np.float32),
          "decoder_input_ids": decoder_input_ids.astype(np.int32)}


def sequence_level_examples(config, task: data.TaskData, teacher_model, teacher_params, mesh,
                            cache_root: str) -> tuple[dict, dict]:
  """The training split with the teacher's greedy outputs as targets (loaded from, or written to, the cache).

  Returns:
    (examples, stats of the generation cache).
  """
  info, dims = task.seq2seq, teacher_model.module.dims
  metadata = {**_cache_metadata(task, teacher_params, dims.vocab_size), "format": "generation",
              "max_new_tokens": info.max_target_length}
  cache_dir = f"{cache_root}/generation_cache/{task.fingerprint}"

  def generate(inputs):
    batch = jax.device_put(inputs, sharding.batch_sharded(mesh))
    return {"tokens": hf.generate(teacher_model.module, teacher_params, batch["input_ids"], batch["attention_mask"],
                                  max_new_tokens=info.max_target_length)}

  compute = seq2seq_cache.batched(generate, batch_size=config.data.eval_batch_size, num_devices=mesh.size)
  cache, built = seq2seq_cache.load_or_build(cache_dir, metadata, task.train, seq2seq_cache.GENERATION_ARRAYS,
                                             compute)
  targets = targets_from_generations(cache.lookup(task.train["index"])["tokens"], eos_token_id=dims.eos_token_id,
                                     pad_token_id=dims.pad_token_id,
                                     decoder_start_token_id=info.decoder_start_token_id)
  examples = {**task.train, "label": targets["label"], "token_weights": targets["token_weights"],
              "inputs": {**task.train["inputs"], "decoder_input_ids": targets["decoder_input_ids"]}}
  return examples, {"path": cache_dir, "built": built, "bytes_per_example": cache.bytes_per_example}
