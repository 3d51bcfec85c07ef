"""Decoding of seq2seq models (t5.T5ForConditionalGeneration): greedy or temperature sampling with a KV cache.

One jitted program encodes the batch-padded prompts once, then feeds one token per step through the decoder with
its self-attention keys/values cached, until max_new_tokens or until every sequence has produced EOS. Like
transformers' `generate`, a finished sequence continues with pad tokens.
"""

import functools

import jax
import jax.numpy as jnp

from kd_jax.models.hf import t5


def generate(module: t5.T5ForConditionalGeneration, params, input_ids: jax.Array, attention_mask: jax.Array, *,
             max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             eos_token_id: int | None = None, rng: jax.Array | None = None) -> jax.Array:
  """Generated token ids [batch, max_new_tokens] (pad after EOS), without the decoder start token.

  Args:
    module, params: from `from_pretrained(..., task="seq2seq")`.
    input_ids, attention_mask: prompts [batch, source_length], padded where attention_mask is 0.
    max_new_tokens: number of decoding steps at most.
    temperature: 0 for greedy decoding (argmax); otherwise tokens are drawn from softmax(logits / temperature),
      restricted to the top_k most likely tokens and/or the smallest set whose probability reaches top_p.
    eos_token_id: the token that ends a sequence; defaults to the checkpoint's.
    rng: PRNG key of the sampling (required when temperature > 0).
  """
  if temperature > 0 and rng is None:
    raise ValueError("sampling (temperature > 0) needs an rng")
  eos_token_id = module.dims.eos_token_id if eos_token_id is None else eos_token_id
  return _generate(module, max_new_tokens, float(temperature), top_k, top_p, eos_token_id, params,
                   jnp.asarray(input_ids), jnp.asarray(attention_mask), jax.random.key(0) if rng is None else rng)


def select_token(logits: jax.Array, rng: jax.Array, *, temperature: float, top_k: int | None = None,
                 top_p: float | None = None) -> jax.Array:
  """The next token [batch] from logits [batch, vocab]: argmax if temperature is 0, else a filtered sample."""
  logits = logits.astype(jnp.float32)
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k is not None:
    kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
  if top_p is not None:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    sorted_probabilities = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token while the probability of the tokens more likely than it is below top_p (always the first).
    mass_before = jnp.cumsum(sorted_probabilities, axis=-1) - sorted_probabilities
    num_kept = jnp.sum(mass_before < top_p, axis=-1, keepdims=True)
    smallest_kept = jnp.take_along_axis(sorted_logits, num_kept - 1, axis=-1)
    logits = jnp.where(logits < smallest_kept, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _generate(module, max_new_tokens, temperature, top_k, top_p, eos_token_id, params, input_ids, attention_mask,
              rng):
  dims = module.dims
  batch_size = input_ids.shape[0]
  variables = {"params": params}
  encoder_hidden = module.apply(variables, input_ids, attention_mask, method=module.encode)
  # One spare cache slot: the last generated token is fed once more, and its logits are never used.
  decode = functools.partial(module.apply, method=module.decode, decode_length=max_new_tokens + 1,
                             mutable=["cache"])
  start_tokens = jnp.full((batch_size, 1), dims.decoder_start_token_id, jnp.int32)
  logits, cache = decode(variables, start_tokens, encoder_hidden, attention_mask)

  def not_done(state):
    step, _, finished, _, _, _ = state
    return (step < max_new_tokens) & ~jnp.all(finished)

  def step_fn(state):
    step, tokens, finished, logits, cache, rng = state
    rng, step_rng = jax.random.split(rng)
    next_tokens = select_token(logits[:, -1], step_rng, temperature=temperature, top_k=top_k, top_p=top_p)
    next_tokens = jnp.where(finished, dims.pad_token_id, next_tokens)
    tokens = tokens.at[:, step].set(next_tokens)
    finished |= next_tokens == eos_token_id
    logits, cache = decode({**variables, **cache}, next_tokens[:, None], encoder_hidden, attention_mask)
    return step + 1, tokens, finished, logits, cache, rng

  tokens = jnp.full((batch_size, max_new_tokens), dims.pad_token_id, jnp.int32)
  state = (0, tokens, jnp.zeros(batch_size, bool), logits, cache, rng)
  return jax.lax.while_loop(not_done, step_fn, state)[1]
