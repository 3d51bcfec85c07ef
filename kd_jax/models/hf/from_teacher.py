"""Students built from the teacher (DistilBERT's initialization, Sanh et al. 2019, arXiv:1910.01108): the teacher's
architecture and widths with a subset of its layers, initialized from those layers.

Student layer j is teacher layer layers[j]; every parameter outside the layers is copied: the embeddings, the
pooler and classification head (BERT's pooler and classifier, RoBERTa's classifier.dense and out_proj, DistilBERT's
pre_classifier and classifier), T5's shared embedding, LM head, relative position bias and final layer norms. A T5
teacher gives both its encoder and its decoder blocks by the same indices.
"""

import copy
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.models.hf import pretrained
from kd_jax.parallel import sharding

# The module names of one layer in each family's parameters: BERT/RoBERTa 'encoder.layer.i' (under 'bert' or
# 'roberta'), DistilBERT 'transformer.layer.i' (under 'distilbert'), T5 'block.i' (under 'encoder' and 'decoder'),
# Llama 'layers.i' (under 'model'), GPT-2 'h.i' (under 'transformer').
LAYER_NAME = re.compile(r"^(encoder\.layer|transformer\.layer|block|layers|h)\.(\d+)$")


def stack_depths(params) -> dict[str, int]:
  """{'/'-joined path of a stack of layers: its number of layers} of a parameter tree (abstract or not)."""
  depths = {}

  def visit(node, path):
    if not isinstance(node, dict):
      return
    for key, child in node.items():
      match = LAYER_NAME.match(key)
      if match:
        depths["/".join(path)] = max(depths.get("/".join(path), 0), int(match.group(2)) + 1)
      else:
        visit(child, path + (key,))

  visit(params, ())
  return depths


def select_layers(params, layers: tuple[int, ...], param_dtype):
  """The teacher's parameters with layer layers[j] of every stack renamed to layer j, the other layers dropped, and
  every parameter cast to `param_dtype` (host arrays; replicated over several processes, this process's copy)."""

  def visit(node):
    if not isinstance(node, dict):
      return np.asarray(sharding.local_copy(node), dtype=param_dtype)
    selected = {}
    for key, child in node.items():
      match = LAYER_NAME.match(key)
      if match is None:
        selected[key] = visit(child)
      elif int(match.group(2)) in layers:
        selected[f"{match.group(1)}.{layers.index(int(match.group(2)))}"] = visit(child)
    return selected

  return visit(params)


def create(teacher_model: pretrained.RegistryModel, teacher_params, layers: tuple[int, ...], *, dtype,
           param_dtype, dropout: float | None = None):
  """(student registry model, its parameters): the teacher's module with len(layers) layers (T5: in the encoder and
  the decoder), computing in `dtype`, initialized from the teacher's layers `layers` (strictly increasing, each below
  the depth of every stack; config_validation checks it); its dropout the teacher's checkpoint's, or every
  probability `dropout` (student.hf_dropout)."""
  module = teacher_model.module
  dims = module.dims
  depth = {"num_layers": len(layers)}
  if hasattr(dims, "num_decoder_layers"):  # T5
    depth["num_decoder_layers"] = len(layers)
  if hasattr(dims, "sliding_windows"):  # Llama family: each student layer keeps its teacher layer's window
    depth["sliding_windows"] = tuple(dims.sliding_windows[index] for index in layers)
  student = module.clone(parent=None, dims=dataclasses.replace(dims, **depth), dtype=jnp.dtype(dtype),
                         param_dtype=jnp.dtype(param_dtype))
  params = select_layers(teacher_params, tuple(layers), jnp.dtype(param_dtype))
  return pretrained.RegistryModel(pretrained.with_dropout(student, dropout)), jax.device_put(params)


def student_hf_config(teacher_config, layers: tuple[int, ...]):
  """The transformers config of a student built from the teacher's layers `layers` (what its export writes as
  config.json): the teacher's with len(layers) layers (T5: in the encoder and the decoder), and each layer's attention
  type (Qwen's layer_types) that of its teacher layer, as `create` builds the module."""
  config = copy.deepcopy(teacher_config)
  config.num_hidden_layers = len(layers)  # n_layers (DistilBERT), n_layer (GPT-2), num_layers (T5) through aliases
  if hasattr(config, "num_decoder_layers"):  # T5
    config.num_decoder_layers = len(layers)
  if getattr(config, "layer_types", None):
    config.layer_types = [teacher_config.layer_types[index] for index in layers]
  return config
