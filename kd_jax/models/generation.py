"""Generation from any kd_jax model of a causal LM or seq2seq task: greedy or temperature sampling (top-k, top-p).

The Hugging Face families (kd_jax/models/hf: a RegistryModel) decode with their KV cache (hf.generate). Any other
model, a user's causal LM (kd_jax/models/protocol.py), has no cache: `generate` then runs the model on the whole
sequence for every new token, the prompt moved to the front and the new tokens written behind it (right padding,
which a causal model's logits at a real token never see). That costs max_new_tokens full forward passes over
prompt + max_new_tokens positions instead of one position each: slow, but exact for any causal model of the tokens.
Both decoders follow one contract (kd_jax/models/hf/generation.py's): a finished sequence continues with pad tokens,
and row b samples step s with fold_in(key of row b, s), so its tokens do not depend on the other rows of the batch.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.models import hf
from kd_jax.models.hf import generation as hf_generation
from kd_jax.models.hf import pretrained


def generate(model, params, input_ids: jax.Array, attention_mask: jax.Array, *, max_new_tokens: int,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
             rng: jax.Array | None = None) -> jax.Array:
  """Generated token ids [batch, max_new_tokens] (pad after EOS) of a kd_jax model for left-padded prompts
  (input_ids, attention_mask [batch, prompt_length]); the arguments are kd_jax.models.hf.generate's. A model without a
  KV cache needs eos_token_id (its pad_token_id defaults to the first EOS)."""
  if isinstance(model, pretrained.RegistryModel):
    return hf.generate(model.module, params, input_ids, attention_mask, max_new_tokens=max_new_tokens,
                       temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=eos_token_id,
                       pad_token_id=pad_token_id, rng=rng)
  if temperature > 0 and rng is None:
    raise ValueError("sampling (temperature > 0) needs an rng")
  assert eos_token_id is not None, "a model without a KV cache names no EOS of its own: pass eos_token_id"
  eos_token_ids = tuple(np.atleast_1d(eos_token_id).tolist())
  pad_token_id = eos_token_ids[0] if pad_token_id is None else pad_token_id
  hf_generation.check_left_padded(attention_mask)
  row_rngs = hf_generation.row_keys(jax.random.key(0) if rng is None else rng, input_ids.shape[0])
  return _recompute(model, max_new_tokens, float(temperature), top_k, top_p, params,
                    jnp.asarray(input_ids, jnp.int32), jnp.asarray(attention_mask, jnp.int32),
                    jnp.asarray(eos_token_ids, jnp.int32), jnp.int32(pad_token_id), row_rngs)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _recompute(model, max_new_tokens, temperature, top_k, top_p, params, input_ids, attention_mask, eos_token_ids,
               pad_token_id, row_rngs):
  """The decoding loop without a cache (module docstring): tokens [batch, prompt + max_new_tokens], each row's prompt
  at the front, the model run on all of them for each new token."""
  batch_size, prompt_length = input_ids.shape
  lengths = jnp.sum(attention_mask, axis=1)  # real prompt tokens per row
  slots = jnp.arange(prompt_length + max_new_tokens)
  source = slots[None, :] + (prompt_length - lengths)[:, None]  # slot t reads prompt column t + the row's padding
  prompt = jnp.take_along_axis(input_ids, jnp.minimum(source, prompt_length - 1), axis=1)
  tokens = jnp.where(source < prompt_length, prompt, pad_token_id)
  rows = jnp.arange(batch_size)
  select = jax.vmap(lambda logits, rng: hf_generation.select_token(logits[None], rng, temperature=temperature,
                                                                   top_k=top_k, top_p=top_p)[0])

  def not_done(state):
    step, _, finished = state
    return (step < max_new_tokens) & ~jnp.all(finished)

  def step_fn(state):
    step, tokens, finished = state
    length = lengths + step  # each row's tokens so far; the next one goes to slot `length`
    mask = (slots[None, :] < length[:, None]).astype(jnp.int32)
    logits = model.apply({"params": params}, {"input_ids": tokens, "attention_mask": mask}, train=False)
    step_rngs = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_rngs, step)
    next_tokens = jnp.where(finished, pad_token_id, select(logits[rows, length - 1], step_rngs))
    finished |= jnp.isin(next_tokens, eos_token_ids)
    return step + 1, tokens.at[rows, length].set(next_tokens), finished

  _, tokens, _ = jax.lax.while_loop(not_done, step_fn, (0, tokens, jnp.zeros(batch_size, bool)))
  return jnp.take_along_axis(tokens, lengths[:, None] + jnp.arange(max_new_tokens)[None, :], axis=1)
