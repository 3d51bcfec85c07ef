"""Teacher-logit cache: the teacher's eval-mode logits for a split, computed once, stored with what they depend on.

On disk (`<cache_dir>/`): `logits.npy` [N, C] float32, `index.npy` [N] int32 (the example `index` of each row) and
`metadata.json`, written last: data set, split, size, data fingerprint (examples + preprocessing), teacher
fingerprint (hash of its parameters), number of classes. A cache is used only if its metadata equals what the
current run expects; otherwise it is rebuilt (with a warning naming the fields that differ).

Logits are joined to examples by their `index`, never by position: `lookup(indices)` returns the rows of exactly
those examples, in the order asked, and fails loudly for an index the cache does not hold.

In a multi-process run every process computes its share of the logits (and receives all of them); process 0 alone
writes the files, and the others wait for it.
"""

import dataclasses
import os
from typing import Callable

import numpy as np
from absl import logging

from kd_jax import distributed, files

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TeacherLogitCache:
  """Teacher logits by example index."""
  index: np.ndarray  # [N] int, sorted ascending
  logits: np.ndarray  # [N, C], row i belongs to example index[i]
  metadata: dict

  def lookup(self, indices: np.ndarray) -> np.ndarray:
    """Logits [len(indices), C] of the examples with these `index` values (any order, repeats allowed)."""
    indices = np.asarray(indices)
    rows = np.searchsorted(self.index, indices)
    rows = np.minimum(rows, len(self.index) - 1)
    missing = self.index[rows] != indices
    if missing.any():
      raise KeyError(f"teacher-logit cache has no logits for example index {int(indices[missing][0])} "
                     f"({int(missing.sum())} missing); cache metadata: {self.metadata}")
    return self.logits[rows]


def join(examples: dict, cache: TeacherLogitCache) -> dict:
  """`examples` plus `teacher_logits`, row by row looked up by each example's `index` (never by position)."""
  return {**examples, "teacher_logits": cache.lookup(examples["index"])}


def matching_metadata(cache_dir: str, expected_metadata: dict, what: str) -> dict | None:
  """The metadata of the cache in `cache_dir` when it exists (it is written last) and equals `expected_metadata`;
  else None, with a warning naming the fields that differ (`what`: the kind of cache, for the message)."""
  metadata_path = os.path.join(cache_dir, "metadata.json")
  if not os.path.exists(metadata_path):
    return None
  metadata = files.read_json(metadata_path)
  if metadata != expected_metadata:
    differing = sorted(key for key in set(metadata) | set(expected_metadata)
                       if metadata.get(key) != expected_metadata.get(key))
    logging.warning("%s %s does not match this run (%s differ); rebuilding it.", what, cache_dir,
                    ", ".join(f"{key}: {metadata.get(key)!r} != {expected_metadata.get(key)!r}" for key in differing))
    return None
  return metadata


def load(cache_dir: str, expected_metadata: dict) -> TeacherLogitCache | None:
  """The cache in `cache_dir` if it is complete and its metadata equals `expected_metadata`, else None."""
  metadata = matching_metadata(cache_dir, expected_metadata, "Teacher-logit cache")
  if metadata is None:
    return None
  try:
    index = np.load(os.path.join(cache_dir, "index.npy"), mmap_mode="r")
    logits = np.load(os.path.join(cache_dir, "logits.npy"), mmap_mode="r")
  except (OSError, ValueError) as error:
    logging.warning("Teacher-logit cache %s is unreadable (%s); rebuilding it.", cache_dir, error)
    return None
  if index.shape != (metadata["size"],) or logits.shape != (metadata["size"], metadata["num_classes"]):
    logging.warning("Teacher-logit cache %s holds arrays of shapes %s, %s, not what its metadata says; rebuilding it.",
                    cache_dir, index.shape, logits.shape)
    return None
  return TeacherLogitCache(index=np.asarray(index), logits=logits, metadata=metadata)


def load_or_build(cache_dir: str, expected_metadata: dict, example_index: np.ndarray,
                  compute_logits: Callable[[], np.ndarray]) -> tuple[TeacherLogitCache, bool]:
  """Loads the matching cache, or computes `compute_logits()` (rows in `example_index` order) and stores it.

  Returns:
    (cache, built): built is True when the logits were computed in this call.
  """
  cache = load(cache_dir, expected_metadata)
  distributed.check_same_on_all_processes(cache is not None, f"whether the teacher-logit cache {cache_dir} is usable")
  if cache is not None:
    return cache, False
  order = np.argsort(example_index, kind="stable")
  index = np.asarray(example_index)[order].astype(np.int32)
  assert np.all(np.diff(index) > 0), "example indices must be unique"
  logits = np.asarray(compute_logits(), np.float32)[order]
  assert logits.shape == (expected_metadata["size"], expected_metadata["num_classes"]), logits.shape
  if distributed.is_main_process():
    metadata_path = os.path.join(cache_dir, "metadata.json")
    if os.path.exists(metadata_path):
      os.remove(metadata_path)  # the arrays below are being replaced: never leave old metadata beside new arrays
    files.write_npy(os.path.join(cache_dir, "index.npy"), index)
    files.write_npy(os.path.join(cache_dir, "logits.npy"), logits)
    files.write_json(metadata_path, expected_metadata)
  distributed.barrier(f"teacher-logit cache {cache_dir} written")
  return TeacherLogitCache(index=index, logits=logits, metadata=expected_metadata), True


def expected_metadata(*, data_name: str, split: str, data_fingerprint: str, size: int, num_classes: int,
                      teacher_fingerprint: str) -> dict:
  """What a cache of the teacher's logits for this split must have been computed from."""
  return {"format_version": FORMAT_VERSION, "data": data_name, "split": split, "data_fingerprint": data_fingerprint,
          "size": int(size), "num_classes": int(num_classes), "teacher_fingerprint": teacher_fingerprint,
          "mode": "eval", "dtype": "float32"}
