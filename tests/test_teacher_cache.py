"""The teacher cache: joined by index through a shuffled pipeline, invalidated by its metadata."""

import json
import os
import tracemalloc

import numpy as np
import pytest

from kd_jax.data import Examples, pipeline
from kd_jax.teachers import teacher_cache

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


class Killed(Exception):
  """Stands for the process being killed in the middle of a cache build."""


def test_a_killed_build_is_never_used_and_its_rerun_resumes_after_the_synced_rows(tmp_path, monkeypatch):
  monkeypatch.setattr(teacher_cache, "PROGRESS_SECONDS", 0.0)  # progress recorded after every batch
  examples = shuffled_examples()
  full = index_encoding_teacher()

  def killed_after_two_batches(ordered):
    for number, batch in enumerate(full(ordered)):
      if number == 2:
        raise Killed()
      yield batch

  with pytest.raises(Killed):
    teacher_cache.load_or_build(str(tmp_path), metadata(), examples, killed_after_two_batches)
  assert teacher_cache.load(str(tmp_path), metadata()) is None  # no metadata: the half cache is never used
  seen = []

  def remaining(ordered):
    seen.extend(ordered.index.tolist())
    return full(ordered)

  cache, built = teacher_cache.load_or_build(str(tmp_path), metadata(), examples, remaining)
  assert built and seen == sorted(examples.index.tolist())[32:]  # two batches of 16 were on disk
  np.testing.assert_array_equal(cache.lookup(examples.index)["logits"], index_encoding_logits(examples.index))
  assert sorted(os.listdir(tmp_path)) == ["index.npy", "logits.npy", "metadata.json"]
  # A killed build of another cache (another teacher) is not resumed: its rows are not this cache's.
  with pytest.raises(Killed):
    teacher_cache.load_or_build(str(tmp_path), metadata(teacher_fingerprint="t2"), examples, killed_after_two_batches)
  seen.clear()
  cache, built = teacher_cache.load_or_build(str(tmp_path), metadata(), examples, remaining)
  assert built and seen == sorted(examples.index.tolist())
  np.testing.assert_array_equal(cache.lookup(examples.index)["logits"], index_encoding_logits(examples.index))


def test_join_and_training_batches_hold_batches_not_the_cache(tmp_path):
  """The memory-bounded join: joining a 16 MiB cache to its examples and streaming batches through the tf.data
  pipeline allocates (tracemalloc: NumPy's buffers and Python objects) under a quarter of the cache, where a join
  that materializes the rows (as kd_jax's did: 18.5 MiB) allocates all of it; the batches carry each example's row."""
  size, num_classes = 4096, 1024
  examples = shuffled_examples(size=size)
  columns = np.arange(num_classes, dtype=np.float32)

  def wide_teacher(ordered):
    for start in range(0, len(ordered), 512):
      index = ordered.index[start:start + 512].astype(np.float32)
      yield {"logits": index[:, None] * num_classes + columns}, len(index)

  expected = metadata(size=size, num_classes=num_classes)
  cache, _ = teacher_cache.load_or_build(str(tmp_path), expected, examples, wide_teacher)
  cache_bytes = cache.arrays["logits"].nbytes
  assert cache_bytes == 16 * 2**20
  pipeline.tensorflow()  # imported before measuring

  def join_and_feed():
    joined = teacher_cache.join(examples, cache)
    batches = pipeline.train_batches(joined, batch_size=64, seed=3)
    for _ in range(20):
      batch = next(batches)
      np.testing.assert_array_equal(batch.teacher, batch.index[:, None].astype(np.float32) * num_classes + columns)
    return joined

  # Measured on a second pass: the first one's one-time allocations (tf.data's first pipeline in this process, lazy
  # imports) once took a 2.7 MiB peak to 4.1 MiB; a join that materializes the rows allocates them on every pass.
  join_and_feed()
  tracemalloc.start()
  try:
    joined = join_and_feed()
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < cache_bytes / 4, f"joining and feeding allocated {peak / 2**20:.1f} MiB of a 16 MiB cache"
  # Read whole, or by mask, slice or row, the joined rows are the cache's rows of the examples, in their order.
  rows = cache.lookup(examples.index)["logits"]
  np.testing.assert_array_equal(np.asarray(joined.teacher), rows)
  mask = examples.index % 3 == 0
  for key in (mask, slice(5, 50, 7), 17, np.array([3, 3, 0])):
    np.testing.assert_array_equal(joined.teacher[key], rows[key])
  assert joined.teacher.shape == rows.shape and joined.teacher.dtype == rows.dtype and len(joined.teacher) == size
