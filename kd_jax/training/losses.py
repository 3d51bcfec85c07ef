"""Distillation losses, pure JAX.

Shapes: `logits` are [..., num_classes] (examples [batch, C] or tokens [batch, length, C]); per-example (or
per-token) functions return [...] without the class axis. Reductions to a scalar happen in `global_mean`, which
normalizes by the weight of the *global* batch so the loss does not depend on how the batch is split over devices.

Notation: z_s, z_t student and teacher logits; p^T = softmax(z / T); y integer labels, -1 for "no label" (the
unlabeled transfer set, or GLUE's test split).
"""

from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.config import schema
from kd_jax.training import chunked

DIVERGENCES = schema.DIVERGENCES
SCHEDULES = schema.SCHEDULES


class DivergenceParams(NamedTuple):
  """The numbers some divergences take (arrays or floats; a vectorized sweep stacks them):
  beta: generalized_js's interpolation in [0, 1]; skew: lambda of the skew KLs in [0, 1]; akl_mu: the teacher mass
  of akl's head in (0, 1]."""
  beta: jax.Array | float = 0.5
  skew: jax.Array | float = 0.1
  akl_mu: jax.Array | float = 0.5


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """CE(y, p) = -sum_c q_c log softmax(z)_c with q = (1 - eps) onehot(y) + eps / C.

  Args:
    logits: [..., C].
    labels: [...] int; negative labels (no label) give 0.
    label_smoothing: eps in [0, 1).

  Returns:
    [...] per-example cross-entropy, in float32 whatever the logits' dtype: a bfloat16 student's log-softmax and sum
    in bfloat16 would carry its 8-bit mantissa into the loss (about 5e-3 relative error, measured against float64).
  """
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  targets = jax.nn.one_hot(labels, num_classes, dtype=log_probs.dtype)
  targets = (1.0 - label_smoothing) * targets + label_smoothing / num_classes
  loss = -jnp.sum(targets * log_probs, axis=-1)
  return jnp.where(labels >= 0, loss, 0.0)


def _kl_from_log_probs(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """KL(p || q) = sum_c p_c (log p_c - log q_c), with 0 log 0 = 0."""
  p = jnp.exp(log_p)
  # Where p is 0 the term is p itself (0): a scalar 0.0 here would be broadcast to the logits' shape, and XLA:CPU
  # hoisted that constant [batch, chunk, vocab] array out of chunked losses' loop, alive through the whole step.
  return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), p), axis=-1)


def divergence(student_logits: jax.Array, teacher_logits, temperature: float, kind: str = "forward_kl",
               t2_scaling: bool = True, params: DivergenceParams = DivergenceParams()) -> jax.Array:
  """Per-example distillation divergence s * D(z_s / T, z_t / T) with s = T^2 if t2_scaling else 1.

  With p = p_t^T (teacher) and q = p_s^T (student), D is one of
    forward_kl:      KL(p || q)                                     (Hinton et al. 2015)
    reverse_kl:      KL(q || p)
    js:              (KL(p || m) + KL(q || m)) / 2,   m = (p + q) / 2
    generalized_js:  JSD_beta = beta KL(p || m) + (1 - beta) KL(q || m),   m = beta p + (1 - beta) q
                     (Agarwal et al. 2024, GKD, eq. 1). beta = 0.5 is `js`. As beta -> 0, JSD_beta -> 0 and
                     JSD_beta / beta -> KL(p || q); as beta -> 1, JSD_beta / (1 - beta) -> KL(q || p). Like TRL's
                     `GKDTrainer.generalized_jsd_loss`, beta = 0 is taken as forward KL and beta = 1 as reverse KL
                     (the limits of the rescaled divergence; JSD_beta itself vanishes at both ends), the same
                     mixture convention (m weights the teacher by beta) and no rescaling in between.
    skew_forward_kl: KL(p || lambda p + (1 - lambda) q)            (DistiLLM, Ko et al. 2024; lambda = params.skew)
    skew_reverse_kl: KL(q || lambda q + (1 - lambda) p)            lambda = 0 gives forward / reverse KL; lambda = 1
                                                                    gives 0
    tvd:             (1/2) sum_c |p_c - q_c|                       total variation distance, in [0, 1]
    akl:             w_head KL(p || q) + w_tail KL(q || p)          (adaptive KL, Wu et al. 2024). The head is the
                     teacher's most probable classes up to mass mu (sorted by p, a class is in the head when the
                     teacher mass strictly above it is < mu = params.akl_mu), the tail the rest; g_head and g_tail
                     are sum |p - q| over each, w_head = g_head / (g_head + g_tail), w_tail = 1 - w_head (both 1/2
                     when p = q). The weights are constants of the step (stop_gradient): they choose how much of
                     each KL to follow, as in the authors' reference, where they are detached from the student.
    mse:             mean_c (z_s/T - z_t/T)_c^2                    (logit matching; with T^2 scaling T cancels)
  With T^2 scaling the gradient of forward KL w.r.t. z_s is T (q - p), and as T grows T^2 KL tends to
  (1/2) mean_c (z_s - z_t)_c^2 for zero-mean logits, i.e. half the mse divergence. The T^2 factor applies to every
  kind alike (turn it off with t2_scaling=False).

  An ensemble's teacher (`EnsembleLogits`, [..., M, C]) enters as its averaged probabilities at T,
  p_t^T = p_ens^T = mean_m softmax(z_m / T) (`EnsembleLogits.log_probs`); mse, which compares logits, has no such
  target and is not defined for it.

  Args:
    student_logits: [..., C].
    teacher_logits: [..., C], or EnsembleLogits [..., M, C].
    temperature: T > 0 (a Python float or a traced scalar, so that sweeps can vmap over it).
    kind: one of DIVERGENCES.
    t2_scaling: multiply by T^2.
    params: DivergenceParams (beta, skew, akl_mu; floats or traced scalars).

  Returns:
    [...] per-example divergence.
  """
  student_scaled = student_logits.astype(jnp.float32) / temperature
  ensemble = isinstance(teacher_logits, EnsembleLogits)
  if kind == "mse":
    assert not ensemble, "an ensemble's target is its averaged probabilities; mse compares logits"
    value = jnp.mean(jnp.square(student_scaled - teacher_logits.astype(jnp.float32) / temperature), axis=-1)
  else:
    teacher_log_probs = (teacher_logits.log_probs(temperature) if ensemble
                         else jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature))
    value = divergence_of_log_probs(jax.nn.log_softmax(student_scaled), teacher_log_probs, kind, params)
  if t2_scaling:
    value = value * jnp.square(temperature)
  return value


def _log_mixture(log_p: jax.Array, log_q: jax.Array, weight) -> jax.Array:
  """log(w p + (1 - w) q) from log p and log q, for w in [0, 1] (w = 0 or 1 gives log q or log p exactly)."""
  weight = jnp.asarray(weight, log_p.dtype)
  return jnp.logaddexp(jnp.log(weight) + log_p, jnp.log1p(-weight) + log_q)


def _akl(log_p_s: jax.Array, log_p_t: jax.Array, mu) -> jax.Array:
  """Adaptive KL (see `divergence`): head/tail gap weights (constants of the step) on forward and reverse KL."""
  p_t, p_s = jnp.exp(log_p_t), jnp.exp(log_p_s)
  order = jnp.argsort(-p_t, axis=-1)
  sorted_p_t = jnp.take_along_axis(p_t, order, axis=-1)
  in_head_sorted = (jnp.cumsum(sorted_p_t, axis=-1) - sorted_p_t) < mu
  in_head = jnp.take_along_axis(in_head_sorted, jnp.argsort(order, axis=-1), axis=-1)
  gap = jnp.abs(p_t - p_s)
  head_gap = jnp.sum(jnp.where(in_head, gap, 0.0), axis=-1)
  total_gap = jnp.sum(gap, axis=-1)
  head_weight = jax.lax.stop_gradient(jnp.where(total_gap > 0, head_gap / jnp.where(total_gap > 0, total_gap, 1.0),
                                                0.5))
  return head_weight * _kl_from_log_probs(log_p_t, log_p_s) + (1 - head_weight) * _kl_from_log_probs(log_p_s, log_p_t)


def divergence_of_log_probs(log_p_s: jax.Array, log_p_t: jax.Array, kind: str,
                             params: DivergenceParams = DivergenceParams()) -> jax.Array:
  """A divergence of `divergence` (all kinds but mse) of two distributions given as log-probabilities [..., C]."""
  if kind == "forward_kl":
    return _kl_from_log_probs(log_p_t, log_p_s)
  if kind == "reverse_kl":
    return _kl_from_log_probs(log_p_s, log_p_t)
  if kind == "js":
    log_m = jnp.logaddexp(log_p_s, log_p_t) - jnp.log(2.0)
    return 0.5 * (_kl_from_log_probs(log_p_t, log_m) + _kl_from_log_probs(log_p_s, log_m))
  if kind == "generalized_js":
    beta = jnp.asarray(params.beta, jnp.float32)
    log_m = _log_mixture(log_p_t, log_p_s, beta)
    jsd = beta * _kl_from_log_probs(log_p_t, log_m) + (1 - beta) * _kl_from_log_probs(log_p_s, log_m)
    return jnp.where(beta == 0, _kl_from_log_probs(log_p_t, log_p_s),
                     jnp.where(beta == 1, _kl_from_log_probs(log_p_s, log_p_t), jsd))
  if kind == "skew_forward_kl":
    return _kl_from_log_probs(log_p_t, _log_mixture(log_p_t, log_p_s, params.skew))
  if kind == "skew_reverse_kl":
    return _kl_from_log_probs(log_p_s, _log_mixture(log_p_s, log_p_t, params.skew))
  if kind == "tvd":
    return 0.5 * jnp.sum(jnp.abs(jnp.exp(log_p_t) - jnp.exp(log_p_s)), axis=-1)
  if kind == "akl":
    return _akl(log_p_s, log_p_t, params.akl_mu)
  raise ValueError(f"unknown divergence {kind!r}; allowed: {', '.join(DIVERGENCES)}")


class EnsembleLogits(NamedTuple):
  """The logits of an ensemble's M teachers (kd_jax/teachers/ensemble.py) for the same examples, kept per member so that
  the target can be formed at any temperature, traced ones included (a vectorized sweep over T).

  logits: [..., M, C] member m's logits z_m at [..., m, :].
  """
  logits: jax.Array

  def log_probs(self, temperature) -> jax.Array:
    """[..., C] log p_ens^T = log (1/M) sum_m softmax(z_m / T) = logsumexp_m log_softmax(z_m / T) - log M.

    The average is over probabilities, inside the temperature: log p_ens^T is in general not log_softmax(z / T) of
    any one z for every T (so no single cached logits vector stands for the ensemble at every T); at M = 1 it is
    log_softmax(z_0 / T).
    """
    member_log_probs = jax.nn.log_softmax(self.logits.astype(jnp.float32) / temperature, axis=-1)
    return jax.nn.logsumexp(member_log_probs, axis=-2) - jnp.log(float(self.logits.shape[-2]))


class TopKLogits(NamedTuple):
  """A teacher's logits reduced to the k largest per position (the top-k cache, kd_jax/teachers/teacher_cache.py).

  values: [..., k] the k largest logits z_t (any float dtype; the cache stores float16 or bfloat16).
  indices: [..., k] int32 their vocabulary ids.
  tail_logsumexp: the log-sum-exp of the other V - k logits (-inf if k = V), float32: [...] log sum_tail exp(z_t,v)
    (at T = 1: the flat tail), or [..., n] log sum_tail exp(z_t,v / T_j) at each of n temperatures T_j (the exact
    tail; the T_j are the loss's `tail_temperatures`).
  weights: [...] float32, 1 where the teacher has a distribution and 0 where it has none (a logprobs file scores
    a response's text, not the template's end of turn: kd_jax/teachers/logprobs_file.py); the soft term averages
    over the positions it weighs. None: every position.
  """
  values: jax.Array
  indices: jax.Array
  tail_logsumexp: jax.Array
  weights: jax.Array | None = None


def topk_divergence(student_logits: jax.Array, teacher: TopKLogits, temperature: float, kind: str = "forward_kl",
                    t2_scaling: bool = True, params: DivergenceParams = DivergenceParams(),
                    tail_temperatures: tuple[float, ...] = ()) -> jax.Array:
  """`divergence` against a teacher known only by its top-k logits: D over the k + 1 bins {top-k tokens, tail}.

  Both distributions are coarse-grained onto the same support: the teacher's k tokens, each with its own
  probability, and one bin holding the rest of the vocabulary (the tail). The student's bins are exact:
  softmax(z_s / T) summed over the tail. The teacher's tail bin has logit
    exact tail (tail_temperatures = (T_1, ..., T_n), tail_logsumexp [..., n]): log sum_tail exp(z_t,v / T), stored
      at T = T_j; every bin is exact at those temperatures, and T must be one of them (a Python T elsewhere fails
      an assert; a traced one gives NaN, which stops training).
    flat tail (tail_temperatures = (), tail_logsumexp [...] at T = 1): the V - k tail logits taken equal to u with
      (V - k) e^u = sum_tail e^z_t, so log(V - k) + u / T: exact at T = 1 only. At T > 1 it puts too little mass in
      the tail for a heavy-tailed teacher (V = 320, k = 32, Student-t logits: top-k / dense forward KL 0.99, 0.85,
      0.59 at T = 1, 2, 4; exact tail: 0.99, 0.94, 0.79; tests/test_text_tasks.py).
  With exact bins the forward KL over them is a lower bound of the dense KL (data-processing inequality); the gap
  is the divergence within the tail, which no k + 1 bins can see. At k = V (no tail) this equals `divergence`.
  Every kind but mse is computed on the k + 1 bins (the same formulas; akl's head and tail are chosen among the
  bins); mse compares the k logits only.

  Args:
    student_logits: [..., V] the student's full logits.
    teacher: TopKLogits with values, indices [..., k] (k <= V) and tail_logsumexp ([...] or [..., n], see above).
    temperature, kind, t2_scaling, params: see `divergence`.
    tail_temperatures: the n temperatures of an exact tail_logsumexp [..., n]; () for the flat tail.

  Returns:
    [...] per-position divergence.
  """
  vocab_size, k = student_logits.shape[-1], teacher.indices.shape[-1]
  tail_shape = teacher.values.shape[:-1] + ((len(tail_temperatures),) if tail_temperatures else ())
  assert teacher.tail_logsumexp.shape == tail_shape, (
      f"tail_logsumexp {teacher.tail_logsumexp.shape} != {tail_shape} (tail_temperatures {tail_temperatures})")
  if tail_temperatures and isinstance(temperature, (int, float)):
    assert float(temperature) in tail_temperatures, f"T={temperature} is not among the stored {tail_temperatures}"
  student_scaled = student_logits.astype(jnp.float32) / temperature
  student_top = jnp.take_along_axis(student_scaled, teacher.indices, axis=-1)
  teacher_top = teacher.values.astype(jnp.float32) / temperature
  if kind == "mse":
    value = jnp.mean(jnp.square(student_top - teacher_top), axis=-1)
  else:
    if k < vocab_size:
      student_tail = jax.nn.logsumexp(
          jnp.put_along_axis(student_scaled, teacher.indices, -jnp.inf, axis=-1, inplace=False), axis=-1)
      teacher_tail = _teacher_tail_logit(teacher.tail_logsumexp.astype(jnp.float32), temperature, tail_temperatures,
                                         vocab_size - k)
      student_top = jnp.concatenate([student_top, student_tail[..., None]], axis=-1)
      teacher_top = jnp.concatenate([teacher_top, teacher_tail[..., None]], axis=-1)
    value = divergence_of_log_probs(jax.nn.log_softmax(student_top), jax.nn.log_softmax(teacher_top), kind, params)
    if k < vocab_size and tail_temperatures:
      # A T the cache does not hold: NaN, stated here (divergences with 0 log 0 = 0 would turn NaN probabilities
      # into 0 wherever XLA's NaN-propagation of the max in log_softmax differs, as at -O0).
      value = jnp.where(jnp.isnan(teacher_tail), jnp.nan, value)
  if t2_scaling:
    value = value * jnp.square(temperature)
  return value


def _teacher_tail_logit(tail_logsumexp: jax.Array, temperature, tail_temperatures: tuple[float, ...],
                        num_tail: int) -> jax.Array:
  """The teacher's tail bin logit at T (see `topk_divergence`): the stored log-sum-exp at T (exact tail) or the flat
  tail's log(V - k) + u / T."""
  if not tail_temperatures:
    log_num_tail = jnp.log(float(num_tail))
    return log_num_tail + (tail_logsumexp - log_num_tail) / temperature
  grid = jnp.asarray(tail_temperatures, jnp.float32)
  column = jnp.argmin(jnp.abs(grid - temperature))
  stored = jnp.take(tail_logsumexp, column, axis=-1)
  return jnp.where(jnp.abs(grid[column] - temperature) <= 1e-6 * temperature, stored, jnp.nan)


def global_mean(values: jax.Array, weights: jax.Array, axis_name: str | None = None,
                weight_sum: jax.Array | None = None) -> jax.Array:
  """Weighted mean over the global batch: sum(w * v) / sum(w), summed over every device on `axis_name`.

  Inside a data-parallel step (`axis_name` bound by shard_map) this returns this device's share, normalized by the
  *mean per-device* weight, so that `lax.pmean` of the result (and of its gradients) is exactly the global
  weighted mean: pmean_d(S_d / mean_d W_d) = sum_d S_d / sum_d W_d. A micro-batch or device holding few (or no)
  real tokens therefore weighs what its tokens weigh, not what its batch slot weighs. Returns 0 when the global
  weight is 0 (e.g. a batch without labeled examples).

  With gradient accumulation (kd_jax/training/steps.py) `values` and `weights` are one micro-batch m of this device's
  rows and `weight_sum` is W_d, the weight of all of them: the result S_dm / mean_d W_d is the micro-batch's share, and
  the shares add up over micro-batches to the mean of the whole batch (not to a mean of per-micro-batch means, which
  would weigh a micro-batch of few real tokens like a full one: the bug class of TRL PR #6006).

  Args:
    values: [...] per-example or per-token values.
    weights: [...] non-negative weights of the same shape (0 for padding or for missing labels).
    axis_name: the data-parallel mesh axis, or None outside a mapped context.
    weight_sum: this device's total weight when `values` are a part of its rows; None: sum(weights).
  """
  weighted_sum = jnp.sum(values * weights)
  weight_sum = jnp.sum(weights) if weight_sum is None else weight_sum
  weight_sum = weight_sum.astype(values.dtype)
  if axis_name is not None:
    weight_sum = jax.lax.pmean(weight_sum, axis_name)
  return jnp.where(weight_sum > 0, weighted_sum / jnp.where(weight_sum > 0, weight_sum, 1.0), 0.0)


class LossWeights(NamedTuple):
  """Weights of the two terms: loss = hard * CE + soft * D (D already carries T^2 when t2_scaling)."""
  hard: jax.Array | float
  soft: jax.Array | float


def loss_weights(alpha: float | None, ce_weight: float | None, kd_weight: float | None) -> LossWeights:
  """Hinton form (alpha given): hard = 1 - alpha, soft = alpha. Explicit form: hard = ce_weight, soft = kd_weight."""
  if alpha is not None:
    assert ce_weight is None and kd_weight is None, "use either alpha or ce_weight/kd_weight, not both"
    return LossWeights(hard=1.0 - alpha, soft=alpha)
  assert ce_weight is not None and kd_weight is not None, "the explicit form needs both ce_weight and kd_weight"
  return LossWeights(hard=ce_weight, soft=kd_weight)


def labeled_weights(labels: jax.Array, example_weights: jax.Array) -> jax.Array:
  """The hard term's weights: example_weights where there is a label (labels >= 0), else 0."""
  return example_weights * (labels >= 0)


class TermWeightSums(NamedTuple):
  """This device's total weight of each term over its rows (see `global_mean`'s weight_sum): hard (labeled
  positions) and soft (every real position)."""
  hard: jax.Array
  soft: jax.Array


def term_weight_sums(labels: jax.Array, example_weights: jax.Array) -> TermWeightSums:
  """The TermWeightSums of rows with these labels and example weights."""
  return TermWeightSums(hard=jnp.sum(labeled_weights(labels, example_weights)), soft=jnp.sum(example_weights))


class DistillationTerms(NamedTuple):
  """The scalar loss and its parts (global means), for logging."""
  loss: jax.Array
  hard: jax.Array
  soft: jax.Array


def position_terms(student_logits: jax.Array, teacher_logits: jax.Array | EnsembleLogits | TopKLogits | None,
                   labels: jax.Array, *, temperature: float, label_smoothing: float = 0.0,
                   divergence_kind: str = "forward_kl", t2_scaling: bool = True,
                   divergence_params: DivergenceParams = DivergenceParams(),
                   tail_temperatures: tuple[float, ...] = ()) -> tuple[jax.Array, jax.Array]:
  """(CE(y, p_s), s * D(z_s / T, z_t / T)) per example or position [...]: the two terms of `distillation_loss`
  before their means; the divergence is 0 without a teacher (teacher_logits None). Arguments as there."""
  hard = cross_entropy(student_logits, labels, label_smoothing)
  if teacher_logits is None:
    return hard, jnp.zeros_like(hard)
  if isinstance(teacher_logits, TopKLogits):
    return hard, topk_divergence(student_logits, teacher_logits, temperature, divergence_kind, t2_scaling,
                                 divergence_params, tail_temperatures)
  return hard, divergence(student_logits, teacher_logits, temperature, divergence_kind, t2_scaling, divergence_params)


def chunked_position_terms(student: chunked.Projected, teacher, labels: jax.Array, chunk: int,
                           **settings) -> tuple[jax.Array, jax.Array]:
  """`position_terms` [batch, length] of a student given by its final hidden states and LM head, computed `chunk`
  positions at a time (kd_jax/training/chunked.py): neither the student's logits nor a teacher's given the same way
  (chunked.Projected) exist whole. The teacher may also be dense logits [batch, length, C], EnsembleLogits, TopKLogits
  or None, sliced chunk by chunk. chunk 0: the whole sequence at once. settings: position_terms's keywords."""
  student_hidden, student_head = chunked.split_head(student)
  teacher_positions, teacher_head = chunked.split_head(teacher)

  def chunk_terms(positions):
    hidden, teacher_chunk, labels_chunk = positions
    return position_terms(student_head(hidden), teacher_head(teacher_chunk), labels_chunk, **settings)

  return chunked.map_positions(chunk_terms, chunk or labels.shape[1], (student_hidden, teacher_positions, labels))


def distillation_loss(student_logits: jax.Array | chunked.Projected,
                      teacher_logits: jax.Array | EnsembleLogits | TopKLogits | chunked.Projected | None,
                      labels: jax.Array, example_weights: jax.Array, *, weights: LossWeights, temperature: float,
                      label_smoothing: float = 0.0, divergence_kind: str = "forward_kl", t2_scaling: bool = True,
                      divergence_params: DivergenceParams = DivergenceParams(),
                      axis_name: str | None = None,
                      weight_sums: TermWeightSums | None = None, loss_chunk: int = 0,
                      tail_temperatures: tuple[float, ...] = ()) -> DistillationTerms:
  """loss = w_hard * mean_{labeled} CE(y, p_s) + w_soft * mean_{all} s * D(z_s / T, z_t / T).

  The hard term averages over labeled positions only (labels >= 0); the soft term over every real position, so
  unlabeled examples (the transfer set) contribute only to the distillation term. Works per example
  ([batch, C] logits, [batch] labels) and per token ([batch, length, C] logits, [batch, length] labels with
  `example_weights` 0 on padding); both means are over the global batch (see `global_mean`).

  Args:
    student_logits: [..., C]; or, per token, chunked.Projected (final hidden states and LM head): the terms are then
      computed `loss_chunk` positions at a time (`chunked_position_terms`).
    teacher_logits: [..., C]; or EnsembleLogits [..., M, C] (several teachers, see `divergence`); or TopKLogits (the
      seq2seq top-k cache, see `topk_divergence`); or chunked.Projected (with a Projected student); or a teacher with
      another tokenizer that compares its own aligned chunks (kd_jax/training/cross_tokenizer.py: ChunkedTeacher; the
      soft term is then the mean over the global batch's chunks); or None when w_soft is 0 (the hard-label baseline).
    labels: [...] int, -1 where there is no label.
    example_weights: [...] float, 0 for padding (and for examples not to be counted at all).
    weights: LossWeights.
    temperature, label_smoothing, divergence_kind, t2_scaling, divergence_params: see `divergence` and
      `cross_entropy`.
    axis_name: data-parallel axis for the global normalization, or None.
    weight_sums: this device's term weights over all its rows when these rows are one micro-batch of them
      (`term_weight_sums`; see `global_mean`), else None.
    loss_chunk: positions per chunk of a Projected student (0: the whole sequence).
    tail_temperatures: a TopKLogits teacher's exact-tail temperatures (see `topk_divergence`); () otherwise.
  """
  settings = dict(temperature=temperature, label_smoothing=label_smoothing, divergence_kind=divergence_kind,
                  t2_scaling=t2_scaling, divergence_params=divergence_params, tail_temperatures=tail_temperatures)
  # cross_tokenizer.ChunkedTeacher: a teacher with another tokenizer compares its own aligned chunks, not positions.
  across_tokenizers = hasattr(teacher_logits, "chunk_divergences")
  if isinstance(student_logits, chunked.Projected):
    per_position_hard, per_position_soft = chunked_position_terms(student_logits, teacher_logits, labels, loss_chunk,
                                                                  **settings)
  else:
    assert not isinstance(teacher_logits, chunked.Projected), "a teacher's hidden states need a Projected student"
    per_position_hard, per_position_soft = position_terms(
        student_logits, None if across_tokenizers else teacher_logits, labels, **settings)
  hard = global_mean(per_position_hard, labeled_weights(labels, example_weights), axis_name,
                     None if weight_sums is None else weight_sums.hard)
  if teacher_logits is None:
    soft = jnp.zeros_like(hard)
  elif across_tokenizers:
    values, chunk_weights = teacher_logits.chunk_divergences(student_logits, labels, temperature, divergence_kind,
                                                             t2_scaling, divergence_params)
    soft = global_mean(values, chunk_weights, axis_name, None if weight_sums is None else weight_sums.soft)
  else:
    soft_weights = example_weights
    if isinstance(teacher_logits, TopKLogits) and teacher_logits.weights is not None:
      soft_weights = example_weights * teacher_logits.weights  # the positions the teacher scored
    soft = global_mean(per_position_soft, soft_weights, axis_name, None if weight_sums is None else weight_sums.soft)
  return DistillationTerms(loss=weights.hard * hard + weights.soft * soft, hard=hard, soft=soft)


def schedule_fraction(kind: str, step: jax.Array, num_steps: jax.Array) -> jax.Array:
  """How far a scheduled value has moved from its start to its end at `step` of `num_steps` (0 at step 0, 1 at the
  last step num_steps - 1): constant 0, linear s / (N - 1), cosine (1 - cos(pi s / (N - 1))) / 2."""
  if kind == "constant":
    return jnp.float32(0.0)
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / jnp.maximum(num_steps - 1.0, 1.0), 0.0, 1.0)
  if kind == "linear":
    return progress
  if kind == "cosine":
    return 0.5 * (1.0 - jnp.cos(jnp.pi * progress))
  raise ValueError(f"unknown schedule {kind!r}; allowed: {', '.join(SCHEDULES)}")


@flax.struct.dataclass
class DistillationLoss:
  """The logit terms of a run's objective (kd_jax/training/objective.py builds it from `config.distill`), called by
  the step.

  loss = hard_weight * mean_{labeled} CE_eps + soft_weight * mean_{all} s * D(z_s / T, z_t / T)   (see
  `distillation_loss`). The numbers (weights, T, eps, the divergence's beta / skew / akl_mu, the schedules' ends
  and the phase's length) are arrays, arguments of the compiled step, so that one program serves every value and
  a vectorized sweep stacks them [P]; the divergence, the T^2 scaling and the schedule's shape choose code and are
  static (part of the tree structure: equal losses share a compiled step).

  tail_temperatures: the temperatures at which a top-k teacher cache stores its exact tail (`topk_divergence`); ()
  for the flat tail, and for every other teacher signal.

  Schedules: with `schedule` linear or cosine, T and the two weights move from their start (hard_weight,
  soft_weight, temperature) to their end (*_end) over the phase's steps (`schedule_fraction`); `at_step` gives the
  loss of one step, inside the compiled step, so no value recompiles anything.

  Across tokenizers (`cross_tokenizer` 'uld', 'gold' or 'alm', static): the step hands the loss a
  cross_tokenizer.ChunkedTeacher of this kind; 'gold' reads the shared vocabulary (`shared_ids`: student and
  teacher ids [M], arrays of the step).
  """
  hard_weight: jax.Array
  soft_weight: jax.Array
  temperature: jax.Array
  label_smoothing: jax.Array
  beta: jax.Array
  skew: jax.Array
  akl_mu: jax.Array
  hard_weight_end: jax.Array
  soft_weight_end: jax.Array
  temperature_end: jax.Array
  num_steps: jax.Array
  shared_ids: tuple[jax.Array, jax.Array] | None = None
  divergence: str = flax.struct.field(pytree_node=False, default="forward_kl")
  t2_scaling: bool = flax.struct.field(pytree_node=False, default=True)
  schedule: str = flax.struct.field(pytree_node=False, default="constant")
  tail_temperatures: tuple[float, ...] = flax.struct.field(pytree_node=False, default=())
  cross_tokenizer: str = flax.struct.field(pytree_node=False, default="none")
  # config.distill.loss_chunk: > 0, the step passes the models' final hidden states (chunked.Projected) and the terms
  # are computed this many positions at a time.
  chunk: int = flax.struct.field(pytree_node=False, default=0)

  @classmethod
  def cross_entropy(cls) -> "DistillationLoss":
    """Plain cross-entropy on the labels (no smoothing, no teacher): how a teacher is trained."""
    one, zero, defaults = jnp.float32(1.0), jnp.float32(0.0), DivergenceParams()
    return cls(hard_weight=one, soft_weight=zero, temperature=one, label_smoothing=zero,
               beta=jnp.float32(defaults.beta), skew=jnp.float32(defaults.skew), akl_mu=jnp.float32(defaults.akl_mu),
               hard_weight_end=one, soft_weight_end=zero, temperature_end=one, num_steps=one)

  def at_step(self, step: jax.Array) -> "DistillationLoss":
    """The loss of training step `step`: T and the weights where the schedule has moved them (itself if constant)."""
    if self.schedule == "constant":
      return self
    fraction = schedule_fraction(self.schedule, step, self.num_steps)
    between = lambda start, end: start + (end - start) * fraction
    return self.replace(hard_weight=between(self.hard_weight, self.hard_weight_end),
                        soft_weight=between(self.soft_weight, self.soft_weight_end),
                        temperature=between(self.temperature, self.temperature_end))

  def schedule_table(self) -> dict:
    """{name: [num_steps] values} of what the schedule moves (temperature, hard_weight, soft_weight) at every step of
    the phase, for the history (host copies; empty when constant: nothing moves)."""
    if self.schedule == "constant":
      return {}
    fraction = np.asarray(schedule_fraction(self.schedule, np.arange(int(self.num_steps)), self.num_steps))
    between = lambda start, end: float(start) + (float(end) - float(start)) * fraction
    return {"temperature": between(self.temperature, self.temperature_end),
            "hard_weight": between(self.hard_weight, self.hard_weight_end),
            "soft_weight": between(self.soft_weight, self.soft_weight_end)}

  def __call__(self, student_logits, teacher_logits, labels: jax.Array, example_weights: jax.Array,
               axis_name: str | None = None, weight_sums: TermWeightSums | None = None) -> DistillationTerms:
    """`distillation_loss` with this loss's settings (logits, or chunked.Projected hidden states when `chunk`);
    teacher_logits None (no teacher signal) gives soft = 0."""
    return distillation_loss(student_logits, teacher_logits, labels, example_weights,
                             weights=LossWeights(self.hard_weight, self.soft_weight), temperature=self.temperature,
                             label_smoothing=self.label_smoothing, divergence_kind=self.divergence,
                             t2_scaling=self.t2_scaling,
                             divergence_params=DivergenceParams(self.beta, self.skew, self.akl_mu),
                             axis_name=axis_name, weight_sums=weight_sums, loss_chunk=self.chunk,
                             tail_temperatures=self.tail_temperatures)

