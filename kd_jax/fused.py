"""Fused training: many optimizer steps per compiled call, for models whose step is shorter than its Python round trip.

A chunk of up to `max_steps` steps runs as one `lax.fori_loop` inside the data-parallel program. Small training
sets live on the devices, and a chunk transfers only the row numbers of its batches [max_steps, batch] (padded to
`max_steps`, so that any chunk length reuses one compiled program), gathered on the device step by step; larger
ones come from the tf.data pipeline (pipeline.train_batches), stacked [max_steps, batch, ...] and transferred once
per chunk. A chunk returns the new state and the per-step metrics [max_steps, ...], which stay on the device until
the training loop fetches them at its next log / eval / checkpoint step. The state is donated. Each step inside is
exactly `train.train_step`, so batches, dropout masks and results are those of one call per step.
"""

import dataclasses
import functools
import itertools
import time
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from kd_jax import distributed, preemption, sharding
from kd_jax.data import pipeline

# A chunk is cut short to take about this long (seconds, estimated from the steps measured so far), so that a
# SIGTERM, which is honored at the end of a chunk, is answered within about a second.
TARGET_CHUNK_SECONDS = 1.0
# Training examples up to this size (all arrays, bytes; config.train.device_data_max_mib) are copied to every
# device once; a chunk then transfers only the row numbers of its batches [max_steps, batch] and gathers them on the
# device. Larger ones come through tf.data (pipeline.train_batches) and are transferred chunk by chunk.
DEVICE_DATA_MAX_BYTES = 256 << 20


def run_steps(step_fn: Callable, state, teacher_params, hyperparams, rng, num_steps: jax.Array, *data):
  """`num_steps` applications of `step_fn`, step i on batch i of `data` (up to max_steps; the rest unused).

  Args:
    step_fn: step_fn(state, teacher_params, hyperparams, rng, batch) -> (state, metrics).
    data: (stacked batches [max_steps, rows, ...],) or (examples [N, ...], rows [max_steps, rows] of them).

  Returns:
    (state after num_steps steps, metrics of each step stacked [max_steps, ...]; rows >= num_steps are 0).
  """
  if len(data) == 1:
    (batches,) = data
    max_steps = jax.tree.leaves(batches)[0].shape[0]
    batch_at = lambda i: jax.tree.map(lambda values: jax.lax.dynamic_index_in_dim(values, i, keepdims=False), batches)
  else:
    examples, rows = data
    max_steps = rows.shape[0]
    batch_at = lambda i: jax.tree.map(
        lambda values: jnp.take(values, jax.lax.dynamic_index_in_dim(rows, i, keepdims=False), axis=0), examples)
  metric_shapes = jax.eval_shape(step_fn, state, teacher_params, hyperparams, rng, batch_at(0))[1]
  stacked_metrics = jax.tree.map(lambda shape: jnp.zeros((max_steps,) + shape.shape, shape.dtype), metric_shapes)

  def body(i, carry):
    state, stacked_metrics = carry
    state, step_metrics = step_fn(state, teacher_params, hyperparams, rng, batch_at(i))
    stacked_metrics = jax.tree.map(lambda stacked, value: jax.lax.dynamic_update_index_in_dim(stacked, value, i, 0),
                                   stacked_metrics, step_metrics)
    return state, stacked_metrics

  return jax.lax.fori_loop(0, num_steps, body, (state, stacked_metrics))


def compile_chunk(step_fn: Callable, mesh: Mesh, *, device_resident: bool) -> Callable:
  """`chunk(state, teacher_params, hyperparams, rng, num_steps, *ChunkFeeder.next(...))`, data-parallel over `mesh`.

  `step_fn(state, teacher_params, hyperparams, rng, batch)` is a per-device step (reducing over the data axis
  itself). With `device_resident` data the examples are replicated and their rows [max_steps, global batch] split
  over devices along axis 1; otherwise the stacked batches [max_steps, global batch, ...] are. The state is donated.
  """
  return sharding.data_parallel(functools.partial(run_steps, step_fn), mesh,
                                num_replicated_args=6 if device_resident else 5, batch_axis=1)


def data_bytes(examples: dict) -> int:
  return sum(leaf.nbytes for leaf in jax.tree.leaves(examples))


class ChunkFeeder:
  """The training batches, `num_steps` consecutive global steps at a time from `start_step`, as chunk arguments.

  The batches are those of `pipeline.train_batches`: a function of (examples, batch_size, seed, step). Examples of
  at most `device_data_max_bytes` stay on the devices (`device_resident`) and a chunk takes their row numbers
  (`pipeline.train_rows`); otherwise this process's rows come from the tf.data pipeline, gathered and prefetched in
  its background threads, and the chunk takes the stacked batches.
  """

  def __init__(self, examples: dict, *, batch_size: int, seed: int, start_step: int, max_steps: int, mesh: Mesh,
               device_data_max_bytes: int = DEVICE_DATA_MAX_BYTES):
    self.device_resident = data_bytes(examples) <= device_data_max_bytes
    self._max_steps = max_steps
    self._mesh = mesh
    if self.device_resident:
      self._examples = sharding.replicate(examples, mesh)
      self._rows = pipeline.train_rows(len(examples["index"]), batch_size=batch_size, seed=seed,
                                       start_step=start_step)
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


def next_rows(rows: Iterator[np.ndarray], num_steps: int, max_steps: int) -> np.ndarray:
  """The next `num_steps` global batches' example rows of `pipeline.train_rows`, [max_steps, batch] padded with 0."""
  return _stack_padded(tuple(itertools.islice(rows, num_steps)), max_steps)


def _stack_padded(values: tuple[np.ndarray, ...], length: int) -> np.ndarray:
  stacked = np.zeros((length,) + values[0].shape, values[0].dtype)
  stacked[:len(values)] = values
  return stacked


def chunk_length(step: int, num_steps: int, boundary_every: tuple[int, ...], max_steps: int,
                 seconds_per_step: float | None) -> int:
  """Steps in the chunk starting at `step`: up to the next multiple of any of `boundary_every` (log, eval and
  checkpoint steps) or the end, at most `max_steps`, and about TARGET_CHUNK_SECONDS long when the step time is known.
  """
  next_boundary = min([num_steps] + [(step // every + 1) * every for every in boundary_every])
  length = min(next_boundary - step, max_steps)
  if seconds_per_step:
    length = min(length, max(1, int(TARGET_CHUNK_SECONDS / seconds_per_step)))
  return length


def unstack_metrics(stacked_metrics: dict, num_steps: int) -> list[dict]:
  """Per-step metric dicts (host values) of the first `num_steps` rows of a chunk's stacked metrics."""
  return [{name: values[i] for name, values in stacked_metrics.items()} for i in range(num_steps)]


@dataclasses.dataclass(frozen=True)
class ChunkEnd:
  """What a training loop does after the chunk that ended at `step`."""
  step: int
  last: bool
  log: bool
  eval: bool
  checkpoint: bool
  preempted: bool


class ChunkClock:
  """The chunk lengths and the log / eval / checkpoint / stop decisions of a fused training loop from `start_step`
  to `num_steps` (train.train_model, vectorized.train_points).

  The first two chunks are single steps: the first compiles, the second times a step. Later chunks run up to the
  next log / eval / checkpoint step and for about TARGET_CHUNK_SECONDS, from the step time measured again at every
  log step. In a multi-process job the step time and the SIGTERM flag are agreed by all processes, so that every
  process runs the same chunks (the same collectives) and stops at the same step.
  """

  def __init__(self, start_step: int, num_steps: int, train_config):
    self.start_step, self.step, self.num_steps = start_step, start_step, num_steps
    self.start_time = time.time()
    self.first_step_done_time = None  # when the first (compiling) chunk ended
    self._log_every, self._eval_every = train_config.log_every_steps, train_config.eval_every_steps
    self._checkpoint_every, self._max_steps = train_config.checkpoint_every_steps, train_config.steps_per_dispatch
    self._seconds_per_step = None
    self._chunk_start_time = None
    self._interval_start_time, self._interval_start_step = self.start_time, start_step

  def running(self) -> bool:
    return self.step < self.num_steps

  def next_length(self) -> int:
    """Steps in the chunk about to run (starts its timer)."""
    self._chunk_start_time = time.time()
    if self._seconds_per_step is None:
      return 1
    return chunk_length(self.step, self.num_steps, (self._log_every, self._eval_every, self._checkpoint_every),
                        self._max_steps, self._seconds_per_step)

  def chunk_done(self, length: int, state) -> ChunkEnd:
    """Records a dispatched chunk of `length` steps (waiting for `state` while the step time is being measured)."""
    self.step += length
    done = self.step
    if self.first_step_done_time is None:
      jax.block_until_ready(state)
      self.first_step_done_time = self._interval_start_time = time.time()
      self._interval_start_step = done
    elif self._seconds_per_step is None:
      jax.block_until_ready(state)
      self._seconds_per_step = distributed.max_over_processes(time.time() - self._chunk_start_time)
    preempted = distributed.any_process(preemption.requested())
    last = done == self.num_steps
    return ChunkEnd(step=done, last=last, log=done % self._log_every == 0 or last,
                    eval=done % self._eval_every == 0 or last,
                    checkpoint=done % self._checkpoint_every == 0 or last or preempted, preempted=preempted)

  def interval_steps_per_sec(self) -> float:
    """Steps per second since the previous call (at log steps; 0 when unknown); re-times the chunks by it."""
    now = time.time()
    elapsed_steps = self.step - self._interval_start_step
    steps_per_sec = elapsed_steps / (now - self._interval_start_time) if elapsed_steps > 0 else 0
    if steps_per_sec > 0:  # on every process alike: the steps since the previous call are the same everywhere
      self._seconds_per_step = distributed.max_over_processes(1 / steps_per_sec)
    self._interval_start_time, self._interval_start_step = now, self.step
    return steps_per_sec

  def examples_per_sec(self, examples_per_step: int) -> float | None:
    """Training throughput after the first (compiling) chunk, at the end of the loop."""
    timed_steps = self.num_steps - self.start_step - 1
    end_time = time.time()
    if self.first_step_done_time is None or timed_steps <= 0 or end_time <= self.first_step_done_time:
      return None
    return timed_steps * examples_per_step / (end_time - self.first_step_done_time)
