"""The causal LM: the SmolLM2-shaped student's KD training and greedy KV-cache generation, tokens/s."""

from . import settings, timing
from .examples import causal_lm_examples
from .students import smollm2_student
from .trainer import FusedTrainer


def llm_throughput(quick: bool) -> dict:
  """Tokens/s of the SmolLM2-shaped student's KD step (batch 8 x 128 tokens, the last 96 of each a response, a
  top-32 teacher cache as configs/causal_lm.py builds it) and of its greedy KV-cache generation (batch 8, a
  32-token prompt, 32 new tokens), each the median over repeats after a compiling call."""
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import generate, pretrained  # pylint: disable=g-import-not-at-top
  batch, length, prompt_length = settings.LLM_BATCH, settings.LLM_LENGTH, settings.LLM_PROMPT
  module, params = smollm2_student()
  vocab = settings.SMOLLM2_STUDENT["vocab_size"]
  examples = causal_lm_examples(batch, length, prompt_length, settings.LLM_TOPK, vocab)
  input_ids = examples.inputs["input_ids"]
  steps_per_round, rounds = (1, 1) if settings.SMOKE else (1, 3) if quick else (2, 5)
  trainer = FusedTrainer(model=pretrained.RegistryModel(module), params=params, examples=examples, distills=True,
                         distill_config=settings.distill_config(temperature=1.0, alpha=settings.ALPHA),
                         optim_config=settings.notebook_optim_config(), batch_size=batch,
                         num_steps=steps_per_round * rounds + 1, seed=0, max_steps=steps_per_round)
  compile_s = timing.seconds(lambda: trainer.train(1))
  step_s = timing.median_seconds(lambda: trainer.train(steps_per_round), rounds) / steps_per_round
  prompt = jax.numpy.asarray(input_ids[:, :prompt_length])
  mask = jax.numpy.ones_like(prompt)
  # An EOS id past the vocabulary: every sequence runs its 32 new tokens.
  run = lambda: jax.block_until_ready(generate(module, params, prompt, mask, max_new_tokens=prompt_length,
                                               eos_token_id=vocab, pad_token_id=0))
  run()
  generate_s = timing.median_seconds(run, 1 if settings.SMOKE else 2 if quick else 5)
  return {"smollm2_student_kd_tokens_per_s": batch * length / step_s,
          "smollm2_student_kd_response_tokens_per_s": float(examples.token_weights.sum()) / step_s,
          "smollm2_student_kd_step_s": step_s, "smollm2_student_compile_s": compile_s,
          "smollm2_generate_tokens_per_s_batch8": batch * prompt_length / generate_s,
          "smollm2_generate_s": generate_s}


def packed_over_padded(quick: bool) -> dict:
  """Response tokens/s of the SmolLM2-shaped student's KD training on the same passages padded (one per row of
  LLM_LENGTH tokens, kd_jax/data/causal_lm.py sequence_arrays) and packed (data.packing: whole passages per row with
  segment ids, `pack`), a top-32 teacher cache over every position: packed_over_padded_tokens_per_s. The passages
  (8 batches' worth) have random lengths from LLM_LENGTH / 8 to LLM_LENGTH tokens, their first quarter a prompt;
  both sides train on every passage once per epoch, so response tokens/s = the passages' response tokens / (the
  epoch's steps x the median step time), step times measured alternating after a compiling call of each."""
  import math  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  from kd_jax.data import causal_lm as causal_lm_data  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import pretrained  # pylint: disable=g-import-not-at-top
  from .examples import random_topk_logits  # pylint: disable=g-import-not-at-top
  batch, length, k = settings.LLM_BATCH, settings.LLM_LENGTH, settings.LLM_TOPK
  vocab = settings.SMOLLM2_STUDENT["vocab_size"]
  module, params = smollm2_student()
  rng = np.random.default_rng(0)
  sizes = rng.integers(length // 8, length + 1, 8 * batch)
  prompts = [rng.integers(3, vocab, size // 4).tolist() for size in sizes]
  responses = [rng.integers(3, vocab, size - size // 4).tolist() for size in sizes]
  layouts = {"padded": causal_lm_data.sequence_arrays(prompts, responses, pad_token_id=0, length=length),
             "packed": causal_lm_data.pack(prompts, responses, pad_token_id=0, length=length)}
  trainers, epoch_steps = {}, {}
  for name, arrays in layouts.items():
    arrays = {key: value for key, value in arrays.items() if key not in ("prompt_ids", "prompt_mask")}
    label, token_weights = arrays.pop("label"), arrays.pop("token_weights")
    examples = data.Examples(inputs=arrays, label=label, token_weights=token_weights,
                             index=np.arange(len(label), dtype=np.int32),
                             teacher=random_topk_logits(rng, label.shape, k, vocab))
    trainers[name] = FusedTrainer(model=pretrained.RegistryModel(module), params=params, examples=examples,
                                  distills=True, distill_config=settings.distill_config(temperature=1.0,
                                                                                        alpha=settings.ALPHA),
                                  optim_config=settings.notebook_optim_config(), batch_size=batch, num_steps=100,
                                  seed=0, max_steps=1)
    epoch_steps[name] = math.ceil(len(label) / batch)
    trainers[name].train(1)  # compiles
  step_s, _ = timing.alternating({name: lambda trainer=trainer: trainer.train(1) for name, trainer in trainers.items()},
                                 1 if settings.SMOKE else 3 if quick else 5)
  response_tokens = sum(len(response) for response in responses)
  tokens_per_s = {name: response_tokens / (epoch_steps[name] * step_s[name]) for name in layouts}
  return {"packed_over_padded_tokens_per_s": tokens_per_s["packed"] / tokens_per_s["padded"],
          "packed_response_tokens_per_s": tokens_per_s["packed"],
          "padded_response_tokens_per_s": tokens_per_s["padded"],
          "packed_rows_over_padded_rows": epoch_steps["packed"] / epoch_steps["padded"]}
