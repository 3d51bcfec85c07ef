"""The teacher-logit cache: joined by index through a shuffled pipeline, invalidated by its metadata."""

import json
import os

import numpy as np
import pytest

from kd_jax import teacher_cache
from kd_jax.data import pipeline

NUM_CLASSES = 3


def index_encoding_logits(index):
  """A 'teacher' whose logits spell out the example index, so a misaligned row is obvious."""
  index = np.asarray(index, np.float32)
  return np.stack([index, -index, index * 0.5], axis=-1)


def metadata(**overrides):
  values = dict(data_name="digits", split="train", data_fingerprint="abc", size=40, num_classes=NUM_CLASSES,
                teacher_fingerprint="t1")
  values.update(overrides)
  return teacher_cache.expected_metadata(**values)


def shuffled_examples(seed=0, size=40):
  index = np.random.default_rng(seed).permutation(np.arange(size) * 7 + 3).astype(np.int32)
  return {"index": index, "inputs": np.zeros((size, 2), np.float32), "label": np.zeros(size, np.int32)}


def test_alignment_canary_through_shuffled_pipeline(tmp_path):
  """The notebook bug (cached logits sliced by position while the loader shuffles) cannot happen here."""
  examples = shuffled_examples()
  cache, built = teacher_cache.load_or_build(str(tmp_path), metadata(), examples["index"],
                                             lambda: index_encoding_logits(examples["index"]))
  assert built
  joined = teacher_cache.join(examples, cache)
  batches = pipeline.train_batches(joined, batch_size=8, seed=11)
  seen = set()
  for _ in range(15):  # three epochs, each in a different order
    batch = next(batches)
    np.testing.assert_array_equal(batch["teacher_logits"], index_encoding_logits(batch["index"]))
    seen.update(batch["index"].tolist())
  assert seen == set(examples["index"].tolist())


def test_lookup_by_index_in_any_order_and_missing_index(tmp_path):
  examples = shuffled_examples()
  cache, _ = teacher_cache.load_or_build(str(tmp_path), metadata(), examples["index"],
                                         lambda: index_encoding_logits(examples["index"]))
  wanted = examples["index"][::-3]
  np.testing.assert_array_equal(cache.lookup(wanted), index_encoding_logits(wanted))
  with pytest.raises(KeyError, match="no logits for example index 4"):
    cache.lookup(np.array([3, 4]))


def test_reload_uses_the_cache_and_mismatch_rebuilds(tmp_path):
  examples = shuffled_examples()
  calls = []

  def compute():
    calls.append(1)
    return index_encoding_logits(examples["index"])

  teacher_cache.load_or_build(str(tmp_path), metadata(), examples["index"], compute)
  _, built = teacher_cache.load_or_build(str(tmp_path), metadata(), examples["index"], compute)
  assert not built and len(calls) == 1
  # Another teacher (or another data split) must never reuse these logits.
  _, built = teacher_cache.load_or_build(str(tmp_path), metadata(teacher_fingerprint="t2"), examples["index"], compute)
  assert built and len(calls) == 2
  assert json.load(open(tmp_path / "metadata.json"))["teacher_fingerprint"] == "t2"


def test_partial_or_corrupt_cache_is_rebuilt(tmp_path):
  examples = shuffled_examples()
  compute = lambda: index_encoding_logits(examples["index"])
  teacher_cache.load_or_build(str(tmp_path), metadata(), examples["index"], compute)
  os.remove(tmp_path / "metadata.json")  # a run killed before the metadata (written last) landed
  assert teacher_cache.load(str(tmp_path), metadata()) is None
  teacher_cache.load_or_build(str(tmp_path), metadata(), examples["index"], compute)
  with open(tmp_path / "logits.npy", "r+b") as stream:  # truncated array file
    stream.truncate(100)
  assert teacher_cache.load(str(tmp_path), metadata()) is None
  cache, built = teacher_cache.load_or_build(str(tmp_path), metadata(), examples["index"], compute)
  assert built
  np.testing.assert_array_equal(cache.lookup(examples["index"]), compute())
