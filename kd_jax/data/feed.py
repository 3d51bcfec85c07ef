"""Training data for the loop's compiled chunks: the batches of `num_steps` consecutive steps per call.

The batches are those of `pipeline.train_batches` / `pipeline.train_rows`: a function of (examples, batch size,
seed, step), so a resumed run sees the batches an uninterrupted one would. Training sets of at most
`config.train.device_data_max_mib` stay on the devices and a chunk takes only the row numbers of its batches
[max_steps, batch], gathered on the device step by step (`steps.run_steps`); larger ones come from the tf.data
pipeline, gathered and prefetched in background threads, stacked [max_steps, batch, ...] and transferred once per
chunk. Either way a chunk's data is padded to max_steps, so that every chunk length reuses one compiled program.
"""

import itertools
from typing import Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kd_jax.data import pipeline
from kd_jax.data.examples import widened
from kd_jax.parallel import sharding

def data_bytes(examples) -> int:
  return sum(leaf.nbytes for leaf in jax.tree.leaves(examples))


def in_memory(examples):
  """`examples` with every array in memory (a joined cache's teacher_cache.CacheRows read whole) and narrow token
  arrays as int32 (`examples.widened`), for the devices."""
  return widened(jax.tree.map(np.asarray, examples))


class ChunkFeeder:
  """One run's training batches, `num_steps` consecutive global steps at a time from `start_step`.

  `next(num_steps)` gives the chunk's data arguments: (examples on every device, rows [max_steps, batch] split
  over the data axis) when `device_resident`, else (stacked batches [max_steps, batch, ...] split over the data
  axis,) from this process's share of tf.data's batches.
  """

  def __init__(self, examples, *, batch_size: int, seed: int, start_step: int, max_steps: int, mesh: Mesh,
               device_resident: bool):
    self.device_resident = device_resident
    self._max_steps = max_steps
    self._mesh = mesh
    if device_resident:
      self._examples = sharding.replicate(in_memory(examples), mesh)
      self._rows = pipeline.train_rows(len(examples.index), batch_size=batch_size, seed=seed, start_step=start_step)
      self._local_rows = sharding.process_rows(batch_size)
    else:
      self._batches = pipeline.train_batches(examples, batch_size=batch_size, seed=seed, start_step=start_step,
                                             process_index=jax.process_index(), process_count=jax.process_count())

  def next(self, num_steps: int) -> tuple:
    """The data of the next `num_steps` steps: (examples, rows) or (stacked batches,), padded to max_steps."""
    assert 0 < num_steps <= self._max_steps, (num_steps, self._max_steps)
    if self.device_resident:
      rows = next_rows(self._rows, num_steps, self._max_steps)[:, self._local_rows]
      return self._examples, sharding.shard_batch(rows.astype(np.int32), self._mesh, batch_axis=1)
    batches = list(itertools.islice(self._batches, num_steps))
    stacked = jax.tree.map(lambda *values: _stack_padded(values, self._max_steps), *batches)
    return (sharding.shard_batch(stacked, self._mesh, batch_axis=1),)


class StackedRowsFeeder:
  """The batches of several runs trained together (kd_jax/training/vectorized.py), each run with its own seed's order.

  The examples live on every device; `next(num_steps)` gives (examples, rows): [max_steps, batch] when every run has
  the same seed (one batch serves them all), else [max_steps, runs, batch]; rows are split over the mesh's data axis
  (and runs over its sweep axis). Single process.
  """

  def __init__(self, examples, *, batch_size: int, seeds: list[int], start_step: int, max_steps: int, mesh: Mesh):
    self._seeds = seeds
    self.shared = len(set(seeds)) == 1
    self._max_steps = max_steps
    self._examples = jax.device_put(in_memory(examples), NamedSharding(mesh, P()))
    self._rows = {seed: pipeline.train_rows(len(examples.index), batch_size=batch_size, seed=seed,
                                            start_step=start_step) for seed in sorted(set(seeds))}
    self._rows_sharding = NamedSharding(mesh, rows_spec(self.shared))

  def next(self, num_steps: int) -> tuple:
    rows = {seed: next_rows(iterator, num_steps, self._max_steps) for seed, iterator in self._rows.items()}
    rows = rows[self._seeds[0]] if self.shared else np.stack([rows[seed] for seed in self._seeds], axis=1)
    return self._examples, jax.device_put(rows.astype(np.int32), self._rows_sharding)


def rows_spec(shared: bool) -> P:
  """How StackedRowsFeeder's rows are split: batch rows over the data axis, runs (when not shared) over the sweep
  axis."""
  return P(None, sharding.DATA_AXIS) if shared else P(None, sharding.SWEEP_AXIS, sharding.DATA_AXIS)


def next_rows(rows: Iterator[np.ndarray], num_steps: int, max_steps: int) -> np.ndarray:
  """The next `num_steps` global batches' example rows of `pipeline.train_rows`, [max_steps, batch] padded with 0."""
  return _stack_padded(tuple(itertools.islice(rows, num_steps)), max_steps)


def _stack_padded(values: tuple[np.ndarray, ...], length: int) -> np.ndarray:
  stacked = np.zeros((length,) + values[0].shape, values[0].dtype)
  stacked[:len(values)] = values
  return stacked
