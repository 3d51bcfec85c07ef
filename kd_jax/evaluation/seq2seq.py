"""Seq2seq evaluation helpers (e-SNLI with FLAN-T5): generation over a split, label and token metrics.

The seq2seq evaluator scores generated texts with `label_metrics` and teacher-forced tokens with `token_sums`.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.evaluation import metrics
from kd_jax.models import hf
from kd_jax.parallel import inference, sharding


def generate_tokens(model, params, inputs: dict, *, mesh, batch_size: int, max_new_tokens: int,
                    temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                    seed: int = 0) -> np.ndarray:
  """Generated ids [N, max_new_tokens] (pad after EOS) for the sources `inputs` (input_ids, attention_mask [N, S]).

  Batches are split over the mesh's data axis; batch b samples with fold_in(key(seed), b).
  """
  sources = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
  numbers = itertools.count()

  def generate(local_sources):
    batch = sharding.shard_batch(local_sources, mesh)
    return hf.generate(model.module, params, batch["input_ids"], batch["attention_mask"],
                       max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                       rng=jax.random.fold_in(jax.random.key(seed), next(numbers)))

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
