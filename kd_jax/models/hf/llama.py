"""Llama-family decoder-only LMs (transformers' modeling_llama.py, modeling_mistral.py, modeling_qwen2.py,
modeling_qwen3.py, modeling_phi3.py) as Flax modules named like their tensors: Llama 2/3, Mistral, Qwen2/2.5, Qwen3,
SmolLM2, Phi-3/Phi-4-mini.

Pre-norm blocks with RMS norm: h += o(attention(rope(q), rope(k), v)); h += down(silu(gate(x)) * up(x)); a final
RMS norm and the LM head (its own lm_head.weight, or the token embedding when tie_word_embeddings). Grouped-query
attention (num_key_value_heads <= num_attention_heads), rotary position embeddings with the default, linear, dynamic
(NTK), llama3, yarn or longrope frequencies of config.json's rope parameters. The variants differ by config only:
Qwen2 has q/k/v biases (Llama's attention_bias adds one to o_proj too), Qwen3 an RMS norm over each head of q and k
before the rotation, Mistral (and Qwen layers listed as "sliding_attention") a sliding attention window, Phi-3 fused
projections (qkv_proj = [q; k; v], gate_up_proj = [gate; up]) and a rotation of the first partial_rotary_factor of
each head.

Decoding with a KV cache (generation.py) calls the module with `decode_length` set: the keys and values of every
call are written into a cache of decode_length slots (keys [batch, kv_heads, head_dim, slots], values [batch,
kv_heads, slots, head_dim]) at the "cache" collection's index, and `attention_mask` then covers all decode_length
slots.
"""

import dataclasses
import functools
import logging
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.errors import UserError
from kd_jax.models.hf import layers
from kd_jax.models.hf.weights import Architecture
# Llama's RMSNorm is T5's: weight * x / sqrt(mean(x²) + eps) with the statistic in float32.
from kd_jax.models.dropout import Dropout
from kd_jax.models.hf.t5 import T5LayerNorm as RMSNorm
from kd_jax.parallel import sharding

logger = logging.getLogger(__name__)

SUPPORTED_TASKS = ("causal_lm",)
ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")


@dataclasses.dataclass(frozen=True)
class Rope:
  """Rotary position embedding frequencies (transformers' modeling_rope_utils.py for ROPE_TYPES)."""
  theta: float
  # The rotated dimensions of each head: head_dim * partial_rotary_factor.
  head_dim: int
  rope_type: str = "default"
  # linear, dynamic, llama3: the context extension factor.
  factor: float = 1.0
  # dynamic: the length past which the base grows with the sequence length.
  max_position_embeddings: int = 0
  # llama3: wavelengths above original_max_position_embeddings / low_freq_factor are divided by factor, those below
  # original_max_position_embeddings / high_freq_factor kept, those between interpolated.
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192
  # yarn: frequencies interpolated (divided by factor) below the correction range of beta_fast .. beta_slow
  # rotations over original_max_position_embeddings, kept above it, ramped between (its ends rounded out when
  # truncate).
  beta_fast: float = 32.0
  beta_slow: float = 1.0
  truncate: bool = True
  # longrope: per-frequency divisors, the long ones once the call's positions pass original_max_position_embeddings.
  short_factor: tuple[float, ...] = ()
  long_factor: tuple[float, ...] = ()
  # yarn, longrope: the scale of cos and sin.
  attention_factor: float = 1.0

  def inverse_frequencies(self, sequence_length: jax.Array) -> jax.Array:
    """[head_dim / 2] float32; `sequence_length` (max position + 1 of the call, traced) matters for dynamic only."""
    exponents = jnp.arange(0, self.head_dim, 2, dtype=jnp.float32) / self.head_dim
    if self.rope_type == "dynamic":
      length = jnp.maximum(sequence_length, self.max_position_embeddings).astype(jnp.float32)
      base = self.theta * ((self.factor * length / self.max_position_embeddings) - (self.factor - 1)) ** (
          self.head_dim / (self.head_dim - 2))
      return 1.0 / base**exponents
    inverse = 1.0 / self.theta**exponents
    if self.rope_type == "linear":
      return inverse / self.factor
    if self.rope_type == "llama3":
      low_freq_wavelength = self.original_max_position_embeddings / self.low_freq_factor
      high_freq_wavelength = self.original_max_position_embeddings / self.high_freq_factor
      wavelength = 2 * math.pi / inverse
      scaled = jnp.where(wavelength > low_freq_wavelength, inverse / self.factor, inverse)
      smooth = (self.original_max_position_embeddings / wavelength - self.low_freq_factor) / (
          self.high_freq_factor - self.low_freq_factor)
      smoothed = (1 - smooth) * scaled / self.factor + smooth * scaled
      is_medium = (wavelength >= high_freq_wavelength) & (wavelength <= low_freq_wavelength)
      return jnp.where(is_medium, smoothed, scaled)
    if self.rope_type == "yarn":
      low, high = (self.head_dim * math.log(self.original_max_position_embeddings / (rotations * 2 * math.pi))
                   / (2 * math.log(self.theta)) for rotations in (self.beta_fast, self.beta_slow))
      if self.truncate:
        low, high = math.floor(low), math.ceil(high)
      low, high = max(low, 0), min(high, self.head_dim - 1)
      ramp = jnp.clip((jnp.arange(self.head_dim // 2, dtype=jnp.float32) - low) / (
          (high + 0.001 if low == high else high) - low), 0, 1)
      interpolated = 1.0 / (self.factor * self.theta**exponents)
      return interpolated * ramp + inverse * (1 - ramp)
    if self.rope_type == "longrope":
      factors = jnp.where(sequence_length > self.original_max_position_embeddings,
                          jnp.array(self.long_factor, jnp.float32), jnp.array(self.short_factor, jnp.float32))
      return 1.0 / (factors * self.theta**exponents)
    return inverse

  def cos_sin(self, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos and sin [batch, length, 1, head_dim] (float32) of positions [batch, length]."""
    frequencies = positions[..., None].astype(jnp.float32) * self.inverse_frequencies(jnp.max(positions) + 1)
    angles = jnp.concatenate([frequencies, frequencies], axis=-1)[:, :, None, :]
    if self.attention_factor == 1.0:
      return jnp.cos(angles), jnp.sin(angles)
    return jnp.cos(angles) * self.attention_factor, jnp.sin(angles) * self.attention_factor


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [batch, length, heads, head_dim] rotated: x cos + rotate_half(x) sin, rotate_half(a, b) = (-b, a); over the
  first cos.shape[-1] dimensions of each head when that is fewer (partial rotary, as modeling_phi3.py)."""
  rotary = cos.shape[-1]
  if rotary < x.shape[-1]:
    return jnp.concatenate([apply_rope(x[..., :rotary], cos, sin), x[..., rotary:]], axis=-1)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos.astype(x.dtype) + rotated * sin.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class LlamaDims:
  """What the modules need from a Llama-family config.json."""
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float
  hidden_act: str
  rope: Rope
  # Biases of q_proj, k_proj, v_proj (Qwen2, Llama's attention_bias), of o_proj (Llama's attention_bias), of the MLP.
  qkv_bias: bool = False
  output_bias: bool = False
  mlp_bias: bool = False
  # Qwen3: RMS norm over head_dim of each query and key head, before the rotation.
  qk_norm: bool = False
  # Phi-3: one qkv_proj for q, k and v (rows in that order), one gate_up_proj for gate and up.
  fused_projections: bool = False
  # Attention window of each layer (key slot > query slot - window), None for full causal attention.
  sliding_windows: tuple[int | None, ...] = ()
  attention_dropout: float = 0.0
  tie_word_embeddings: bool = False
  pad_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()


def grouped_attention_logits(query: jax.Array, key: jax.Array, bias: jax.Array, scale: float) -> jax.Array:
  """scale * q kᵀ + bias in float32 [batch, heads, queries, keys] for query [batch, queries, heads, head_dim] and
  key [batch, keys, kv_heads, head_dim]: query head h reads key head h // (heads / kv_heads), as transformers'
  repeat_kv does, without repeating the keys."""
  batch, length, heads, head_dim = query.shape
  kv_heads = key.shape[2]
  grouped = query.reshape(batch, length, kv_heads, heads // kv_heads, head_dim)
  scores = jnp.einsum("bqkgd,bskd->bkgqs", grouped, key).astype(jnp.float32)
  return scores.reshape(batch, heads, length, key.shape[1]) * scale + bias


def grouped_attention_output(probabilities: jax.Array, value: jax.Array) -> jax.Array:
  """Σ_s p[b, h, q, s] v[b, s, h // group, :] -> [batch, queries, heads * head_dim] in value's dtype."""
  batch, heads, length, keys = probabilities.shape
  kv_heads = value.shape[2]
  grouped = probabilities.reshape(batch, kv_heads, heads // kv_heads, length, keys).astype(value.dtype)
  mixed = jnp.einsum("bkgqs,bskd->bqkgd", grouped, value)
  return mixed.reshape(batch, length, -1)


def cached_attention_logits(query: jax.Array, cached_key: jax.Array, bias: jax.Array, scale: float) -> jax.Array:
  """grouped_attention_logits over the KV cache's keys, cached_key [batch, kv_heads, head_dim, slots]: per key head one
  [group * queries, head_dim] x [head_dim, slots] product, whose operands XLA:CPU's dot library (YNNPACK) reads as they
  lie. (grouped_attention_logits' einsum over the cache transposed made XLA:CPU put the cache first, contracted over
  its second-minor axis, a dot that only its slower Eigen kernel takes: 7% of a SmolLM2-135M decoding step at batch 8
  for 0.1 MFLOP per layer.)"""
  batch, length, heads, head_dim = query.shape
  kv_heads = cached_key.shape[1]
  grouped = jnp.moveaxis(query.reshape(batch, length, kv_heads, heads // kv_heads, head_dim), 1, 3)
  scores = jax.lax.dot_general(grouped.reshape(batch, kv_heads, -1, head_dim), cached_key,
                               (((3,), (2,)), ((0, 1), (0, 1)))).astype(jnp.float32)
  return scores.reshape(batch, heads, length, cached_key.shape[-1]) * scale + bias


def cached_attention_output(probabilities: jax.Array, cached_value: jax.Array) -> jax.Array:
  """grouped_attention_output over the KV cache's values, cached_value [batch, kv_heads, slots, head_dim]: per key head
  one [group * queries, slots] x [slots, head_dim] product (with the values slots-last, as the keys, YNNPACK
  transposed the whole cache in every layer and step: 3-5% of the step)."""
  batch, heads, length, keys = probabilities.shape
  kv_heads, head_dim = cached_value.shape[1], cached_value.shape[3]
  grouped = probabilities.reshape(batch, kv_heads, -1, keys).astype(cached_value.dtype)
  mixed = jax.lax.dot_general(grouped, cached_value, (((3,), (2,)), ((0, 1), (0, 1))))
  mixed = jnp.moveaxis(mixed.reshape(batch, kv_heads, heads // kv_heads, length, head_dim), 3, 1)
  return mixed.reshape(batch, length, -1)


class LlamaAttention(nn.Module):
  """Grouped-query self-attention with rotary embeddings: o_proj(softmax(q kᵀ / sqrt(head_dim) + bias) v)."""
  dims: LlamaDims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_chunk: int = 0  # layers.query_chunked; 0: all queries at once

  @nn.compact
  def __call__(self, hidden, bias, cos, sin, *, cache_index=None, train: bool) -> jax.Array:
    """hidden [batch, length, hidden]; bias broadcastable to [batch, heads, length, keys]; cos/sin of the positions.

    cache_index: when decoding, the cache slot of this call's first token (the cache has bias.shape[-1] slots).
    """
    dims = self.dims
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    split = lambda x, heads: x.reshape(x.shape[:2] + (heads, dims.head_dim))
    sizes = (dims.num_heads * dims.head_dim, dims.num_kv_heads * dims.head_dim, dims.num_kv_heads * dims.head_dim)
    if dims.fused_projections:
      fused = dense(sum(sizes), use_bias=dims.qkv_bias, name="qkv_proj")(hidden)
      projected = jnp.split(fused, [sizes[0], sizes[0] + sizes[1]], axis=-1)
    else:
      projected = [dense(size, use_bias=dims.qkv_bias, name=f"{name}_proj")(hidden)
                   for size, name in zip(sizes, "qkv")]
    query, key, value = (split(x, heads) for x, heads in zip(
        projected, (dims.num_heads, dims.num_kv_heads, dims.num_kv_heads)))
    if dims.qk_norm:
      norm = functools.partial(RMSNorm, dims.rms_norm_eps, self.dtype, self.param_dtype)
      query, key = norm(name="q_norm")(query), norm(name="k_norm")(key)
    query, key = apply_rope(query, cos, sin), apply_rope(key, cos, sin)
    if cache_index is not None:
      # The layouts the attention products read as they lie (cached_attention_logits, cached_attention_output): keys
      # [batch, kv_heads, head_dim, slots], values [batch, kv_heads, slots, head_dim]; a step writes its tokens' slots
      # instead of transposing the cache.
      batch, slots = hidden.shape[0], bias.shape[-1]
      cached_key = self.variable("cache", "key", jnp.zeros, (batch, dims.num_kv_heads, dims.head_dim, slots), key.dtype)
      cached_value = self.variable("cache", "value", jnp.zeros, (batch, dims.num_kv_heads, slots, dims.head_dim),
                                   value.dtype)
      cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, jnp.transpose(key, (0, 2, 3, 1)),
                                                      (0, 0, 0, cache_index))
      cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, jnp.transpose(value, (0, 2, 1, 3)),
                                                        (0, 0, cache_index, 0))
      key, value = cached_key.value, cached_value.value
      attention_logits, attention_output = cached_attention_logits, cached_attention_output
    else:
      attention_logits, attention_output = grouped_attention_logits, grouped_attention_output
    output_proj = dense(dims.hidden_size, use_bias=dims.output_bias, name="o_proj")
    if layers.chunks_attention(self, query.shape[1], decoding=cache_index is not None,
                               dropout=train and dims.attention_dropout > 0):
      attend = lambda part, part_bias: attention_output(
          jax.nn.softmax(attention_logits(part, key, part_bias, dims.head_dim**-0.5), axis=-1), value)
      return output_proj(layers.query_chunked(attend, query, bias, self.attention_chunk))
    logits = attention_logits(query, key, bias, dims.head_dim**-0.5)
    self.sow("intermediates", "attention_logits", logits)
    probabilities = Dropout(dims.attention_dropout)(jax.nn.softmax(logits, axis=-1), deterministic=not train)
    return output_proj(attention_output(probabilities, value))


class LlamaDecoderLayer(nn.Module):
  """h += self_attn(input_layernorm(h)); h += mlp(post_attention_layernorm(h)), mlp = down(act(gate x) * up x)."""
  dims: LlamaDims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_chunk: int = 0  # layers.query_chunked; 0: all queries at once

  @nn.compact
  def __call__(self, hidden, bias, cos, sin, cache_index=None, train: bool = False) -> jax.Array:
    """`train` is positional (layers.rematerialized's static argument 6)."""
    dims = self.dims
    norm = functools.partial(RMSNorm, dims.rms_norm_eps, self.dtype, self.param_dtype)
    dense = functools.partial(nn.Dense, use_bias=dims.mlp_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    hidden += LlamaAttention(dims, self.dtype, self.param_dtype, self.attention_chunk, name="self_attn")(
        norm(name="input_layernorm")(hidden), bias, cos, sin, cache_index=cache_index, train=train)
    x = norm(name="post_attention_layernorm")(hidden)
    if dims.fused_projections:
      gate, up = jnp.split(dense(2 * dims.intermediate_size, name="mlp.gate_up_proj")(x), 2, axis=-1)
    else:
      gate, up = dense(dims.intermediate_size, name="mlp.gate_proj")(x), dense(dims.intermediate_size,
                                                                             name="mlp.up_proj")(x)
    gated = layers.ACTIVATIONS[dims.hidden_act](gate) * up
    return hidden + dense(dims.hidden_size, name="mlp.down_proj")(gated)


def causal_bias(query_slots: jax.Array, key_slots: jax.Array, attention_mask: jax.Array | None,
                window: int | None, segment_ids: jax.Array | None = None) -> jax.Array:
  """Additive bias [batch or 1, 1, queries, keys] (float32): 0 where key slot <= query slot (and > query slot -
  window), attention_mask [batch, keys] is 1 and (packed rows) segment_ids [batch, length] of query and key are
  equal, else masked: causal and block-diagonal, a packed example attends to itself only."""
  allowed = key_slots[None, :] <= query_slots[:, None]
  if window is not None:
    allowed &= key_slots[None, :] > query_slots[:, None] - window
  bias = jnp.where(allowed, 0.0, layers.MASKED_SCORE)[None, None]
  if attention_mask is not None:
    bias = bias + layers.padding_bias(attention_mask)
  if segment_ids is not None:
    same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
    bias = bias + jnp.where(same_segment, 0.0, layers.MASKED_SCORE)[:, None]
  return jnp.maximum(bias, layers.MASKED_SCORE)


def decode_slots(module: nn.Module, length: int, decode_length: int | None):
  """(query slots [length], key slots, cache index or None) of a decoder-only LM's call: slots 0..length-1 without a
  KV cache; when decoding (`decode_length` cache slots), the queries sit after the tokens already cached (the
  module's 'cache'/'index' variable, advanced by `length` here) and the keys span the whole cache."""
  query_slots = jnp.arange(length)
  if decode_length is None:
    return query_slots, query_slots, None
  index = module.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
  cache_index = index.value
  index.value += length
  return query_slots + cache_index, jnp.arange(decode_length), cache_index


class LlamaModel(nn.Module):
  """Token embedding, decoder layers, final norm: the model.* tensors."""
  dims: LlamaDims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"  # layers.rematerialized, per decoder layer (not while decoding with a KV cache)
  attention_chunk: int = 0  # layers.query_chunked; 0: all queries at once
  scan_layers: bool = False  # `scanned_layers` in training and evaluation forwards

  @nn.compact
  def __call__(self, input_ids, attention_mask, position_ids, decode_length, train: bool, project: bool = True,
               segment_ids=None):
    """(last hidden states [batch, length, hidden_size], the tied LM head's logits or None: None also when not
    `project`); see LlamaForCausalLM."""
    dims = self.dims
    query_slots, key_slots, cache_index = decode_slots(self, input_ids.shape[1], decode_length)
    if position_ids is None:
      position_ids = jnp.broadcast_to(query_slots, input_ids.shape)
    cos, sin = dims.rope.cos_sin(position_ids)
    biases = {window: causal_bias(query_slots, key_slots, attention_mask, window, segment_ids)
              for window in set(dims.sliding_windows)}
    embed = nn.Embed(dims.vocab_size, dims.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="embed_tokens")
    hidden = embed(input_ids)
    if self.scan_layers and decode_length is None and not self.is_initializing():
      hidden = self.scanned_layers(hidden, biases, cos, sin, train)
    else:
      remat = "none" if decode_length is not None else self.remat
      layer = layers.rematerialized(LlamaDecoderLayer, remat, train_argnum=6)
      for index, window in enumerate(dims.sliding_windows):
        hidden = layer(dims, self.dtype, self.param_dtype, self.attention_chunk, name=f"layers.{index}")(
            hidden, biases[window], cos, sin, cache_index, train)
    hidden = RMSNorm(dims.rms_norm_eps, self.dtype, self.param_dtype, name="norm")(hidden)
    return hidden, embed.attend(hidden) if dims.tie_word_embeddings and project else None

  def scanned_layers(self, hidden, biases, cos, sin, train: bool) -> jax.Array:
    """The decoder layers as one jax.lax.scan (config.train.scan_layers): one LlamaDecoderLayer applied functionally
    to the parameters of layers.0 .. layers.{L-1} stacked along a new axis (the parameter tree stays per layer), so
    XLA compiles one layer instead of L; under jax.checkpoint with train.remat's policy unless 'none', so the
    backward loop recomputes each layer from the hidden states it carried in, on every backend (XLA:CPU cannot merge
    the recomputation across iterations as it does over unrolled layers). A layer's attention bias is picked by index
    among `biases` (one per distinct sliding window); its dropout key is the layer's fold of the model's (other
    masks than the unrolled layers', which draw per module path). Same function as the unrolled loop."""
    assert not self.is_mutable_collection("intermediates"), (
        "scan_layers sows no intermediates (config rules refuse feature distillation with it)")
    dims = self.dims
    windows = list(dict.fromkeys(dims.sliding_windows))
    bias_table = jnp.stack([biases[window] for window in windows])
    params = self.variables["params"]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves),
                           *(params[f"layers.{index}"] for index in range(dims.num_layers)))
    window_index = jnp.array([windows.index(window) for window in dims.sliding_windows], jnp.int32)
    keys = (jax.random.split(self.make_rng("dropout"), dims.num_layers) if train and self.has_rng("dropout")
            else None)
    layer = LlamaDecoderLayer(dims, self.dtype, self.param_dtype, self.attention_chunk, parent=None)

    def apply_layer(layer_params, hidden, index, key, bias_table, cos, sin):
      # The bias is picked inside the checkpoint: the backward pass keeps the index, not a bias per layer.
      return layer.apply({"params": layer_params}, hidden, bias_table[index], cos, sin, None, train,
                         rngs=None if key is None else {"dropout": key})

    if self.remat != "none":
      apply_layer = jax.checkpoint(apply_layer, policy=layers.remat_policy(self.remat), prevent_cse=False)

    def body(hidden, layer_inputs):
      layer_params, index, key = layer_inputs
      return apply_layer(layer_params, hidden, index, key, bias_table, cos, sin), None

    hidden, _ = jax.lax.scan(body, hidden, (stacked, window_index, keys))
    return hidden


class LlamaForCausalLM(nn.Module):
  """Task "causal_lm": next-token logits [batch, length, vocab_size] (in `dtype`)."""
  dims: LlamaDims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"  # config.train.remat (kd_jax.models.with_remat)
  attention_chunk: int = 0  # config.train.attention_chunk (kd_jax.models.with_remat)
  scan_layers: bool = False  # config.train.scan_layers (kd_jax.models.with_remat)

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, position_ids=None, decode_length: int | None = None,
               train: bool = False, project: bool = True, segment_ids=None) -> jax.Array:
    """Logits [batch, length, vocab_size] of input_ids [batch, length].

    attention_mask: [batch, length] (1 for tokens, 0 for padding; None: all tokens); when decoding, [batch,
      decode_length] over the cache's slots.
    position_ids: [batch, length] rotary positions; default: the slot index (0, 1, ... as in transformers' forward,
      which also counts left padding; generation passes cumsum(attention_mask) - 1 as transformers' generate does;
      packed rows restart them at each example).
    decode_length: the KV cache's length when decoding (the "cache" collection mutable).
    project: False: the final hidden states [batch, length, hidden_size] instead of the logits, which
      `output_head(params)` projects (chunked losses, kd_jax/training/chunked.py).
    segment_ids: packed rows [batch, length] (kd_jax/data/causal_lm.py `pack`): a token attends only to the earlier
      tokens of its own segment; None: one sequence per row.
    """
    hidden, logits = LlamaModel(self.dims, self.dtype, self.param_dtype, self.remat, self.attention_chunk,
                                self.scan_layers, name="model")(
        input_ids, attention_mask, position_ids, decode_length, train, project, segment_ids)
    if not project:
      return hidden
    if logits is None:
      logits = nn.Dense(self.dims.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                        name="lm_head")(hidden)
    return logits

  def output_head(self, params) -> layers.OutputHead:
    """The projection of `__call__(project=False)`'s hidden states to the logits: lm_head, or the token embedding
    when tie_word_embeddings."""
    if self.dims.tie_word_embeddings:
      return layers.OutputHead(params["model"]["embed_tokens"]["embedding"], dtype=self.dtype, tied=True)
    return layers.OutputHead(params["lm_head"]["kernel"], dtype=self.dtype)


@functools.lru_cache(maxsize=16)
def partition_rules(dims: LlamaDims, tensor: int) -> tuple:
  """The Llama family's tensor-parallel placement (sharding.megatron_rules) on a tensor axis of size `tensor`: q_proj,
  k_proj and v_proj split their output units (whole heads; config validation requires `tensor` to divide the query
  heads), gate_proj and up_proj their hidden units, o_proj and down_proj their input units, and the vocabulary
  splits over the axis in the LM head (its outputs: each device computes its share of the logits) and the token
  embedding (its rows). Grouped-query attention's key / value heads split only when `tensor` divides them; otherwise
  k_proj and v_proj stay whole on every device (each device then computes every key / value head, and its query heads
  read the groups they belong to), which the log says once, as it says a vocabulary that does not split. Norms stay
  whole."""
  split_outputs = [r"self_attn/q_proj", r"mlp\.(gate_proj|up_proj)"]
  split_inputs = [r"self_attn/o_proj", r"mlp\.down_proj"]
  if dims.num_kv_heads % tensor == 0:
    split_outputs.append(r"self_attn/(k_proj|v_proj)")
  else:
    logger.info("tensor parallelism over %d devices: the %d key/value heads do not split in %d; k_proj and v_proj "
                "stay whole on every device (the %d query heads split)", tensor, dims.num_kv_heads, tensor,
                dims.num_heads)
  if dims.vocab_size % tensor == 0:
    split_outputs.append(r"\blm_head")
    split_inputs.append(r"\bembed_tokens")
  else:
    logger.info("tensor parallelism over %d devices: the vocabulary of %d tokens does not split in %d; the token "
                "embedding and LM head stay whole on every device", tensor, dims.vocab_size, tensor)
  return sharding.megatron_rules(split_outputs="|".join(split_outputs), split_inputs="|".join(split_inputs))


def rope_from_config(config, head_dim: int, checkpoint: str) -> Rope:
  """The Rope of a transformers config (rope_parameters in transformers 5; rope_theta/rope_scaling before)."""
  parameters = dict(getattr(config, "rope_parameters", None) or {})
  if not parameters:
    parameters = dict(getattr(config, "rope_scaling", None) or {})
    parameters.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
  rope_type = parameters.get("rope_type", parameters.get("type", "default"))
  if rope_type not in ROPE_TYPES:
    raise UserError(f"checkpoint {checkpoint}: rope type {rope_type!r} is not supported; supported: "
                    f"{', '.join(ROPE_TYPES)}")
  partial = parameters.get("partial_rotary_factor", 1.0)
  if partial != 1.0 and config.model_type != "phi3":
    raise UserError(f"checkpoint {checkpoint}: partial_rotary_factor {partial} is not supported for model_type "
                    f"{config.model_type!r}; supported: 1.0 (transformers' {config.model_type} class rotates the whole "
                    "head; phi3 rotates a part)")
  head_dim = int(head_dim * partial)
  extra = {key: parameters[key] for key in ("factor", "low_freq_factor", "high_freq_factor",
                                            "original_max_position_embeddings", "beta_fast", "beta_slow", "truncate")
           if parameters.get(key) is not None}
  if rope_type in ("yarn", "longrope"):
    extra.update(_extension_parameters(config, parameters, rope_type, head_dim, checkpoint))
  return Rope(theta=float(parameters["rope_theta"]), head_dim=head_dim, rope_type=rope_type,
              max_position_embeddings=config.max_position_embeddings, **extra)


def _extension_parameters(config, parameters: dict, rope_type: str, head_dim: int, checkpoint: str) -> dict:
  """yarn's and longrope's factor, attention_factor and longrope's factor lists, with transformers' defaults
  (modeling_rope_utils.py _compute_yarn_parameters, _compute_longrope_parameters)."""
  original = (getattr(config, "original_max_position_embeddings", None)
              or parameters.get("original_max_position_embeddings") or config.max_position_embeddings)
  factor = parameters.get("factor") or config.max_position_embeddings / original
  attention_factor = parameters.get("attention_factor")
  extra = {"original_max_position_embeddings": original, "factor": factor}
  if rope_type == "yarn" and attention_factor is None:
    mscale = lambda scale, m=1.0: 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
    mscale_all_dim = parameters.get("mscale_all_dim")
    attention_factor = (mscale(factor, parameters["mscale"]) / mscale(factor, mscale_all_dim)
                        if parameters.get("mscale") and mscale_all_dim else mscale(factor))
  if rope_type == "longrope":
    for key in ("short_factor", "long_factor"):
      values = parameters.get(key)
      if not isinstance(values, (list, tuple)) or len(values) != head_dim // 2:
        raise UserError(f"checkpoint {checkpoint}: longrope {key} {values!r} is not supported; supported: a list of "
                        f"head_dim / 2 = {head_dim // 2} numbers")
      extra[key] = tuple(float(value) for value in values)
    if attention_factor is None:
      attention_factor = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))
  extra["attention_factor"] = float(attention_factor)
  return extra


def _sliding_windows(config) -> tuple[int | None, ...]:
  """Each layer's attention window: Mistral's sliding_window for all; Qwen's per layer_types."""
  window = getattr(config, "sliding_window", None)
  layer_types = getattr(config, "layer_types", None)
  if config.model_type in ("mistral", "phi3") or not layer_types:
    return (window if config.model_type in ("mistral", "phi3") else None,) * config.num_hidden_layers
  return tuple(window if layer_type == "sliding_attention" else None for layer_type in layer_types)


def _token_ids(value) -> tuple[int, ...]:
  if value is None:
    return ()
  return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def dims_from_config(config, checkpoint: str) -> LlamaDims:
  """The LlamaDims of a transformers Llama/Mistral/Qwen2/Qwen3 config."""
  head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
  model_type = config.model_type
  attention_bias = bool(getattr(config, "attention_bias", False))
  return LlamaDims(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
      num_layers=config.num_hidden_layers, num_heads=config.num_attention_heads,
      num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads, head_dim=head_dim,
      rms_norm_eps=config.rms_norm_eps, hidden_act=layers.check_activation(config.hidden_act, checkpoint),
      rope=rope_from_config(config, head_dim, checkpoint),
      qkv_bias=model_type == "qwen2" or attention_bias, output_bias=model_type != "qwen2" and attention_bias,
      mlp_bias=bool(getattr(config, "mlp_bias", False)), qk_norm=model_type == "qwen3",
      fused_projections=model_type == "phi3",
      sliding_windows=_sliding_windows(config), attention_dropout=float(getattr(config, "attention_dropout", 0.0)),
      tie_word_embeddings=bool(config.tie_word_embeddings), pad_token_id=config.pad_token_id,
      eos_token_ids=_token_ids(config.eos_token_id))


_CLASS_NAMES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM"}


def build(config, *, checkpoint: str, task: str, num_labels: int | None, dtype, param_dtype) -> Architecture:
  """The Flax model of a Llama-family config for task "causal_lm"; num_labels is unused."""
  del task, num_labels
  return Architecture(module=LlamaForCausalLM(dims_from_config(config, checkpoint), dtype, param_dtype),
                      class_name=_CLASS_NAMES[config.model_type],
                      example_inputs={"input_ids": jnp.zeros((1, 1), jnp.int32)}, base_prefix="model")

