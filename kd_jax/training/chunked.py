"""Chunked losses (config.distill.loss_chunk): per-position loss terms computed a chunk of positions at a time from
the models' final hidden states, so that the [batch, length, vocab] logits of the student and of an online teacher
never exist whole.

A model's output enters as `Projected(hidden [batch, length, hidden], head)`: the logits are head(hidden) (the LM
head, kd_jax/models/hf/layers.OutputHead), formed only for `chunk` positions at a time inside `map_positions`, a
lax.map over the chunks whose body is rematerialized (jax.checkpoint): the forward pass keeps each chunk's per-position
terms [batch, chunk] and nothing of its logits; the backward pass recomputes one chunk's logits at a time and adds
its share of the head's gradient. Peak memory of the logit terms: a few [batch, chunk, vocab] arrays instead of
[batch, length, vocab] ones. The pattern of TRL PR #6405 (chunked JSD), Liger kernel's fused linear JSD and verl
PR #6593; here jax.checkpoint over lax.map does what their hand-written backward passes do.

Positions are axis 1 of every array (tokens [batch, length, ...]): the student's and a teacher's hidden states, dense
teacher logits [batch, length, V], top-k caches [batch, length, k], ensembles' [batch, length, M, V], labels
[batch, length]. A length that `chunk` does not divide is padded (with zeros) to whole chunks and the padded
positions' terms dropped.
"""

import math
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Projected:
  """A model's final hidden states and the head that projects them to logits: head(hidden) [batch, length, vocab],
  which chunked losses form a chunk of positions at a time.

  hidden: [batch, length, hidden] (the model's `apply(..., project=False)`).
  head: the model's `output_head(params)` (layers.OutputHead: a pytree whose arrays are parameters).
  """
  hidden: jax.Array
  head: Any


def split_head(signal) -> tuple[Any, Callable[[Any], Any]]:
  """(the arrays of `signal` indexed by position, a function from a chunk of them to that chunk's logits): a
  Projected gives its hidden states and its head; anything else (logits, a top-k cache, an ensemble's logits,
  labels, None) itself and the identity."""
  if isinstance(signal, Projected):
    return signal.hidden, signal.head
  return signal, lambda chunk: chunk


def map_positions(fn: Callable, chunk: int, positions):
  """fn(chunk of `positions`) over consecutive chunks of `chunk` positions, joined: the per-position outputs of fn
  on the whole sequence.

  Args:
    fn: a tree of [batch, chunk, ...] arrays (shaped like `positions`, axis 1 cut to `chunk`) -> a tree of
      [batch, chunk] arrays. Rematerialized: its intermediates (the chunk's logits) are recomputed in the backward
      pass, not kept.
    chunk: positions per chunk (> 0); one chunk when >= the length.
    positions: a tree of [batch, length, ...] arrays (None leaves allowed).

  Returns:
    fn's tree of [batch, length] arrays.
  """
  leaves = jax.tree.leaves(positions)
  batch, length = leaves[0].shape[:2]
  chunk = min(chunk, length)
  num_chunks = math.ceil(length / chunk)
  padded = num_chunks * chunk

  def chunks(values):
    """[batch, length, ...] -> [num_chunks, batch, chunk, ...], zero-padded."""
    pad = [(0, 0), (0, padded - length)] + [(0, 0)] * (values.ndim - 2)
    values = jnp.pad(values, pad)
    return jnp.moveaxis(values.reshape((batch, num_chunks, chunk) + values.shape[2:]), 1, 0)

  outputs = jax.lax.map(jax.checkpoint(fn), jax.tree.map(chunks, positions))
  return jax.tree.map(lambda values: jnp.moveaxis(values, 0, 1).reshape(batch, padded)[:, :length], outputs)
