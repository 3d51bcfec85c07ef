"""MLP classifier (the from-scratch demo's teacher and student): Dense-ReLU-Dropout blocks, then a linear head."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import models
from kd_jax.models.dropout import Dropout


class MLP(nn.Module):
  """logits = W_out h_L + b_out, h_l = dropout(relu(W_l h_{l-1} + b_l)), h_0 = flattened inputs.

  Attributes:
    hidden_sizes: width of each hidden layer (depth = len(hidden_sizes); () is a linear classifier).
    num_classes: number of output logits.
    dropout_rate: dropout after every hidden layer, active when `train=True`.
    dtype: computation dtype; param_dtype: dtype of the stored parameters.
  """
  hidden_sizes: Sequence[int]
  num_classes: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    """inputs [batch, ...] -> logits [batch, num_classes] (float32)."""
    hidden = inputs.reshape(inputs.shape[0], -1).astype(self.dtype)
    # Hidden states h_0 (the inputs) to h_L, for feature distillation (kd_jax/training/feature_losses.py); sow is a
    # no-op unless the 'intermediates' collection is mutable.
    self.sow("intermediates", "hidden_states", hidden)
    for width in self.hidden_sizes:
      hidden = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype)(hidden)
      hidden = nn.relu(hidden)
      hidden = Dropout(self.dropout_rate, deterministic=not train)(hidden)
      self.sow("intermediates", "hidden_states", hidden)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype)(hidden)
    return logits.astype(jnp.float32)


def create(model_config, *, num_classes: int, example_inputs, rng):
  """Registry entry: the MLP described by `model_config` and freshly initialized parameters."""
  module = MLP(hidden_sizes=tuple(model_config.hidden_sizes), num_classes=num_classes,
               dropout_rate=model_config.dropout_rate, dtype=jnp.dtype(model_config.dtype),
               param_dtype=jnp.dtype(model_config.param_dtype))
  params = models.compiled_init(module)(rng, example_inputs)["params"]
  return module, params
