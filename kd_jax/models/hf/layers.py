"""Pieces shared by the Hugging Face families: activations, attention masks and weights, the post-LN encoder layer.

Module names are the dotted names of the tensors in Hugging Face checkpoints (a Dense named
"attention.self.query" holds `attention.self.query.weight`), so the loader maps a parameter path to its tensor by
joining the path with dots (see checkpoint.py).
"""

import dataclasses
import functools
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.errors import UserError
from kd_jax.models.dropout import Dropout

# transformers' ACT2FN names of the activations these families use. "gelu" is the exact erf form.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}

# Added to the attention scores of masked keys: softmax gives them weight 0, and a fully masked row (a padding
# example) gets uniform weights instead of NaN.
MASKED_SCORE = float(jnp.finfo(jnp.float32).min)


def rematerialized(block: type[nn.Module], remat: str, train_argnum: int) -> type[nn.Module]:
  """The transformer block class `block` as config.train.remat asks: itself ('none'), or under flax's nn.remat
  (jax.checkpoint) so that its backward pass recomputes what it did not keep: only its inputs ('block'), or what
  the jax.checkpoint_policies `remat` saves (kd_jax.models.remat_options). `train_argnum` is the position of its
  `train` flag (self is 0), a Python bool that must stay static."""
  if remat == "none":
    return block
  return nn.remat(block, policy=remat_policy(remat), static_argnums=(train_argnum,))


def remat_policy(remat: str):
  """The jax.checkpoint policy of config.train.remat `remat` (not 'none'): None for 'block' (keep only the inputs),
  else the jax.checkpoint_policies function of that name."""
  assert remat != "none", "remat 'none' has no checkpoint policy"
  return None if remat == "block" else getattr(jax.checkpoint_policies, remat)


@flax.struct.dataclass
class OutputHead:
  """A language model's output projection as arrays: logits = (hidden * input_scale) @ kernel, computed in `dtype`
  (the LM head's Dense, or a tied embedding's attend, as the module computes it).

  What chunked losses (kd_jax/training/chunked.py) project the final hidden states with, a chunk of positions at a
  time, so that the full [batch, length, vocab] logits never exist. A pytree: `kernel` is the parameter itself (the
  LM head's kernel, or the tied embedding), so gradients reach it.

  kernel: [hidden, vocab] (a Dense kernel), or [vocab, hidden] when `tied` (the embedding itself).
  input_scale: multiplies the hidden states first (T5's tied head: d_model ** -0.5).
  tied: `kernel` is a tied embedding [vocab, hidden], contracted over its own axis 1 (not transposed first: a
    transposed copy of a 151,936 x 1,024 float32 embedding is 0.58 GiB, and XLA:CPU kept one alive through the
    whole step).
  """
  kernel: jax.Array
  input_scale: float = flax.struct.field(pytree_node=False, default=1.0)
  dtype: Any = flax.struct.field(pytree_node=False, default=jnp.float32)
  tied: bool = flax.struct.field(pytree_node=False, default=False)

  def __call__(self, hidden: jax.Array) -> jax.Array:
    """Logits [..., vocab] of hidden states [..., hidden]."""
    if self.input_scale != 1.0:
      hidden = hidden * self.input_scale
    contract = 1 if self.tied else 0
    return jax.lax.dot_general(hidden.astype(self.dtype), self.kernel.astype(self.dtype),
                               (((hidden.ndim - 1,), (contract,)), ((), ())))


def check_activation(name: str, checkpoint: str) -> str:
  """Returns `name` (an activation named in a checkpoint's config.json) if it is one of ACTIVATIONS."""
  if name not in ACTIVATIONS:
    raise UserError(f"checkpoint {checkpoint}: activation {name!r} is not supported; supported: "
                    f"{', '.join(ACTIVATIONS)}")
  return name


def padding_bias(attention_mask: jax.Array) -> jax.Array:
  """Additive attention bias [batch, 1, 1, keys] (float32): 0 where attention_mask [batch, keys] is 1, else masked."""
  return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, MASKED_SCORE).astype(jnp.float32)


def attention_logits(query: jax.Array, key: jax.Array, bias: jax.Array, scale: float = 1.0) -> jax.Array:
  """scale * q kᵀ + bias, in float32: the attention scores whose softmax over keys is the attention.

  Args:
    query: [batch, queries, heads, head_dim].
    key: [batch, keys, heads, head_dim].
    bias: broadcastable to [batch, heads, queries, keys]: masks and position biases.
    scale: multiplies the scores before the bias is added (BERT: head_dim**-0.5; T5: 1).

  Returns:
    [batch, heads, queries, keys], float32: accumulated and returned in float32 also when query and key are
    bfloat16 (a bfloat16 model's softmax then sees unrounded scores).
  """
  scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
  return scores * scale + bias


def attention_probabilities(query: jax.Array, key: jax.Array, bias: jax.Array, scale: float = 1.0) -> jax.Array:
  """softmax(`attention_logits`) over keys: [batch, heads, queries, keys], float32."""
  return jax.nn.softmax(attention_logits(query, key, bias, scale), axis=-1)


def attention_output(probabilities: jax.Array, value: jax.Array) -> jax.Array:
  """Σ_k p[b, h, q, k] v[b, k, h, :] -> [batch, queries, heads * head_dim] in value's dtype."""
  mixed = jnp.einsum("bhqk,bkhd->bqhd", probabilities.astype(value.dtype), value)
  return mixed.reshape(mixed.shape[:2] + (-1,))


def chunks_attention(module: nn.Module, length: int, *, decoding: bool, dropout: bool) -> bool:
  """Whether an attention module with an `attention_chunk` field attends `query_chunked`: when the field is set and
  the call has more queries than a chunk, except when decoding with a KV cache, with attention dropout in training,
  or when the attention logits are asked for ('intermediates': feature distillation), which need them whole."""
  return (0 < module.attention_chunk < length and not decoding and not dropout
          and not module.is_mutable_collection("intermediates"))


def query_chunked(attend: Callable[[jax.Array, jax.Array], jax.Array], query: jax.Array, bias: jax.Array,
                  chunk: int) -> jax.Array:
  """attend(query, bias) computed `chunk` queries at a time (memory-efficient attention, as MaxText's and EasyDeL's
  chunked attention): a lax.map over the query chunks whose body is rematerialized (jax.checkpoint), so neither the
  forward pass nor what it keeps for the backward pass holds more than one chunk's [batch, heads, chunk, keys] scores
  and probabilities; the backward pass recomputes them a chunk at a time. Each query's softmax runs over all its keys
  as before, so the result is attend's over the whole query axis up to float rounding. A length the chunk does not
  divide is padded with queries whose rows are dropped.

  Args:
    attend: (query [batch, queries, heads, head_dim], bias [.., queries, keys]) -> [batch, queries, features]; the keys
      and values are its closure.
    query: [batch, length, heads, head_dim].
    bias: [batch or 1, heads or 1, length or 1, keys].
    chunk: queries per chunk.
  """
  batch, length = query.shape[:2]
  count = -(-length // chunk)
  padding = count * chunk - length
  if padding:
    query = jnp.pad(query, [(0, 0), (0, padding)] + [(0, 0)] * (query.ndim - 2))
    if bias.shape[-2] != 1:
      bias = jnp.pad(bias, [(0, 0), (0, 0), (0, padding), (0, 0)])
  queries = jnp.moveaxis(query.reshape((batch, count, chunk) + query.shape[2:]), 1, 0)
  if bias.shape[-2] == 1:
    mixed = jax.lax.map(jax.checkpoint(lambda part: attend(part, bias), prevent_cse=False), queries)
  else:
    biases = jnp.moveaxis(bias.reshape(bias.shape[:2] + (count, chunk, bias.shape[-1])), 2, 0)
    mixed = jax.lax.map(jax.checkpoint(lambda parts: attend(*parts), prevent_cse=False), (queries, biases))
  return jnp.moveaxis(mixed, 0, 1).reshape((batch, count * chunk) + mixed.shape[3:])[:, :length]


@dataclasses.dataclass(frozen=True)
class EncoderDims:
  """Sizes and rates of a BERT-style post-LN encoder, read from the family's config.json."""
  hidden_size: int
  num_heads: int
  intermediate_size: int
  activation: str
  layer_norm_eps: float
  hidden_dropout: float
  attention_dropout: float
  # BERT/RoBERTa drop the attention block's output before the residual; DistilBERT does not.
  attention_output_dropout: bool


@dataclasses.dataclass(frozen=True)
class EncoderLayerNames:
  """Checkpoint names of the tensors of one encoder layer (relative to the layer)."""
  query: str
  key: str
  value: str
  attention_out: str
  attention_norm: str
  ffn_in: str
  ffn_out: str
  ffn_norm: str


class EncoderLayer(nn.Module):
  """Post-LN transformer layer: h = LN(x + MHA(x)); out = LN(h + W2 act(W1 h)), with HF's dropouts."""
  dims: EncoderDims
  names: EncoderLayerNames
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array, bias: jax.Array, train: bool) -> jax.Array:
    """hidden [batch, length, hidden_size], bias [batch, 1, 1, length] -> [batch, length, hidden_size]."""
    dims, names = self.dims, self.names
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    layer_norm = functools.partial(nn.LayerNorm, epsilon=dims.layer_norm_eps, use_fast_variance=False,
                                   dtype=self.dtype, param_dtype=self.param_dtype)
    head_dim = dims.hidden_size // dims.num_heads
    split_heads = lambda x: x.reshape(x.shape[:2] + (dims.num_heads, head_dim))
    query = split_heads(dense(dims.hidden_size, name=names.query)(hidden))
    key = split_heads(dense(dims.hidden_size, name=names.key)(hidden))
    value = split_heads(dense(dims.hidden_size, name=names.value)(hidden))
    logits = attention_logits(query, key, bias, scale=head_dim**-0.5)
    # Attention transfer (kd_jax/training/feature_losses.py) reads them when 'intermediates' is mutable; a no-op
    # otherwise.
    self.sow("intermediates", "attention_logits", logits)
    probabilities = jax.nn.softmax(logits, axis=-1)
    probabilities = Dropout(dims.attention_dropout)(probabilities, deterministic=not train)
    attended = dense(dims.hidden_size, name=names.attention_out)(attention_output(probabilities, value))
    if dims.attention_output_dropout:
      attended = Dropout(dims.hidden_dropout)(attended, deterministic=not train)
    hidden = layer_norm(name=names.attention_norm)(hidden + attended)

    intermediate = ACTIVATIONS[dims.activation](dense(dims.intermediate_size, name=names.ffn_in)(hidden))
    transformed = dense(dims.hidden_size, name=names.ffn_out)(intermediate)
    transformed = Dropout(dims.hidden_dropout)(transformed, deterministic=not train)
    return layer_norm(name=names.ffn_norm)(hidden + transformed)
