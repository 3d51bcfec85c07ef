"""Seq2seq teacher caches: top-k logits per target token (token-level KD) and generated tokens (sequence-level KD).

A seq2seq teacher's full logits are [N, T, V] (e-SNLI train with FLAN-T5: 549,367 x 64 x 32,128 floats, 4.5 TB),
so they are never stored. The top-k cache keeps, per target token, the k largest logits and their vocabulary ids
plus the log-sum-exp of the other V - k (the tail; see `losses.topk_divergence` for how the loss uses them):

  <cache_dir>/values.npy     [N, T, k]  float16, float32, or bfloat16 stored as its uint16 bit pattern
  <cache_dir>/indices.npy    [N, T, k]  int32
  <cache_dir>/tail_logsumexp.npy  [N, T]  float32
  <cache_dir>/index.npy      [N]        int32, the example `index` of each row, ascending
  <cache_dir>/metadata.json  written last: what the arrays were computed from (teacher_cache.expected_metadata's
                             fields) plus format, k, value dtype, target length and vocabulary size

i.e. T * (6k + 4) + 4 bytes per example with float16 values. The generation cache holds the teacher's greedy
outputs, `tokens.npy` [N, max_new_tokens] int32, with the same index and metadata files.

As with the dense cache (kd_jax/teacher_cache.py), a cache is used only when its metadata equals what the run
expects, arrays are written atomically (temporary file, then rename) before the metadata, and rows are joined to
examples by `index`, never by position. Single-process: the arrays are computed on this process's devices.
"""

import dataclasses
import os
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from kd_jax import data, files, losses, sharding, teacher_cache
from kd_jax.data import pipeline

TOPK_ARRAYS = ("values", "indices", "tail_logsumexp")
GENERATION_ARRAYS = ("tokens",)
# Batch keys of the joined top-k arrays (what the train step reads back as a losses.TopKLogits).
TOPK_BATCH_KEYS = {"values": "teacher_topk_values", "indices": "teacher_topk_indices",
                   "tail_logsumexp": "teacher_tail_logsumexp"}


@dataclasses.dataclass(frozen=True)
class ArrayCache:
  """Arrays with one row per example, by example index."""
  index: np.ndarray  # [N] int32, ascending
  arrays: dict  # name -> [N, ...], row i belongs to example index[i]
  metadata: dict

  def lookup(self, indices: np.ndarray) -> dict:
    """The rows of the examples with these `index` values (any order, repeats allowed), per array."""
    indices = np.asarray(indices)
    rows = np.minimum(np.searchsorted(self.index, indices), len(self.index) - 1)
    missing = self.index[rows] != indices
    if missing.any():
      raise KeyError(f"seq2seq teacher cache has no row for example index {int(indices[missing][0])} "
                     f"({int(missing.sum())} missing); cache metadata: {self.metadata}")
    return {name: np.asarray(array[rows]) for name, array in self.arrays.items()}

  @property
  def bytes_per_example(self) -> int:
    return self.index.itemsize + sum(array.itemsize * int(np.prod(array.shape[1:])) for array in self.arrays.values())


def join_topk(examples: dict, cache: ArrayCache) -> dict:
  """`examples` plus the teacher's top-k arrays of each example, looked up by its `index`."""
  rows = cache.lookup(examples["index"])
  return {**examples, **{TOPK_BATCH_KEYS[name]: rows[name] for name in TOPK_ARRAYS}}


def has_topk(batch: dict) -> bool:
  return TOPK_BATCH_KEYS["values"] in batch


def topk_logits(batch: dict) -> losses.TopKLogits:
  """The cached teacher of a joined batch, as the loss takes it."""
  return losses.TopKLogits(*(batch[TOPK_BATCH_KEYS[name]] for name in TOPK_ARRAYS))


def topk_metadata(base_metadata: dict, *, k: int, values_dtype: str, target_length: int) -> dict:
  """teacher_cache.expected_metadata(...) (num_classes = vocabulary size) with the top-k format's fields."""
  return {**base_metadata, "format": "topk", "k": int(k), "dtype": values_dtype, "target_length": int(target_length)}


def make_topk_fn(model, mesh, *, k: int, values_dtype: str):
  """Compiles params, inputs -> {values [B, T, k] in values_dtype, indices [B, T, k], tail_logsumexp [B, T]}.

  The teacher runs in eval mode; tail_logsumexp = log sum of exp(logits) outside the top k, summed directly
  (not as logsumexp(all) minus the top k, which cancels catastrophically in float32 when the tail is small).
  """

  def topk(params, inputs):
    logits = model.apply({"params": params}, inputs, train=False).astype(jnp.float32)
    values, indices = jax.lax.top_k(logits, k)
    tail = jnp.put_along_axis(logits, indices, -jnp.inf, axis=-1, inplace=False)
    return {"values": values.astype(values_dtype), "indices": indices.astype(jnp.int32),
            "tail_logsumexp": jax.nn.logsumexp(tail, axis=-1)}

  return jax.jit(topk, in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.batch_sharded(mesh))


def _to_disk(array: np.ndarray) -> np.ndarray:
  """bfloat16 has no .npy type: it is stored as its uint16 bit pattern."""
  return array.view(np.uint16) if array.dtype == jnp.bfloat16 else array


def _from_disk(name: str, array: np.ndarray, metadata: dict) -> np.ndarray:
  return array.view(jnp.bfloat16) if name == "values" and metadata.get("dtype") == "bfloat16" else array


def load(cache_dir: str, expected_metadata: dict, names: tuple[str, ...]) -> ArrayCache | None:
  """The cache in `cache_dir` if it is complete and its metadata equals `expected_metadata`, else None."""
  metadata = teacher_cache.matching_metadata(cache_dir, expected_metadata, "Seq2seq teacher cache")
  if metadata is None:
    return None
  try:
    index = np.load(os.path.join(cache_dir, "index.npy"))
    arrays = {name: _from_disk(name, np.load(os.path.join(cache_dir, f"{name}.npy"), mmap_mode="r"), metadata)
              for name in names}
  except (OSError, ValueError) as error:
    logging.warning("Seq2seq teacher cache %s is unreadable (%s); rebuilding it.", cache_dir, error)
    return None
  if index.shape != (metadata["size"],) or any(len(array) != metadata["size"] for array in arrays.values()):
    logging.warning("Seq2seq teacher cache %s holds arrays of other sizes than its metadata says; rebuilding it.",
                    cache_dir)
    return None
  return ArrayCache(index=index, arrays=arrays, metadata=metadata)


def load_or_build(cache_dir: str, expected_metadata: dict, examples: dict, names: tuple[str, ...],
                  compute_batches: Callable[[dict], Iterator[tuple[dict, int]]]) -> tuple[ArrayCache, bool]:
  """Loads the matching cache, or computes it batch by batch into memory-mapped files and stores it.

  Args:
    cache_dir: the cache's directory.
    expected_metadata: what the arrays are computed from; written last.
    examples: the examples (with `index`) whose rows are cached.
    names: the arrays the cache holds.
    compute_batches: examples in ascending index order -> iterator of (outputs, num_real): a dict name -> [B, ...]
      array per batch of which the first num_real rows are real, in order.

  Returns:
    (cache, built): built is True when the arrays were computed in this call.
  """
  cache = load(cache_dir, expected_metadata, names)
  if cache is not None:
    return cache, False
  order = np.argsort(examples["index"], kind="stable")
  index = np.asarray(examples["index"])[order].astype(np.int32)
  assert np.all(np.diff(index) > 0), "example indices must be unique"
  os.makedirs(cache_dir, exist_ok=True)
  metadata_path = os.path.join(cache_dir, "metadata.json")
  if os.path.exists(metadata_path):
    os.remove(metadata_path)  # the arrays below are being replaced: never leave old metadata beside new arrays
  temporary = {name: os.path.join(cache_dir, f".{name}.tmp.npy") for name in names}
  arrays, start = {}, 0
  for outputs, num_real in compute_batches(data.select(examples, order)):
    for name in names:
      rows = _to_disk(np.asarray(outputs[name])[:num_real])
      if name not in arrays:
        arrays[name] = np.lib.format.open_memmap(temporary[name], mode="w+", dtype=rows.dtype,
                                                 shape=(len(index),) + rows.shape[1:])
      arrays[name][start:start + num_real] = rows
    start += num_real
  assert start == len(index), (start, len(index))
  for name in names:
    arrays[name].flush()
    del arrays[name]
    os.replace(temporary[name], os.path.join(cache_dir, f"{name}.npy"))
  files.write_npy(os.path.join(cache_dir, "index.npy"), index)
  files.write_json(metadata_path, expected_metadata)
  cache = load(cache_dir, expected_metadata, names)
  assert cache is not None, f"the cache just written to {cache_dir} does not load"
  return cache, True


def batched(fn: Callable[[dict], dict], *, batch_size: int, num_devices: int):
  """compute_batches for load_or_build: `fn(inputs of one batch)` over padded inference batches."""

  def compute_batches(examples: dict) -> Iterator[tuple[dict, int]]:
    num_examples = len(examples["index"])
    size = min(batch_size, -(-num_examples // num_devices) * num_devices)
    for batch, num_real in pipeline.inference_batches(examples["inputs"], size):
      yield jax.device_get(fn(batch)), num_real

  return compute_batches
