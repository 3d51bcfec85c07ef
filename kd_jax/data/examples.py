"""`Examples`: the one type of every split, training batch and joined teacher signal (the keys a batch may hold).

A split of a task, the batches cut from it and the rows a step trains on are all `Examples`: arrays (or dicts of
arrays) with a common first dimension N. It is a JAX pytree, so `jax.tree.map` (gathering rows, stacking chunks,
placing on devices, vmap) sees its arrays; fields a task does not have are None and hold no arrays.
"""

from typing import Any

import flax
import jax
import numpy as np


@flax.struct.dataclass
class Examples:
  """Rows of examples.

  Attributes:
    inputs: the models' inputs: [N, ...] floats (MLP tasks), or a dict of token arrays [N, L] (input_ids,
      attention_mask, token_type_ids, and decoder_input_ids [N, T] for seq2seq models).
    label: [N] int32 class (-1: unlabeled), or [N, T] target token ids (-1 on padding) for seq2seq tasks.
    index: [N] int32, the example's identity: unique across the splits of a task; caches are joined by it.
    teacher_inputs: text classification: the same examples tokenized with the teacher's tokenizer; causal LM across
      tokenizers (distill.cross_tokenizer): the teacher's own layout of them, its `label` and `token_weights`
      included, and its aligned `chunk`s (kd_jax/data/causal_lm.py: cross_tokenizer_arrays); else None.
    token_weights: seq2seq: [N, T] float32, 1 on real target tokens, 0 on padding; else None (every example 1).
    class_label: seq2seq: [N] int32 class of each example (the e-SNLI label), for stratified subsets; else None.
    teacher: the teacher's signal joined by `index` (kd_jax/teachers/student_data.py): dense logits [N, C] (or
      [N, T, V]), or a losses.TopKLogits of [N, T, k] arrays (the top-k cache, or a logprobs file's), or a
      cross_tokenizer.CachedChunks (a logprobs file's teacher of another tokenizer); None when the step gets no
      cached teacher.
  """
  inputs: Any
  label: Any
  index: Any
  teacher_inputs: Any = None
  token_weights: Any = None
  class_label: Any = None
  teacher: Any = None

  def __len__(self) -> int:
    return len(self.index)

  def select(self, rows) -> "Examples":
    """The rows where the boolean mask `rows` is True, or at the row numbers `rows`, in that order."""
    return jax.tree.map(lambda value: value[rows], self)

  def teacher_view(self) -> "Examples":
    """The examples as the teacher sees them: `inputs` replaced by `teacher_inputs` where the task has them (and
    `label`, `token_weights` by the teacher's own where those are among them)."""
    if self.teacher_inputs is None:
      return self
    inputs = dict(self.teacher_inputs) if isinstance(self.teacher_inputs, dict) else self.teacher_inputs
    own = {name: inputs.pop(name) for name in ("label", "token_weights") if isinstance(inputs, dict) and name in inputs}
    return self.replace(inputs=inputs, teacher_inputs=None, **own)

  def example_weights(self):
    """[N] (or [N, T]) weights of the loss: token_weights where the task has them, else 1 per example."""
    if self.token_weights is not None:
      return self.token_weights
    return np.ones(np.shape(self.label), np.float32)

  @property
  def strata(self) -> np.ndarray:
    """[N] the class of each example, for stratified subsets (class_label of seq2seq tasks, else label)."""
    return self.label if self.class_label is None else self.class_label


def widened(tree):
  """`tree` (Examples, or a dict of token arrays) with its integer arrays narrower than 32 bits as int32: what the
  models take. Token arrays are stored narrow (text.tokenize: uint16 ids, uint8 masks; int16 targets) and widened
  per batch, by the pipelines (kd_jax/data/pipeline.py) and the device feed (kd_jax/data/feed.py): exactly, so the
  models compute the same numbers. The teacher's signal of Examples is left as it is (its dtypes are the cache's)."""
  if isinstance(tree, Examples):
    return tree.replace(inputs=widened(tree.inputs), teacher_inputs=widened(tree.teacher_inputs),
                        label=widened(tree.label))
  return jax.tree.map(_widened_array, tree)


def first_inputs(inputs):
  """The first example of `inputs` ([1, ...], token arrays widened): what models are built, described and measured
  with."""
  return widened(jax.tree.map(lambda value: value[:1], inputs))


def wide_dtype(dtype) -> np.dtype:
  """int32 for bool and integer dtypes narrower than 32 bits (the token arrays' storage), else `dtype`."""
  dtype = np.dtype(dtype)
  return np.dtype(np.int32) if dtype.kind in "biu" and dtype.itemsize < 4 else dtype


def _widened_array(value):
  dtype = wide_dtype(value.dtype)
  return value if dtype == value.dtype else np.asarray(value).astype(dtype)
