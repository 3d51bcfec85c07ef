"""On-policy distillation of causal LMs: the student samples the responses it is distilled on.

The training layout is kd_jax/data/causal_lm.py's: [prompt][response][pad], right-padded, labels the next token on
response positions; `data.causal_lm.sequences_from_responses` writes the student's sampled responses into it behind
their prompts, so every kind of batch trains through the same step.

On-policy distillation (GKD, Agarwal et al. 2024; `OnPolicy`): in each training step, with probability
lambda = distill.on_policy_fraction, the batch's responses are replaced by responses sampled from the current
student (kd_jax.models.generation.generate: the HF families' compiled KV-cache decoder, a user's model's loop
recomputing the prefix, at generation.train_temperature with the training
filters generation.train_top_k / train_top_p, off by default as in TRL, at most data.max_target_length tokens, ending
at any stop token); the teacher, running in the step, scores them, and the loss is the distillation term
on the student's tokens (their labels are -1: the student's cross-entropy on its own samples teaches nothing, so the
hard term is 0 on such batches). Whether a step samples is drawn from (seed, step) and each example's tokens from
(seed, step, example index): a resumed run samples exactly what the uninterrupted one did, whatever the device count.

Mixed with sequence-level KD (distill.strategy='sequence', TRL GKDTrainer's seq_kd=True with lmbda): the batch's
responses are the teacher's greedy generations (kd_jax/teachers/student_data.py, cached once, labeled with the
teacher's tokens), which a sampling step replaces by the student's as above; the teacher scores whichever the step
trains on. TRL samples the teacher's responses afresh in every step at the training temperature; kd_jax's are greedy
(Kim & Rush's sequence-level KD) and so need generating only once.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from kd_jax.data import Examples
from kd_jax.data.causal_lm import sequences_from_responses
from kd_jax.models import generation

# The on-policy draws are fold_in(fold_in(rng, ON_POLICY_STREAM), step) of the run's key, apart from the dropout
# keys fold_in(rng, step) (steps never reach this number).
ON_POLICY_STREAM = 2**31 - 1


def sample_responses(model, params, prompt_ids: jax.Array, prompt_mask: jax.Array, keys: jax.Array, *,
                     max_new_tokens: int, temperature: float, top_k: int | None = None, top_p: float | None = None,
                     eos_token_ids: tuple[int, ...] | None = None, pad_token_id: int | None = None) -> jax.Array:
  """Responses [B, max_new_tokens] (pad after the first stop token of eos_token_ids; None: the model's) sampled from
  a causal LM (a kd_jax model) for left-padded prompts [B, P], row b with its own key keys[b] (so its tokens do not
  depend on the other rows of the batch)."""
  return generation.generate(model, params, prompt_ids, prompt_mask, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=eos_token_ids,
                             pad_token_id=pad_token_id, rng=keys)


@dataclasses.dataclass(frozen=True)
class OnPolicy:
  """The on-policy sampling of a run's objective (kd_jax/training/objective.py builds it from config.distill and
  config.generation), static: hashable, part of the compiled program's identity.

  Attributes:
    fraction: lambda, the probability that a step's batch is sampled from the student.
    model: the student as evaluation sees it (peft.plain_model: what the decoder runs).
    temperature, max_new_tokens, top_k, top_p: the sampling (generation.train_temperature, data.max_target_length,
      generation.train_top_k / train_top_p: the training samples' own filters, not the evaluation's).
    eos_token_ids, pad_token_id: the responses end at any of the stop tokens and are padded after it.
    start_step: steps before it never sample (distill.on_policy_start_step: a supervised phase first).
  """
  fraction: float
  model: Any
  temperature: float
  max_new_tokens: int
  eos_token_ids: tuple[int, ...]
  pad_token_id: int
  top_k: int | None = None
  top_p: float | None = None
  start_step: int = 0

  def batch(self, params, rng: jax.Array, step: jax.Array, batch: Examples) -> Examples:
    """`batch`, or from step `start_step` on with probability `fraction` (drawn from rng and step) the same prompts
    with responses sampled from the student with `params`: labels -1 and token_weights on the sampled response tokens (see the module
    docstring)."""
    coin_key, sample_key = jax.random.split(jax.random.fold_in(jax.random.fold_in(rng, ON_POLICY_STREAM), step))
    inputs = batch.inputs

    def sampled(_):
      keys = jax.vmap(functools.partial(jax.random.fold_in, sample_key))(batch.index)
      responses = sample_responses(self.model, jax.lax.stop_gradient(params), inputs["prompt_ids"],
                                   inputs["prompt_mask"], keys, max_new_tokens=self.max_new_tokens,
                                   temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                                   eos_token_ids=self.eos_token_ids, pad_token_id=self.pad_token_id)
      sequences = sequences_from_responses(inputs["prompt_ids"], inputs["prompt_mask"], responses,
                                           length=inputs["input_ids"].shape[1], eos_token_ids=self.eos_token_ids,
                                           pad_token_id=self.pad_token_id)
      return ({**inputs, "input_ids": sequences["input_ids"], "attention_mask": sequences["attention_mask"]},
              jnp.full_like(batch.label, -1), sequences["response_mask"])

    def supervised(_):
      return inputs, batch.label, batch.token_weights

    on_policy = jax.random.bernoulli(coin_key, self.fraction) & (step >= self.start_step)
    inputs, label, token_weights = jax.lax.cond(on_policy, sampled, supervised, None)
    return batch.replace(inputs=inputs, label=label, token_weights=token_weights)
