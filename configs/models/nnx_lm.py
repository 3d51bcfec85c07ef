"""A user's own causal-LM student, written in Flax NNX: a small decoder-only transformer (token embedding, pre-norm
blocks of causal self-attention with rotary positions and a GELU MLP, a final RMSNorm, the head tied to the
embedding). configs/custom_lm.py names it `configs/models/nnx_lm.py:create`; kd_jax imports this file, calls `create`
with the student's config block (to which it adds `vocab_size`, the teacher's vocabulary) and trains the module it
returns (kd_jax/models/protocol.py). What kd_jax asks of it: `__call__(input_ids [batch, length])` returns logits
[batch, length, vocab_size], and position t sees tokens 0..t only.
"""

import jax
import jax.numpy as jnp
from flax import nnx

HEAD_DIM = 16


def rotate(x: jax.Array) -> jax.Array:
  """Rotary position embedding of x [batch, length, heads, head_dim] at positions 0, 1, ..."""
  half = x.shape[-1] // 2
  angles = jnp.arange(x.shape[1])[:, None, None] * 10000.0 ** (-jnp.arange(half) / half)
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * jnp.cos(angles) - x2 * jnp.sin(angles), x2 * jnp.cos(angles) + x1 * jnp.sin(angles)],
                         axis=-1)


class Block(nnx.Module):
  """Pre-norm causal self-attention and MLP, each added to the residual stream."""

  def __init__(self, width: int, dropout_rate: float, *, rngs: nnx.Rngs):
    self.attention_norm, self.mlp_norm = nnx.RMSNorm(width, rngs=rngs), nnx.RMSNorm(width, rngs=rngs)
    self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nnx.Linear(width, width, use_bias=False, rngs=rngs)
                                                          for _ in range(4))
    self.up_proj, self.down_proj = nnx.Linear(width, 4 * width, rngs=rngs), nnx.Linear(4 * width, width, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, hidden: jax.Array) -> jax.Array:
    batch, length, width = hidden.shape
    heads = lambda y: y.reshape(batch, length, width // HEAD_DIM, HEAD_DIM)
    x = self.attention_norm(hidden)
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
    attended = nnx.dot_product_attention(rotate(heads(self.q_proj(x))), rotate(heads(self.k_proj(x))),
                                         heads(self.v_proj(x)), mask=causal)
    hidden = hidden + self.dropout(self.o_proj(attended.reshape(batch, length, width)))
    return hidden + self.dropout(self.down_proj(nnx.gelu(self.up_proj(self.mlp_norm(hidden)))))


class DecoderLM(nnx.Module):
  """input_ids [batch, length] -> next-token logits [batch, length, vocab_size]."""

  def __init__(self, vocab_size: int, width: int, num_layers: int, dropout_rate: float, *, rngs: nnx.Rngs):
    self.embed = nnx.Embed(vocab_size, width, rngs=rngs)
    self.blocks = nnx.List([Block(width, dropout_rate, rngs=rngs) for _ in range(num_layers)])
    self.norm = nnx.RMSNorm(width, rngs=rngs)

  def __call__(self, input_ids: jax.Array) -> jax.Array:
    hidden = self.embed(input_ids)
    for block in self.blocks:
      hidden = block(hidden)
    return self.embed.attend(self.norm(hidden))


def create(config, *, rngs: nnx.Rngs) -> DecoderLM:
  """The student of `config` (config.student): len(hidden_sizes) blocks of width hidden_sizes[0] (a multiple of
  HEAD_DIM), its dropout_rate, and the vocab_size kd_jax adds."""
  width = config.hidden_sizes[0]
  if set(config.hidden_sizes) != {width} or width % HEAD_DIM:
    raise ValueError(f"hidden_sizes {tuple(config.hidden_sizes)}: one width, a multiple of {HEAD_DIM}, per block")
  return DecoderLM(config.vocab_size, width, len(config.hidden_sizes), config.dropout_rate, rngs=rngs)
