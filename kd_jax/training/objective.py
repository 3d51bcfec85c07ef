"""The objective of a training phase: what the train step (kd_jax/training/steps.py) minimizes, and on which batches.

One object, built from the config in one place (`Objective.from_config`) and passed to the step as one argument:

  loss = w_hard * mean_{labeled} CE_eps(y, p_s) + w_soft * mean_{all} s * D(z_s / T, z_t / T)
             the logit terms (`logit_loss`, losses.DistillationLoss; s = T^2 with t2_scaling; across tokenizers,
             distill.cross_tokenizer, the soft term is a mean over aligned chunks: kd_jax/training/cross_tokenizer.py)
       + feature_weight * sum_{pairs (t, s)} d(W h_s + b, h_t) + attention_weight * sum_{pairs} KL(A_t || A_s)
             the feature and attention terms (`feature_loss`, feature_losses.FeatureLoss; None without
             distill.features / decoder_features)
  on the phase's batches, or, with `on_policy` (on_policy.OnPolicy; None unless distill.on_policy_fraction > 0), with
  probability lambda on responses the student samples for the batch's prompts.

It is a pytree. The numbers (the weights, T, eps, the divergence's beta / skew / akl_mu, the schedule's ends and the
phase's length, the feature and attention weights) are array leaves, arguments of the compiled step: one program
serves every value, and a vectorized sweep (kd_jax/training/vectorized.py) stacks them [P]. What chooses code (the
divergence, T^2 scaling, the schedule's shape, the layer pairs, their distance and pooling, the on-policy sampling
with the student's module) is static, part of the tree structure: runs whose objectives have equal static parts share
compiled steps. So is distill.loss_chunk (losses.DistillationLoss.chunk): the step then hands the loss the models'
final hidden states, projected a chunk of positions at a time (kd_jax/training/chunked.py).
"""

import functools
from typing import ClassVar

import flax
import jax
import jax.numpy as jnp

from kd_jax.config import schema
from kd_jax.data import alignment
from kd_jax.models import peft
from kd_jax.teachers import teacher_cache
from kd_jax.training import feature_losses, losses
from kd_jax.training.on_policy import OnPolicy


@flax.struct.dataclass
class Objective:
  """See the module docstring."""
  logit_loss: losses.DistillationLoss
  feature_loss: feature_losses.FeatureLoss | None = None
  on_policy: OnPolicy | None = flax.struct.field(pytree_node=False, default=None)

  # The config fields behind the array leaves: runs whose configs differ only in these (and in the seed and the
  # learning rate) can train together in one vectorized program (kd_jax/training/vectorized.py).
  ARRAY_FIELDS: ClassVar[tuple[str, ...]] = ("distill.temperature", "distill.alpha", "distill.ce_weight",
                                             "distill.kd_weight", "distill.label_smoothing", "distill.beta",
                                             "distill.skew", "distill.akl_mu", "distill.temperature_end",
                                             "distill.alpha_end", "distill.ce_weight_end", "distill.kd_weight_end",
                                             "distill.feature_weight", "distill.attention_weight")

  @classmethod
  def from_config(cls, config, *, num_steps: int = 1, distills: bool = True, task=None, model=None,
                  layers: feature_losses.ModelLayers | None = None,
                  tail_temperatures: tuple[float, ...] | None = None) -> "Objective":
    """The objective of `config` (config.distill; config.generation for on-policy sampling) over a phase of
    `num_steps` steps.

    With `distills=False`, the cross-entropy alone: hard weight 1, soft weight 0, the same label smoothing, no
    schedule, no feature terms, no on-policy sampling (the hard-label baseline, and sequence-level KD's CE on the
    teacher's outputs). A schedule end left None keeps its start value.

    Args:
      num_steps: the phase's length (what a schedule moves over).
      task, model: the task (its causal_lm info) and the student model whose samples on-policy distillation trains on;
        needed only with distill.on_policy_fraction > 0 (the task also with distill.cross_tokenizer='gold': its two
        tokenizers' shared vocabulary).
      layers: both models' layers (feature_losses.ModelLayers), which resolve the layer map; needed only with
        distill.features or distill.decoder_features.
      tail_temperatures: the temperatures of the top-k cache's exact tail (losses.topk_divergence); None:
        teacher_cache.topk_tail_temperatures([config]) (a vectorized group passes its runs').
    """
    d = config.distill
    if distills:
      weights = losses.loss_weights(d.alpha, d.ce_weight, d.kd_weight)
      ends = losses.loss_weights(_or(d.alpha_end, d.alpha), _or(d.ce_weight_end, d.ce_weight),
                                 _or(d.kd_weight_end, d.kd_weight))
    else:
      weights = ends = losses.LossWeights(hard=1.0, soft=0.0)
    logit_loss = losses.DistillationLoss(
        hard_weight=jnp.float32(weights.hard), soft_weight=jnp.float32(weights.soft),
        temperature=jnp.float32(d.temperature), label_smoothing=jnp.float32(d.label_smoothing),
        beta=jnp.float32(d.beta), skew=jnp.float32(d.skew), akl_mu=jnp.float32(d.akl_mu),
        hard_weight_end=jnp.float32(ends.hard), soft_weight_end=jnp.float32(ends.soft),
        temperature_end=jnp.float32(_or(d.temperature_end, d.temperature)), num_steps=jnp.float32(num_steps),
        divergence=d.divergence, t2_scaling=d.t2_scaling, schedule=d.schedule if distills else "constant",
        tail_temperatures=(teacher_cache.topk_tail_temperatures([config]) if tail_temperatures is None
                           else tuple(tail_temperatures)) if distills else (),
        cross_tokenizer=d.cross_tokenizer if distills else "none",
        # A cached teacher of another tokenizer (teacher.source) maps its own top tokens to the student's ids.
        shared_ids=(_shared_ids(task) if distills and d.cross_tokenizer == "gold" and config.teacher.source == "model"
                    else None),
        chunk=d.loss_chunk)
    feature_loss = None
    if distills and schema.uses_features(d):
      assert layers is not None, "feature distillation resolves its layer map against both models' layers"
      pairs, decoder_pairs = feature_losses.resolve_pairs(d, layers)
      feature_loss = feature_losses.FeatureLoss(
          feature_weight=jnp.float32(d.feature_weight), attention_weight=jnp.float32(d.attention_weight),
          pairs=pairs, kind=d.feature_loss, pool_tokens=layers.pool_tokens, decoder_pairs=decoder_pairs)
    on_policy = None
    if distills and d.on_policy_fraction > 0:
      info = task.causal_lm
      on_policy = OnPolicy(fraction=float(d.on_policy_fraction), model=peft.plain_model(model),
                           temperature=float(config.generation.train_temperature), max_new_tokens=info.max_new_tokens,
                           eos_token_ids=info.eos_token_ids, pad_token_id=info.pad_token_id,
                           top_k=config.generation.train_top_k, top_p=config.generation.train_top_p,
                           start_step=int(d.on_policy_start_step))
    return cls(logit_loss, feature_loss, on_policy)

  @classmethod
  def cross_entropy(cls) -> "Objective":
    """Plain cross-entropy on the labels (no smoothing, no teacher): how a teacher is trained."""
    return cls(losses.DistillationLoss.cross_entropy())

  def at_step(self, step: jax.Array) -> "Objective":
    """The objective of training step `step`: T and the logit terms' weights where the schedule has moved them."""
    return self.replace(logit_loss=self.logit_loss.at_step(step))

  def schedule_table(self) -> dict:
    """{name: [num_steps] values} of what the schedule moves at every step of the phase (losses.DistillationLoss)."""
    return self.logit_loss.schedule_table()


def _shared_ids(task) -> tuple[jax.Array, jax.Array]:
  """GOLD's shared vocabulary of the task's two tokenizers (alignment.shared_vocabulary)."""
  info = task.causal_lm
  teacher_tokenizer = info.tokenizer if info.teacher_tokenizer is None else info.teacher_tokenizer  # one shared
  return tuple(jnp.asarray(ids) for ids in _shared_vocabulary(info.tokenizer, teacher_tokenizer))


@functools.lru_cache(maxsize=4)
def _shared_vocabulary(tokenizer, teacher_tokenizer) -> tuple:
  """Built once per pair of tokenizer objects (every point of a sweep asks; about a second for 49,152 tokens)."""
  return alignment.shared_vocabulary(tokenizer, teacher_tokenizer)


def _or(value, default):
  """`value` unless it is None."""
  return default if value is None else value
