"""Input pipelines: training batches (shuffled per epoch, a function of the step) and inference batches.

Training examples (inputs, labels, and the cached teacher logits joined to them by example index) reach the train
step in one of two ways, with the same batches: `train_batches`, a tf.data pipeline that gathers each batch's rows
in background threads and prefetches ahead of the step (training sets larger than train.device_data_max_mib), or
`train_rows`, the row numbers alone, for sets small enough to live on the devices and be gathered there
(kd_jax/data/feed.py). Both cut the epochs from `epoch_order`, TensorFlow's stateless shuffle.

TensorFlow is imported here only, on first use, with its GPUs hidden so that it never takes accelerator memory
from JAX.
"""

import functools
import os
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.data.examples import widened


@functools.cache
def tensorflow():
  """Imports TensorFlow (slow: seconds), hiding GPUs and TPUs from it."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  tf.config.set_visible_devices([], "TPU")
  return tf


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full global batches per epoch (the remainder of each epoch's permutation is dropped)."""
  return num_examples // batch_size


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The order [N] in which epoch `epoch` visits the examples: stateless_shuffle(range(N), seed=(seed, epoch)).

  TensorFlow's stateless shuffle (the order kd_jax has always used, so results stay comparable across versions);
  one call per epoch.
  """
  tf = tensorflow()
  seed_pair = tf.constant([seed, epoch], tf.int64)
  return tf.random.experimental.stateless_shuffle(tf.range(num_examples, dtype=tf.int64), seed=seed_pair).numpy()


def train_rows(num_examples: int, *, batch_size: int, seed: int, start_step: int = 0) -> Iterator[np.ndarray]:
  """Endless iterator over the example positions [B] of every global training batch, from global step `start_step`.

  Epoch e visits the examples in `epoch_order(N, seed, e)` and cuts it into N // B batches (the remainder is
  dropped), so the rows of batch s are a function of (N, B, seed, s) alone: a run resumed at step s sees exactly the
  batches an uninterrupted run would.
  """
  batches_per_epoch = steps_per_epoch(num_examples, batch_size)
  assert batches_per_epoch > 0, f"batch size {batch_size} is larger than the {num_examples} examples"
  epoch, batch = divmod(start_step, batches_per_epoch)
  while True:
    order = epoch_order(num_examples, seed, epoch)[:batches_per_epoch * batch_size].reshape(batches_per_epoch, -1)
    yield from order[batch:]
    epoch, batch = epoch + 1, 0


def train_batches(examples, *, batch_size: int, seed: int, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator:
  """Endless tf.data iterator over this process's share of every global training batch, from global step
  `start_step`.

  Epoch e visits the examples in `epoch_order(N, seed, e)` and cuts it into N // B global batches (the rows of
  `train_rows`), so batch s is a function of (examples, batch_size, seed, s) alone: a run resumed at step s sees
  exactly the batches an uninterrupted run would. Each process takes rows [process_index * B / P,
  (process_index + 1) * B / P) of every global batch of B rows. The rows are gathered (NumPy indexing of the arrays
  where they are, `tf.numpy_function`) in parallel background threads, in order, and prefetched, so the next
  batches are ready while the devices run a step; the host holds the batches in flight, not a copy of the data.

  Args:
    examples: a pytree of arrays with a common first dimension N (`data.Examples`: inputs, label, index, the
      teacher's signal joined by index...): NumPy arrays or array-likes indexed by row numbers (CacheRows).
    batch_size: global batch size B (over all processes).
    seed: shuffle seed.
    start_step: first global step to produce.
    process_index, process_count: this process's place among P processes (B divisible by P).

  Yields:
    pytrees like `examples` of NumPy arrays with first dimension B / P (narrow token arrays as int32: `widened`).
  """
  tf = tensorflow()
  leaves, treedef = jax.tree.flatten(examples)
  num_examples = len(leaves[0])
  batches_per_epoch = steps_per_epoch(num_examples, batch_size)
  assert batches_per_epoch > 0, f"batch size {batch_size} is larger than the {num_examples} examples"
  assert batch_size % process_count == 0, (batch_size, process_count)
  local_batch_size = batch_size // process_count
  local_rows = slice(process_index * local_batch_size, (process_index + 1) * local_batch_size)
  # The rows are gathered from the arrays as they are (in memory, or teacher_cache.CacheRows reading the cache's
  # files) by NumPy inside the pipeline: TensorFlow never holds a copy of the data set, only batches in flight.
  # bfloat16 travels as its uint16 bit pattern.
  carried = [np.dtype(np.uint16) if np.dtype(leaf.dtype) == jnp.bfloat16 else np.dtype(leaf.dtype) for leaf in leaves]

  def gather(rows):
    return tuple(np.asarray(leaf[rows]).view(dtype) for leaf, dtype in zip(leaves, carried))

  start_epoch, skip_batches = divmod(start_step, batches_per_epoch)

  def epoch_batches(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    order = tf.reshape(order[:batches_per_epoch * batch_size], [batches_per_epoch, batch_size])
    return tf.data.Dataset.from_tensor_slices(order[:, local_rows])

  dataset = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_batches).skip(skip_batches)
  dataset = dataset.map(lambda rows: tf.numpy_function(gather, [rows], [tf.as_dtype(dtype) for dtype in carried]),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return (widened(jax.tree.unflatten(treedef, [values.view(leaf.dtype) for values, leaf in zip(batch, leaves)]))
          for batch in dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator())


def inference_batches(examples, batch_size: int) -> Iterator[tuple[dict, int]]:
  """Examples (a pytree of arrays with first dimension N) in order, in batches of exactly `batch_size` rows.

  The last batch is padded by repeating row 0; narrow token arrays come as int32 (`examples.widened`).

  Yields:
    (batch, num_real): the first `num_real` rows of `batch` are real examples.
  """
  num_examples = len(jax.tree.leaves(examples)[0])
  for start in range(0, num_examples, batch_size):
    rows = np.arange(start, min(start + batch_size, num_examples))
    num_real = len(rows)
    rows = np.concatenate([rows, np.zeros(batch_size - num_real, dtype=rows.dtype)])
    yield widened(jax.tree.map(lambda value: value[rows], examples)), num_real
