"""The student's training data: which signal of the teacher reaches the train step, chosen in one place (`prepare`).

  logprobs     config.teacher.source 'logprobs_file' or 'server' (causal LM, cached): the teacher's top-k logprobs
               from its file, imported once into the teacher directory (kd_jax/teachers/logprobs_file.py), as the
               top-k signal in the student's layout (losses.TopKLogits with the positions the teacher scored;
               one shared tokenizer) or on the aligned chunks (cross_tokenizer.CachedChunks; distill.cross_tokenizer).
               A cached model teacher of another tokenizer writes such a file of its own first (`_with_own_logprobs`).
  online       distill.teacher_mode='online': the teacher runs inside the step on the student's (possibly noisy)
               batch; the examples are the training split as it is.
  dense cache  teacher_mode='cached', classification: the teacher's eval-mode logits for every training example,
               computed once on its own inputs (kd_jax/teachers/teacher_cache.py, kind 'dense') and joined to the
               examples by index (`Examples.teacher` [N, C]). An ensemble (kd_jax/teachers/ensemble.py): each member's
               own dense cache, joined side by side as losses.EnsembleLogits [N, M, C]; online, its members run side by
               side.
  top-k cache  teacher_mode='cached', seq2seq and causal LM: per target token the k largest logits, their ids and
               the log-sum-exp of the others at each temperature the runs use (kind 'topk';
               teacher_cache.topk_tail_temperatures; the loss: losses.topk_divergence), joined as a
               losses.TopKLogits. A causal LM's rows cover its whole sequence; the loss reads the response positions.
  sequence     distill.strategy='sequence', seq2seq and causal LM (Kim & Rush 2016): the teacher's greedy outputs
               (kind 'generation', cached as tokens; a causal LM's responses to the prompts) replace the reference
               targets; the student learns them by cross-entropy alone (`distills` False: no distillation term).
               With on-policy distillation (causal LM, distill.on_policy_fraction > 0: TRL GKD's seq_kd with lmbda)
               the teacher also runs in the step: it scores its own responses and, in the steps that sample, the
               student's (kd_jax/training/on_policy.py), and the objective is the run's distillation loss.
"""

import dataclasses
import functools
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import data, models
from kd_jax.data import causal_lm as causal_lm_data
from kd_jax.data import text
from kd_jax.data.examples import first_inputs
from kd_jax.models import hf
from kd_jax.parallel import inference, sharding
from kd_jax.teachers import ensemble, logprobs_file, teacher_cache
from kd_jax.teachers.teacher import Teacher

logger = logging.getLogger(__name__)
# A logprobs file's signal is built (and synced to its cache's files) this many examples at a time.
LOGPROBS_BATCH = 256


@dataclasses.dataclass(frozen=True)
class StudentData:
  """What the KD student trains on.

  Attributes:
    examples: the training split, with the cached teacher signal joined by index (or the teacher's targets).
    online_teacher: the teacher to run inside the step, or None.
    distills: whether the student's objective has a distillation term (objective.Objective.from_config).
    tail_temperatures: the temperatures of the top-k cache's exact tail (losses.topk_divergence); () otherwise.
    results: what results.json records about it: {'teacher_cache': stats} or {'teacher_generations': stats}.
  """
  examples: data.Examples
  online_teacher: Teacher | None
  distills: bool
  results: dict
  tail_temperatures: tuple[float, ...] = ()


def prepare(config, task: data.TaskData, teacher: Teacher, mesh, *,
            tail_temperatures: tuple[float, ...] | None = None) -> StudentData:
  """The student's training data for `config` (see the module docstring), building or loading the teacher's cache;
  a top-k cache stores its tail at `tail_temperatures` (None: teacher_cache.topk_tail_temperatures([config]); a
  vectorized group passes its runs')."""
  if teacher.logprobs is not None:
    return _from_logprobs(config, task, teacher, tail_temperatures)
  if config.distill.strategy == "sequence" and task.causal_lm is not None:
    return _causal_lm_sequences(config, task, teacher, mesh)
  if config.distill.strategy == "sequence":
    cache, stats = _build(config, task, teacher, mesh, "generation", _generate_fn(teacher, task, mesh),
                          max_new_tokens=task.seq2seq.max_target_length)
    dims = teacher.model.module.dims
    targets = text.targets_from_generations(cache.lookup(task.train.index)["tokens"], eos_token_id=dims.eos_token_id,
                                            pad_token_id=dims.pad_token_id,
                                            decoder_start_token_id=task.seq2seq.decoder_start_token_id)
    examples = task.train.replace(label=targets["label"], token_weights=targets["token_weights"],
                                  inputs={**task.train.inputs, "decoder_input_ids": targets["decoder_input_ids"]})
    return StudentData(examples, None, distills=False, results={"teacher_generations": stats})
  if config.distill.teacher_mode == "online":
    return StudentData(task.train, ensemble.online(teacher), distills=True, results={})
  if config.distill.cross_tokenizer != "none":
    return _from_logprobs(config, task, _with_own_logprobs(config, task, teacher, mesh), tail_temperatures)
  if task.seq2seq is not None or task.causal_lm is not None:
    k = min(config.distill.topk, vocab_size(teacher, task))
    if tail_temperatures is None:
      tail_temperatures = teacher_cache.topk_tail_temperatures([config])
    exact = {"tail_temperatures": list(tail_temperatures)} if tail_temperatures else {}  # flat: the fields of old caches
    cache, stats = _build(config, task, teacher, mesh, "topk",
                          _topk_fn(teacher, mesh, k, config.distill.topk_dtype, tail_temperatures,
                                   attention_chunk=config.train.attention_chunk, scan_layers=config.train.scan_layers),
                          k=k, dtype=config.distill.topk_dtype, target_length=task.train.label.shape[1], **exact)
    return StudentData(teacher_cache.join(task.train, cache), None, distills=True,
                       results={"teacher_cache": {**stats, "k": k, "dtype": config.distill.topk_dtype,
                                                  "tail": "exact" if tail_temperatures else "flat", **exact}},
                       tail_temperatures=tuple(tail_temperatures))
  if not teacher.members:
    cache, stats = _dense(config, task, teacher, mesh)
    return StudentData(teacher_cache.join(task.train, cache), None, distills=True, results={"teacher_cache": stats})
  caches, member_stats = zip(*(_dense(config, task, member, mesh) for member in teacher.members))
  stats = {"members": list(member_stats), "built": any(member["built"] for member in member_stats),
           "bytes_per_example": sum(member["bytes_per_example"] for member in member_stats)}
  return StudentData(teacher_cache.join_members(task.train, caches), None, distills=True,
                     results={"teacher_cache": stats})


def vocab_size(teacher: Teacher, task: data.TaskData) -> int:
  """The width of the teacher's token logits (a causal LM's embedding rows may outnumber its tokenizer's tokens)."""
  one = first_inputs(task.train.teacher_view().inputs)
  return jax.eval_shape(lambda params: teacher.model.apply({"params": params}, one, train=False),
                        teacher.params).shape[-1]


def _from_logprobs(config, task: data.TaskData, teacher: Teacher,
                   tail_temperatures: tuple[float, ...] | None) -> StudentData:
  """The student's data from a teacher's logprobs (module docstring): its import stored in the teacher directory, and
  beside it its signal in the student's layout, a teacher cache keyed by the file's hash and the data (built
  `LOGPROBS_BATCH` examples at a time, resumable, joined by index as the top-k cache is)."""
  start_time = time.time()
  imported = teacher.logprobs
  import_dir = logprobs_file.store_for_run(imported, task, teacher.directory)
  k = logprobs_file.common_k(imported, config.distill.topk)
  rows = functools.partial(logprobs_file.topk_rows if config.distill.cross_tokenizer == "none"
                           else logprobs_file.chunk_rows, imported, task.causal_lm, k=k,
                           chat_template=config.data.chat_template)
  if config.distill.cross_tokenizer == "none":
    kind = "logprobs_topk"
    if tail_temperatures is None:
      tail_temperatures = teacher_cache.topk_tail_temperatures([config])
    assert tuple(tail_temperatures) in ((), (1.0,)), tail_temperatures  # the rules keep T = 1 for the exact tail
    rows = functools.partial(rows, exact_tail=bool(tail_temperatures))
    fields = {"tail": "exact" if tail_temperatures else "flat"}
  else:
    kind, tail_temperatures, fields = "logprobs_chunks", (), {}
  fields.update(k=k, chat_template=bool(config.data.chat_template))
  expected = teacher_cache.expected_metadata(
      kind, data_name=task.name, split="train", data_fingerprint=task.fingerprint, size=len(task.train),
      num_classes=task.num_classes, teacher_fingerprint=imported.sha256, **fields)
  directory = os.path.join(import_dir, f"{kind}-k{k}-{fields.get('tail', 'chunks')}")
  compute = lambda examples: ((rows(examples.select(slice(start, start + LOGPROBS_BATCH))),
                               min(LOGPROBS_BATCH, len(examples) - start))
                              for start in range(0, len(examples), LOGPROBS_BATCH))
  cache, built = teacher_cache.load_or_build(directory, expected, task.train, compute)
  stats = {"path": directory, "built": built, "wall_s": time.time() - start_time,
           "bytes_per_example": cache.bytes_per_example, "source": config.teacher.source, "file": imported.path,
           "file_sha256": imported.sha256, "signal": kind, **fields}
  logger.info("Teacher logprobs (%s, k = %d) %s %s for %d training examples in %.2fs.", kind, k,
              "built" if built else "loaded", directory, len(task.train), stats["wall_s"])
  return StudentData(teacher_cache.join(task.train, cache), None, distills=True, results={"teacher_cache": stats},
                     tail_temperatures=tuple(tail_temperatures))


def _with_own_logprobs(config, task: data.TaskData, teacher: Teacher, mesh) -> Teacher:
  """A cached teacher of another tokenizer (distill.cross_tokenizer, teacher_mode='cached'): `teacher` with its own
  logprobs file, written once into the teacher directory by its forward pass (logprobs_file.write_from_teacher: its
  top distill.topk tokens and each response token's logprob, with the byte offsets the alignment needs) and keyed by
  its weights and the data; the student then learns from it as from a served teacher's file."""
  k = min(config.distill.topk, vocab_size(teacher, task))
  path = os.path.join(teacher.directory, f"own-logprobs-k{k}-chat{int(bool(config.data.chat_template))}-"
                                         f"{teacher.fingerprint[:16]}-{task.fingerprint}.jsonl")
  if not os.path.exists(path):
    start_time = time.time()
    os.makedirs(teacher.directory, exist_ok=True)
    lines = logprobs_file.write_from_teacher(teacher.model, teacher.params, task, path, top_logprobs=k,
                                             chat_template=config.data.chat_template, mesh=mesh,
                                             batch_size=config.data.eval_batch_size)
    logger.info("Teacher logprobs: wrote %d lines (k = %d) to %s in %.2fs.", lines, k, path, time.time() - start_time)
  return dataclasses.replace(teacher, logprobs=logprobs_file.stored_or_read(path, task, teacher.directory))


def _causal_lm_sequences(config, task: data.TaskData, teacher: Teacher, mesh) -> StudentData:
  """Sequence-level KD of a causal LM: the teacher's greedy responses to the training prompts (cached as tokens)
  written behind the prompts in the training layout, learned by cross-entropy on the response tokens; with on-policy
  distillation, distilled from the teacher running in the step (the module docstring)."""
  info = task.causal_lm
  cache, stats = _build(config, task, teacher, mesh, "generation", _generate_fn(teacher, task, mesh),
                        max_new_tokens=info.max_new_tokens)
  inputs = task.train.inputs
  sequences = jax.device_get(causal_lm_data.sequences_from_responses(
      inputs["prompt_ids"], inputs["prompt_mask"], cache.lookup(task.train.index)["tokens"],
      length=inputs["input_ids"].shape[1], eos_token_ids=info.eos_token_ids, pad_token_id=info.pad_token_id))
  examples = task.train.replace(
      label=np.asarray(sequences["label"]), token_weights=np.asarray(sequences["response_mask"]),
      inputs={**inputs, "input_ids": np.asarray(sequences["input_ids"]),
              "attention_mask": np.asarray(sequences["attention_mask"])})
  if config.distill.on_policy_fraction > 0:
    return StudentData(examples, ensemble.online(teacher), distills=True, results={"teacher_generations": stats})
  return StudentData(examples, None, distills=False, results={"teacher_generations": stats})


def _dense(config, task: data.TaskData, teacher: Teacher, mesh):
  """The dense cache of one teacher (an ensemble's member has its own, in its directory) and its stats."""
  predict = inference.make_predict_fn(teacher.model, mesh)
  return _build(config, task, teacher, mesh, "dense",
                lambda inputs: {"logits": predict(teacher.params, inputs).astype(jnp.float32)},
                dtype="float32")  # float32 whatever the teacher computes in (a bfloat16 classifier's logits)


def cache_dir(teacher: Teacher, task: data.TaskData, kind: str, **fields) -> str:
  """Where the teacher's cache of `kind` for this task lives (in the teacher's directory)."""
  if kind == "dense":
    return os.path.join(teacher.directory, "logit_cache", task.fingerprint)
  if kind == "topk":
    tail = "".join(f"-T{temperature:g}" for temperature in fields.get("tail_temperatures", ()))
    return os.path.join(teacher.directory, "topk_cache", f"{task.fingerprint}-k{fields['k']}-{fields['dtype']}{tail}")
  return os.path.join(teacher.directory, "generation_cache", task.fingerprint)


def _build(config, task: data.TaskData, teacher: Teacher, mesh, kind: str, fn, **fields):
  """Loads or computes the teacher's cache of `kind` for the training split, with `fn(this process's rows of the
  teacher's inputs) -> {array name: global array}` over inference batches."""
  num_classes = task.num_classes if kind == "dense" else vocab_size(teacher, task)
  expected = teacher_cache.expected_metadata(
      kind, data_name=task.name, split="train", data_fingerprint=task.fingerprint, size=len(task.train),
      num_classes=num_classes, teacher_fingerprint=teacher.fingerprint, **fields)
  directory = cache_dir(teacher, task, kind, **fields)
  compute = lambda examples: inference.map_batches(fn, examples.teacher_view().inputs,
                                                   batch_size=config.data.eval_batch_size, num_devices=mesh.size)
  start_time = time.time()
  cache, built = teacher_cache.load_or_build(directory, expected, task.train, compute)
  wall_s = time.time() - start_time
  logger.info("Teacher cache (%s) %s: %s %d examples in %.2fs (%d bytes per example).", kind, directory,
              "built for" if built else "loaded", len(cache.index), wall_s, cache.bytes_per_example)
  return cache, {"path": directory, "built": built, "wall_s": wall_s, "bytes_per_example": cache.bytes_per_example}


def _topk_fn(teacher: Teacher, mesh, k: int, values_dtype: str, tail_temperatures: tuple[float, ...] = (), *,
             attention_chunk: int = 0, scan_layers: bool = False):
  """rows of inputs -> {values [B, T, k] in values_dtype, indices [B, T, k], tail_logsumexp [B, T] or [B, T, n]}: the
  teacher's `topk_program` (its attention query-chunked with train.attention_chunk and its layers scanned with
  train.scan_layers where it has them)."""
  model = models.with_attention_chunk(teacher.model, attention_chunk, scan_layers)
  return functools.partial(topk_program(model, mesh, k, values_dtype, tail_temperatures), teacher.params)


def topk_program(teacher_model, mesh, k: int, values_dtype: str, tail_temperatures: tuple[float, ...] = ()):
  """(teacher params, rows of inputs) -> {values [B, T, k] in values_dtype, indices [B, T, k], tail_logsumexp}
  (inference.sharded).

  The teacher runs in eval mode; tail_logsumexp = log sum of exp(logits / T_j) outside the top k at each T_j of
  `tail_temperatures` ([B, T, n], the exact tail), or of exp(logits) ([B, T], the flat tail: `tail_temperatures`
  ()), summed directly (not as logsumexp(all) minus the top k, which cancels catastrophically in float32 when the
  tail is small).
  """

  def topk(params, inputs):
    logits = teacher_model.apply({"params": params}, inputs, train=False).astype(jnp.float32)
    values, indices = jax.lax.top_k(logits, k)
    tail = jnp.put_along_axis(logits, indices, -jnp.inf, axis=-1, inplace=False)
    tail_logsumexp = (jnp.stack([jax.nn.logsumexp(tail / temperature, axis=-1) for temperature in tail_temperatures],
                                axis=-1) if tail_temperatures else jax.nn.logsumexp(tail, axis=-1))
    return {"values": values.astype(values_dtype), "indices": indices.astype(jnp.int32),
            "tail_logsumexp": tail_logsumexp}

  return inference.sharded(topk, mesh)


def _generate_fn(teacher: Teacher, task: data.TaskData, mesh):
  """rows of inputs -> {tokens [B, T]}: the teacher's greedy outputs (a causal LM's responses to the prompts)."""
  info = task.causal_lm
  prompts = ("input_ids", "attention_mask") if info is None else ("prompt_ids", "prompt_mask")
  extra = {} if info is None else {"eos_token_id": info.eos_token_ids, "pad_token_id": info.pad_token_id}

  def generate(local_inputs):
    batch = sharding.shard_batch(local_inputs, mesh)
    return {"tokens": hf.generate(teacher.model.module, teacher.params, batch[prompts[0]], batch[prompts[1]],
                                  max_new_tokens=task.seq2seq.max_target_length if info is None
                                  else info.max_new_tokens, **extra)}

  return generate
