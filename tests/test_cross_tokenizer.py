"""Cross-tokenizer losses (kd_jax/training/cross_tokenizer.py) against NumPy references written from the papers'
and the peers' definitions (TRL's ULDLoss and GOLD hybrid, tokenkit's compute_alm_loss), on fixed inputs, and their
reductions when both sides share one tokenizer."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import models
from kd_jax.data import alignment, causal_lm
from kd_jax.models.hf import pretrained
from kd_jax.training import cross_tokenizer
from kd_jax.training import losses
from tests import numpy_divergences

# Two examples, student (L_s = 6, V_s = 5) and teacher (L_t = 7, V_t = 7); chunk c of an example holds the same text
# on both sides: chunk 0 is one token each, chunk 1 two student tokens and one teacher token, chunk 2 one and three.
STUDENT_CHUNK = np.array([[-1, 0, 1, 1, 2, -1], [0, 1, 1, -1, -1, -1]], np.int32)
TEACHER_CHUNK = np.array([[-1, -1, 0, 1, 2, 2, 2], [-1, 0, 0, 1, -1, -1, -1]], np.int32)
NUM_CHUNKS = 4  # one more than the chunks present: an absent chunk weighs 0
SHARED = (np.array([0, 2, 4], np.int32), np.array([5, 1, 3], np.int32))  # student id i_s decodes as teacher id i_t


def inputs(seed: int = 0):
  rng = np.random.default_rng(seed)
  student_logits = rng.normal(size=(2, 6, 5)) * 2
  teacher_logits = rng.normal(size=(2, 7, 7)) * 2
  student_labels = np.where(STUDENT_CHUNK >= 0, rng.integers(0, 5, size=(2, 6)), -1).astype(np.int32)
  teacher_labels = np.where(TEACHER_CHUNK >= 0, rng.integers(0, 7, size=(2, 7)), -1).astype(np.int32)
  return student_logits, student_labels, teacher_logits, teacher_labels


def np_chunk_log_distribution(logits, labels, chunk, example, c, temperature=1.0):
  """log p^T at the chunk's first position + the log p^T of its later tokens (TRL's "observed" merge)."""
  log_probs = numpy_divergences.log_softmax(np.asarray(logits[example], np.float64) / temperature)
  positions = [l for l in range(chunk.shape[1]) if chunk[example, l] == c]
  return log_probs[positions[0]] + sum(log_probs[l, labels[example, l]] for l in positions[1:])


def np_chunk_log_likelihood(logits, labels, chunk, example, c):
  log_probs = numpy_divergences.log_softmax(np.asarray(logits[example], np.float64))
  return sum(log_probs[l, labels[example, l]] for l in range(chunk.shape[1]) if chunk[example, l] == c)


def np_sorted_l1(p_s, p_t):
  """ULD (Boizard et al. 2024): sum |p_s sorted - p_t sorted|, decreasing, the shorter padded with zeros."""
  size = max(len(p_s), len(p_t))
  s, t = np.zeros(size), np.zeros(size)
  s[:len(p_s)], t[:len(p_t)] = sorted(p_s, reverse=True), sorted(p_t, reverse=True)
  return np.abs(s - t).sum()


def np_gold(log_q_s, log_q_t, kind, scale):
  """TRL's _compute_hybrid_uld_loss: the divergence over the shared tokens, sorted L1 over the others, weighted by
  the shared fraction of the teacher's vocabulary (uld_hybrid_matched_weight=None)."""
  q_s, q_t = np.exp(log_q_s), np.exp(log_q_t)
  matched = numpy_divergences.divergence_of_probs(q_s[SHARED[0]], q_t[SHARED[1]], kind)
  rest_s = np.delete(q_s, SHARED[0])
  rest_t = np.delete(q_t, SHARED[1])
  weight = len(SHARED[0]) / len(q_t)
  return weight * scale * matched + (1 - weight) * np_sorted_l1(rest_s, rest_t)


def np_alm(ll_s, ll_t, tau):
  """tokenkit's binary_ce(log_y_true=LL_t, log_y_pred=LL_s) less the teacher's binary entropy."""
  log_t, log_s = min(ll_t, 0) / tau - 1e-6, min(ll_s, 0) / tau - 1e-6
  p_t, p_s = np.exp(log_t), np.exp(log_s)
  binary_ce = -(p_t * log_s + (1 - p_t) * np.log1p(-p_s))
  entropy = -(p_t * log_t + (1 - p_t) * np.log1p(-p_t))
  return binary_ce - entropy


# Compiled once per set of static arguments (op-by-op dispatch would compile every operation of the loss).
chunk_losses = jax.jit(cross_tokenizer.chunk_losses, static_argnames=("kind", "num_chunks", "divergence"))


def reference(kind, student_logits, student_labels, teacher_logits, teacher_labels, temperature, divergence="js",
              t2_scaling=True, tau=100.0):
  values, weights = np.zeros((2, NUM_CHUNKS)), np.zeros((2, NUM_CHUNKS))
  for example in range(2):
    for c in range(NUM_CHUNKS):
      if c not in STUDENT_CHUNK[example]:
        continue
      weights[example, c] = 1.0
      if kind == "alm":
        values[example, c] = np_alm(np_chunk_log_likelihood(student_logits, student_labels, STUDENT_CHUNK, example, c),
                                    np_chunk_log_likelihood(teacher_logits, teacher_labels, TEACHER_CHUNK, example, c),
                                    tau)
        continue
      log_q_s = np_chunk_log_distribution(student_logits, student_labels, STUDENT_CHUNK, example, c, temperature)
      log_q_t = np_chunk_log_distribution(teacher_logits, teacher_labels, TEACHER_CHUNK, example, c, temperature)
      if kind == "uld":
        values[example, c] = np_sorted_l1(np.exp(log_q_s), np.exp(log_q_t))
      else:
        values[example, c] = np_gold(log_q_s, log_q_t, divergence, temperature ** 2 if t2_scaling else 1.0)
  return values, weights


@pytest.mark.parametrize("kind, temperature", [("uld", 2.0), ("gold", 2.0), ("alm", 1.0)])
def test_chunk_losses_match_numpy(kind, temperature):
  student_logits, student_labels, teacher_logits, teacher_labels = inputs()
  values, weights = chunk_losses(
      kind, jnp.asarray(student_logits, jnp.float32), student_labels, STUDENT_CHUNK,
      jnp.asarray(teacher_logits, jnp.float32), teacher_labels, TEACHER_CHUNK, num_chunks=NUM_CHUNKS,
      temperature=temperature, divergence="js", shared_ids=tuple(map(jnp.asarray, SHARED)), alm_temperature=3.0)
  expected, expected_weights = reference(kind, student_logits, student_labels, teacher_logits, teacher_labels,
                                         temperature, tau=3.0)
  np.testing.assert_array_equal(weights, expected_weights)
  np.testing.assert_allclose(values * weights, expected, rtol=1e-4, atol=1e-6)


def test_alm_is_the_binary_kl_of_the_binarized_likelihoods():
  ll_s, ll_t = np.array([-0.3, -5.0, -40.0, 0.0, -2.0]), np.array([-0.2, -9.0, -35.0, -1.0, -2.0])
  got = cross_tokenizer.alm(jnp.asarray(ll_s), jnp.asarray(ll_t), 10.0)
  p_s, p_t = np.exp(ll_s / 10 - 1e-6), np.exp(ll_t / 10 - 1e-6)
  binary_kl = p_t * np.log(p_t / p_s) + (1 - p_t) * np.log((1 - p_t) / (1 - p_s))
  np.testing.assert_allclose(got, binary_kl, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(got, [np_alm(s, t, 10.0) for s, t in zip(ll_s, ll_t)], rtol=1e-4, atol=1e-7)
  assert float(got[-1]) == pytest.approx(0.0, abs=1e-7)  # equal likelihoods match exactly


def identical_tokenizer_inputs(seed: int = 1):
  """One tokenizer on both sides: every chunk is one token at the same position."""
  rng = np.random.default_rng(seed)
  student_logits, teacher_logits = rng.normal(size=(2, 5, 6)) * 2, rng.normal(size=(2, 5, 6)) * 2
  labels = np.array([[-1, 3, 0, 5, -1], [2, 2, 1, -1, -1]], np.int32)
  chunk = np.where(labels >= 0, np.cumsum(labels >= 0, axis=1) - 1, -1).astype(np.int32)
  return student_logits, teacher_logits, labels, chunk


@pytest.mark.parametrize("divergence", ["forward_kl", "generalized_js"])
def test_gold_with_identical_tokenizers_is_the_plain_divergence(divergence):
  student_logits, teacher_logits, labels, chunk = identical_tokenizer_inputs()
  ids = jnp.arange(6)
  values, weights = chunk_losses(
      "gold", jnp.asarray(student_logits, jnp.float32), labels, chunk, jnp.asarray(teacher_logits, jnp.float32),
      labels, chunk, num_chunks=4, temperature=2.0, divergence=divergence, shared_ids=(ids, ids))
  plain = jax.jit(losses.divergence, static_argnames="kind")(
      jnp.asarray(student_logits, jnp.float32), jnp.asarray(teacher_logits, jnp.float32), 2.0, kind=divergence)
  per_token = np.zeros((2, 4))
  for example, position in zip(*np.nonzero(labels >= 0)):
    per_token[example, chunk[example, position]] = plain[example, position]
  np.testing.assert_allclose(values * weights, per_token, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses.global_mean(values, weights),
                             losses.global_mean(plain, (labels >= 0).astype(np.float32)), rtol=1e-5)


def test_alm_chunk_likelihoods_are_the_per_token_sums():
  student_logits, _, labels, chunk = identical_tokenizer_inputs()
  log_probs = jax.nn.log_softmax(jnp.asarray(student_logits, jnp.float32))
  token_log_probs = cross_tokenizer.label_log_probs(log_probs, labels)
  per_token = cross_tokenizer.chunk_sums(token_log_probs, chunk, 4)
  for example, position in zip(*np.nonzero(labels >= 0)):
    assert float(per_token[example, chunk[example, position]]) == pytest.approx(
        float(token_log_probs[example, position]), abs=1e-6)
  merged = np.where(chunk >= 0, chunk // 2, -1)  # chunks of two tokens: the sums of their tokens
  sums = cross_tokenizer.chunk_sums(token_log_probs, merged, 4)
  np.testing.assert_allclose(sums[:, :2], np.stack([per_token[:, 0] + per_token[:, 1],
                                                    per_token[:, 2] + per_token[:, 3]], axis=1), atol=1e-6)


def test_losses_have_finite_gradients_and_vanish_for_a_perfect_student():
  student_logits, _, labels, chunk = identical_tokenizer_inputs()
  logits = jnp.asarray(student_logits, jnp.float32)
  ids = jnp.arange(6)
  for kind in cross_tokenizer.KINDS:
    def loss(student, kind=kind):
      values, weights = cross_tokenizer.chunk_losses(kind, student, labels, chunk, logits, labels, chunk,
                                                     num_chunks=4, shared_ids=(ids, ids))
      return losses.global_mean(values, weights)
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    value, grad = value_and_grad(logits)
    assert float(value) == pytest.approx(0.0, abs=1e-6), kind
    assert bool(jnp.all(jnp.isfinite(grad))), kind
    assert float(value_and_grad(logits + np.random.default_rng(2).normal(size=logits.shape).astype(np.float32))[0]) > 0


# The data path: fixture models with different tokenizers (a 320-token ChatML BPE and GPT-2's 300-token one, each with
# its own chat template) on the causal-LM fixture data.
FIXTURES = pathlib.Path(__file__).parent / "fixtures"
MAX_LENGTH = 48


def layout(student, teacher, chat_template: bool, num_examples: int = 8):
  """(prompts, responses, the student's arrays, causal_lm.cross_tokenizer_arrays) of the first validation examples."""
  rows = [json.loads(line) for line in
          (FIXTURES / "text" / "causal_lm" / "validation.jsonl").read_text().splitlines()[:num_examples]]
  prompts, responses = [row["prompt"] for row in rows], [row["response"] for row in rows]
  prompt_ids, response_ids = causal_lm.tokenize_pairs(student, prompts, responses, max_length=MAX_LENGTH,
                                                      chat_template=chat_template, where="test")
  arrays = causal_lm.sequence_arrays(prompt_ids, response_ids, pad_token_id=student.eos_token_id, length=MAX_LENGTH)
  cross = causal_lm.cross_tokenizer_arrays(student, teacher, prompts, responses, arrays, prompt_ids, response_ids,
                                           max_length=MAX_LENGTH, chat_template=chat_template, where="test")
  return prompts, responses, arrays, cross


def test_identical_tokenizers_give_each_content_token_its_own_chunk():
  tokenizer = pretrained.load_tokenizer(str(FIXTURES / "hf" / "llama_chat"))
  _, responses, arrays, cross = layout(tokenizer, tokenizer, chat_template=True)
  np.testing.assert_array_equal(cross["teacher"]["label"], arrays["label"])
  np.testing.assert_array_equal(cross["teacher_chunk"], cross["student_chunk"])
  for row, response in enumerate(responses):
    positions = np.nonzero(cross["student_chunk"][row] >= 0)[0]
    np.testing.assert_array_equal(cross["student_chunk"][row, positions], np.arange(len(positions)))
    labels = arrays["label"][row, positions]
    assert (labels >= 0).all() and tokenizer.decode(labels) == response  # the content; not the end of turn


@pytest.mark.parametrize("chat_template", [False, True])
def test_chunks_of_different_tokenizers_hold_the_same_text(chat_template):
  student = pretrained.load_tokenizer(str(FIXTURES / "hf" / "gpt2"))
  teacher = pretrained.load_tokenizer(str(FIXTURES / "hf" / "llama_chat"))
  assert student.get_vocab() != teacher.get_vocab()
  _, responses, arrays, cross = layout(student, teacher, chat_template)
  whole = 0
  for row, response in enumerate(responses):
    texts = []
    for c in range(cross["student_chunk"].shape[1]):
      student_tokens = arrays["label"][row, cross["student_chunk"][row] == c]
      teacher_tokens = cross["teacher"]["label"][row, cross["teacher_chunk"][row] == c]
      assert (len(student_tokens) > 0) == (len(teacher_tokens) > 0)
      if len(student_tokens):
        texts.append(student.decode(student_tokens))
        assert teacher.decode(teacher_tokens) == texts[-1], (row, c)
    assert texts and response.startswith("".join(texts))  # all of it, or what fits both sides' max_length
    whole += "".join(texts) == response
  assert whole >= len(responses) // 2


@pytest.mark.slow
def test_cross_tokenizer_losses_of_fixture_models_are_finite():
  student = pretrained.load_tokenizer(str(FIXTURES / "hf" / "gpt2"))
  teacher = pretrained.load_tokenizer(str(FIXTURES / "hf" / "llama_chat"))
  student_model, student_params = models.from_pretrained(str(FIXTURES / "hf" / "gpt2"), task="causal_lm")
  teacher_model, teacher_params = models.from_pretrained(str(FIXTURES / "hf" / "llama_chat"), task="causal_lm")
  forward = jax.jit(lambda model, params, ids, mask: model.apply({"params": params}, input_ids=ids,
                                                                  attention_mask=mask), static_argnums=0)
  _, _, arrays, cross = layout(student, teacher, chat_template=True, num_examples=4)
  student_logits = forward(student_model, student_params, arrays["input_ids"], arrays["attention_mask"])
  teacher_logits = forward(teacher_model, teacher_params, cross["teacher"]["input_ids"],
                           cross["teacher"]["attention_mask"])
  shared = tuple(map(jnp.asarray, alignment.shared_vocabulary(student, teacher)))
  for kind in cross_tokenizer.KINDS:
    values, weights = chunk_losses(kind, student_logits, arrays["label"], cross["student_chunk"], teacher_logits,
                                   cross["teacher"]["label"], cross["teacher_chunk"], num_chunks=MAX_LENGTH,
                                   divergence="forward_kl", shared_ids=shared)
    assert float(jnp.sum(weights)) > 4 and bool(jnp.all(jnp.isfinite(values))), kind
