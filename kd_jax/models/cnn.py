"""Small CNN classifier for image tasks: conv blocks (conv, optional GroupNorm, ReLU, 2x2 max-pool, dropout), then
the MLP's Dense-ReLU-Dropout blocks and a linear head.

Normalization is GroupNorm (Wu & He 2018), not batch norm: the train step applies the model to one example at a time
under vmap (kd_jax/training/steps.py: per-example dropout keys, results independent of the device count), where batch
statistics do not exist, and GroupNorm has no running statistics to keep in the checkpointed state: a resumed run is
the uninterrupted one, and training and evaluation compute the same function.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import models
from kd_jax.data import mnist
from kd_jax.errors import require
from kd_jax.models.dropout import Dropout


class CNN(nn.Module):
  """logits = MLP head(flatten(h_B)), h_b = dropout(maxpool_2x2(relu(norm(conv_kxk(h_{b-1}))))), h_0 = the images.

  Shapes: a block keeps the side with SAME padding and its max-pool (2x2, stride 2, VALID) halves it, rounded down:
  28 -> 14 -> 7 -> 3 -> 1, so 28x28 images take at most 4 blocks. Parameters: a conv k*k*c_in*c_out + c_out,
  its GroupNorm 2*c_out (scale and bias), a Dense d_in*d_out + d_out.

  Attributes:
    conv_features: output channels of each conv block (depth = len(conv_features)).
    hidden_sizes: widths of the Dense hidden layers after the conv blocks (() goes straight to the head).
    num_classes: number of output logits.
    kernel_size: side k of the square conv kernels.
    norm_groups: GroupNorm with this many groups after every conv (each width a multiple of it; 1 normalizes over a
      whole feature map, as layer norm); 0: no normalization.
    dropout_rate: dropout after every block (conv and Dense), active when `train=True`.
    dtype: computation dtype; param_dtype: dtype of the stored parameters.
  """
  conv_features: Sequence[int]
  hidden_sizes: Sequence[int]
  num_classes: int
  kernel_size: int = 3
  norm_groups: int = 0
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    """inputs [batch, height, width, channels] -> logits [batch, num_classes] (float32)."""
    hidden = inputs.astype(self.dtype)
    dtypes = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    for features in self.conv_features:
      hidden = nn.Conv(features, (self.kernel_size, self.kernel_size), padding="SAME", **dtypes)(hidden)
      if self.norm_groups:
        hidden = nn.GroupNorm(num_groups=self.norm_groups, **dtypes)(hidden)
      hidden = nn.max_pool(nn.relu(hidden), (2, 2), strides=(2, 2))
      hidden = Dropout(self.dropout_rate, deterministic=not train)(hidden)
    hidden = hidden.reshape(hidden.shape[0], -1)
    for width in self.hidden_sizes:
      hidden = nn.relu(nn.Dense(width, **dtypes)(hidden))
      hidden = Dropout(self.dropout_rate, deterministic=not train)(hidden)
    logits = nn.Dense(self.num_classes, **dtypes)(hidden)
    return logits.astype(jnp.float32)


def create(model_config, *, num_classes: int, example_inputs, rng):
  """Registry entry: the CNN described by `model_config` and freshly initialized parameters."""
  module = CNN(conv_features=tuple(model_config.conv_features), hidden_sizes=tuple(model_config.hidden_sizes),
               num_classes=num_classes, kernel_size=model_config.kernel_size, norm_groups=model_config.norm_groups,
               dropout_rate=model_config.dropout_rate, dtype=jnp.dtype(model_config.dtype),
               param_dtype=jnp.dtype(model_config.param_dtype))
  params = models.compiled_init(module)(rng, example_inputs)["params"]
  return module, params


def check_blocks(model_config, section: str) -> None:
  """Raises ConfigError unless the conv blocks fit the images: each 2x2 max-pool halves the side (rounded down) and
  needs it >= 2."""
  side, max_blocks = mnist.IMAGE_SHAPE[0], 0
  while side >= 2:
    side, max_blocks = side // 2, max_blocks + 1
  features = tuple(model_config.conv_features)
  require(len(features) <= max_blocks, f"{section}.conv_features", features,
          f"at most {max_blocks} conv blocks on {mnist.IMAGE_SHAPE[0]}x{mnist.IMAGE_SHAPE[1]} images (each block's "
          "2x2 max-pool halves the side)")
