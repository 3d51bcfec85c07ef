"""A user's own student, written in Flax NNX: a small CNN (conv, ReLU, 2x2 max-pool, dropout blocks, global average
pooling, a linear head). configs/custom_model.py names it `configs/models/nnx_cnn.py:create`; kd_jax imports this
file, calls `create` with the student's config block and trains the module it returns (kd_jax/models/protocol.py).
"""

import math

import jax
from flax import nnx


class CNN(nnx.Module):
  """images [batch, height, width, channels] (or square images flattened, [batch, side * side]) -> logits
  [batch, num_classes]."""

  def __init__(self, conv_features: tuple[int, ...], num_classes: int, dropout_rate: float, *, rngs: nnx.Rngs):
    widths = (1,) + tuple(conv_features)
    self.convs = nnx.List([nnx.Conv(w_in, w_out, (3, 3), padding="SAME", rngs=rngs)
                           for w_in, w_out in zip(widths[:-1], widths[1:])])
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    if images.ndim == 2:  # digits: 64 features, an 8x8 image
      side = math.isqrt(images.shape[1])
      images = images.reshape(images.shape[0], side, side, 1)
    hidden = images
    for conv in self.convs:
      hidden = nnx.max_pool(nnx.relu(conv(hidden)), (2, 2), strides=(2, 2))
      hidden = self.dropout(hidden)
    return self.head(hidden.mean(axis=(1, 2)))


def create(config, *, num_classes: int, rngs: nnx.Rngs) -> CNN:
  """The student of `config` (config.student): its conv_features and dropout_rate."""
  return CNN(tuple(config.conv_features), num_classes, config.dropout_rate, rngs=rngs)
