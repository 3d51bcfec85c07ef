"""Intermediate-layer (feature) distillation: hidden-state matching and attention transfer, pure JAX.

Hidden states are indexed like transformers' `output_hidden_states`: h_0 is the embedding output (the flattened
inputs for an MLP) and h_l the output of layer (hidden layer) l = 1..L, so a model has L + 1 of them; the attention
of layer l (l >= 1) is the softmax of its scores A_l [heads, queries, keys]. The models sow both into the
'intermediates' collection (kd_jax/models: `hidden_states`, `attention_logits`); `collect` reads them back.

A layer map is a tuple of (teacher index, student index) pairs of hidden states, e.g. ((0, 0), (2, 1), (4, 2)), or
'uniform': student layer s = 1..L_s matched with teacher layer s * L_t // L_s (TinyBERT's uniform strategy g(m) = m *
N / M, without the embedding pair, which an explicit map may add as (0, 0)). For each pair

  feature term    mse:    mean_{real positions} (1 / d_t) || W h_s + b - h_t ||^2     (TinyBERT, Jiao et al. 2020,
                                                                                     L_hidn, W_h learned)
                  cosine: mean_{real positions} (1 - cos(W h_s + b, h_t))           (DistilBERT, Sanh et al. 2019,
                                                                                     L_cos)
  attention term  mean_{real queries} mean_heads KL(softmax(A_t) || softmax(A_s))     (pairs with both indices >= 1;
                                                                                     MiniLM's KL, Wang et al. 2020)

summed over the pairs (TinyBERT sums its layer losses; TextBrewer adds one term per `intermediate_matches` entry).
These are TextBrewer's `hid_mse_loss`, `cos_loss` and `att_ce_loss` (the KL here differs from its cross-entropy by
the teacher's entropy, a constant) in airaria/TextBrewer src/textbrewer/losses.py, with padding excluded. The linear
projection (W, b) maps the student's width to the teacher's and exists only for pairs whose widths differ (one per
pair: MLP layers differ in width; TinyBERT shares one W_h across its equal-width layers); it trains with the student
but is not part of the student (`split_params`). Where teacher and student have different head counts, the
attention term compares the head-averaged attention distributions instead (TextBrewer's `att_ce_mean_loss`):
KL(mean_h softmax(A_t,h) || mean_h softmax(A_s,h)). MiniLM's last-layer attention transfer is the map ((L_t, L_s),)
with feature_weight 0; its value-relation term is not implemented.

Encoder-decoder models (T5): each stack has its own hidden states and self-attention, indexed as above within the
stack (h_L of a stack is its final norm's output, transformers' encoder_hidden_states / decoder_hidden_states).
distill.features maps the encoder's (the only stack of other models), distill.decoder_features the decoder's, with
the same syntax; the terms of both maps are summed under the same weights, the decoder's over the target positions
(the task's target weights; the two models share one tokenizer). Their projections are named apart (DECODER).
Cross-attention is not matched.

Positions: text models compare token by token when teacher and student tokenize the texts alike (`tokens_aligned`),
weighting real tokens (attention_mask) of every example; otherwise token positions mean nothing across the two
tokenizations, and each hidden state is first mean-pooled over the example's real tokens (the sentence embedding of
Reimers & Gurevych 2020, who distill across tokenizers that way); attention transfer then does not apply. Means are
over the global batch (`losses.global_mean`), like the logit terms.
"""

import re
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from kd_jax import models
from kd_jax.config import paths, schema
from kd_jax.errors import ConfigError, UserError
from kd_jax.models import peft
from kd_jax.training import losses

FEATURE_LOSSES = schema.FEATURE_LOSSES
UNIFORM = schema.UNIFORM_FEATURES
MODEL = "model"  # the key of the model's own params in what such a phase trains
PROJECTIONS = "feature_projections"  # the key of the projections beside the model's params ("model") when training
DECODER = "decoder"  # the module of an encoder-decoder model's decoder stack, and its projections' name prefix
# torch's cosine_embedding_loss adds it to the squared norms, so that a zero vector gives cos 0, not NaN.
_COSINE_EPS = 1e-12


class Intermediates(NamedTuple):
  """What a model sowed: hidden_states L + 1 arrays [batch, (length,) width_l]; attention_logits L arrays
  [batch, heads, queries, keys] (the pre-softmax scores plus the padding bias), () for models without attention;
  decoder: an encoder-decoder model's decoder stack's (the fields above are then its encoder's), else None."""
  hidden_states: tuple
  attention_logits: tuple
  decoder: "Intermediates | None" = None


def collect(intermediates) -> Intermediates:
  """The Intermediates in a model's 'intermediates' collection (`apply(..., mutable=['intermediates'])`): the values
  sown under a module named DECODER are the decoder stack's; a layer's attention is ordered by the last number that
  ends a module name on its path (BERT's 'encoder.layer.3', T5's 'block.3')."""
  flat = traverse_util.flatten_dict(flax.core.unfreeze(intermediates))

  def stack(decoder: bool) -> Intermediates:
    sown = {path: value for path, value in flat.items() if (DECODER in path[:-1]) == decoder}
    (hidden_states,) = [value for path, value in sown.items() if path[-1] == "hidden_states"]
    attention = sorted((_layer_index(path), value[0]) for path, value in sown.items()
                       if path[-1] == "attention_logits")
    return Intermediates(tuple(hidden_states), tuple(logits for _, logits in attention))

  has_decoder = any(path[-1] == "hidden_states" and DECODER in path[:-1] for path in flat)
  return stack(False)._replace(decoder=stack(True) if has_decoder else None)


def _layer_index(path: tuple) -> int:
  """The layer number of a sown value's path: the last module name on it that ends in digits."""
  return next(int(match.group(1)) for name in reversed(path[:-1]) if (match := re.search(r"(\d+)$", str(name))))


class Layers(NamedTuple):
  """A model's shape as feature distillation sees it: widths [L + 1] of its hidden states, heads [L] per layer;
  decoder: an encoder-decoder model's decoder stack's Layers (the fields above are its encoder's), else None."""
  widths: tuple
  num_heads: tuple
  decoder: "Layers | None" = None

  @property
  def num_layers(self) -> int:
    return len(self.widths) - 1


class ModelLayers(NamedTuple):
  """What a run's feature terms are resolved against: the teacher's and the student's Layers, and whether text
  positions are mean-pooled per example (the two tokenizations differ: not `tokens_aligned`)."""
  teacher: Layers
  student: Layers
  pool_tokens: bool


def describe(model, params, example_inputs) -> Layers:
  """The Layers of `model` (registry convention: apply(variables, inputs, train, ...)), from shapes only."""
  _, state = jax.eval_shape(lambda: model.apply({"params": params}, example_inputs, train=False,
                                                mutable=["intermediates"]))
  if not any(path[-1] == "hidden_states" for path in traverse_util.flatten_dict(flax.core.unfreeze(
      state["intermediates"]))):
    raise UserError(f"distill.features: the {type(peft.plain_model(model)).__name__} model sows no 'hidden_states' "
                    "(a user's model sows h_0..h_L: self.sow(nnx.Intermediate, 'hidden_states', h) in NNX, "
                    "self.sow('intermediates', 'hidden_states', h) in Linen; docs/models.md)")
  found = collect(state["intermediates"])
  shape = lambda stack: Layers(tuple(h.shape[-1] for h in stack.hidden_states),
                               tuple(a.shape[1] for a in stack.attention_logits))
  return shape(found)._replace(decoder=None if found.decoder is None else shape(found.decoder))


def resolve_pairs(distill_config, layers: ModelLayers) -> tuple[tuple, tuple]:
  """(pairs of distill.features, pairs of distill.decoder_features) resolved against both models' Layers; () for a
  map left None.

  Raises ConfigError as resolve_layer_map does, and for decoder_features on models without a decoder stack.
  """
  pairs, decoder_pairs = (), ()
  if distill_config.features is not None:
    pairs = resolve_layer_map(distill_config.features, layers.teacher.num_layers, layers.student.num_layers)
  if distill_config.decoder_features is not None:
    if layers.teacher.decoder is None or layers.student.decoder is None:
      raise ConfigError("distill.decoder_features", distill_config.decoder_features,
                        "needs encoder-decoder models (T5): the teacher or the student has no decoder stack")
    decoder_pairs = resolve_layer_map(distill_config.decoder_features, layers.teacher.decoder.num_layers,
                                      layers.student.decoder.num_layers, field="distill.decoder_features")
  return pairs, decoder_pairs


def resolve_layer_map(value, num_teacher_layers: int, num_student_layers: int, *,
                      field: str = "distill.features") -> tuple[tuple[int, int], ...]:
  """The (teacher, student) hidden-state pairs of config.distill.features (or another layer map, `field`) for models
  (stacks) of these depths.

  Raises ConfigError for an index beyond a model's layers or a map with more pairs than the student has hidden
  states (L_s + 1).
  """
  schema.layer_map(field, value)
  if value == UNIFORM:
    if num_student_layers < 1 or num_teacher_layers < 1:
      raise ConfigError(field, value, f"'uniform' maps the student's {num_student_layers} layers onto "
                        f"the teacher's {num_teacher_layers}; both need at least one (hidden) layer")
    return tuple((s * num_teacher_layers // num_student_layers, s) for s in range(1, num_student_layers + 1))
  pairs = tuple((int(t), int(s)) for t, s in value)
  if len(pairs) > num_student_layers + 1:
    raise ConfigError(field, value, f"has {len(pairs)} pairs but the student has {num_student_layers + 1} "
                      f"hidden states (0 = embeddings, 1..{num_student_layers} its layers); map each at most once")
  for teacher_index, student_index in pairs:
    for index, depth, who in ((teacher_index, num_teacher_layers, "teacher"),
                              (student_index, num_student_layers, "student")):
      if index > depth:
        raise ConfigError(field, value, f"{who} layer {index} does not exist: the {who} has hidden "
                          f"states 0..{depth} (0 = embeddings)")
  return pairs


def check_config(config) -> None:
  """Raises ConfigError where config.distill.features (decoder_features) names layers the models (their decoders)
  lack, for models whose depths are known without loading them (MLPs, local HF checkpoints: models.num_layers);
  otherwise when the student phase starts."""
  for field, depth_of in (("distill.features", models.num_layers), ("distill.decoder_features",
                                                                    models.num_decoder_layers)):
    value = paths.get(config, field)
    depths = (depth_of(config.teacher), depth_of(config.student))
    if value is not None and None not in depths:
      resolve_layer_map(value, *depths, field=field)


def hidden_state_loss(student_hidden: jax.Array, teacher_hidden: jax.Array, kind: str) -> jax.Array:
  """Per-position distance of hidden states [..., d] -> [...], float32.

    mse:    (1 / d) sum_i (s_i - t_i)^2
    cosine: 1 - <s, t> / sqrt((|s|^2 + eps)(|t|^2 + eps)),  eps = 1e-12 (torch's cosine_embedding_loss)
  """
  student_hidden, teacher_hidden = student_hidden.astype(jnp.float32), teacher_hidden.astype(jnp.float32)
  if kind == "mse":
    return jnp.mean(jnp.square(student_hidden - teacher_hidden), axis=-1)
  if kind == "cosine":
    dot = jnp.sum(student_hidden * teacher_hidden, axis=-1)
    norms = (jnp.sum(jnp.square(student_hidden), axis=-1) + _COSINE_EPS) * (
        jnp.sum(jnp.square(teacher_hidden), axis=-1) + _COSINE_EPS)
    return 1.0 - dot * jax.lax.rsqrt(norms)
  raise ValueError(f"unknown feature loss {kind!r}; allowed: {', '.join(FEATURE_LOSSES)}")


def attention_kl(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """Per-query KL between teacher and student attention: [..., H_s, Q, K], [..., H_t, Q, K] -> [..., Q].

  Equal head counts: mean_h KL(softmax(A_t,h) || softmax(A_s,h)). Different head counts: KL(mean_h softmax(A_t,h) ||
  mean_h softmax(A_s,h)) of the head-averaged distributions. Keys masked out by a large negative bias have teacher
  probability 0 and add nothing.
  """
  log_student = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  log_teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), axis=-1)
  heads_axis = -3
  if log_student.shape[heads_axis] == log_teacher.shape[heads_axis]:
    return jnp.mean(losses._kl_from_log_probs(log_teacher, log_student), axis=-2)  # pylint: disable=protected-access
  head_mean = lambda log_p: jax.nn.logsumexp(log_p, axis=heads_axis) - jnp.log(log_p.shape[heads_axis])
  return losses._kl_from_log_probs(head_mean(log_teacher), head_mean(log_student))  # pylint: disable=protected-access


def mean_over_tokens(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of hidden [batch, length, d] over the real tokens (mask [batch, length] 1) of each example: [batch, d]."""
  mask = mask.astype(jnp.float32)[..., None]
  return jnp.sum(hidden.astype(jnp.float32) * mask, axis=-2) / jnp.maximum(jnp.sum(mask, axis=-2), 1.0)


def projection_name(teacher_index: int, student_index: int, stack: str = "") -> str:
  """The name of a pair's projection; stack DECODER for the decoder's pairs."""
  return f"{stack}{'_' if stack else ''}teacher{teacher_index}_student{student_index}"


def init_projections(pairs, teacher: Layers, student: Layers, rng: jax.Array, decoder_pairs=()) -> dict:
  """{projection_name: {'kernel' [d_s, d_t], 'bias' [d_t]}} for the pairs (and the decoder stacks' decoder_pairs)
  whose widths differ (LeCun-normal kernel, zero bias: flax's Dense initialization)."""
  projections = {}
  stacks = [(pair, teacher, student, "") for pair in pairs]
  stacks += [(pair, teacher.decoder, student.decoder, DECODER) for pair in decoder_pairs]
  for i, ((t, s), teacher_stack, student_stack, name) in enumerate(stacks):
    if teacher_stack.widths[t] != student_stack.widths[s]:
      shape = (student_stack.widths[s], teacher_stack.widths[t])
      projections[projection_name(t, s, name)] = {
          "kernel": jax.nn.initializers.lecun_normal()(jax.random.fold_in(rng, i), shape),
          "bias": jnp.zeros((teacher_stack.widths[t],), jnp.float32)}
  return projections


def join_params(model_params, projections: dict) -> dict:
  """What a student phase with feature distillation trains: the model's params (under MODEL) and the projections."""
  return {MODEL: model_params, PROJECTIONS: projections}


def split_params(params, features: "FeatureLoss | None") -> tuple[Any, dict]:
  """(the model's params, the projections) of what a phase trains; without features, (params, {})."""
  if features is None:
    return params, {}
  return params[MODEL], params[PROJECTIONS]


def tokens_aligned(examples) -> bool:
  """Whether the teacher sees the student's token positions: no teacher_inputs (the same inputs), or equal
  input_ids and attention_mask."""
  if examples.teacher_inputs is None:
    return True
  student, teacher = examples.inputs, examples.teacher_inputs
  return all(np.shape(student[key]) == np.shape(teacher[key]) and np.array_equal(student[key], teacher[key])
             for key in ("input_ids", "attention_mask"))


def check_positions(distill_config, examples) -> None:
  """Raises ConfigError where attention transfer is asked for but the teacher tokenizes the training texts unlike the
  student (checked once the data is loaded, before anything is written)."""
  if schema.uses_features(distill_config) and distill_config.attention_weight > 0 and not tokens_aligned(examples):
    raise ConfigError("distill.attention_weight", distill_config.attention_weight,
                      "must be 0 here: attention transfer needs teacher and student to tokenize alike, and "
                      "teacher.checkpoint and student.checkpoint split the training texts differently (hidden states "
                      "are then compared mean-pooled per example)")
  if distill_config.decoder_features is not None and not tokens_aligned(examples):
    raise ConfigError("distill.decoder_features", distill_config.decoder_features,
                      "needs teacher and student to tokenize the targets alike (their decoders' positions are compared)")


@flax.struct.dataclass
class FeatureLoss:
  """The feature and attention terms of a run (see the module docstring), part of its objective
  (kd_jax/training/objective.py builds it from config.distill and the ModelLayers).

  The weights are arrays (vectorized sweeps stack them); the resolved layer pairs (of the encoder or only stack, and
  of an encoder-decoder model's decoder: decoder_pairs), the distance and whether text positions are pooled choose
  code and are static.
  """
  feature_weight: jax.Array
  attention_weight: jax.Array
  pairs: tuple = flax.struct.field(pytree_node=False, default=())
  kind: str = flax.struct.field(pytree_node=False, default="mse")
  pool_tokens: bool = flax.struct.field(pytree_node=False, default=False)
  decoder_pairs: tuple = flax.struct.field(pytree_node=False, default=())

  def position_weights(self, example_weights: jax.Array, student_mask) -> tuple:
    """The weights of the terms' means, (the encoder's or only stack's, the decoder's or None): per real token
    [batch, length] when text positions are compared, else per example [batch]; the decoder's are a seq2seq task's
    target weights themselves (example_weights [batch, target_length]: 0 off the targets), whose largest value per
    row weights the example in the encoder's."""
    assert not self.decoder_pairs or example_weights.ndim == 2, "decoder terms weigh the target positions"
    per_example = example_weights if example_weights.ndim == 1 else jnp.max(example_weights, axis=-1)
    per_token = student_mask is not None and not self.pool_tokens
    weights = per_example[:, None] * student_mask if per_token else per_example
    return weights, (example_weights if self.decoder_pairs else None)

  def __call__(self, student: Intermediates, teacher: Intermediates, projections: dict, *, student_mask, teacher_mask,
               example_weights: jax.Array, axis_name: str | None = None,
               weight_sum: tuple | None = None) -> tuple[jax.Array, dict]:
    """(feature_weight * feature term + attention_weight * attention term, {'feature_loss', 'attention_loss'}).

    Args:
      student, teacher: the models' Intermediates on this device's rows [batch, ...].
      projections: init_projections' dict (trained).
      student_mask, teacher_mask: attention masks [batch, length] of text models (each on its own tokens), or None.
      example_weights: [batch], 0 for examples not counted; a seq2seq task's target weights [batch, target_length].
      axis_name: the data-parallel axis of the global normalization, or None.
      weight_sum: this device's total `position_weights` (per stack) when these rows are one micro-batch of its rows
        (losses.global_mean), else None.

    'attention_loss' is there when both models have attention, positions align and a pair maps layers >= 1.
    """
    per_token = student_mask is not None and not self.pool_tokens
    weights = self.position_weights(example_weights, student_mask)
    weight_sums = (None, None) if weight_sum is None else weight_sum
    stacks = [(self.pairs, student, teacher, "", weights[0], weight_sums[0])]
    if self.decoder_pairs:
      stacks.append((self.decoder_pairs, student.decoder, teacher.decoder, DECODER, weights[1], weight_sums[1]))
    feature, attention = jnp.zeros((), jnp.float32), []
    for pairs, student_stack, teacher_stack, name, stack_weights, stack_sum in stacks:
      mean = lambda values, w=stack_weights, w_sum=stack_sum: losses.global_mean(values, w, axis_name, w_sum)
      pool = name == "" and student_mask is not None and self.pool_tokens
      for t, s in pairs:
        student_hidden, teacher_hidden = student_stack.hidden_states[s], teacher_stack.hidden_states[t]
        if pool:
          student_hidden = mean_over_tokens(student_hidden, student_mask)
          teacher_hidden = mean_over_tokens(teacher_hidden, teacher_mask)
        projection = projections.get(projection_name(t, s, name))
        if projection is not None:
          student_hidden = student_hidden.astype(jnp.float32) @ projection["kernel"] + projection["bias"]
        feature += mean(hidden_state_loss(student_hidden, teacher_hidden, self.kind))
      if (per_token or name) and student_stack.attention_logits and teacher_stack.attention_logits:
        attention += [mean(attention_kl(student_stack.attention_logits[s - 1],
                                        teacher_stack.attention_logits[t - 1])) for t, s in pairs if t > 0 and s > 0]
    terms = {"feature_loss": feature}
    total = self.feature_weight * feature
    if attention:
      terms["attention_loss"] = sum(attention)
      total += self.attention_weight * terms["attention_loss"]
    return total, terms
