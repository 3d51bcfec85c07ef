"""GPT-2 (transformers' modeling_gpt2.py) as Flax modules named like its tensors.

Learned position embeddings, pre-LN blocks with LayerNorm: h += c_proj(attention(ln_1 h)); h += mlp(ln_2 h), mlp =
c_proj(gelu_new(c_fc x)); a final LayerNorm ln_f and the LM head tied to the token embedding wte. GPT-2's linear
layers are Conv1D: weights stored [in, out] (Flax's kernel layout, not PyTorch Linear's), and q, k, v fused in one
c_attn of width 3 * n_embd. The checkpoint orders c_attn's output units (q, k, v) x heads x head_dim; the module holds
them heads x (q, k, v) x head_dim (Megatron-LM's fused layout: permuted once while loading, `heads_first`, and back
when exporting, `heads_last`), so that a contiguous split of the units over the tensor axis gives each device whole
heads with their q, k and v (`partition_rules`).

Decoding with a KV cache works as in llama.py (same call signature; generation.py drives both).
"""

import dataclasses
import functools
import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.errors import UserError
from kd_jax.models.dropout import Dropout
from kd_jax.models.hf import layers
from kd_jax.models.hf.llama import causal_bias
from kd_jax.models.hf.llama import decode_slots
from kd_jax.models.hf.weights import Architecture
from kd_jax.parallel import sharding

logger = logging.getLogger(__name__)

SUPPORTED_TASKS = ("causal_lm",)


@dataclasses.dataclass(frozen=True)
class GPT2Dims:
  """What the modules need from a GPT-2 config.json."""
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int
  layer_norm_epsilon: float
  activation: str
  embedding_dropout: float
  attention_dropout: float
  residual_dropout: float
  pad_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()


class Conv1D(nn.Module):
  """transformers' Conv1D: x @ weight + bias with weight [in, out] (the tensor's own layout, loaded untransposed)."""
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    weight = self.param("weight", nn.initializers.normal(0.02), (x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
    return jnp.dot(x.astype(self.dtype), weight.astype(self.dtype)) + bias.astype(self.dtype)


class GPT2Block(nn.Module):
  """h += dropout(attn.c_proj(attention(ln_1 h))); h += dropout(mlp.c_proj(act(mlp.c_fc(ln_2 h))))."""
  dims: GPT2Dims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_chunk: int = 0  # layers.query_chunked; 0: all queries at once

  @nn.compact
  def __call__(self, hidden, bias, cache_index=None, train: bool = False) -> jax.Array:
    """`train` is positional (layers.rematerialized's static argument 4)."""
    dims = self.dims
    conv = functools.partial(Conv1D, dtype=self.dtype, param_dtype=self.param_dtype)
    layer_norm = functools.partial(nn.LayerNorm, epsilon=dims.layer_norm_epsilon, use_fast_variance=False,
                                   dtype=self.dtype, param_dtype=self.param_dtype)
    dropout = Dropout(dims.residual_dropout, deterministic=not train)
    head_dim = dims.hidden_size // dims.num_heads
    fused = conv(3 * dims.hidden_size, name="attn.c_attn")(layer_norm(name="ln_1")(hidden))
    fused = fused.reshape(fused.shape[:2] + (dims.num_heads, 3, head_dim))  # heads_first's layout
    query, key, value = fused[..., 0, :], fused[..., 1, :], fused[..., 2, :]
    if cache_index is not None:
      cache_shape = (hidden.shape[0], bias.shape[-1], dims.num_heads, head_dim)
      cached_key = self.variable("cache", "key", jnp.zeros, cache_shape, key.dtype)
      cached_value = self.variable("cache", "value", jnp.zeros, cache_shape, value.dtype)
      cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, cache_index, 0, 0))
      cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, cache_index, 0, 0))
      key, value = cached_key.value, cached_value.value
    if layers.chunks_attention(self, query.shape[1], decoding=cache_index is not None,
                               dropout=train and dims.attention_dropout > 0):
      attend = lambda part, part_bias: layers.attention_output(
          layers.attention_probabilities(part, key, part_bias, scale=head_dim**-0.5), value)
      mixed = layers.query_chunked(attend, query, bias, self.attention_chunk)
    else:
      logits = layers.attention_logits(query, key, bias, scale=head_dim**-0.5)
      self.sow("intermediates", "attention_logits", logits)
      probabilities = Dropout(dims.attention_dropout)(jax.nn.softmax(logits, axis=-1), deterministic=not train)
      mixed = layers.attention_output(probabilities, value)
    hidden += dropout(conv(dims.hidden_size, name="attn.c_proj")(mixed))
    transformed = layers.ACTIVATIONS[dims.activation](
        conv(dims.intermediate_size, name="mlp.c_fc")(layer_norm(name="ln_2")(hidden)))
    return hidden + dropout(conv(dims.hidden_size, name="mlp.c_proj")(transformed))


class GPT2Model(nn.Module):
  """wte + wpe, the blocks h.N, ln_f: the transformer.* tensors. Returns (hidden states, tied LM logits; None when
  not `project`)."""
  dims: GPT2Dims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"  # layers.rematerialized, per block (not while decoding with a KV cache)
  attention_chunk: int = 0  # layers.query_chunked; 0: all queries at once

  @nn.compact
  def __call__(self, input_ids, attention_mask, position_ids, decode_length, train: bool, project: bool = True,
               segment_ids=None):
    dims = self.dims
    query_slots, key_slots, cache_index = decode_slots(self, input_ids.shape[1], decode_length)
    if position_ids is None:
      position_ids = jnp.broadcast_to(query_slots, input_ids.shape)
    embed = functools.partial(nn.Embed, dtype=self.dtype, param_dtype=self.param_dtype)
    wte = embed(dims.vocab_size, dims.hidden_size, name="wte")
    hidden = wte(input_ids) + embed(dims.max_position_embeddings, dims.hidden_size, name="wpe")(position_ids)
    hidden = Dropout(dims.embedding_dropout)(hidden, deterministic=not train)
    bias = causal_bias(query_slots, key_slots, attention_mask, None, segment_ids)
    block = layers.rematerialized(GPT2Block, "none" if decode_length is not None else self.remat, train_argnum=4)
    for index in range(dims.num_layers):
      hidden = block(dims, self.dtype, self.param_dtype, self.attention_chunk, name=f"h.{index}")(
          hidden, bias, cache_index, train)
    hidden = nn.LayerNorm(epsilon=dims.layer_norm_epsilon, use_fast_variance=False, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="ln_f")(hidden)
    return hidden, wte.attend(hidden) if project else None


class GPT2LMHeadModel(nn.Module):
  """Task "causal_lm": next-token logits [batch, length, vocab_size]; arguments as llama.LlamaForCausalLM's."""
  dims: GPT2Dims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"  # config.train.remat (kd_jax.models.with_remat)
  attention_chunk: int = 0  # config.train.attention_chunk (kd_jax.models.with_remat)

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, position_ids=None, decode_length: int | None = None,
               train: bool = False, project: bool = True, segment_ids=None) -> jax.Array:
    """project: False: the final hidden states [batch, length, hidden_size] (after ln_f), which
    `output_head(params)` projects (chunked losses)."""
    hidden, logits = GPT2Model(self.dims, self.dtype, self.param_dtype, self.remat, self.attention_chunk,
                               name="transformer")(
        input_ids, attention_mask, position_ids, decode_length, train, project, segment_ids)
    return logits if project else hidden

  def output_head(self, params) -> layers.OutputHead:
    """The projection of `__call__(project=False)`'s hidden states to the logits: the token embedding wte (tied)."""
    return layers.OutputHead(params["transformer"]["wte"]["embedding"], dtype=self.dtype, tied=True)


def heads_first(name: str, tensor: np.ndarray, num_heads: int) -> np.ndarray:
  """A checkpoint tensor in the module's layout: c_attn's weight [in, 3 * hidden] and bias [3 * hidden] with their
  output units reordered from (q, k, v) x heads x head_dim to heads x (q, k, v) x head_dim; other tensors as saved."""
  return _swap_fused_axes(name, tensor, (3, num_heads))


def heads_last(name: str, tensor: np.ndarray, num_heads: int) -> np.ndarray:
  """The inverse of `heads_first`: a tensor of the module in the checkpoint's layout (what an export writes)."""
  return _swap_fused_axes(name, tensor, (num_heads, 3))


def _swap_fused_axes(name: str, tensor: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
  """c_attn's output units [..., a x b x head_dim] reordered to [..., b x a x head_dim] (a, b = `axes`)."""
  if not name.endswith(("attn.c_attn.weight", "attn.c_attn.bias")):
    return tensor
  return tensor.reshape(tensor.shape[:-1] + axes + (-1,)).swapaxes(-3, -2).reshape(tensor.shape)


@functools.lru_cache(maxsize=16)
def partition_rules(dims: GPT2Dims, tensor: int) -> tuple:
  """GPT-2's tensor-parallel placement (sharding.megatron_rules): the fused attn.c_attn (heads first: whole heads
  with their q, k and v; config validation requires `tensor` to divide the heads) and mlp.c_fc split their output
  units, attn.c_proj and mlp.c_proj their input units, and the token embedding wte (also the tied LM head) its
  vocabulary when `tensor` divides it (the log says so once when not); position embeddings and norms stay whole."""
  split_inputs = r"attn\.c_proj|mlp\.c_proj"
  if dims.vocab_size % tensor == 0:
    split_inputs += r"|\bwte"
  else:
    logger.info("tensor parallelism over %d devices: the vocabulary of %d tokens does not split in %d; the token "
                "embedding (and tied LM head) stays whole on every device", tensor, dims.vocab_size, tensor)
  return sharding.megatron_rules(split_outputs=r"attn\.c_attn|mlp\.c_fc", split_inputs=split_inputs)


def build(config, *, checkpoint: str, task: str, num_labels: int | None, dtype, param_dtype) -> Architecture:
  """The Flax model of a GPT-2 config for task "causal_lm"; num_labels is unused."""
  del task, num_labels
  for option in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
    if getattr(config, option, False):
      raise UserError(f"checkpoint {checkpoint}: GPT-2 option {option}=True is not supported; supported: False")
  eos = config.eos_token_id
  dims = GPT2Dims(
      vocab_size=config.vocab_size, hidden_size=config.n_embd, num_layers=config.n_layer, num_heads=config.n_head,
      intermediate_size=config.n_inner or 4 * config.n_embd, max_position_embeddings=config.n_positions,
      layer_norm_epsilon=config.layer_norm_epsilon,
      activation=layers.check_activation(config.activation_function, checkpoint),
      embedding_dropout=config.embd_pdrop, attention_dropout=config.attn_pdrop, residual_dropout=config.resid_pdrop,
      pad_token_id=config.pad_token_id,
      eos_token_ids=() if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (eos,))
  return Architecture(module=GPT2LMHeadModel(dims, dtype, param_dtype), class_name="GPT2LMHeadModel",
                      example_inputs={"input_ids": jnp.zeros((1, 1), jnp.int32)}, base_prefix="transformer",
                      to_module_layout=functools.partial(heads_first, num_heads=dims.num_heads),
                      to_checkpoint_layout=functools.partial(heads_last, num_heads=dims.num_heads))
