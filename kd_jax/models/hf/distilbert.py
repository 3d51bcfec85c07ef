"""DistilBERT (transformers' modeling_distilbert.py) as Flax modules named like their tensors."""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.models.dropout import Dropout
from kd_jax.models.hf import layers
from kd_jax.models.hf.weights import Architecture
from kd_jax.parallel import sharding

SUPPORTED_TASKS = ("encoder", "sequence_classification")

_LAYER_NAMES = layers.EncoderLayerNames(
    query="attention.q_lin", key="attention.k_lin", value="attention.v_lin", attention_out="attention.out_lin",
    attention_norm="sa_layer_norm", ffn_in="ffn.lin1", ffn_out="ffn.lin2", ffn_norm="output_layer_norm")

# DistilBERT's LayerNorms use a fixed epsilon, not one from config.json.
_LAYER_NORM_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class DistilBertDims:
  """What the modules need from a DistilBERT config.json."""
  encoder: layers.EncoderDims
  num_layers: int
  vocab_size: int
  max_position_embeddings: int
  classifier_dropout: float
  initializer_range: float


class DistilBertEncoder(nn.Module):
  """Embeddings (word + position, LayerNorm, dropout) and the post-LN layers: the `distilbert.*` tensors."""
  dims: DistilBertDims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"  # layers.rematerialized

  @nn.compact
  def __call__(self, input_ids, attention_mask, train: bool) -> jax.Array:
    """int arrays [batch, length] -> last hidden states [batch, length, dim]."""
    dims = self.dims
    embed = functools.partial(nn.Embed, features=dims.encoder.hidden_size, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    hidden = embed(dims.vocab_size, name="embeddings.word_embeddings")(input_ids)
    position_ids = jnp.arange(input_ids.shape[1])[None, :]
    hidden += embed(dims.max_position_embeddings, name="embeddings.position_embeddings")(position_ids)
    hidden = nn.LayerNorm(epsilon=_LAYER_NORM_EPS, use_fast_variance=False, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="embeddings.LayerNorm")(hidden)
    hidden = Dropout(dims.encoder.hidden_dropout)(hidden, deterministic=not train)
    # Hidden states 0 (embeddings) to num_layers, for feature distillation (kd_jax/training/feature_losses.py); sow is a
    # no-op unless the 'intermediates' collection is mutable.
    self.sow("intermediates", "hidden_states", hidden)
    bias = layers.padding_bias(attention_mask)
    for index in range(dims.num_layers):
      layer = layers.rematerialized(layers.EncoderLayer, self.remat, train_argnum=3)
      hidden = layer(dims.encoder, _LAYER_NAMES, self.dtype, self.param_dtype, name=f"transformer.layer.{index}")(
          hidden, bias, train)
      self.sow("intermediates", "hidden_states", hidden)
    return hidden


class DistilBertModel(nn.Module):
  """Task "encoder": the last hidden states [batch, length, dim]."""
  dims: DistilBertDims
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"  # layers.rematerialized

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, train: bool = False) -> jax.Array:
    attention_mask = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
    return DistilBertEncoder(self.dims, self.dtype, self.param_dtype, self.remat, name="distilbert")(
        input_ids, attention_mask, train)


class DistilBertForSequenceClassification(nn.Module):
  """logits = classifier(dropout(relu(pre_classifier(h[:, 0])))): [batch, num_labels]."""
  dims: DistilBertDims
  num_labels: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"  # layers.rematerialized

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, train: bool = False) -> jax.Array:
    attention_mask = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
    hidden = DistilBertEncoder(self.dims, self.dtype, self.param_dtype, self.remat, name="distilbert")(
        input_ids, attention_mask, train)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=nn.initializers.normal(self.dims.initializer_range))
    pooled = jax.nn.relu(dense(self.dims.encoder.hidden_size, name="pre_classifier")(hidden[:, 0]))
    pooled = Dropout(self.dims.classifier_dropout)(pooled, deterministic=not train)
    return dense(self.num_labels, name="classifier")(pooled)


def classifier_tensor(config) -> str:
  """The tensor of a fine-tuned classifier checkpoint whose first dimension is the number of labels."""
  del config  # The same for every DistilBERT.
  return "classifier.weight"


def partition_rules(dims: DistilBertDims, tensor: int) -> tuple:
  """DistilBERT's tensor-parallel placement (sharding.megatron_rules): q_lin / k_lin / v_lin and ffn.lin1 split
  their output units (whole heads), out_lin and ffn.lin2 their input units; the rest stays whole."""
  del dims, tensor
  return sharding.megatron_rules(split_outputs=r"attention\.(q_lin|k_lin|v_lin)|ffn\.lin1",
                                 split_inputs=r"attention\.out_lin|ffn\.lin2")

def build(config, *, checkpoint: str, task: str, num_labels: int | None, dtype, param_dtype) -> Architecture:
  """The Flax model of a DistilBERT config (transformers' DistilBertConfig) for `task`."""
  dims = DistilBertDims(
      encoder=layers.EncoderDims(
          hidden_size=config.dim, num_heads=config.n_heads, intermediate_size=config.hidden_dim,
          activation=layers.check_activation(config.activation, checkpoint), layer_norm_eps=_LAYER_NORM_EPS,
          hidden_dropout=config.dropout, attention_dropout=config.attention_dropout,
          attention_output_dropout=False),
      num_layers=config.n_layers, vocab_size=config.vocab_size,
      max_position_embeddings=config.max_position_embeddings, classifier_dropout=config.seq_classif_dropout,
      initializer_range=config.initializer_range)
  if task == "encoder":
    module, class_name, head_prefixes = DistilBertModel(dims, dtype, param_dtype), "DistilBertModel", ()
  else:
    module = DistilBertForSequenceClassification(dims, num_labels, dtype, param_dtype)
    class_name, head_prefixes = "DistilBertForSequenceClassification", ("pre_classifier.", "classifier.")
  return Architecture(module=module, class_name=class_name,
                      example_inputs={"input_ids": jnp.zeros((1, 1), jnp.int32)}, base_prefix="distilbert",
                      head_prefixes=head_prefixes)
