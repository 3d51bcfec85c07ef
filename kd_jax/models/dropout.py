"""Dropout whose masks are jax.random.bernoulli's, bit for bit, computed as one fused elementwise kernel.

Why: on CPU, JAX lowers the Threefry-2x32 hash behind `jax.random.bits` as a rolled `fori_loop` of 5 iterations
(jax/_src/random/threefry2x32.py: `use_rolled_loops=True` for platform 'cpu', to keep compile times down). XLA
cannot fuse across the loop, so every dropout layer writes and reads its two 32-bit counter words per element ten
times over: a DistilBERT-shaped student's attention dropout alone is 2M elements per layer per batch of 32. Here the
same hash is written out round by round with jnp integer ops (the unrolled form JAX uses on GPU and TPU), so XLA fuses
counters, hash, comparison and the select with the layer's other elementwise work.

The bits are those of JAX's partitionable Threefry (`jax_threefry_partitionable`, the default since JAX 0.5): for a
shape of n elements the counters are the 64-bit iota 0..n-1 split into (high, low) words, hashed with the key's two
words, and the two output words XORed. `bernoulli(key, p, shape)` equals `jax.random.bernoulli(key, p, shape)` for
every key and shape (tests/test_dropout.py checks it against JAX itself, so a change in JAX's bit layout fails there
rather than silently changing dropout); where the equality cannot be had (a non-Threefry key implementation, the old
non-partitionable layout, more than 2**32 elements) it calls jax.random.bernoulli.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotate_left(x: jax.Array, bits: int) -> jax.Array:
  return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def threefry2x32(key1: jax.Array, key2: jax.Array, count1: jax.Array, count2: jax.Array):
  """Threefry-2x32 with 20 rounds (Salmon et al. 2011), unrolled: JAX's threefry2x32 primitive on (key1, key2) and
  the counter words (count1, count2), all uint32; returns its two output words."""
  keys = (key1, key2, key1 ^ key2 ^ np.uint32(0x1BD11BDA))
  x0, x1 = count1 + keys[0], count2 + keys[1]
  for block in range(5):
    for rotation in _ROTATIONS[block % 2]:
      x0 = x0 + x1
      x1 = _rotate_left(x1, rotation) ^ x0
    x0 = x0 + keys[(block + 1) % 3]
    x1 = x1 + keys[(block + 2) % 3] + np.uint32(block + 1)
  return x0, x1


def _threefry_key_words(key: jax.Array):
  """The two uint32 words of a Threefry key (raw uint32[2] or typed), or None for another implementation."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if jax.random.key_impl(key) != jax.random.key_impl(jax.random.key(0, impl="threefry2x32")):
      return None
    key = jax.random.key_data(key)
  elif jax.config.jax_default_prng_impl != "threefry2x32":
    return None
  return key[..., 0], key[..., 1]


def bernoulli(key: jax.Array, p: float, shape: tuple[int, ...]) -> jax.Array:
  """jax.random.bernoulli(key, p, shape) for a float `p` (bool [shape]), computed without the rolled loop."""
  words = _threefry_key_words(key)
  size = int(np.prod(shape))
  if words is None or not jax.config.jax_threefry_partitionable or size >= 2**32 or len(shape) == 0:
    return jax.random.bernoulli(key, p, shape)
  count = jax.lax.iota(jnp.uint32, size).reshape(shape)
  high, low = threefry2x32(words[0], words[1], jnp.zeros_like(count), count)
  bits = high ^ low
  # jax.random.uniform's float32 in [0, 1): 23 random mantissa bits under the exponent of 1.0, minus 1.
  floats = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32) - 1.0
  return jnp.maximum(0.0, floats) < jnp.float32(p)


class Dropout(nn.Dropout):
  """flax.linen.Dropout with the same masks (same rng stream and module names, so the same keys), drawn by
  `bernoulli` above. Used by every kd_jax model in place of nn.Dropout."""

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng: jax.Array | None = None):
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    keep_prob = 1.0 - self.rate
    if rng is None:
      rng = self.make_rng(self.rng_collection)
    mask_shape = tuple(1 if dim in self.broadcast_dims else size for dim, size in enumerate(inputs.shape))
    mask = jnp.broadcast_to(bernoulli(rng, keep_prob, mask_shape), inputs.shape)
    return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))
