"""Cross-tokenizer distillation losses, pure JAX: teacher and student with different tokenizers, compared on the
aligned chunks of kd_jax/data/alignment.py.

Notation: a side (student s, teacher t) has logits z [B, L, V] over its own vocabulary and next-token labels y [B, L]
(-1: no label), so that position l predicts token y_l. `chunk` [B, L] int32 is the aligned chunk of each position's
label (-1: none); chunk c of example b holds the same bytes of text on both sides, as positions l_1 < ... < l_n of
the student and m_1 < ... < m_k of the teacher. log p^T = log_softmax(z / T).

- Chunk log-likelihood: LL_c = sum_{i} log p(y_{l_i} | prefix), the log-probability of the chunk's text (`chunk_sums`
  of the label log-probabilities).
- Chunk distribution (TRL GOLD's "observed" merge, `chunk_log_distributions`): log q_c = log p^T_{l_1}
  + sum_{i > 1} log p^T(y_{l_i}), the first position's distribution scaled by the probability of the chunk's later
  tokens (unnormalized; exact for one-token chunks).
- uld (Universal Logit Distillation, Boizard et al. 2024): W1 between the two chunk distributions with every token
  at unit distance from every other, i.e. sum_r |sort(q_s)_r - sort(q_t)_r| over probabilities sorted in decreasing
  order, the shorter vocabulary padded with zeros (TRL's `ULDLoss`: L1 of the sorted vectors, summed over the
  vocabulary, averaged over chunks).
- gold (TRL's GOLD hybrid, `ULDLoss._compute_hybrid_uld_loss`): the vocabulary is split into the shared part, pairs
  (i_s, i_t) of tokens that decode to the same string (alignment.shared_vocabulary, M pairs), and the rest.
  w D(q_s[shared], q_t[shared]) + (1 - w) ULD(q_s[rest], q_t[rest]) on every aligned chunk, with D the configured
  divergence (config.distill.divergence, on the unnormalized sub-vectors as TRL does) and w = M / V_t, TRL's
  adaptive weight (GOLDConfig.uld_hybrid_matched_weight=None, its default). Identical tokenizers: every chunk is
  one token, M = V_t, and gold is D itself.
- alm (approximate likelihood matching, Minixhofer et al. 2025; tokenkit's `compute_alm_loss` with
  alm_diff_fn='binary_ce', chunks 'unconstrained', no space debiasing): each chunk's likelihood binarized as the
  Bernoulli of probability P = exp(LL / tau - eps) (tau the binarization temperature, tokenkit's default 100;
  eps = 1e-6), matched by the binary KL(Bern(P_t) || Bern(P_s)) = P_t (log P_t - log P_s)
  + (1 - P_t)(log(1 - P_t) - log(1 - P_s)): tokenkit's binary cross-entropy less the teacher's binary entropy (a
  constant of the student; the same gradient), so that it is 0 when the likelihoods agree.

Each loss is per chunk [B, C]; `chunk_mask` weighs the chunks present, and losses.global_mean averages over the
global batch's chunks (tokenkit's chunk_count normalization).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from kd_jax.config import schema
from kd_jax.training import losses

KINDS = tuple(kind for kind in schema.CROSS_TOKENIZER_LOSSES if kind != "none")
ALM_EPSILON = 1e-6  # tokenkit's epsilon: keeps the binarized log-probabilities below 0


def label_log_probs(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
  """[B, L] log p(y_l) from log_probs [B, L, V] and labels [B, L]; 0 where the label is -1."""
  picked = jnp.take_along_axis(log_probs, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
  return jnp.where(labels >= 0, picked, 0.0)


def chunk_sums(values: jax.Array, chunk: jax.Array, num_chunks: int) -> jax.Array:
  """[B, C] sum of values [B, L] over the positions of each chunk (chunk [B, L] int, -1 in no chunk)."""
  return jnp.einsum("bl,blc->bc", values, jax.nn.one_hot(chunk, num_chunks, dtype=values.dtype))


def chunk_mask(chunk: jax.Array, num_chunks: int) -> jax.Array:
  """[B, C] float32: 1 where chunk c has a position in chunk [B, L]."""
  return jnp.max(jax.nn.one_hot(chunk, num_chunks, dtype=jnp.float32), axis=1)


def chunk_log_distributions(log_probs: jax.Array, labels: jax.Array, chunk: jax.Array,
                            num_chunks: int) -> jax.Array:
  """[B, C, V] log q_c = log p_{l_1} + sum_{i > 1} log p(y_{l_i}) (module docstring); the first position's
  distribution where a chunk is absent (masked out by chunk_mask).

  Args:
    log_probs: [B, L, V] log-probabilities (at the loss's temperature).
    labels: [B, L] int next-token labels.
    chunk: [B, L] int chunk of each position, -1 in none.
  """
  one_hot = jax.nn.one_hot(chunk, num_chunks, dtype=jnp.int32)  # [B, L, C]
  first = jnp.argmax(one_hot, axis=1)  # [B, C]: the first position of each chunk
  first_log_probs = jnp.take_along_axis(log_probs, first[..., None], axis=1)  # [B, C, V]
  token_log_probs = label_log_probs(log_probs, labels)
  later = chunk_sums(token_log_probs, chunk, num_chunks) - jnp.take_along_axis(token_log_probs, first, axis=1)
  return first_log_probs + later[..., None]


def sorted_l1(student_probs: jax.Array, teacher_probs: jax.Array) -> jax.Array:
  """[...] sum_r |sort(p_s)_r - sort(p_t)_r|, each [..., V_side] sorted in decreasing order, the shorter padded with
  zeros: W1 between the two distributions under the unit cost (Boizard et al. 2024)."""
  size = max(student_probs.shape[-1], teacher_probs.shape[-1])

  def sorted_padded(probs):
    descending = -jnp.sort(-probs, axis=-1)
    return jnp.pad(descending, [(0, 0)] * (probs.ndim - 1) + [(0, size - probs.shape[-1])])
  return jnp.sum(jnp.abs(sorted_padded(student_probs) - sorted_padded(teacher_probs)), axis=-1)


def uld(student_log_q: jax.Array, teacher_log_q: jax.Array) -> jax.Array:
  """[...] ULD of chunk distributions given as log q [..., V_s] and [..., V_t]: sorted_l1 of their exponentials."""
  return sorted_l1(jnp.exp(student_log_q), jnp.exp(teacher_log_q))


def gold(student_log_q: jax.Array, teacher_log_q: jax.Array, student_shared: jax.Array, teacher_shared: jax.Array,
         kind: str, params: losses.DivergenceParams = losses.DivergenceParams(),
         divergence_scale: float = 1.0) -> jax.Array:
  """[...] w s D(q_s[shared], q_t[shared]) + (1 - w) ULD(q_s[rest], q_t[rest]), w = M / V_t (module docstring).

  Args:
    student_log_q, teacher_log_q: [..., V_s], [..., V_t] chunk log-distributions.
    student_shared, teacher_shared: [M] int the shared vocabulary's ids on each side (pair i decodes alike).
    kind, params: the divergence D (losses.divergence_of_log_probs).
    divergence_scale: s, e.g. T^2 (the factor losses.divergence applies).
  """
  matched = losses.divergence_of_log_probs(student_log_q[..., student_shared], teacher_log_q[..., teacher_shared],
                                           kind, params)
  # Zeroing the shared entries and sorting the whole vector is sorting the rest padded with zeros.
  rest = sorted_l1(jnp.exp(student_log_q).at[..., student_shared].set(0.0),
                   jnp.exp(teacher_log_q).at[..., teacher_shared].set(0.0))
  weight = student_shared.shape[0] / teacher_log_q.shape[-1]
  return weight * divergence_scale * matched + (1.0 - weight) * rest


def binarized_log_likelihood(chunk_log_likelihood: jax.Array, temperature) -> jax.Array:
  """log P = min(LL, 0) / tau - eps: the log-probability of the Bernoulli that ALM compares (module docstring)."""
  return jnp.minimum(chunk_log_likelihood.astype(jnp.float32), 0.0) / temperature - ALM_EPSILON


def log1mexp(x: jax.Array) -> jax.Array:
  """log(1 - exp(x)) for x < 0, stable at both ends (log1p(-e^x) below log 1/2, log(-expm1 x) above)."""
  return jnp.where(x < -jnp.log(2.0), jnp.log1p(-jnp.exp(x)), jnp.log(-jnp.expm1(x)))


def alm(student_chunk_log_likelihood: jax.Array, teacher_chunk_log_likelihood: jax.Array,
        temperature=100.0) -> jax.Array:
  """[...] KL(Bern(P_t) || Bern(P_s)) with log P = binarized_log_likelihood(LL, temperature) (module docstring).

  Args:
    student_chunk_log_likelihood, teacher_chunk_log_likelihood: [...] chunk log-likelihoods LL (<= 0).
    temperature: tau, the binarization temperature.
  """
  log_p_t = binarized_log_likelihood(teacher_chunk_log_likelihood, temperature)
  log_p_s = binarized_log_likelihood(student_chunk_log_likelihood, temperature)
  return jnp.exp(log_p_t) * (log_p_t - log_p_s) - jnp.expm1(log_p_t) * (log1mexp(log_p_t) - log1mexp(log_p_s))


def chunk_losses(kind: str, student_logits: jax.Array, student_labels: jax.Array, student_chunk: jax.Array,
                 teacher_logits: jax.Array, teacher_labels: jax.Array, teacher_chunk: jax.Array, *, num_chunks: int,
                 temperature=1.0, divergence: str = "forward_kl",
                 params: losses.DivergenceParams = losses.DivergenceParams(), t2_scaling: bool = True,
                 shared_ids: tuple[jax.Array, jax.Array] | None = None, alm_temperature=100.0
                 ) -> tuple[jax.Array, jax.Array]:
  """The per-chunk loss of `kind` and the chunks' weights, both [B, C]; losses.global_mean(values, weights) is the
  loss of the batch.

  Args:
    kind: one of KINDS.
    student_logits, teacher_logits: [B, L_s, V_s], [B, L_t, V_t].
    student_labels, teacher_labels: [B, L_s], [B, L_t] int next-token labels (-1: none).
    student_chunk, teacher_chunk: [B, L_s], [B, L_t] int chunk of each position (-1: none); chunk c of an example
      covers the same text on both sides (alignment.chunk_indices).
    num_chunks: C, the chunk axis' size.
    temperature: T of the chunk distributions (uld, gold); alm compares the likelihoods at T = 1.
    divergence, params, t2_scaling: gold's D on the shared vocabulary, scaled by T^2 when t2_scaling.
    shared_ids: (student ids, teacher ids) [M] of the shared vocabulary (gold).
    alm_temperature: alm's binarization temperature tau.
  """
  weights = chunk_mask(student_chunk, num_chunks) * chunk_mask(teacher_chunk, num_chunks)
  if kind == "alm":
    student_ll = chunk_sums(label_log_probs(jax.nn.log_softmax(student_logits.astype(jnp.float32)), student_labels),
                            student_chunk, num_chunks)
    teacher_ll = chunk_sums(label_log_probs(jax.nn.log_softmax(teacher_logits.astype(jnp.float32)), teacher_labels),
                            teacher_chunk, num_chunks)
    return alm(student_ll, teacher_ll, alm_temperature), weights
  student_log_q = chunk_log_distributions(jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature),
                                          student_labels, student_chunk, num_chunks)
  teacher_log_q = chunk_log_distributions(jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature),
                                          teacher_labels, teacher_chunk, num_chunks)
  if kind == "uld":
    return uld(student_log_q, teacher_log_q), weights
  if kind == "gold":
    assert shared_ids is not None, "gold needs the shared vocabulary (alignment.shared_vocabulary)"
    scale = jnp.square(temperature) if t2_scaling else 1.0
    return gold(student_log_q, teacher_log_q, *shared_ids, divergence, params, scale), weights
  raise ValueError(f"unknown cross-tokenizer loss {kind!r}; allowed: {', '.join(KINDS)}")


class ChunkedTeacher(NamedTuple):
  """A teacher with its own tokenization, as the train step hands it to losses.distillation_loss: its logits and
  labels and both sides' aligned chunks; it computes the per-chunk loss of `kind` against the student's logits.

  logits: [B, L_t, V_t]; labels, chunk: [B, L_t] int; student_chunk: [B, L_s] int (the student's positions' chunks);
  kind: one of KINDS; shared_ids: gold's shared vocabulary (student ids, teacher ids) [M], else None.
  """
  logits: jax.Array
  labels: jax.Array
  chunk: jax.Array
  student_chunk: jax.Array
  kind: str
  shared_ids: tuple[jax.Array, jax.Array] | None = None

  def chunk_divergences(self, student_logits: jax.Array, student_labels: jax.Array, temperature,
                        divergence: str, t2_scaling: bool, params: losses.DivergenceParams
                        ) -> tuple[jax.Array, jax.Array]:
    """`chunk_losses` of this teacher and the student: (values, weights) [B, C], C = L_s."""
    return chunk_losses(self.kind, student_logits, student_labels, self.student_chunk, self.logits, self.labels,
                        self.chunk, num_chunks=self.student_chunk.shape[-1], temperature=temperature,
                        divergence=divergence, params=params, t2_scaling=t2_scaling, shared_ids=self.shared_ids)


# A log-probability that stands for "no entry" in gold's matched sub-vectors: its probability is 0, and unlike -inf
# it keeps every divergence's gradients finite.
ABSENT = -1e9


class CachedChunks(NamedTuple):
  """A cached teacher with another tokenizer, known by its logprobs on the aligned chunks (a logprobs file or a
  server: kd_jax/teachers/logprobs_file.py `chunk_signal`), joined to the student's examples. Chunk c of an example
  sits in slot c (C = L_s slots).

  student_chunk: [B, L_s] int32 the chunk of each student position's label (-1: none).
  log_likelihood: [B, C] float32 the chunk's teacher log-likelihood: the sum of its tokens' logprobs.
  top_log_q: [B, C, k] float32 the teacher's chunk distribution where known: the top-k logprobs of the chunk's first
    token plus the logprobs of its later tokens (log q_c of the module docstring at T = 1), largest first.
  top_ids: [B, C, k] int32 the student id of each of those top tokens where it is one student token, else -1.
  """
  student_chunk: jax.Array
  log_likelihood: jax.Array
  top_log_q: jax.Array
  top_ids: jax.Array


def cached_chunk_losses(kind: str, student_logits: jax.Array, student_labels: jax.Array, teacher: CachedChunks, *,
                        temperature=1.0, divergence: str = "forward_kl",
                        params: losses.DivergenceParams = losses.DivergenceParams(), t2_scaling: bool = True,
                        alm_temperature=100.0) -> tuple[jax.Array, jax.Array]:
  """The per-chunk loss of `kind` against a cached teacher (CachedChunks) and the chunks' weights, both [B, C].

  The teacher's chunk distribution is known on its top k tokens only (at T = 1: the rules keep T = 1):
  - uld: sorted_l1 of the student's chunk distribution and the teacher's k known probabilities; the teacher's tail
    (its other tokens, 1 - sum of the k) enters as ULD's zero padding: its sorted vector is the k probabilities
    followed by zeros. Sorting is 1-Lipschitz in L1, so this differs from ULD against the teacher's whole
    distribution by at most the tail's probability.
  - gold: w D(q_s[matched], q_t[matched]) + (1 - w) ULD(q_s[rest], q_t[rest]): the matched entries are the top tokens
    that are one student token (top_ids >= 0; GOLD's exact matches), D over the unnormalized sub-vectors as in
    `gold`; the rest are the other top tokens (zero-padded as in uld) against the student's distribution without the
    matched ids; w = (matched entries) / k per chunk, the analogue of TRL's M / V_t on the teacher's known tokens.
  - alm: `alm` of the student's chunk log-likelihood and the teacher's (the sum of its actual tokens' logprobs).
  """
  num_chunks = teacher.student_chunk.shape[-1]
  weights = chunk_mask(teacher.student_chunk, num_chunks)
  if kind == "alm":
    student_ll = chunk_sums(label_log_probs(jax.nn.log_softmax(student_logits.astype(jnp.float32)), student_labels),
                            teacher.student_chunk, num_chunks)
    return alm(student_ll, teacher.log_likelihood, alm_temperature), weights
  student_log_q = chunk_log_distributions(jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature),
                                          student_labels, teacher.student_chunk, num_chunks)
  teacher_log_q = teacher.top_log_q.astype(jnp.float32)
  if kind == "uld":
    return uld(student_log_q, teacher_log_q), weights
  if kind == "gold":
    matched = teacher.top_ids >= 0
    ids = jnp.maximum(teacher.top_ids, 0)
    student_matched = jnp.where(matched, jnp.take_along_axis(student_log_q, ids, axis=-1), ABSENT)
    divergence_value = losses.divergence_of_log_probs(student_matched, jnp.where(matched, teacher_log_q, ABSENT),
                                                      divergence, params)
    student_probs = jnp.exp(student_log_q)
    b, c = jnp.arange(ids.shape[0])[:, None, None], jnp.arange(ids.shape[1])[None, :, None]
    matched_ids = jnp.zeros_like(student_probs).at[b, c, ids].max(matched.astype(student_probs.dtype))
    rest = sorted_l1(student_probs * (1.0 - matched_ids), jnp.exp(jnp.where(matched, -jnp.inf, teacher_log_q)))
    weight = jnp.mean(matched.astype(jnp.float32), axis=-1)
    scale = jnp.square(temperature) if t2_scaling else 1.0
    return weight * scale * divergence_value + (1.0 - weight) * rest, weights
  raise ValueError(f"unknown cross-tokenizer loss {kind!r}; allowed: {', '.join(KINDS)}")


class CachedChunkedTeacher(NamedTuple):
  """A CachedChunks teacher as the train step hands it to losses.distillation_loss (the loss's `kind` with it)."""
  chunks: CachedChunks
  kind: str

  def chunk_divergences(self, student_logits: jax.Array, student_labels: jax.Array, temperature,
                        divergence: str, t2_scaling: bool, params: losses.DivergenceParams
                        ) -> tuple[jax.Array, jax.Array]:
    """`cached_chunk_losses` of this teacher and the student: (values, weights) [B, C], C = L_s."""
    return cached_chunk_losses(self.kind, student_logits, student_labels, self.chunks, temperature=temperature,
                               divergence=divergence, params=params, t2_scaling=t2_scaling)
