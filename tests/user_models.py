"""Users' model factories for tests/test_model_protocol.py, named by path in configs ('tests/user_models.py:NAME'),
as a user's file would be: an NNX MLP, a Linen MLP, an (init_fn, apply_fn) pair, an NNX module with BatchNorm
statistics, factories that fail, and a Linen causal LM (tests/test_user_lm.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class NnxMLP(nnx.Module):
  """An NNX MLP (Dense-ReLU-Dropout blocks, a linear head) that sows its hidden states h_0..h_L, as kd_jax's MLP does
  (feature distillation)."""

  def __init__(self, hidden_sizes: tuple, num_classes: int, dropout_rate: float, *, rngs: nnx.Rngs):
    widths = (64,) + hidden_sizes
    self.hidden = nnx.List([nnx.Linear(w_in, w_out, rngs=rngs) for w_in, w_out in zip(widths[:-1], widths[1:])])
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)

  def __call__(self, inputs):
    hidden = inputs.reshape(inputs.shape[0], -1)
    self.sow(nnx.Intermediate, "hidden_states", hidden)
    for layer in self.hidden:
      hidden = self.dropout(nnx.relu(layer(hidden)))
      self.sow(nnx.Intermediate, "hidden_states", hidden)
    return self.head(hidden)


def nnx_mlp(config, *, num_classes, rngs):
  return NnxMLP(tuple(config.hidden_sizes), num_classes, config.dropout_rate, rngs=rngs)


class LinenMLP(nn.Module):
  """A Linen MLP whose __call__ takes `train` (flax's own Dropout)."""
  hidden_sizes: tuple
  num_classes: int
  dropout_rate: float

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    hidden = inputs.reshape(inputs.shape[0], -1)
    for width in self.hidden_sizes:
      hidden = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(nn.Dense(width)(hidden)))
    return nn.Dense(self.num_classes)(hidden)


def linen_mlp(config, num_classes):
  return LinenMLP(tuple(config.hidden_sizes), num_classes, config.dropout_rate)


def mlp_pair(config, *, num_classes):
  """An MLP as plain functions: init_fn(rng, inputs) -> params, apply_fn(params, inputs, *, train, rng)."""
  widths = (64,) + tuple(config.hidden_sizes) + (num_classes,)

  def init_fn(rng, inputs):
    del inputs
    keys = jax.random.split(rng, len(widths) - 1)
    return {f"layer{i}": {"kernel": jax.random.normal(key, (w_in, w_out)) / jnp.sqrt(w_in), "bias": jnp.zeros(w_out)}
            for i, (key, w_in, w_out) in enumerate(zip(keys, widths[:-1], widths[1:]))}

  def apply_fn(params, inputs, *, train, rng):
    hidden = inputs.reshape(inputs.shape[0], -1)
    for i in range(len(widths) - 1):
      hidden = hidden @ params[f"layer{i}"]["kernel"] + params[f"layer{i}"]["bias"]
      if i < len(widths) - 2:
        hidden = jax.nn.relu(hidden)
        if train and config.dropout_rate:
          keep = jax.random.bernoulli(jax.random.fold_in(rng, i), 1 - config.dropout_rate, hidden.shape)
          hidden = jnp.where(keep, hidden / (1 - config.dropout_rate), 0.0)
    return hidden

  return init_fn, apply_fn


class BatchNormMLP(nnx.Module):
  def __init__(self, num_classes, rngs):
    self.dense = nnx.Linear(64, 16, rngs=rngs)
    self.norm = nnx.BatchNorm(16, rngs=rngs)
    self.head = nnx.Linear(16, num_classes, rngs=rngs)

  def __call__(self, inputs):
    return self.head(self.norm(self.dense(inputs)))


def nnx_batchnorm(config, *, num_classes, rngs):
  del config
  return BatchNormMLP(num_classes, rngs)


def raises(config):
  raise ValueError(f"no widths in\n{tuple(config.conv_features)}")


def not_a_model(config):
  del config
  return {"kernel": 0}


class LinenLM(nn.Module):
  """A one-block Linen causal LM with learned positions and an untied head that takes the attention mask."""
  vocab_size: int
  width: int = 16

  @nn.compact
  def __call__(self, input_ids, attention_mask=None):
    length = input_ids.shape[1]
    hidden = nn.Embed(self.vocab_size, self.width)(input_ids) + nn.Embed(64, self.width)(jnp.arange(length))
    mask = nn.make_causal_mask(input_ids)
    if attention_mask is not None:
      mask = nn.combine_masks(mask, nn.make_attention_mask(attention_mask, attention_mask))
    hidden = hidden + nn.SelfAttention(num_heads=2)(nn.LayerNorm()(hidden), mask=mask)
    return nn.Dense(self.vocab_size)(nn.LayerNorm()(hidden))


def linen_lm(config):
  return LinenLM(config.vocab_size)
