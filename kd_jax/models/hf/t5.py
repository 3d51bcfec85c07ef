"""T5, T5 v1.1 and FLAN-T5 (transformers' modeling_t5.py) as Flax modules named like their tensors.

Original T5: ReLU feed-forward, LM head tied to the shared embedding with the decoder output scaled by d_model**-0.5.
T5 v1.1 / FLAN-T5: gated-GELU feed-forward, separate lm_head, no output scaling. Both: pre-norm blocks with RMS
norm, unscaled attention logits plus a learned relative position bias (bucketed, bidirectional in the encoder,
causal in the decoder) shared by all layers of a stack.

Decoding with a KV cache (generation.py) calls `decode` with `decode_length` set: each call feeds one token per
sequence, and the self-attention keys/values, the cross-attention keys/values and the position live in the "cache"
collection.
"""

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.models.dropout import Dropout
from kd_jax.models.hf import layers
from kd_jax.models.hf.weights import Architecture
from kd_jax.parallel import sharding

SUPPORTED_TASKS = ("encoder", "seq2seq")


@dataclasses.dataclass(frozen=True)
class T5Dims:
  """What the modules need from a T5 config.json."""
  vocab_size: int
  d_model: int
  d_kv: int
  d_ff: int
  num_heads: int
  num_layers: int
  num_decoder_layers: int
  relative_attention_num_buckets: int
  relative_attention_max_distance: int
  dropout_rate: float
  layer_norm_epsilon: float
  dense_act_fn: str
  is_gated_act: bool
  # Original T5: logits = shared(h * d_model**-0.5)ᵀ. T5 v1.1: logits = lm_head(h).
  tied_lm_head: bool
  pad_token_id: int
  eos_token_id: int
  decoder_start_token_id: int


def relative_position_bucket(relative_position: jax.Array, *, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
  """Mesh TensorFlow's bucket of relative_position = key position - query position (any shape, int).

  Half of the buckets (per direction when bidirectional) hold exact distances 0 .. max_exact-1, the other half
  distances growing logarithmically up to max_distance; the decoder (not bidirectional) maps keys after the
  query to bucket 0 (they are masked anyway).
  """
  buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets += (relative_position > 0).astype(relative_position.dtype) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
  distance_if_large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(relative_position.dtype)
  distance_if_large = jnp.minimum(distance_if_large, num_buckets - 1)
  return buckets + jnp.where(distance < max_exact, distance, distance_if_large)


class T5LayerNorm(nn.Module):
  """RMS norm: weight * x / sqrt(mean(x²) + eps), the statistic in float32; no mean, no bias."""
  epsilon: float
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    weight = self.param("weight", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    x = x.astype(jnp.float32)
    normed = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
    return weight.astype(self.dtype) * normed.astype(self.dtype)


class T5Attention(nn.Module):
  """Multi-head attention without score scaling: o(softmax(q kᵀ + bias) v); self- or cross-attention.

  In decoding (`decode_position` given), self-attention writes this step's key/value at `decode_position` of a
  [batch, bias keys, heads, d_kv] cache; cross-attention projects the encoder states once into the cache.
  """
  dims: T5Dims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, bias, *, encoder_hidden=None, decode_position=None, train: bool) -> jax.Array:
    """hidden [batch, queries, d_model], bias broadcastable to [batch, heads, queries, keys] -> like hidden."""
    dims = self.dims
    dense = functools.partial(nn.Dense, dims.num_heads * dims.d_kv, use_bias=False, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    split_heads = lambda x: x.reshape(x.shape[:2] + (dims.num_heads, dims.d_kv))
    project_key_value = lambda states: (split_heads(dense(name="k")(states)), split_heads(dense(name="v")(states)))
    query = split_heads(dense(name="q")(hidden))
    if encoder_hidden is None:
      key, value = project_key_value(hidden)
      if decode_position is not None:
        cache_shape = (hidden.shape[0], bias.shape[-1], dims.num_heads, dims.d_kv)
        cached_key = self.variable("cache", "key", jnp.zeros, cache_shape, key.dtype)
        cached_value = self.variable("cache", "value", jnp.zeros, cache_shape, value.dtype)
        start = (0, decode_position, 0, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
        key, value = cached_key.value, cached_value.value
    elif decode_position is not None:
      key, value = self.variable("cache", "encoder_key_value", project_key_value, encoder_hidden).value
    else:
      key, value = project_key_value(encoder_hidden)
    logits = layers.attention_logits(query, key, bias)
    if encoder_hidden is None:
      # Self-attention scores for attention transfer (kd_jax/training/feature_losses.py): a no-op unless the
      # 'intermediates' collection is mutable.
      self.sow("intermediates", "attention_logits", logits)
    probabilities = jax.nn.softmax(logits, axis=-1)
    probabilities = Dropout(dims.dropout_rate)(probabilities, deterministic=not train)
    return nn.Dense(dims.d_model, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name="o")(
        layers.attention_output(probabilities, value))


class T5FeedForward(nn.Module):
  """wo(dropout(act(wi x))), or gated: wo(dropout(act(wi_0 x) * wi_1 x))."""
  dims: T5Dims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    dims = self.dims
    dense = functools.partial(nn.Dense, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
    act = layers.ACTIVATIONS[dims.dense_act_fn]
    if dims.is_gated_act:
      hidden = act(dense(dims.d_ff, name="wi_0")(x)) * dense(dims.d_ff, name="wi_1")(x)
    else:
      hidden = act(dense(dims.d_ff, name="wi")(x))
    hidden = Dropout(dims.dropout_rate)(hidden, deterministic=not train)
    return dense(dims.d_model, name="wo")(hidden)


class T5Block(nn.Module):
  """Pre-norm block: h += dropout(SelfAttention(norm(h))); [decoder: h += dropout(EncDecAttention(norm(h)))];
  h += dropout(FF(norm(h)))."""
  dims: T5Dims
  is_decoder: bool
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, self_bias, train: bool, *, encoder_hidden=None, encoder_bias=None,
               decode_position=None) -> jax.Array:
    dims = self.dims
    norm = functools.partial(T5LayerNorm, dims.layer_norm_epsilon, self.dtype, self.param_dtype)
    attention = functools.partial(T5Attention, dims, self.dtype, self.param_dtype)
    dropout = Dropout(dims.dropout_rate, deterministic=not train)
    hidden += dropout(attention(name="layer.0.SelfAttention")(
        norm(name="layer.0.layer_norm")(hidden), self_bias, decode_position=decode_position, train=train))
    if self.is_decoder:
      hidden += dropout(attention(name="layer.1.EncDecAttention")(
          norm(name="layer.1.layer_norm")(hidden), encoder_bias, encoder_hidden=encoder_hidden,
          decode_position=decode_position, train=train))
    feed_forward = "layer.2" if self.is_decoder else "layer.1"
    return hidden + dropout(T5FeedForward(dims, self.dtype, self.param_dtype, name=f"{feed_forward}.DenseReluDense")(
        norm(name=f"{feed_forward}.layer_norm")(hidden), train))


class T5Stack(nn.Module):
  """Embedding (shared), blocks, final RMS norm: the encoder.* or decoder.* tensors."""
  dims: T5Dims
  is_decoder: bool
  embed: nn.Embed
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"  # layers.rematerialized

  @nn.compact
  def __call__(self, input_ids, attention_mask, *, encoder_hidden=None, encoder_mask=None, decode_length=None,
               train: bool) -> jax.Array:
    """input_ids [batch, length] -> hidden states [batch, length, d_model].

    attention_mask [batch, length] or None (all valid); encoder_hidden [batch, source_length, d_model] and
    encoder_mask [batch, source_length] for the decoder; decode_length: cache length when decoding one step.
    """
    dims = self.dims
    dropout = Dropout(dims.dropout_rate, deterministic=not train)
    hidden = dropout(self.embed(input_ids))
    # Hidden states 0 (embeddings) to L for feature distillation (kd_jax/training/feature_losses.py), as transformers'
    # encoder_hidden_states / decoder_hidden_states: the inputs of blocks 0..L-1, then the final norm's output; sow is
    # a no-op unless the 'intermediates' collection is mutable.
    self.sow("intermediates", "hidden_states", hidden)
    query_positions = jnp.arange(input_ids.shape[1])
    key_positions = query_positions
    decode_position = None
    if decode_length is not None:
      position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
      decode_position = position.value
      query_positions = query_positions + decode_position
      key_positions = jnp.arange(decode_length)
      position.value += input_ids.shape[1]
    relative_position = key_positions[None, :] - query_positions[:, None]
    buckets = relative_position_bucket(
        relative_position, bidirectional=not self.is_decoder, num_buckets=dims.relative_attention_num_buckets,
        max_distance=dims.relative_attention_max_distance)
    # Owned by block 0 in checkpoints; every block of the stack uses the same position bias.
    position_bias = nn.Embed(dims.relative_attention_num_buckets, dims.num_heads, dtype=jnp.float32,
                             param_dtype=self.param_dtype,
                             name="block.0.layer.0.SelfAttention.relative_attention_bias")(buckets)
    self_bias = position_bias.transpose(2, 0, 1)[None]  # [1, heads, queries, keys]
    if self.is_decoder:
      self_bias += jnp.where(relative_position <= 0, 0.0, layers.MASKED_SCORE)
    if attention_mask is not None:
      self_bias += layers.padding_bias(attention_mask)
    encoder_bias = None if encoder_mask is None else layers.padding_bias(encoder_mask)
    num_blocks = dims.num_decoder_layers if self.is_decoder else dims.num_layers
    for index in range(num_blocks):
      block = layers.rematerialized(T5Block, self.remat, train_argnum=3)
      hidden = block(dims, self.is_decoder, self.dtype, self.param_dtype, name=f"block.{index}")(
          hidden, self_bias, train, encoder_hidden=encoder_hidden, encoder_bias=encoder_bias,
          decode_position=decode_position)
      if index < num_blocks - 1:
        self.sow("intermediates", "hidden_states", hidden)
    hidden = dropout(T5LayerNorm(dims.layer_norm_epsilon, self.dtype, self.param_dtype, name="final_layer_norm")(
        hidden))
    self.sow("intermediates", "hidden_states", hidden)
    return hidden


class T5ForConditionalGeneration(nn.Module):
  """Task "seq2seq": LM logits [batch, target_length, vocab_size] of decoder_input_ids given input_ids."""
  dims: T5Dims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"  # layers.rematerialized

  def setup(self):
    dims = self.dims
    self.shared = nn.Embed(dims.vocab_size, dims.d_model, dtype=self.dtype, param_dtype=self.param_dtype)
    self.encoder = T5Stack(dims, False, self.shared, self.dtype, self.param_dtype, self.remat)
    self.decoder = T5Stack(dims, True, self.shared, self.dtype, self.param_dtype, self.remat)
    if not dims.tied_lm_head:
      self.lm_head = nn.Dense(dims.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)

  def __call__(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
               train: bool = False, project: bool = True) -> jax.Array:
    """project: False: the decoder's final hidden states [batch, target_length, d_model] instead of the logits,
    which `output_head(params)` projects (chunked losses, kd_jax/training/chunked.py)."""
    if decoder_input_ids is None:
      raise ValueError("T5ForConditionalGeneration needs decoder_input_ids (e.g. shift_right(labels, ...))")
    encoder_hidden = self.encode(input_ids, attention_mask, train=train)
    return self.decode(decoder_input_ids, encoder_hidden, attention_mask, decoder_attention_mask, train=train,
                       project=project)

  def encode(self, input_ids, attention_mask=None, train: bool = False) -> jax.Array:
    """input_ids [batch, source_length] -> encoder hidden states [batch, source_length, d_model]."""
    return self.encoder(input_ids, attention_mask, train=train)

  def decode(self, decoder_input_ids, encoder_hidden, attention_mask=None, decoder_attention_mask=None,
             decode_length: int | None = None, train: bool = False, project: bool = True) -> jax.Array:
    """Logits [batch, target_length, vocab_size] (the final hidden states when not `project`); `attention_mask` is
    the encoder's [batch, source_length]."""
    if attention_mask is None:
      attention_mask = jnp.ones(encoder_hidden.shape[:2], jnp.int32)
    hidden = self.decoder(decoder_input_ids, decoder_attention_mask, encoder_hidden=encoder_hidden,
                          encoder_mask=attention_mask, decode_length=decode_length, train=train)
    if not project:
      return hidden
    if self.dims.tied_lm_head:
      return self.shared.attend(hidden * self.dims.d_model**-0.5)
    return self.lm_head(hidden)

  def output_head(self, params) -> layers.OutputHead:
    """The projection of `decode(project=False)`'s hidden states to the logits: the shared embedding scaled by
    d_model ** -0.5 when tied, else lm_head."""
    if self.dims.tied_lm_head:
      return layers.OutputHead(params["shared"]["embedding"], tied=True, input_scale=self.dims.d_model**-0.5,
                               dtype=self.dtype)
    return layers.OutputHead(params["lm_head"]["kernel"], dtype=self.dtype)


class T5EncoderModel(nn.Module):
  """Task "encoder": the encoder's last hidden states [batch, length, d_model]."""
  dims: T5Dims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"  # layers.rematerialized

  def setup(self):
    self.shared = nn.Embed(self.dims.vocab_size, self.dims.d_model, dtype=self.dtype, param_dtype=self.param_dtype)
    self.encoder = T5Stack(self.dims, False, self.shared, self.dtype, self.param_dtype, self.remat)

  def __call__(self, input_ids, attention_mask=None, train: bool = False) -> jax.Array:
    return self.encoder(input_ids, attention_mask, train=train)


def shift_right(labels: jax.Array, decoder_start_token_id: int, pad_token_id: int) -> jax.Array:
  """Teacher-forcing decoder inputs [batch, length]: [start, labels[:, :-1]], with ignored labels (-100) as pad."""
  shifted = jnp.concatenate([jnp.full_like(labels[:, :1], decoder_start_token_id), labels[:, :-1]], axis=1)
  return jnp.where(shifted == -100, pad_token_id, shifted)


def partition_rules(dims: T5Dims, tensor: int) -> tuple:
  """T5's tensor-parallel placement (sharding.megatron_rules): q / k / v of self- and cross-attention and the feed-
  forward's wi (wi_0 and wi_1 when gated) split their output units (whole heads), o and wo their input units; the
  shared embedding, LM head and relative position biases stay whole."""
  del dims, tensor
  return sharding.megatron_rules(split_outputs=r"Attention/(q|k|v)|DenseReluDense/wi(_0|_1)?",
                                 split_inputs=r"Attention/o|DenseReluDense/wo")

def build(config, *, checkpoint: str, task: str, num_labels: int | None, dtype, param_dtype) -> Architecture:
  """The Flax model of a T5 config (transformers' T5Config) for `task`; num_labels is unused (no classifier)."""
  del num_labels
  eos_token_id = config.eos_token_id[0] if isinstance(config.eos_token_id, (list, tuple)) else config.eos_token_id
  start = config.decoder_start_token_id if getattr(config, "decoder_start_token_id", None) is not None else (
      config.pad_token_id)
  dims = T5Dims(
      vocab_size=config.vocab_size, d_model=config.d_model, d_kv=config.d_kv, d_ff=config.d_ff,
      num_heads=config.num_heads, num_layers=config.num_layers, num_decoder_layers=config.num_decoder_layers,
      relative_attention_num_buckets=config.relative_attention_num_buckets,
      relative_attention_max_distance=config.relative_attention_max_distance, dropout_rate=config.dropout_rate,
      layer_norm_epsilon=config.layer_norm_epsilon,
      dense_act_fn=layers.check_activation(config.dense_act_fn, checkpoint), is_gated_act=config.is_gated_act,
      # transformers 5 reads T5 v1.1's tie_word_embeddings=false as scale_decoder_outputs=False.
      tied_lm_head=config.scale_decoder_outputs, pad_token_id=config.pad_token_id, eos_token_id=eos_token_id,
      decoder_start_token_id=start)
  example_ids = jnp.zeros((1, 1), jnp.int32)
  # Tied embeddings are often saved once, under any of these names; transformers 5 falls back to the shared
  # embedding when a v1.1 checkpoint has no lm_head.weight.
  aliases = {"shared.weight": ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"),
             "lm_head.weight": ("shared.weight",)}
  if task == "encoder":
    return Architecture(module=T5EncoderModel(dims, dtype, param_dtype), class_name="T5EncoderModel",
                        example_inputs={"input_ids": example_ids}, base_prefix="", tensor_aliases=aliases)
  return Architecture(module=T5ForConditionalGeneration(dims, dtype, param_dtype),
                      class_name="T5ForConditionalGeneration",
                      example_inputs={"input_ids": example_ids, "decoder_input_ids": example_ids}, base_prefix="",
                      tensor_aliases=aliases)
