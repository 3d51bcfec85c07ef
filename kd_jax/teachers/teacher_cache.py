"""Teacher caches: what a teacher computed for the training split, stored once, with what it was computed from.

One format serves every kind (kd_jax/teachers/student_data.py chooses which): arrays with one row per example,

  <cache_dir>/<name>.npy     [N, ...] per array: 'logits' [N, C] float32 (dense); 'values' [N, T, k] (float16,
                             float32, or bfloat16 stored as its uint16 bit pattern), 'indices' [N, T, k] int32 and
                             'tail_logsumexp' [N, T] float32, or [N, T, n] at the n temperatures of its metadata's
                             'tail_temperatures' (top-k per target token: `topk_tail_temperatures`); 'tokens' [N, T]
                             int32 (the teacher's generations, sequence-level KD); a logprobs file's signal in the
                             student's layout: 'logprobs_topk' (the top-k arrays and 'weights' [N, T], the positions
                             the file scored) or 'logprobs_chunks' (the fields of cross_tokenizer.CachedChunks)
  <cache_dir>/index.npy      [N] int32, the example `index` of each row, ascending
  <cache_dir>/metadata.json  written last: the cache's kind, the data set, split, size and data fingerprint, the
                             teacher's fingerprint (a hash of its parameters) and the kind's own fields

A cache is used only when its metadata equals what the run expects (else it is rebuilt, with a warning naming the
fields that differ). Its arrays are appended batch by batch to temporary files (plain writes: the build holds one
batch in memory whatever the cache's size), renamed into place before the metadata, so a killed build leaves no
usable half cache; `.progress.json`, written every PROGRESS_SECONDS after the rows it counts are on disk, lets a rerun
of the same build resume after those rows (another build starts afresh). Rows are joined to examples by their
`index`, never by position: `lookup(indices)` returns the rows of exactly those examples, in the order asked, and
fails loudly for an index the cache does not hold; `join` gives the examples `CacheRows`, which read the rows of a
batch from the files when the batch is gathered, so that joining and training hold batches, not the cache.

In a multi-process run every process computes (the inference is data-parallel over all of them) and receives every
row; process 0 alone writes the files, and the others wait for it, then read them.
"""

import dataclasses
import logging
import os
import time
from typing import Callable, Iterator

import jax.numpy as jnp
import numpy as np

from kd_jax import files
from kd_jax.config import paths, rules
from kd_jax.data import Examples
from kd_jax.parallel import distributed
from kd_jax.training import cross_tokenizer, losses

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
KINDS = {"dense": ("logits",), "topk": ("values", "indices", "tail_logsumexp"), "generation": ("tokens",),
         # A teacher's logprobs file in the student's layout (kd_jax/teachers/logprobs_file.py): the top-k signal
         # with the positions it scored, or its aligned chunks (one tokenizer, or another).
         "logprobs_topk": ("values", "indices", "tail_logsumexp", "weights"),
         "logprobs_chunks": ("student_chunk", "log_likelihood", "top_log_q", "top_ids")}
# A build records how far it got (after syncing its rows to disk) at most this often.
PROGRESS_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class ArrayCache:
  """Arrays with one row per example, by example index."""
  index: np.ndarray  # [N] int32, ascending
  arrays: dict  # name -> [N, ...] (memory-mapped), row i belongs to example index[i]
  metadata: dict

  def rows_of(self, indices: np.ndarray) -> np.ndarray:
    """The row numbers [n] of the examples with these `index` values (any order, repeats allowed); a KeyError for
    an index the cache does not hold."""
    indices = np.asarray(indices)
    rows = np.minimum(np.searchsorted(self.index, indices), len(self.index) - 1)
    missing = self.index[rows] != indices
    if missing.any():
      raise KeyError(f"teacher cache has no row for example index {int(indices[missing][0])} "
                     f"({int(missing.sum())} missing); cache metadata: {self.metadata}")
    return rows

  def lookup(self, indices: np.ndarray) -> dict:
    """The rows of the examples with these `index` values (any order, repeats allowed), per array, in memory."""
    rows = self.rows_of(indices)
    return {name: np.asarray(array[rows]) for name, array in self.arrays.items()}

  def joined_rows(self, indices: np.ndarray) -> dict:
    """Like `lookup`, but each array as `CacheRows`: read from the file when rows of it are asked for."""
    rows = self.rows_of(indices)
    return {name: CacheRows(array, rows) for name, array in self.arrays.items()}

  @property
  def bytes_per_example(self) -> int:
    return self.index.itemsize + sum(array.itemsize * int(np.prod(array.shape[1:])) for array in self.arrays.values())


class CacheRows:
  """Rows of one cache array for a list of examples: row i is row `rows[i]` of the array's .npy file.

  Array-like where the pipelines need it (shape, dtype, nbytes, len, `[rows]` and np.asarray give NumPy arrays), but
  the rows are read only when asked for, each time through a fresh memory map of the file that is closed once they
  are copied out: gathering a batch reads the batch, and the pages read do not stay in the process's memory (a map
  held open for a whole epoch would hold every page it ever touched: the whole cache).
  """

  def __init__(self, array: np.memmap, rows: np.ndarray):
    assert isinstance(array, np.memmap) and array.flags.c_contiguous, type(array)
    self._path, self._offset, self._file_shape = array.filename, array.offset, array.shape
    self._rows = np.asarray(rows, np.int64)
    self.dtype = array.dtype
    self.shape = (len(self._rows),) + array.shape[1:]
    self.ndim = len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  @property
  def nbytes(self) -> int:
    return len(self) * self.dtype.itemsize * int(np.prod(self.shape[1:]))

  def __array__(self, dtype=None, copy=None):
    del copy  # always a new array
    array = self[np.arange(len(self))]
    return array if dtype is None else array.astype(dtype)

  def __getitem__(self, key) -> np.ndarray:
    """The rows `key` selects (row numbers, a boolean mask, a slice or one row), read from the file, in that order."""
    wanted = self._rows[key]
    mapped = np.memmap(self._path, dtype=self.dtype, mode="r", offset=self._offset, shape=self._file_shape)
    try:
      rows = mapped[np.atleast_1d(wanted)].view(np.ndarray)  # a copy: fancy indexing
    finally:
      del mapped  # unmapped: the pages read leave the process
    return rows[0] if wanted.ndim == 0 else rows


def topk_tail_temperatures(configs) -> tuple[float, ...]:
  """The temperatures at which the top-k cache of these runs (one run, or a vectorized group sharing one cache) stores
  its tail's log-sum-exp (losses.topk_divergence's exact tail): every distinct distill.temperature, ascending; ()
  with distill.topk_tail='flat' (one log-sum-exp at T = 1) and for runs without a top-k cache (a distill section
  without its task, as the benchmarks build objectives, has none)."""
  if "data" not in configs[0] or not rules.uses_topk_cache(configs[0]) or configs[0].distill.topk_tail == "flat":
    return ()
  return tuple(sorted({float(config.distill.temperature) for config in configs}))


def join(examples: Examples, cache: ArrayCache) -> Examples:
  """`examples` with the cached teacher signal of each example, looked up by its `index` (never by position), as
  `Examples.teacher`: the dense logits [N, C], or the top-k cache's losses.TopKLogits (a logprobs file's with its
  weights), or a logprobs file's cross_tokenizer.CachedChunks, of `CacheRows` (nothing is read until rows are
  gathered)."""
  rows = cache.joined_rows(examples.index)
  kind = cache.metadata["format"]
  if kind == "dense":
    return examples.replace(teacher=rows["logits"])
  if kind == "logprobs_chunks":
    return examples.replace(teacher=cross_tokenizer.CachedChunks(**rows))
  assert kind in ("topk", "logprobs_topk"), kind
  return examples.replace(teacher=losses.TopKLogits(**rows))


def join_members(examples: Examples, caches) -> Examples:
  """`examples` with the dense caches of an ensemble's M members (one per member, each keyed by its own teacher)
  side by side, as `Examples.teacher` = losses.EnsembleLogits [N, M, C]."""
  assert all(cache.metadata["format"] == "dense" for cache in caches), [cache.metadata["format"] for cache in caches]
  return examples.replace(teacher=losses.EnsembleLogits(
      np.stack([cache.lookup(examples.index)["logits"] for cache in caches], axis=1)))


def expected_metadata(kind: str, *, data_name: str, split: str, data_fingerprint: str, size: int, num_classes: int,
                      teacher_fingerprint: str, **kind_fields) -> dict:
  """What a cache of kind `kind` (KINDS) must have been computed from: the data, the teacher, and the kind's own
  fields (the top-k cache's k, value dtype and target length; the generation cache's token count)."""
  assert kind in KINDS, kind
  return {"format_version": FORMAT_VERSION, "format": kind, "data": data_name, "split": split,
          "data_fingerprint": data_fingerprint, "size": int(size), "num_classes": int(num_classes),
          "teacher_fingerprint": teacher_fingerprint, **files.as_json_value(kind_fields)}


def _to_disk(array: np.ndarray) -> np.ndarray:
  """bfloat16 has no .npy type: it is stored as its uint16 bit pattern."""
  return array.view(np.uint16) if array.dtype == jnp.bfloat16 else array


def _from_disk(name: str, array: np.ndarray, metadata: dict) -> np.ndarray:
  return array.view(jnp.bfloat16) if name == "values" and metadata.get("dtype") == "bfloat16" else array


def _matching_metadata(cache_dir: str, expected: dict) -> dict | None:
  """The metadata of the cache in `cache_dir` when it exists (it is written last) and equals `expected`; else None,
  with a warning naming the fields that differ."""
  metadata_path = os.path.join(cache_dir, "metadata.json")
  if not os.path.exists(metadata_path):
    return None
  metadata = files.read_json(metadata_path)
  differing = paths.differing(metadata, expected, missing_differs=True)
  if differing:
    logger.warning("Teacher cache %s does not match this run (%s differ); rebuilding it.", cache_dir,
                   ", ".join(f"{key}: {paths.flatten(metadata).get(key)!r} != "
                              f"{paths.flatten(expected).get(key)!r}" for key in differing))
    return None
  return metadata


def load(cache_dir: str, expected: dict) -> ArrayCache | None:
  """The cache in `cache_dir` if it is complete and its metadata equals `expected`, else None."""
  metadata = _matching_metadata(cache_dir, expected)
  if metadata is None:
    return None
  try:
    index = np.load(os.path.join(cache_dir, "index.npy"))
    arrays = {name: _from_disk(name, np.load(os.path.join(cache_dir, f"{name}.npy"), mmap_mode="r"), metadata)
              for name in KINDS[metadata["format"]]}
  except (OSError, ValueError) as error:
    logger.warning("Teacher cache %s is unreadable (%s); rebuilding it.", cache_dir, error)
    return None
  if index.shape != (metadata["size"],) or any(len(array) != metadata["size"] for array in arrays.values()):
    logger.warning("Teacher cache %s holds arrays of other sizes than its metadata says; rebuilding it.", cache_dir)
    return None
  return ArrayCache(index=index, arrays=arrays, metadata=metadata)


def load_or_build(cache_dir: str, expected: dict, examples: Examples,
                  compute_batches: Callable[[Examples], Iterator[tuple[dict, int]]]) -> tuple[ArrayCache, bool]:
  """Loads the matching cache, or computes it batch by batch into files (resuming a killed build of the same cache
  after the rows its `.progress.json` counts) and stores it.

  Args:
    cache_dir: the cache's directory.
    expected: `expected_metadata(...)`: what the arrays are computed from; written last.
    examples: the examples whose rows are cached.
    compute_batches: examples in ascending index order -> iterator of (outputs, num_real): a dict name -> [B, ...]
      array per batch (every array of the kind) of which the first num_real rows are real, in order. Called on every
      process.

  Returns:
    (cache, built): built is True when the arrays were computed in this call.
  """
  cache = load(cache_dir, expected)
  distributed.check_same_on_all_processes(cache is not None, f"whether the teacher cache {cache_dir} is usable")
  if cache is not None:
    return cache, False
  order = np.argsort(examples.index, kind="stable")
  index = np.asarray(examples.index)[order].astype(np.int32)
  assert np.all(np.diff(index) > 0), "example indices must be unique"
  names = KINDS[expected["format"]]
  writes = distributed.is_main_process()
  metadata_path = os.path.join(cache_dir, "metadata.json")
  progress_path = os.path.join(cache_dir, ".progress.json")
  temporary = {name: os.path.join(cache_dir, f".{name}.tmp.npy") for name in names}
  if writes:
    os.makedirs(cache_dir, exist_ok=True)
    if os.path.exists(metadata_path):
      os.remove(metadata_path)  # the arrays below are being replaced: never leave old metadata beside new arrays
  done = _resumable_rows(progress_path, expected, temporary)
  distributed.check_same_on_all_processes(done, f"the rows of the teacher cache {cache_dir} already built")
  if done:
    logger.info("Teacher cache %s: resuming a killed build after %d of %d rows.", cache_dir, done, len(index))
  ordered = examples if np.array_equal(order, np.arange(len(order))) else examples.select(order)
  streams, start, synced_time = {}, done, time.time()
  batches = compute_batches(ordered.select(slice(done, None))) if done < len(index) else ()
  try:
    for outputs, num_real in batches:
      for name in names if writes else ():
        rows = np.ascontiguousarray(_to_disk(np.asarray(outputs[name])[:num_real]))
        if name not in streams:
          streams[name] = _open_rows_file(temporary[name], rows.dtype, (len(index),) + rows.shape[1:], done)
        streams[name].write(memoryview(rows).cast("B"))
      start += num_real
      if writes and time.time() - synced_time > PROGRESS_SECONDS:
        _sync(streams.values())
        files.write_json(progress_path, {"expected": expected, "rows": start})
        synced_time = time.time()
    assert start == len(index), (start, len(index))
    if writes:
      _sync(streams.values())
  finally:
    for stream in streams.values():
      stream.close()
  if writes:
    for name in names:
      os.replace(temporary[name], os.path.join(cache_dir, f"{name}.npy"))
    files.write_npy(os.path.join(cache_dir, "index.npy"), index)
    files.write_json(metadata_path, expected)
    if os.path.exists(progress_path):
      os.remove(progress_path)
  distributed.barrier(f"teacher cache {cache_dir} written")
  cache = load(cache_dir, expected)
  assert cache is not None, f"the cache just written to {cache_dir} does not load"
  return cache, True


def _open_rows_file(path: str, dtype: np.dtype, shape: tuple, done: int):
  """A binary stream appending rows to the .npy file `path` of `shape`: a new file (header only) when `done` is 0,
  else the file cut after its first `done` rows."""
  if not done:
    stream = open(path, "wb")
    np.lib.format.write_array_header_1_0(stream, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": shape})
    return stream
  with open(path, "rb") as stream:
    np.lib.format.read_magic(stream)
    header_shape, _, header_dtype = np.lib.format.read_array_header_1_0(stream)
    rows_start = stream.tell()
  assert header_shape == shape and header_dtype == dtype, (path, header_shape, shape, header_dtype, dtype)
  stream = open(path, "r+b")
  stream.truncate(rows_start + done * dtype.itemsize * int(np.prod(shape[1:])))
  stream.seek(0, os.SEEK_END)
  return stream


def _sync(streams) -> None:
  for stream in streams:
    stream.flush()
    os.fsync(stream.fileno())


def _resumable_rows(progress_path: str, expected: dict, temporary: dict) -> int:
  """The rows a killed build of this very cache synced to its temporary files (its `.progress.json`), else 0."""
  if not os.path.exists(progress_path):
    return 0
  progress = files.read_json(progress_path)
  if progress.get("expected") != expected or not all(os.path.exists(path) for path in temporary.values()):
    return 0
  try:
    for path in temporary.values():
      with open(path, "rb") as stream:
        np.lib.format.read_magic(stream)
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        needed = stream.tell() + progress["rows"] * dtype.itemsize * int(np.prod(shape[1:]))
      if shape[0] != expected["size"] or os.path.getsize(path) < needed:
        return 0
  except (OSError, ValueError):
    return 0
  return int(progress["rows"])
