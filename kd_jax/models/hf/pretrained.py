"""from_pretrained: a Hugging Face checkpoint (hub id or directory) -> (Flax module, params); the registry's create."""

import copy
import dataclasses
import functools
import inspect
import json
import types
from typing import Any

import jax
import jax.numpy as jnp

from kd_jax.errors import UserError
from kd_jax.models.hf import bert
from kd_jax.models.hf import weights
from kd_jax.models.hf import distilbert
from kd_jax.models.hf import gguf
from kd_jax.models.hf import gpt2
from kd_jax.models.hf import llama
from kd_jax.models.hf import t5

# config.json model_type -> the module building that family's Flax models.
FAMILIES: dict[str, types.ModuleType] = {"bert": bert, "roberta": bert, "distilbert": distilbert, "t5": t5,
                                         "llama": llama, "mistral": llama, "qwen2": llama, "qwen3": llama,
                                         "phi3": llama, "gpt2": gpt2}
TASKS = ("encoder", "sequence_classification", "seq2seq", "causal_lm")
GENERATION_CONFIG_FILE = "generation_config.json"


def from_pretrained(name_or_path: str, task: str = "sequence_classification", *, num_labels: int | None = None,
                    dtype: Any = "float32", param_dtype: Any = "float32", rng: jax.Array | None = None):
  """Builds the Flax model of a Hugging Face checkpoint for `task` and loads its weights.

  Args:
    name_or_path: a local directory with config.json and weights, a hub id (through huggingface_hub's cache;
      HF_HUB_OFFLINE=1 uses the cache only), or a llama.cpp .gguf file (gguf.py; task "causal_lm").
    task: "encoder" (last hidden states [batch, length, hidden]), "sequence_classification" (logits
      [batch, num_labels]), "seq2seq" (LM logits [batch, target_length, vocab]) or "causal_lm" (next-token logits
      [batch, length, vocab] of a decoder-only LM).
    num_labels: classification only. Required when the checkpoint has no classification head (a fresh one is
      initialized from `rng`); must match the head of a fine-tuned classifier, which is loaded as is.
    dtype: dtype of the computation ("float32", "bfloat16" or a jnp dtype).
    param_dtype: dtype the weights are converted to while loading.
    rng: PRNG key of a fresh head; defaults to jax.random.key(0).

  Returns:
    (module, params): call `module.apply({"params": params}, input_ids=..., attention_mask=...)` (plus
    `decoder_input_ids=...` for seq2seq; `train=True, rngs={"dropout": key}` for dropout).
  """
  dtype, param_dtype = jnp.dtype(dtype), jnp.dtype(param_dtype)
  if gguf.is_gguf(name_or_path):
    return gguf.from_pretrained(name_or_path, task, dtype=dtype, param_dtype=param_dtype)
  directory, family, config = _family_and_config(name_or_path, task)
  if task == "causal_lm":  # the decoder-only families' dims take every stop token (their eos_token_ids)
    config = copy.deepcopy(config)  # config.json as it is stays what an export writes (family_and_config)
    config.eos_token_id = list(stop_token_ids(name_or_path))
  with weights.open_tensors(directory, name_or_path) as source:
    if task == "sequence_classification":
      num_labels = _num_labels(source, family.classifier_tensor(config), num_labels, name_or_path)
    architecture = family.build(config, checkpoint=name_or_path, task=task, num_labels=num_labels, dtype=dtype,
                                param_dtype=param_dtype)
    params = weights.load_params(architecture, source, checkpoint=name_or_path, param_dtype=param_dtype,
                                        rng=jax.random.key(0) if rng is None else rng)
  return architecture.module, params


def _family_and_config(name_or_path: str, task: str):
  """(local directory, family module, transformers config) of a checkpoint, or a UserError naming what is wrong."""
  if task not in TASKS:
    raise UserError(f"checkpoint {name_or_path}: task {task!r} is not one of {', '.join(TASKS)}")
  directory = weights.resolve(name_or_path)
  raw_config = weights.read_config(directory, name_or_path)
  model_type = raw_config.get("model_type")
  if model_type not in FAMILIES:
    architectures = ", ".join(raw_config.get("architectures") or ["none listed"])
    raise UserError(f"checkpoint {name_or_path}: model_type {model_type!r} (architectures: {architectures}) is not "
                    f"supported; supported model types: {', '.join(sorted(FAMILIES))}")
  family = FAMILIES[model_type]
  if task not in family.SUPPORTED_TASKS:
    raise UserError(f"checkpoint {name_or_path}: task {task!r} is not supported for model_type {model_type!r}; "
                    f"supported: {', '.join(family.SUPPORTED_TASKS)}")
  import transformers  # pylint: disable=g-import-not-at-top  (heavy; only loading needs it)
  return directory, family, transformers.AutoConfig.from_pretrained(directory)


def stop_token_ids(name_or_path: str) -> tuple[int, ...]:
  """The token ids a checkpoint's generation stops at: config.json's eos_token_id, then generation_config.json's (an
  id or a list, which is what transformers' generate stops at: Llama 3.1 Instruct's [128001, 128008, 128009],
  Qwen2.5 Instruct's [151645, 151643]); in order, without repeats. A GGUF file: its EOS, EOT and EOM tokens."""
  if gguf.is_gguf(name_or_path):
    return tuple(gguf.stop_token_ids(gguf.read(name_or_path).metadata))
  directory = weights.resolve(name_or_path)
  ids = list(_token_ids(weights.read_config(directory, name_or_path).get("eos_token_id")))
  generation_config = directory / GENERATION_CONFIG_FILE
  if generation_config.exists():
    with generation_config.open() as stream:
      ids += _token_ids(json.load(stream).get("eos_token_id"))
  return tuple(dict.fromkeys(ids))


def vocab_size(name_or_path: str) -> int:
  """The vocabulary size of a checkpoint's model (the width of its logits; its tokenizer may have fewer tokens), from
  config.json or the GGUF metadata."""
  if gguf.is_gguf(name_or_path):
    return int(gguf.hf_config(name_or_path).vocab_size)
  return int(weights.read_config(weights.resolve(name_or_path), name_or_path)["vocab_size"])


def _token_ids(value) -> tuple[int, ...]:
  """A config's token id field (None, an id or a list of ids) as a tuple of ints."""
  if value is None:
    return ()
  return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)


def family_and_config(name_or_path: str, task: str):
  """(family module, transformers config) of a checkpoint (directory, hub id or GGUF file) for `task`: what builds its
  Flax model (`family.build`), and what an export writes as config.json."""
  if gguf.is_gguf(name_or_path):
    gguf.architecture(name_or_path, task, dtype=jnp.float32, param_dtype=jnp.float32)  # checks the task
    return llama, gguf.hf_config(name_or_path)
  _, family, config = _family_and_config(name_or_path, task)
  return family, config


def load_tokenizer(name_or_path: str):
  """The tokenizer of a checkpoint: a directory's or hub id's (transformers' AutoTokenizer), or a GGUF file's."""
  if gguf.is_gguf(name_or_path):
    return gguf.tokenizer(name_or_path)
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers.AutoTokenizer.from_pretrained(weights.resolve(name_or_path))


@functools.lru_cache(maxsize=16)
def abstract_params(name_or_path: str, task: str = "sequence_classification"):
  """The parameter shapes (jax.ShapeDtypeStruct tree) of `from_pretrained(name_or_path, task)`, from config.json
  (or the GGUF metadata) alone: what config validation checks layer indices and LoRA ranks against before anything
  runs. A classifier without a head in the checkpoint gets 2 labels here (the class count is known once the data has
  loaded)."""
  if gguf.is_gguf(name_or_path):
    architecture = gguf.architecture(name_or_path, task, dtype=jnp.float32, param_dtype=jnp.float32)[0]
    return jax.eval_shape(lambda: architecture.module.init(jax.random.key(0), **architecture.example_inputs))["params"]
  directory, family, config = _family_and_config(name_or_path, task)
  with weights.open_tensors(directory, name_or_path) as source:
    tensor = family.classifier_tensor(config) if task == "sequence_classification" else None
    num_labels = source.shape(tensor)[0] if tensor in source.names() else 2
  architecture = family.build(config, checkpoint=name_or_path, task=task, num_labels=num_labels,
                              dtype=jnp.float32, param_dtype=jnp.float32)
  return jax.eval_shape(lambda: architecture.module.init(jax.random.key(0), **architecture.example_inputs))["params"]


def abstract_model(model_config, *, num_classes: int):
  """(RegistryModel, jax.ShapeDtypeStruct tree of its params) of `model_config` (an HF model's config section) from
  its checkpoint's config.json alone, in its dtypes: what scripts/memory_plan.py compiles steps from. A classifier
  gets `num_classes` labels."""
  task = model_config.task or "sequence_classification"
  directory, family, config = _family_and_config(model_config.checkpoint, task)
  del directory
  architecture = family.build(config, checkpoint=model_config.checkpoint, task=task,
                              num_labels=num_classes if task == "sequence_classification" else None,
                              dtype=jnp.dtype(model_config.dtype), param_dtype=jnp.dtype(model_config.param_dtype))
  params = jax.eval_shape(lambda: architecture.module.init(jax.random.key(0), **architecture.example_inputs))["params"]
  return RegistryModel(architecture.module), params


def tensor_parallel_problem(name_or_path: str, tensor: int, field: str) -> str | None:
  """Why a checkpoint cannot split over a tensor axis of `tensor` (> 1) devices, from its config.json or GGUF
  metadata (no weights): its family declares no tensor-parallel placement (a `partition_rules` beside its modules),
  or `tensor` does not divide its attention heads; None when it can. `field`: the config field naming the checkpoint
  ('teacher.checkpoint')."""
  if gguf.is_gguf(name_or_path):
    family, raw_config = llama, gguf.hf_config(name_or_path).to_dict()
  else:
    raw_config = weights.read_config(weights.resolve(name_or_path), name_or_path)
    family = FAMILIES.get(raw_config.get("model_type"))
  if family is None:
    return None  # from_pretrained names the unsupported model type
  if not hasattr(family, "partition_rules"):
    return (f"must be 1: model_type {raw_config['model_type']!r} of {field}={name_or_path!r} declares no "
            "tensor-parallel placement (mesh.fsdp splits any model's parameters)")
  # BERT / RoBERTa / Llama, DistilBERT, T5 and GPT-2 name the field differently.
  heads = int(next(raw_config[key] for key in ("num_attention_heads", "n_heads", "num_heads", "n_head")
                   if key in raw_config))
  return None if heads % tensor == 0 else f"must divide the {heads} attention heads of {field}={name_or_path!r}"


def _num_labels(source: weights.TensorSource, classifier_tensor: str, num_labels: int | None,
                checkpoint: str) -> int:
  """The classifier's output size: the checkpoint's head if it has one (num_labels must agree), else num_labels."""
  if classifier_tensor in source.names():
    checkpoint_labels = source.shape(classifier_tensor)[0]
    if num_labels is not None and num_labels != checkpoint_labels:
      raise UserError(f"checkpoint {checkpoint} has a {checkpoint_labels}-label classification head "
                      f"({classifier_tensor}) but num_labels={num_labels} was asked for")
    return checkpoint_labels
  if num_labels is None:
    raise UserError(f"checkpoint {checkpoint} has no classification head ({classifier_tensor}); pass num_labels "
                    "to add a freshly initialized one")
  return num_labels


@dataclasses.dataclass(frozen=True)
class RegistryModel:
  """The registry's calling convention over a from_pretrained module: apply(variables, inputs, train, rngs).

  `inputs` is the data pipeline's dict of token arrays; keys the module's __call__ does not take
  (token_type_ids for DistilBERT or T5) are left out.
  """
  module: Any

  def partition_rules(self, tensor: int) -> tuple:
    """The tensor-parallel placement its family declares for a tensor axis of `tensor` devices (the family module's
    `partition_rules`, e.g. llama.partition_rules)."""
    return inspect.getmodule(type(self.module)).partition_rules(self.module.dims, tensor)

  def apply(self, variables, inputs, train: bool = False, rngs=None, **apply_kwargs):
    """apply_kwargs: flax's (e.g. mutable=['intermediates'] for the hidden states and attention logits)."""
    input_names = inspect.signature(type(self.module).__call__).parameters
    model_inputs = {name: array for name, array in inputs.items() if name in input_names and name != "train"}
    return self.module.apply(variables, **model_inputs, train=train, rngs=rngs, **apply_kwargs)

  def output_head(self, params):
    """The LM head of a causal LM or seq2seq model (layers.OutputHead) that projects what
    `apply(..., project=False)` returns: its final hidden states."""
    return self.module.output_head(params)


def create(model_config, *, num_classes: int, example_inputs, rng):
  """Registry hook (kd_jax.models.create): `model_config.checkpoint` loaded for `model_config.task`.

  task None means "sequence_classification" with `num_classes` labels; "seq2seq" returns LM logits and ignores
  num_classes. example_inputs is not needed: the shapes come from the checkpoint's config.
  """
  del example_inputs
  task = model_config.task or "sequence_classification"
  module, params = from_pretrained(
      model_config.checkpoint, task, num_labels=num_classes if task == "sequence_classification" else None,
      dtype=model_config.dtype, param_dtype=model_config.param_dtype, rng=rng)
  return RegistryModel(with_dropout(module, model_config.get("hf_dropout"))), params


def with_dropout(module, rate: float | None):
  """`module` (a family's Flax model) with every dropout probability of its dims (hidden, attention, classifier;
  nested dims included) replaced by `rate`: config.teacher/student.hf_dropout. None: `module` as it is."""
  if rate is None:
    return module

  def replaced(dims):
    changes = {}
    for field in dataclasses.fields(dims):
      value = getattr(dims, field.name)
      if dataclasses.is_dataclass(value):
        changes[field.name] = replaced(value)
      elif "dropout" in field.name and isinstance(value, (int, float)) and not isinstance(value, bool):
        changes[field.name] = float(rate)
    return dataclasses.replace(dims, **changes)

  return module.clone(parent=None, dims=replaced(module.dims))
