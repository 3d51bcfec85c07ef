"""Decoding with a KV cache: greedy or temperature sampling (top-k, top-p) for seq2seq models
(t5.T5ForConditionalGeneration) and decoder-only LMs (llama.LlamaForCausalLM, gpt2.GPT2LMHeadModel).

One jitted program (compiled once per module, shapes and decoding settings) runs the prompt once (T5: through the
encoder; decoder-only LMs: a prefill writing the prompt's keys/values into the cache), then feeds one token per step
with the self-attention keys/values cached, until max_new_tokens or until every sequence has produced EOS. Like
transformers' `generate`, a finished sequence continues with pad tokens.

Decoder-only prompts are left-padded (every row's last column a real token), and positions count real tokens only
(cumsum(attention_mask) - 1, as transformers' generate): a prompt's continuation does not depend on its padding.
Sampling draws each sequence's tokens from its own key, fold_in(key of the row, step), so a row's sample depends on
its key, not on the other rows of the batch.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.models.hf import t5


def generate(module, params, input_ids: jax.Array, attention_mask: jax.Array, *, max_new_tokens: int,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
             rng: jax.Array | None = None) -> jax.Array:
  """Generated token ids [batch, max_new_tokens] (pad after EOS): T5's without the decoder start token, a
  decoder-only LM's without the prompt.

  Args:
    module, params: from `from_pretrained(..., task="seq2seq")` or `from_pretrained(..., task="causal_lm")`.
    input_ids, attention_mask: prompts [batch, prompt_length], padded where attention_mask is 0 (decoder-only LMs:
      on the left).
    max_new_tokens: number of decoding steps at most.
    temperature: 0 for greedy decoding (argmax); otherwise tokens are drawn from softmax(logits / temperature),
      restricted to the top_k most likely tokens and/or the smallest set whose probability reaches top_p.
    eos_token_id: the token(s) that end a sequence; defaults to the checkpoint's.
    pad_token_id: decoder-only LMs: the token after EOS; defaults to the checkpoint's pad token, else its (first) EOS.
    rng: PRNG key of the sampling (required when temperature > 0); decoder-only LMs also take one key per row
      [batch] (e.g. keys derived from example indices).
  """
  if temperature > 0 and rng is None:
    raise ValueError("sampling (temperature > 0) needs an rng")
  rng = jax.random.key(0) if rng is None else rng
  if not isinstance(module, t5.T5ForConditionalGeneration):
    return _generate_causal_lm(module, params, input_ids, attention_mask, max_new_tokens=max_new_tokens,
                               temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=eos_token_id,
                               pad_token_id=pad_token_id, rng=rng)
  eos_token_id = module.dims.eos_token_id if eos_token_id is None else eos_token_id
  return _generate(module, max_new_tokens, float(temperature), top_k, top_p, eos_token_id, params,
                   jnp.asarray(input_ids), jnp.asarray(attention_mask), rng)


def select_token(logits: jax.Array, rng: jax.Array, *, temperature: float, top_k: int | None = None,
                 top_p: float | None = None) -> jax.Array:
  """The next token [batch] from logits [batch, vocab]: argmax if temperature is 0, else a filtered sample."""
  logits = logits.astype(jnp.float32)
  if temperature == 0:
    return first_argmax(logits)
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


def first_argmax(logits: jax.Array) -> jax.Array:
  """jnp.argmax over the last axis (int32): the first position of the maximum, or of the first NaN, as a max and a
  min over positions, two reductions XLA:CPU vectorizes, where its variadic argmax reduction is not (greedy decoding
  at batch 8 over SmolLM2's 49,152 tokens: 0.4 ms per step instead of 1.1 ms)."""
  best = jnp.max(logits, axis=-1, keepdims=True)
  positions = jnp.arange(logits.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where((logits == best) | jnp.isnan(logits), positions, logits.shape[-1]), axis=-1)


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


def _generate_causal_lm(module, params, input_ids, attention_mask, *, max_new_tokens, temperature, top_k, top_p,
                        eos_token_id, pad_token_id, rng):
  """generate() of a decoder-only LM: checks the prompts and defaults, then the compiled decoding loop."""
  dims = module.dims
  eos_token_ids = dims.eos_token_ids if eos_token_id is None else tuple(np.atleast_1d(eos_token_id).tolist())
  if pad_token_id is None:
    pad_token_id = dims.pad_token_id if dims.pad_token_id is not None else (eos_token_ids or (0,))[0]
  check_left_padded(attention_mask)
  input_ids = jnp.asarray(input_ids, jnp.int32)
  # Learned position tables (GPT-2) end; JAX would clip the positions past them silently.
  max_positions = getattr(dims, "max_position_embeddings", None)
  if max_positions is not None and input_ids.shape[1] + max_new_tokens > max_positions:
    raise ValueError(f"prompt length {input_ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds the model's "
                     f"{max_positions} positions")
  return _decode_causal_lm(module, max_new_tokens, float(temperature), top_k, top_p, params, input_ids,
                           jnp.asarray(attention_mask, jnp.int32), jnp.asarray(eos_token_ids, jnp.int32).reshape(-1),
                           jnp.int32(pad_token_id), row_keys(rng, input_ids.shape[0]))


def check_left_padded(attention_mask) -> None:
  """Decoder-only prompts are left-padded: every row's last column is a real token (checked on concrete masks)."""
  if not isinstance(attention_mask, jax.core.Tracer) and not np.all(np.asarray(attention_mask)[:, -1]):
    raise ValueError("decoder-only prompts must be left-padded: attention_mask[:, -1] must be 1 in every row")


def row_keys(rng: jax.Array, batch_size: int) -> jax.Array:
  """One typed PRNG key per row [batch_size]: `rng` itself if it holds one per row, else split from it (a typed or a
  raw uint32 key, jax.random.PRNGKey)."""
  if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(rng)
  return rng if rng.shape == (batch_size,) else jax.random.split(rng, batch_size)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _decode_causal_lm(module, max_new_tokens, temperature, top_k, top_p, params, input_ids, attention_mask,
                      eos_token_ids, pad_token_id, row_rngs):
  batch_size, prompt_length = input_ids.shape
  variables = {"params": params}
  # The cache holds the prompt and every generated token; the last one is fed once more and its logits never used.
  cache_length = prompt_length + max_new_tokens
  cache_mask = jnp.concatenate([attention_mask, jnp.ones((batch_size, max_new_tokens), jnp.int32)], axis=1)
  positions = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0)
  decode = functools.partial(module.apply, decode_length=cache_length, mutable=["cache"], project=False)
  # The LM head projects the last position only (the prompt's other logits are never used); its kernel (a tied
  # embedding transposed) is made once, outside the loop, in the layout the steps' matmul reads.
  head = module.output_head(params)
  hidden, cache = decode(variables, input_ids, cache_mask, positions)
  logits = head(hidden[:, -1])
  select = jax.vmap(lambda logits, rng: select_token(logits[None], rng, temperature=temperature, top_k=top_k,
                                                     top_p=top_p)[0])

  def not_done(state):
    step, _, finished, _, _, _ = state
    return (step < max_new_tokens) & ~jnp.all(finished)

  def step_fn(state):
    step, tokens, finished, logits, cache, position = state
    step_rngs = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_rngs, step)
    next_tokens = jnp.where(finished, pad_token_id, select(logits, step_rngs))
    tokens = tokens.at[:, step].set(next_tokens)
    finished |= jnp.isin(next_tokens, eos_token_ids)
    position += 1
    hidden, cache = decode({**variables, **cache}, next_tokens[:, None], cache_mask, position[:, None])
    return step + 1, tokens, finished, head(hidden[:, -1]), cache, position

  tokens = jnp.full((batch_size, max_new_tokens), pad_token_id, jnp.int32)
  state = (0, tokens, jnp.zeros(batch_size, bool), logits, cache, positions[:, -1])
  return jax.lax.while_loop(not_done, step_fn, state)[1]


def generated_mask(tokens: jax.Array, eos_token_ids: Sequence[int]) -> jax.Array:
  """1 for the generated tokens [batch, length] up to and including each row's first EOS, 0 after it (int32)."""
  is_eos = jnp.isin(tokens, jnp.asarray(eos_token_ids, jnp.int32)).astype(jnp.int32)
  eos_before = jnp.cumsum(is_eos, axis=1) - is_eos
  return (eos_before == 0).astype(jnp.int32)
