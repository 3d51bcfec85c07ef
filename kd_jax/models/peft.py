"""Parameter-efficient students: which parameters training updates (`Trainable`), and LoRA adapters (`LoraModel`).

Parameters are named by their '/'-joined path, e.g. 'distilbert/transformer.layer.0/attention.q_lin/kernel'.

- `Trainable(patterns)`: a parameter is trained when its name matches one of the regular expressions (re.search); the
  others are frozen: the train step takes no gradient for them and the optimizer leaves them as they are
  (kd_jax/training/steps.py). `of_student(config.student)` is the partition a config asks for (None: every parameter).
- LoRA (Hu et al. 2021, arXiv:2106.09685) as peft implements it: a targeted linear layer h = x W + b with W [in, out]
  (a Flax Dense's `kernel`, or GPT-2's Conv1D `weight`, which peft adapts as a Linear with fan_in_fan_out=True) gains
  A [in, r] and B [r, out], stored beside W as `lora_a` and `lora_b`, and computes
      h = x W + b + (alpha / r) dropout(x) A B.
  A starts kaiming-uniform (bound 1 / sqrt(in), peft's kaiming_uniform_(a=sqrt(5))), B at zero, so training starts
  from the base model. Only the adapters (`ADAPTER_PATTERN`) and the base parameters matching config.student.trainable
  (None: the classification head, `HEAD_PATTERN`, peft's modules_to_save for sequence classification) are trained.
  `LoraModel` wraps a registry model and adds the adapters' term to the linear layers that hold them (a flax method
  interceptor, so the model code knows nothing of LoRA; a user's NNX module or function pair, which no interceptor
  reaches, is called with the adapters merged, W + (alpha / r) A B: the same function without LoRA dropout); `merge` folds them into the weights, W + (alpha / r) A B, for
  evaluation and export: the evaluator, the efficiency measurement and results.json see a plain model.
"""

import dataclasses
import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.errors import ConfigError
from kd_jax.models import dropout as dropout_masks
from kd_jax.models import protocol

# Trained with LoRA: the adapters, and by default the classification head. The head pattern matches the classifier
# modules of every family (BERT's classifier, RoBERTa's classifier.dense and classifier.out_proj, DistilBERT's
# pre_classifier and classifier), as peft's modules_to_save=['classifier', 'score'] does; BERT's pooler is frozen, as
# in peft.
ADAPTER_PATTERN = r"/lora_[ab]$"
HEAD_PATTERN = "classifier"
# The linear layers LoRA targets by default: every family's attention query and value projections, peft's defaults
# (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING): BERT/RoBERTa query and value, DistilBERT q_lin and v_lin, T5
# q and v (in self- and cross-attention), the Llama family's (Llama, Mistral, Qwen2, Qwen3) q_proj and v_proj, and
# GPT-2's fused c_attn (query, key and value in one Conv1D).
DEFAULT_TARGETS = ("query", "value", "q_lin", "v_lin", "q", "v", "q_proj", "v_proj", "c_attn")
# The name of a linear layer's weight W [in, out]: Flax Dense's kernel; GPT-2's Conv1D weight (kd_jax/models/hf/gpt2.py).
LINEAR_WEIGHTS = ("kernel", "weight")
# Folded into the student's initialization key for the adapters' A matrices.
_ADAPTER_RNG_STREAM = 1


def path_name(path) -> str:
  """A parameter's '/'-joined name from its jax tree path (dict keys)."""
  return "/".join(str(key.key) for key in path)


@dataclasses.dataclass(frozen=True)
class Trainable:
  """The parameters that training updates: those whose path_name matches one of `patterns` (re.search).

  Hashable and static: the train state holds it beside its optimizer, and equal partitions share compiled steps.
  `within`: when the trained tree holds the model's params under this key beside other trained parameters (the feature
  projections of kd_jax/training/feature_losses.py, under 'model'), the patterns see the model's names without the key,
  and the parameters outside it always train.
  """
  patterns: tuple[str, ...]
  within: str | None = None

  def is_trained(self, name: str) -> bool:
    if self.within is not None:
      if not name.startswith(self.within + "/"):
        return True
      name = name[len(self.within) + 1:]
    return any(re.search(pattern, name) for pattern in self.patterns)

  def labels(self, params):
    """'train' or 'frozen' per leaf (optax.multi_transform's labels)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if self.is_trained(path_name(path)) else "frozen", params)

  def count(self, params) -> int:
    """The number of trained parameter values."""
    return sum(leaf.size for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
               if self.is_trained(path_name(path)))


def of_student(student_config) -> Trainable | None:
  """The partition config.student asks for: None (every parameter trains) unless student.trainable or LoRA is set."""
  patterns = student_config.trainable
  if not student_config.lora.rank:
    return None if patterns is None else Trainable(tuple(patterns))
  return Trainable((ADAPTER_PATTERN,) + (tuple(patterns) if patterns is not None else (HEAD_PATTERN,)))


def check_trainable(student_config, params) -> None:
  """ConfigError when student.trainable selects none of `params` (and LoRA adds no adapters to train)."""
  trainable = of_student(student_config)
  if trainable is not None and trainable.count(params) == 0:
    example = path_name(jax.tree_util.tree_flatten_with_path(params)[0][0][0])
    raise ConfigError("student.trainable", tuple(student_config.trainable),
                      f"matches no parameter of the student (names are '/'-joined paths such as {example!r})")


def split(params, trainable: Trainable | None):
  """(trained, frozen): two trees shaped like `params`, each holding its leaves and None where the other has one.
  trainable None: (params, None)."""
  if trainable is None:
    return params, None
  labels = trainable.labels(params)
  trained = jax.tree.map(lambda leaf, label: leaf if label == "train" else None, params, labels)
  frozen = jax.tree.map(lambda leaf, label: None if label == "train" else leaf, params, labels)
  return trained, frozen


def combine(trained, frozen):
  """The inverse of `split`: one tree with the leaves of both."""
  if frozen is None:
    return trained
  return jax.tree.map(lambda leaf, other: other if leaf is None else leaf, trained, frozen,
                      is_leaf=lambda leaf: leaf is None)


def _matches(name: str, targets: tuple[str, ...]) -> bool:
  """peft's rule: a module named `name` is targeted when it equals a target or ends with '.' + target."""
  return any(name == target or name.endswith("." + target) for target in targets)


def linear_weight(node: dict) -> str | None:
  """The name of the 2-D weight W [in, out] of a linear layer's parameters (LINEAR_WEIGHTS), None for other nodes."""
  return next((name for name in LINEAR_WEIGHTS if name in node and len(getattr(node[name], "shape", ())) == 2), None)


def target_widths(params, targets: tuple[str, ...] | None) -> dict[str, int]:
  """{'/'-joined layer path: min(in, out)} of the linear layers (a 2-D `kernel` or `weight`) that `targets` (None:
  DEFAULT_TARGETS) selects; params may be abstract (shapes only)."""
  targets = DEFAULT_TARGETS if targets is None else tuple(targets)
  widths = {}

  def visit(node, path):
    if not isinstance(node, dict):
      return
    weight = linear_weight(node)
    if weight is not None and path and _matches(path[-1], targets):
      widths["/".join(path)] = min(node[weight].shape)
    for key, child in node.items():
      visit(child, path + (key,))

  visit(params, ())
  return widths


def check_rank(lora_config, params) -> None:
  """ConfigError unless the targets select a Dense layer of `params` and the rank fits every one of them."""
  widths = target_widths(params, lora_config.target_modules)
  targets = DEFAULT_TARGETS if lora_config.target_modules is None else tuple(lora_config.target_modules)
  if not widths:
    raise ConfigError("student.lora.target_modules", targets,
                      "matches no linear layer of the student (a layer named N is targeted when N is a target or "
                      "ends with '.' + a target)")
  narrowest = min(widths.values())
  if lora_config.rank > narrowest:
    raise ConfigError("student.lora.rank", lora_config.rank,
                      f"must be <= {narrowest}, the smallest width (min of inputs and outputs) of the targeted layers")


def add_adapters(params, lora_config, rng):
  """`params` with `lora_a` [in, r] (kaiming-uniform) and `lora_b` [r, out] (zeros) beside every targeted weight."""
  check_rank(lora_config, params)
  rank = lora_config.rank
  paths = sorted(target_widths(params, lora_config.target_modules))
  init_a = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")  # bound sqrt(3 / 3 / in) = 1 / sqrt(in)
  params = jax.tree.map(lambda leaf: leaf, params)  # a copy whose dicts may be extended
  for i, path in enumerate(paths):
    node = params
    for key in path.split("/"):
      node = node[key]
    weight = node[linear_weight(node)]
    node["lora_a"] = init_a(jax.random.fold_in(rng, i), (weight.shape[0], rank), weight.dtype)
    node["lora_b"] = jnp.zeros((rank, weight.shape[1]), weight.dtype)
  return params


def merge(params, scale: float):
  """Plain parameters: every weight with adapters becomes W + scale A B (computed in float32), adapters dropped."""
  if not isinstance(params, dict):
    return params
  merged = {key: merge(child, scale) for key, child in params.items() if key not in ("lora_a", "lora_b")}
  if "lora_a" in params:
    name = linear_weight(params)
    weight = params[name]
    update = jnp.asarray(params["lora_a"], jnp.float32) @ jnp.asarray(params["lora_b"], jnp.float32)
    merged[name] = (jnp.asarray(weight, jnp.float32) + scale * update).astype(weight.dtype)
  return merged


@dataclasses.dataclass(frozen=True)
class LoraModel:
  """A registry model whose linear layers holding `lora_a`, `lora_b` add scale * dropout(x) A B (the registry's
  calling convention: apply(variables, inputs, train, rngs, **options), options such as mutable passed through)."""
  base: Any
  scale: float  # alpha / r
  dropout: float

  def apply(self, variables, inputs, train: bool = False, rngs=None, **options):
    if protocol.merges_adapters(self.base):  # a user's NNX module or function pair: no Linen layers to intercept
      assert self.dropout == 0 or not train, "LoRA dropout needs a Linen model (config rules refuse it otherwise)"
      return self.base.apply({"params": merge(variables["params"], self.scale)}, inputs, train=train, rngs=rngs,
                             **options)
    interceptor = functools.partial(_adapted_dense, scale=self.scale, dropout=self.dropout if train else 0.0)
    with nn.intercept_methods(interceptor):
      return self.base.apply(variables, inputs, train=train, rngs=rngs, **options)

  def output_head(self, params):
    """The base model's LM head, without adapters (chunked losses; config rules refuse LoRA on the LM head there)."""
    return self.base.output_head(params)


def _adapted_dense(next_fun, args, kwargs, context, *, scale: float, dropout: float):
  """Method interceptor: layer(x) + scale * dropout(x) A B where a linear layer (a Dense, GPT-2's Conv1D: only they
  are given adapters) holds adapters; other calls unchanged. Dropout draws from the model's 'dropout' stream, so the
  train step's per-example keys cover it too."""
  output = next_fun(*args, **kwargs)
  module = context.module
  if context.method_name != "__call__" or not module.has_variable("params", "lora_a"):
    return output
  (inputs,) = args
  if dropout > 0:
    keep = dropout_masks.bernoulli(module.make_rng("dropout"), 1.0 - dropout, inputs.shape)
    inputs = jnp.where(keep, inputs / (1.0 - dropout), 0.0).astype(inputs.dtype)
  lora_a = module.get_variable("params", "lora_a").astype(getattr(module, "dtype", None) or inputs.dtype)
  lora_b = module.get_variable("params", "lora_b").astype(lora_a.dtype)
  return output + scale * ((inputs.astype(lora_a.dtype) @ lora_a) @ lora_b).astype(output.dtype)


def with_adapters(model, params, lora_config, rng):
  """(LoraModel over `model`, params with adapters) for config.student.lora (rank > 0)."""
  adapted = add_adapters(params, lora_config, jax.random.fold_in(rng, _ADAPTER_RNG_STREAM))
  return LoraModel(model, scale=lora_config.alpha / lora_config.rank, dropout=lora_config.dropout), adapted


def plain_model(model):
  """The model evaluation and export see: a LoraModel's base model; any other model itself."""
  return model.base if isinstance(model, LoraModel) else model


def plain_params(model, params):
  """The parameters of `plain_model(model)`: a LoraModel's adapters merged into their kernels; others as they are."""
  return merge(params, model.scale) if isinstance(model, LoraModel) else params
