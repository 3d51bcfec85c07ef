"""llama.cpp GGUF files read without torch: the model (config from the GGUF metadata, tensors dequantized in NumPy by
the `gguf` package, the same code transformers uses) and its tokenizer.

`from_pretrained("dir/model.Q4_1.gguf", task="causal_lm")` works for the GGUF architecture "llama" (Llama 2/3,
Mistral and SmolLM2 are written as "llama"). llama.cpp's converter permutes the rows of q and k within each head so
that its rotary embedding rotates interleaved pairs (x0, x1), (x2, x3), ...; transformers (and kd_jax) rotate the halves
(x_i, x_{i + head_dim/2}), so the permutation is undone here as in transformers' LlamaTensorProcessor.
"""

import functools
import os
import re
from typing import Any

import numpy as np

from kd_jax.errors import UserError
from kd_jax.models.hf import checkpoint as checkpoint_lib
from kd_jax.models.hf import llama

SUFFIX = ".gguf"
ARCHITECTURES = ("llama",)
# The tensor types read (by name of gguf.GGMLQuantizationType); the package dequantizes these in NumPy.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                   "Q6_K")

# GGUF tensor name -> transformers' (Llama) tensor name.
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_TENSOR_NAME = re.compile(r"^(?:blk\.(\d+)\.)?(\w+)\.(weight|bias)$")


def is_gguf(name_or_path: str) -> bool:
  return str(name_or_path).endswith(SUFFIX)


@functools.lru_cache(maxsize=4)
def _reader(path: str):
  """The gguf.GGUFReader of a file (memory-mapped; its metadata parsed once per process)."""
  import gguf  # pylint: disable=g-import-not-at-top  (only GGUF checkpoints need it)
  if not os.path.isfile(path):
    raise UserError(f"checkpoint {path}: no such GGUF file")
  return gguf.GGUFReader(path)


def metadata(path: str) -> dict[str, Any]:
  """The GGUF key-value metadata {key: value} (strings, numbers, lists)."""
  return {key: field.contents() for key, field in _reader(path).fields.items()}


def hf_config(path: str):
  """transformers' LlamaConfig built from the GGUF metadata (llama.* and tokenizer.ggml.* keys)."""
  import transformers  # pylint: disable=g-import-not-at-top
  values = {key: field.contents() for key, field in _reader(path).fields.items()
            if not key.startswith("tokenizer.ggml.") or key.endswith("_token_id")}
  architecture = values.get("general.architecture")
  if architecture not in ARCHITECTURES:
    raise UserError(f"checkpoint {path}: GGUF architecture {architecture!r} is not supported; supported: "
                    f"{', '.join(ARCHITECTURES)}")
  tensor_names = {tensor.name for tensor in _reader(path).tensors}
  if "rope_freqs.weight" in tensor_names:
    raise UserError(f"checkpoint {path}: the RoPE frequency factors of the GGUF (tensor rope_freqs.weight, Llama 3.1 "
                    "scaling) are not supported; supported: GGUFs without rope_freqs")
  get = lambda key, default=None: values.get(f"{architecture}.{key}", default)
  num_heads = get("attention.head_count")
  hidden_size = get("embedding_length")
  rope = {"rope_type": "default", "rope_theta": float(get("rope.freq_base", 10000.0))}
  scaling = get("rope.scaling.type", "none")
  if scaling == "linear":
    rope.update(rope_type="linear", factor=float(get("rope.scaling.factor")))
  elif scaling != "none":
    raise UserError(f"checkpoint {path}: GGUF rope scaling {scaling!r} is not supported; supported: none, linear")
  vocab_size = get("vocab_size") or len(_reader(path).fields["tokenizer.ggml.tokens"].data)
  return transformers.LlamaConfig(
      vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=get("feed_forward_length"),
      num_hidden_layers=get("block_count"), num_attention_heads=num_heads,
      num_key_value_heads=get("attention.head_count_kv", num_heads),
      head_dim=get("attention.key_length", hidden_size // num_heads),
      rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
      max_position_embeddings=get("context_length", 2048), rope_parameters=rope,
      tie_word_embeddings="output.weight" not in tensor_names,
      bos_token_id=values.get("tokenizer.ggml.bos_token_id"), eos_token_id=values.get("tokenizer.ggml.eos_token_id"),
      pad_token_id=values.get("tokenizer.ggml.padding_token_id"))


def hf_tensor_name(gguf_name: str) -> str | None:
  """transformers' name of a GGUF tensor ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight"), or
  None for a tensor the model does not use."""
  match = _TENSOR_NAME.match(gguf_name)
  if match is None:
    return None
  layer, stem, leaf = match.groups()
  if layer is None:
    return f"{_GLOBAL_NAMES[stem]}.{leaf}" if stem in _GLOBAL_NAMES else None
  return f"model.layers.{layer}.{_LAYER_NAMES[stem]}.{leaf}" if stem in _LAYER_NAMES else None


def unpermute_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Undoes llama.cpp's permutation of the rows [num_heads * head_dim, ...] of q_proj / k_proj (weights or biases):
  within each head, rows (0, 2, 4, ..., 1, 3, 5, ...) of the file are rows (0 .. head_dim/2, head_dim/2 ..)."""
  head_dim = weight.shape[0] // num_heads
  return weight.reshape(num_heads, head_dim // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


class GGUFSource(checkpoint_lib.TensorSource):
  """A GGUF file's tensors by transformers' names, dequantized to float32 one at a time, q/k rows unpermuted."""

  def __init__(self, path: str, config):
    self._path = path
    self._tensors = {}
    for tensor in _reader(path).tensors:
      name = hf_tensor_name(tensor.name)
      if name is not None:
        self._tensors[name] = tensor
    self._heads = {"self_attn.q_proj": config.num_attention_heads, "self_attn.k_proj": config.num_key_value_heads}

  def names(self) -> set[str]:
    return set(self._tensors)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(int(size) for size in reversed(self._tensors[name].shape))  # GGUF lists the fastest axis first

  def get(self, name: str) -> np.ndarray:
    import gguf  # pylint: disable=g-import-not-at-top
    tensor = self._tensors[name]
    type_name = tensor.tensor_type.name
    if type_name not in SUPPORTED_TYPES:
      raise UserError(f"checkpoint {self._path}: tensor {tensor.name} has GGUF type {type_name}, which is not "
                      f"supported; supported: {', '.join(SUPPORTED_TYPES)}")
    weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
    weight = weight.reshape(self.shape(name))
    heads = self._heads.get(".".join(name.split(".")[-3:-1]))
    return unpermute_rows(weight, heads) if heads else weight


def architecture(path: str, task: str, *, dtype, param_dtype) -> tuple[checkpoint_lib.Architecture, Any]:
  """(the Flax model's Architecture, transformers config) of a GGUF file."""
  if task != "causal_lm":
    raise UserError(f"checkpoint {path}: task {task!r} is not supported for GGUF files; supported: causal_lm")
  config = hf_config(path)
  return llama.build(config, checkpoint=path, task=task, num_labels=None, dtype=dtype,
                     param_dtype=param_dtype), config


def from_pretrained(path: str, task: str, *, dtype, param_dtype):
  """(module, params) of a GGUF file; see kd_jax.models.hf.from_pretrained."""
  import jax  # pylint: disable=g-import-not-at-top
  built, config = architecture(path, task, dtype=dtype, param_dtype=param_dtype)
  params = checkpoint_lib.load_params(built, GGUFSource(path, config), checkpoint=path, param_dtype=param_dtype,
                                      rng=jax.random.key(0))
  return built.module, params


def tokenizer(path: str):
  """The GGUF's tokenizer as a transformers PreTrainedTokenizerFast (with its chat template), built as
  transformers' `AutoTokenizer.from_pretrained(dir, gguf_file=...)` builds it, whose GGUF reader needs torch."""
  import transformers  # pylint: disable=g-import-not-at-top
  from transformers.integrations.gguf import gguf_tokenizer_mapping  # pylint: disable=g-import-not-at-top
  fields = _reader(path).fields
  value = lambda key: fields[key].contents() if key in fields else None
  groups = {group: {name: value(f"tokenizer.{key}") for key, name in renames.items()
                    if f"tokenizer.{key}" in fields}
            for group, renames in gguf_tokenizer_mapping.GGUF_TOKENIZER_MAPPING.items()}
  tokenizer_dict, tokenizer_config = groups["tokenizer"], groups["tokenizer_config"]
  if tokenizer_dict.get("tokenizer_type") == "llama":
    tokenizer_config.setdefault("add_bos_token", True)  # as transformers: llama.cpp's default for sentencepiece
  for special, key in {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
                       "pad_token": "padding_token_id"}.items():
    token_id = value(f"tokenizer.ggml.{key}")
    if token_id is not None:
      tokenizer_config[special] = tokenizer_dict["tokens"][token_id]
  backend, extra = gguf_tokenizer_mapping.convert_gguf_tokenizer(value("general.architecture"), tokenizer_dict)
  return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra)

