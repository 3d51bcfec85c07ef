"""The teacher cache: joined by index through a shuffled pipeline, invalidated by its metadata."""

import json
import os

import numpy as np
import pytest

from kd_jax import teacher_cache
from kd_jax.data import Examples, pipeline

NUM_CLASSES = 3


def index_encoding_logits(index):
  """A 'teacher' whose logits spell out the example index, so a misaligned row is obvious."""
  index = np.asarray(index, np.float32)
  return np.stack([index, -index, index * 0.5], axis=-1)


def metadata(**overrides):
  values = dict(data_name="digits", split="train", data_fingerprint="abc", size=40, num_classes=NUM_CLASSES,
                teacher_fingerprint="t1", dtype="float32")
  values.update(overrides)
  return teacher_cache.expected_metadata("dense", **values)


def shuffled_examples(seed=0, size=40):
  index = np.random.default_rng(seed).permutation(np.arange(size) * 7 + 3).astype(np.int32)
  return Examples(index=index, inputs=np.zeros((size, 2), np.float32), label=np.zeros(size, np.int32))


def index_encoding_teacher(calls=None, batch_size=16):
  """compute_batches of a teacher whose logits spell out the index, in batches of `batch_size` (the last one padded
  with garbage rows that the cache must drop)."""

  def compute_batches(examples):
    if calls is not None:
      calls.append(1)
    for start in range(0, len(examples), batch_size):
      index = examples.index[start:start + batch_size]
      padded = np.concatenate([index, np.full(batch_size - len(index), -999, np.int32)])
      yield {"logits": index_encoding_logits(padded)}, len(index)

  return compute_batches


def test_alignment_canary_through_shuffled_pipeline(tmp_path):
  """The notebook bug (cached logits sliced by position while the loader shuffles) cannot happen here."""
  examples = shuffled_examples()
  cache, built = teacher_cache.load_or_build(str(tmp_path), metadata(), examples, index_encoding_teacher())
  assert built
  joined = teacher_cache.join(examples, cache)
  batches = pipeline.train_batches(joined, batch_size=8, seed=11)
  seen = set()
  for _ in range(15):  # three epochs, each in a different order
    batch = next(batches)
    np.testing.assert_array_equal(batch.teacher, index_encoding_logits(batch.index))
    seen.update(batch.index.tolist())
  assert seen == set(examples.index.tolist())


def test_lookup_by_index_in_any_order_and_missing_index(tmp_path):
  examples = shuffled_examples()
  cache, _ = teacher_cache.load_or_build(str(tmp_path), metadata(), examples, index_encoding_teacher())
  wanted = examples.index[::-3]
  np.testing.assert_array_equal(cache.lookup(wanted)["logits"], index_encoding_logits(wanted))
  with pytest.raises(KeyError, match="no row for example index 4"):
    cache.lookup(np.array([3, 4]))


def test_reload_uses_the_cache_and_mismatch_rebuilds(tmp_path):
  examples = shuffled_examples()
  calls = []
  teacher_cache.load_or_build(str(tmp_path), metadata(), examples, index_encoding_teacher(calls))
  _, built = teacher_cache.load_or_build(str(tmp_path), metadata(), examples, index_encoding_teacher(calls))
  assert not built and len(calls) == 1
  # Another teacher (or another data split) must never reuse these logits.
  _, built = teacher_cache.load_or_build(str(tmp_path), metadata(teacher_fingerprint="t2"), examples,
                                         index_encoding_teacher(calls))
  assert built and len(calls) == 2
  assert json.load(open(tmp_path / "metadata.json"))["teacher_fingerprint"] == "t2"


def test_partial_or_corrupt_cache_is_rebuilt(tmp_path):
  examples = shuffled_examples()
  teacher_cache.load_or_build(str(tmp_path), metadata(), examples, index_encoding_teacher())
  os.remove(tmp_path / "metadata.json")  # a run killed before the metadata (written last) landed
  assert teacher_cache.load(str(tmp_path), metadata()) is None
  teacher_cache.load_or_build(str(tmp_path), metadata(), examples, index_encoding_teacher())
  with open(tmp_path / "logits.npy", "r+b") as stream:  # truncated array file
    stream.truncate(100)
  assert teacher_cache.load(str(tmp_path), metadata()) is None
  cache, built = teacher_cache.load_or_build(str(tmp_path), metadata(), examples, index_encoding_teacher())
  assert built
  np.testing.assert_array_equal(cache.lookup(examples.index)["logits"], index_encoding_logits(examples.index))
