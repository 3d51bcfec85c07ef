"""BERT and RoBERTa (transformers' modeling_bert.py, modeling_roberta.py) as Flax modules named like their tensors.

RoBERTa is BERT with fairseq's position ids (counted from pad_token_id + 1 over non-padding tokens) and its own
classification head; both share the encoder below.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.errors import UserError
from kd_jax.models.dropout import Dropout
from kd_jax.models.hf import layers
from kd_jax.models.hf.weights import Architecture
from kd_jax.parallel import sharding

SUPPORTED_TASKS = ("encoder", "sequence_classification")

_LAYER_NAMES = layers.EncoderLayerNames(
    query="attention.self.query", key="attention.self.key", value="attention.self.value",
    attention_out="attention.output.dense", attention_norm="attention.output.LayerNorm",
    ffn_in="intermediate.dense", ffn_out="output.dense", ffn_norm="output.LayerNorm")

_CLASS_NAMES = {
    ("bert", "encoder"): "BertModel",
    ("bert", "sequence_classification"): "BertForSequenceClassification",
    ("roberta", "encoder"): "RobertaModel",
    ("roberta", "sequence_classification"): "RobertaForSequenceClassification",
}


@dataclasses.dataclass(frozen=True)
class BertDims:
  """What the modules need from a BERT/RoBERTa config.json."""
  encoder: layers.EncoderDims
  num_layers: int
  vocab_size: int
  max_position_embeddings: int
  type_vocab_size: int
  pad_token_id: int
  # RoBERTa: position ids are pad_token_id + (1, 2, ...) over non-padding tokens; BERT: 0, 1, 2, ...
  positions_after_padding: bool
  classifier_dropout: float
  initializer_range: float


class BertEncoder(nn.Module):
  """Embeddings (word + token type + position, LayerNorm, dropout) and the post-LN layers: the `bert.*` tensors."""
  dims: BertDims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"  # layers.rematerialized

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids, train: bool) -> jax.Array:
    """int arrays [batch, length] -> last hidden states [batch, length, hidden_size]."""
    dims = self.dims
    if dims.positions_after_padding:
      not_padding = (input_ids != dims.pad_token_id).astype(jnp.int32)
      position_ids = jnp.cumsum(not_padding, axis=1) * not_padding + dims.pad_token_id
    else:
      position_ids = jnp.arange(input_ids.shape[1])[None, :]
    embed = functools.partial(nn.Embed, features=dims.encoder.hidden_size, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    hidden = embed(dims.vocab_size, name="embeddings.word_embeddings")(input_ids)
    hidden += embed(dims.type_vocab_size, name="embeddings.token_type_embeddings")(token_type_ids)
    hidden += embed(dims.max_position_embeddings, name="embeddings.position_embeddings")(position_ids)
    hidden = nn.LayerNorm(epsilon=dims.encoder.layer_norm_eps, use_fast_variance=False, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="embeddings.LayerNorm")(hidden)
    hidden = Dropout(dims.encoder.hidden_dropout)(hidden, deterministic=not train)
    # Hidden states 0 (embeddings) to num_layers, for feature distillation (kd_jax/training/feature_losses.py); sow is a
    # no-op unless the 'intermediates' collection is mutable.
    self.sow("intermediates", "hidden_states", hidden)
    bias = layers.padding_bias(attention_mask)
    for index in range(dims.num_layers):
      layer = layers.rematerialized(layers.EncoderLayer, self.remat, train_argnum=3)
      hidden = layer(dims.encoder, _LAYER_NAMES, self.dtype, self.param_dtype, name=f"encoder.layer.{index}")(
          hidden, bias, train)
      self.sow("intermediates", "hidden_states", hidden)
    return hidden


def _default_masks(input_ids, attention_mask, token_type_ids):
  """All-ones attention mask and all-zeros token types where the caller gave none (transformers' defaults)."""
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  if token_type_ids is None:
    token_type_ids = jnp.zeros_like(input_ids)
  return attention_mask, token_type_ids


class BertModel(nn.Module):
  """Task "encoder": the last hidden states [batch, length, hidden_size] (no pooler)."""
  dims: BertDims
  base_prefix: str
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, train: bool = False) -> jax.Array:
    attention_mask, token_type_ids = _default_masks(input_ids, attention_mask, token_type_ids)
    return BertEncoder(self.dims, self.dtype, self.param_dtype, self.remat, name=self.base_prefix)(
        input_ids, attention_mask, token_type_ids, train)


class BertForSequenceClassification(nn.Module):
  """logits = classifier(dropout(tanh(pooler(h[:, 0])))): [batch, num_labels]."""
  dims: BertDims
  num_labels: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, train: bool = False) -> jax.Array:
    attention_mask, token_type_ids = _default_masks(input_ids, attention_mask, token_type_ids)
    hidden = BertEncoder(self.dims, self.dtype, self.param_dtype, self.remat, name="bert")(
        input_ids, attention_mask, token_type_ids, train)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=nn.initializers.normal(self.dims.initializer_range))
    # The pooler's tensors live under bert.pooler in checkpoints although it is part of the head here.
    pooled = jnp.tanh(dense(self.dims.encoder.hidden_size, name="bert.pooler.dense")(hidden[:, 0]))
    pooled = Dropout(self.dims.classifier_dropout)(pooled, deterministic=not train)
    return dense(self.num_labels, name="classifier")(pooled)


class RobertaForSequenceClassification(nn.Module):
  """logits = out_proj(dropout(tanh(dense(dropout(h[:, 0]))))): [batch, num_labels]."""
  dims: BertDims
  num_labels: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, train: bool = False) -> jax.Array:
    attention_mask, token_type_ids = _default_masks(input_ids, attention_mask, token_type_ids)
    hidden = BertEncoder(self.dims, self.dtype, self.param_dtype, self.remat, name="roberta")(
        input_ids, attention_mask, token_type_ids, train)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=nn.initializers.normal(self.dims.initializer_range))
    dropout = Dropout(self.dims.classifier_dropout, deterministic=not train)
    features = jnp.tanh(dense(self.dims.encoder.hidden_size, name="classifier.dense")(dropout(hidden[:, 0])))
    return dense(self.num_labels, name="classifier.out_proj")(dropout(features))


def classifier_tensor(config) -> str:
  """The tensor of a fine-tuned classifier checkpoint whose first dimension is the number of labels."""
  return {"bert": "classifier.weight", "roberta": "classifier.out_proj.weight"}[config.model_type]


def partition_rules(dims: BertDims, tensor: int) -> tuple:
  """BERT's and RoBERTa's tensor-parallel placement (sharding.megatron_rules): the query / key / value projections
  and the intermediate layer split their output units (whole heads: config validation requires `tensor` to divide
  the heads), the attention output and the output layer their input units; embeddings, norms, pooler and classifier
  stay whole."""
  del dims, tensor
  return sharding.megatron_rules(split_outputs=r"attention\.self\.(query|key|value)|intermediate\.dense",
                                 split_inputs=r"attention\.output\.dense|\boutput\.dense")

def build(config, *, checkpoint: str, task: str, num_labels: int | None, dtype, param_dtype) -> Architecture:
  """The Flax model of a BERT or RoBERTa config (transformers' BertConfig / RobertaConfig) for `task`."""
  position_type = getattr(config, "position_embedding_type", "absolute")
  if position_type != "absolute":
    raise UserError(f"checkpoint {checkpoint}: position_embedding_type {position_type!r} is not supported "
                    "(only 'absolute')")
  hidden_dropout = config.hidden_dropout_prob
  dims = BertDims(
      encoder=layers.EncoderDims(
          hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
          intermediate_size=config.intermediate_size,
          activation=layers.check_activation(config.hidden_act, checkpoint),
          layer_norm_eps=config.layer_norm_eps, hidden_dropout=hidden_dropout,
          attention_dropout=config.attention_probs_dropout_prob, attention_output_dropout=True),
      num_layers=config.num_hidden_layers, vocab_size=config.vocab_size,
      max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
      pad_token_id=config.pad_token_id, positions_after_padding=config.model_type == "roberta",
      classifier_dropout=hidden_dropout if config.classifier_dropout is None else config.classifier_dropout,
      initializer_range=config.initializer_range)
  prefix = config.model_type
  if task == "encoder":
    module, head_prefixes = BertModel(dims, prefix, dtype, param_dtype), ()
  elif prefix == "bert":
    module = BertForSequenceClassification(dims, num_labels, dtype, param_dtype)
    head_prefixes = ("bert.pooler.", "classifier.")
  else:
    module, head_prefixes = RobertaForSequenceClassification(dims, num_labels, dtype, param_dtype), ("classifier.",)
  return Architecture(
      module=module, class_name=_CLASS_NAMES[prefix, task],
      example_inputs={"input_ids": jnp.zeros((1, 1), jnp.int32)}, base_prefix=prefix, head_prefixes=head_prefixes)
