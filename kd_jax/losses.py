"""Distillation losses, pure JAX.

Shapes: `logits` are [..., num_classes] (examples [batch, C] or tokens [batch, length, C]); per-example (or
per-token) functions return [...] without the class axis. Reductions to a scalar happen in `global_mean`, which
normalizes by the weight of the *global* batch so the loss does not depend on how the batch is split over devices.

Notation: z_s, z_t student and teacher logits; p^T = softmax(z / T); y integer labels, -1 for "no label" (the
unlabeled transfer set, or GLUE's test split).
"""

from typing import Any, ClassVar, NamedTuple

import flax
import jax
import jax.numpy as jnp

DIVERGENCES = ("forward_kl", "reverse_kl", "js", "mse")


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """CE(y, p) = -sum_c q_c log softmax(z)_c with q = (1 - eps) onehot(y) + eps / C.

  Args:
    logits: [..., C].
    labels: [...] int; negative labels (no label) give 0.
    label_smoothing: eps in [0, 1).

  Returns:
    [...] per-example cross-entropy.
  """
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits)
  targets = jax.nn.one_hot(labels, num_classes, dtype=log_probs.dtype)
  targets = (1.0 - label_smoothing) * targets + label_smoothing / num_classes
  loss = -jnp.sum(targets * log_probs, axis=-1)
  return jnp.where(labels >= 0, loss, 0.0)


def _kl_from_log_probs(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """KL(p || q) = sum_c p_c (log p_c - log q_c), with 0 log 0 = 0."""
  p = jnp.exp(log_p)
  return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)


def divergence(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float, kind: str = "forward_kl",
               t2_scaling: bool = True) -> jax.Array:
  """Per-example distillation divergence s * D(z_s / T, z_t / T) with s = T^2 if t2_scaling else 1.

  D is one of
    forward_kl: KL(p_t^T || p_s^T)                      (Hinton et al. 2015)
    reverse_kl: KL(p_s^T || p_t^T)
    js:         (KL(p_t^T || m) + KL(p_s^T || m)) / 2,   m = (p_t^T + p_s^T) / 2
    mse:        mean_c (z_s/T - z_t/T)_c^2               (logit matching; with T^2 scaling T cancels)
  With T^2 scaling the gradient of forward KL w.r.t. z_s is T (p_s^T - p_t^T), and as T grows T^2 KL tends to
  (1/2) mean_c (z_s - z_t)_c^2 for zero-mean logits, i.e. half the mse divergence.

  Args:
    student_logits, teacher_logits: [..., C].
    temperature: T > 0 (a Python float or a traced scalar, so that sweeps can vmap over it).
    kind: one of DIVERGENCES.
    t2_scaling: multiply by T^2.

  Returns:
    [...] per-example divergence.
  """
  student_scaled = student_logits.astype(jnp.float32) / temperature
  teacher_scaled = teacher_logits.astype(jnp.float32) / temperature
  if kind == "mse":
    value = jnp.mean(jnp.square(student_scaled - teacher_scaled), axis=-1)
  else:
    value = _divergence_of_log_probs(jax.nn.log_softmax(student_scaled), jax.nn.log_softmax(teacher_scaled), kind)
  if t2_scaling:
    value = value * jnp.square(temperature)
  return value


def _divergence_of_log_probs(log_p_s: jax.Array, log_p_t: jax.Array, kind: str) -> jax.Array:
  """forward_kl, reverse_kl or js (see `divergence`) of two distributions given as log-probabilities [..., C]."""
  if kind == "forward_kl":
    return _kl_from_log_probs(log_p_t, log_p_s)
  if kind == "reverse_kl":
    return _kl_from_log_probs(log_p_s, log_p_t)
  if kind == "js":
    log_m = jnp.logaddexp(log_p_s, log_p_t) - jnp.log(2.0)
    return 0.5 * (_kl_from_log_probs(log_p_t, log_m) + _kl_from_log_probs(log_p_s, log_m))
  raise ValueError(f"unknown divergence {kind!r}; allowed: {', '.join(DIVERGENCES)}")


class TopKLogits(NamedTuple):
  """A teacher's logits reduced to the k largest per position (the seq2seq top-k cache, kd_jax/topk_cache.py).

  values: [..., k] the k largest logits z_t (any float dtype; the cache stores float16 or bfloat16).
  indices: [..., k] int32 their vocabulary ids.
  tail_logsumexp: [...] float32 log sum_{v not in top-k} exp(z_t,v), the exact tail mass at T = 1 (-inf if k = V).
  """
  values: jax.Array
  indices: jax.Array
  tail_logsumexp: jax.Array


def topk_divergence(student_logits: jax.Array, teacher: TopKLogits, temperature: float, kind: str = "forward_kl",
                    t2_scaling: bool = True) -> jax.Array:
  """`divergence` against a teacher known only by its top-k logits: D over the k + 1 bins {top-k tokens, tail}.

  Both distributions are coarse-grained onto the same support: the teacher's k tokens, each with its own
  probability, and one bin holding the rest of the vocabulary (the tail). The student's bins are exact:
  softmax(z_s / T) summed over the tail. The teacher's tail is approximated by a flat tail: its V - k logits
  are taken equal to u with (V - k) e^u = sum_tail e^z_t (the exact tail mass at T = 1, stored as
  tail_logsumexp), so at temperature T the tail bin has logit log(V - k) + u / T. The teacher's bins are thus exact
  at T = 1 for any k, and exact at any T when k = V (no tail), where this equals `divergence`. At T = 1 the
  forward KL over the bins is a lower bound of the dense KL (data-processing inequality); the gap is the
  divergence within the tail, which the flat tail cannot see. mse compares the k logits only.

  Args:
    student_logits: [..., V] the student's full logits.
    teacher: TopKLogits with values, indices [..., k] (k <= V) and tail_logsumexp [...].
    temperature, kind, t2_scaling: see `divergence`.

  Returns:
    [...] per-position divergence.
  """
  vocab_size, k = student_logits.shape[-1], teacher.indices.shape[-1]
  student_scaled = student_logits.astype(jnp.float32) / temperature
  student_top = jnp.take_along_axis(student_scaled, teacher.indices, axis=-1)
  teacher_top = teacher.values.astype(jnp.float32) / temperature
  if kind == "mse":
    value = jnp.mean(jnp.square(student_top - teacher_top), axis=-1)
  else:
    if k < vocab_size:
      student_tail = jax.nn.logsumexp(
          jnp.put_along_axis(student_scaled, teacher.indices, -jnp.inf, axis=-1, inplace=False), axis=-1)
      log_num_tail = jnp.log(float(vocab_size - k))
      teacher_tail = log_num_tail + (teacher.tail_logsumexp.astype(jnp.float32) - log_num_tail) / temperature
      student_top = jnp.concatenate([student_top, student_tail[..., None]], axis=-1)
      teacher_top = jnp.concatenate([teacher_top, teacher_tail[..., None]], axis=-1)
    value = _divergence_of_log_probs(jax.nn.log_softmax(student_top), jax.nn.log_softmax(teacher_top), kind)
  if t2_scaling:
    value = value * jnp.square(temperature)
  return value


def global_mean(values: jax.Array, weights: jax.Array, axis_name: str | None = None) -> jax.Array:
  """Weighted mean over the global batch: sum(w * v) / sum(w), summed over every device on `axis_name`.

  Inside a data-parallel step (`axis_name` bound by shard_map) this returns this device's share, normalized by the
  *mean per-device* weight, so that `lax.pmean` of the result (and of its gradients) is exactly the global
  weighted mean: pmean_d(S_d / mean_d W_d) = sum_d S_d / sum_d W_d. A micro-batch or device holding few (or no)
  real tokens therefore weighs what its tokens weigh, not what its batch slot weighs. Returns 0 when the global
  weight is 0 (e.g. a batch without labeled examples).

  Args:
    values: [...] per-example or per-token values.
    weights: [...] non-negative weights of the same shape (0 for padding or for missing labels).
    axis_name: the data-parallel mesh axis, or None outside a mapped context.
  """
  weighted_sum = jnp.sum(values * weights)
  weight_sum = jnp.sum(weights).astype(values.dtype)
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


class DistillationTerms(NamedTuple):
  """The scalar loss and its parts (global means), for logging."""
  loss: jax.Array
  hard: jax.Array
  soft: jax.Array


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array | TopKLogits | None,
                      labels: jax.Array, example_weights: jax.Array, *, weights: LossWeights, temperature: float,
                      label_smoothing: float = 0.0, divergence_kind: str = "forward_kl", t2_scaling: bool = True,
                      axis_name: str | None = None) -> DistillationTerms:
  """loss = w_hard * mean_{labeled} CE(y, p_s) + w_soft * mean_{all} s * D(z_s / T, z_t / T).

  The hard term averages over labeled positions only (labels >= 0); the soft term over every real position, so
  unlabeled examples (the transfer set) contribute only to the distillation term. Works per example
  ([batch, C] logits, [batch] labels) and per token ([batch, length, C] logits, [batch, length] labels with
  `example_weights` 0 on padding); both means are over the global batch (see `global_mean`).

  Args:
    student_logits: [..., C].
    teacher_logits: [..., C]; or TopKLogits (the seq2seq top-k cache, see `topk_divergence`); or None when w_soft
      is 0 (the hard-label baseline).
    labels: [...] int, -1 where there is no label.
    example_weights: [...] float, 0 for padding (and for examples not to be counted at all).
    weights: LossWeights.
    temperature, label_smoothing, divergence_kind, t2_scaling: see `divergence` and `cross_entropy`.
    axis_name: data-parallel axis for the global normalization, or None.
  """
  labeled_weights = example_weights * (labels >= 0)
  hard = global_mean(cross_entropy(student_logits, labels, label_smoothing), labeled_weights, axis_name)
  if teacher_logits is None:
    soft = jnp.zeros_like(hard)
  else:
    divergence_fn = topk_divergence if isinstance(teacher_logits, TopKLogits) else divergence
    per_example = divergence_fn(student_logits, teacher_logits, temperature, divergence_kind, t2_scaling)
    soft = global_mean(per_example, example_weights, axis_name)
  return DistillationTerms(loss=weights.hard * hard + weights.soft * soft, hard=hard, soft=soft)


@flax.struct.dataclass
class DistillationLoss:
  """The training loss of a run, built from `config.distill` in one place (`from_config`) and called by the step.

  loss = hard_weight * mean_{labeled} CE_eps + soft_weight * mean_{all} s * D(z_s / T, z_t / T)   (see
  `distillation_loss`). The numbers (weights, T, eps) are arrays, arguments of the compiled step, so that one
  program serves every value and a vectorized sweep stacks them [P]; the divergence and the T^2 scaling choose code
  and are static (part of the tree structure: equal losses share a compiled step).
  """
  hard_weight: jax.Array
  soft_weight: jax.Array
  temperature: jax.Array
  label_smoothing: jax.Array
  divergence: str = flax.struct.field(pytree_node=False, default="forward_kl")
  t2_scaling: bool = flax.struct.field(pytree_node=False, default=True)
  # Feature distillation (kd_jax/feature_losses.FeatureLoss: its weights are arrays too), or None; the train step
  # adds its terms.
  features: Any = None

  # The config.distill fields behind the array leaves: runs whose configs differ only in these (and in the seed and
  # the learning rate) can train together in one vectorized program (kd_jax/vectorized.py).
  ARRAY_FIELDS: ClassVar[tuple[str, ...]] = ("distill.temperature", "distill.alpha", "distill.ce_weight",
                                             "distill.kd_weight", "distill.label_smoothing",
                                             "distill.feature_weight", "distill.attention_weight")

  @classmethod
  def from_config(cls, distill_config, *, distills: bool = True, features=None) -> "DistillationLoss":
    """The loss of `config.distill`; with `distills=False`, its cross-entropy alone (hard weight 1, soft weight 0,
    the same label smoothing): the hard-label baseline, and sequence-level KD's CE on the teacher's outputs.
    `features`: the run's feature_losses.FeatureLoss (built once the models' layers are known), or None."""
    weights = (loss_weights(distill_config.alpha, distill_config.ce_weight, distill_config.kd_weight) if distills
               else LossWeights(hard=1.0, soft=0.0))
    return cls(hard_weight=jnp.float32(weights.hard), soft_weight=jnp.float32(weights.soft),
               temperature=jnp.float32(distill_config.temperature),
               label_smoothing=jnp.float32(distill_config.label_smoothing), divergence=distill_config.divergence,
               t2_scaling=distill_config.t2_scaling, features=features if distills else None)

  @classmethod
  def cross_entropy(cls) -> "DistillationLoss":
    """Plain cross-entropy on the labels (no smoothing, no teacher): how a teacher is trained."""
    return cls(hard_weight=jnp.float32(1.0), soft_weight=jnp.float32(0.0), temperature=jnp.float32(1.0),
               label_smoothing=jnp.float32(0.0))

  def __call__(self, student_logits: jax.Array, teacher_logits, labels: jax.Array, example_weights: jax.Array,
               axis_name: str | None = None) -> DistillationTerms:
    """`distillation_loss` with this loss's settings; teacher_logits None (no teacher signal) gives soft = 0."""
    return distillation_loss(student_logits, teacher_logits, labels, example_weights,
                             weights=LossWeights(self.hard_weight, self.soft_weight), temperature=self.temperature,
                             label_smoothing=self.label_smoothing, divergence_kind=self.divergence,
                             t2_scaling=self.t2_scaling, axis_name=axis_name)
