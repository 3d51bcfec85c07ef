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
  steps_per_round, rounds = (1, 3) if quick else (2, 5)
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
  generate_s = timing.median_seconds(run, 2 if quick else 5)
  return {"smollm2_student_kd_tokens_per_s": batch * length / step_s,
          "smollm2_student_kd_response_tokens_per_s": float(examples.token_weights.sum()) / step_s,
          "smollm2_student_kd_step_s": step_s, "smollm2_student_compile_s": compile_s,
          "smollm2_generate_tokens_per_s_batch8": batch * prompt_length / generate_s,
          "smollm2_generate_s": generate_s}
