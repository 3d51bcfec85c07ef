"""Input pipelines: training batches (shuffled per epoch, a function of the step) and inference batches, NumPy.

TensorFlow is imported here only, on first use, with its GPUs hidden so that it never takes accelerator memory
from JAX: its stateless shuffle orders the epochs, and the text tasks load data through it (TFDS).
"""

import functools
import os
from typing import Iterator

import jax
import numpy as np


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


def train_batches(examples: dict, *, batch_size: int, seed: int, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict]:
  """Endless iterator over this process's share of every global training batch, from global step `start_step`.

  Global batch s holds the examples at positions `train_rows(N, batch_size, seed)`'s s-th row; each process takes
  rows [process_index * B / P, (process_index + 1) * B / P) of it. Gathered with NumPy from the in-memory arrays
  (a tf.data iterator costs about a millisecond per batch, the whole step of a small model).

  Args:
    examples: dict of arrays (or of dicts of arrays, e.g. token inputs) with a common first dimension N (anything
      per example: inputs, label, index, teacher_logits joined by index...).
    batch_size: global batch size B (over all processes).
    seed: shuffle seed.
    start_step: first global step to produce.
    process_index, process_count: this process's place among P processes (B divisible by P).

  Yields:
    dicts of NumPy arrays with first dimension B / P.
  """
  assert batch_size % process_count == 0, (batch_size, process_count)
  local_batch_size = batch_size // process_count
  local_rows = slice(process_index * local_batch_size, (process_index + 1) * local_batch_size)
  for rows in train_rows(len(examples["index"]), batch_size=batch_size, seed=seed, start_step=start_step):
    yield jax.tree.map(lambda values, rows=rows[local_rows]: values[rows], examples)


def inference_batches(examples, batch_size: int) -> Iterator[tuple[dict, int]]:
  """Examples (a pytree of arrays with first dimension N) in order, in batches of exactly `batch_size` rows.

  The last batch is padded by repeating row 0.

  Yields:
    (batch, num_real): the first `num_real` rows of `batch` are real examples.
  """
  num_examples = len(jax.tree.leaves(examples)[0])
  for start in range(0, num_examples, batch_size):
    rows = np.arange(start, min(start + batch_size, num_examples))
    num_real = len(rows)
    rows = np.concatenate([rows, np.zeros(batch_size - num_real, dtype=rows.dtype)])
    yield jax.tree.map(lambda value: value[rows], examples), num_real
