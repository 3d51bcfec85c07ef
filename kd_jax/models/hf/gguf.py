"""llama.cpp GGUF files read without torch: the model (config from the GGUF metadata, tensors dequantized in NumPy by
the `gguf` package, the same code transformers uses) and its tokenizer.

`from_pretrained("dir/model.Q4_1.gguf", task="causal_lm")` works for the GGUF architecture "llama" (Llama 2/3,
Mistral and SmolLM2 are written as "llama"). llama.cpp's converter permutes the rows of q and k within each head so
that its rotary embedding rotates interleaved pairs (x0, x1), (x2, x3), ...; transformers (and kd_jax) rotate the halves
(x_i, x_{i + head_dim/2}), so the permutation is undone here as in transformers' LlamaTensorProcessor.
"""

import dataclasses
import functools
import mmap
import os
import re
import struct
from typing import Any

import numpy as np

from kd_jax.errors import UserError
from kd_jax.models.hf import weights
from kd_jax.models.hf import llama

SUFFIX = ".gguf"
ARCHITECTURES = ("llama",)
# The tensor types read (by name of gguf.GGMLQuantizationType); the package dequantizes these in NumPy.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                   "Q6_K")

# GGUF tensor name -> transformers' (Llama) tensor name.
GLOBAL_TENSOR_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
LAYER_TENSOR_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_TENSOR_NAME = re.compile(r"^(?:blk\.(\d+)\.)?(\w+)\.(weight|bias)$")


def is_gguf(name_or_path: str) -> bool:
  return str(name_or_path).endswith(SUFFIX)


# GGUF metadata value types (gguf.GGUFValueType) with a fixed size, as struct formats; 8 is a string, 9 an array.
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                   12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
  """Where one tensor's bytes lie in the file, and how they are stored."""
  name: str
  shape: tuple[int, ...]  # PyTorch order: slowest axis first (GGUF lists the fastest first)
  type_name: str  # gguf.GGMLQuantizationType's name
  data: np.ndarray  # uint8 [rows, bytes per row], memory-mapped


@dataclasses.dataclass(frozen=True)
class GGUFFile:
  metadata: dict[str, Any]
  tensors: dict[str, GGUFTensor]


@functools.lru_cache(maxsize=4)
def read(path: str) -> GGUFFile:
  """The metadata and the (memory-mapped, not yet read) tensors of a GGUF file (v2/v3).

  A small reader of its own rather than gguf.GGUFReader, which makes a NumPy view per token string (seconds for a
  49,152-token vocabulary); the tensor types and block sizes are the gguf package's.
  """
  import gguf  # pylint: disable=g-import-not-at-top  (only GGUF checkpoints need it)
  if not os.path.isfile(path):
    raise UserError(f"checkpoint {path}: no such GGUF file")
  with open(path, "rb") as f:
    buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
  offset = 0

  def unpack(fmt: str):
    nonlocal offset
    (value,) = struct.unpack_from(fmt, buffer, offset)
    offset += struct.calcsize(fmt)
    return value

  def string() -> str:
    nonlocal offset
    length = unpack("<Q")
    offset += length
    return bytes(buffer[offset - length:offset]).decode("utf-8", errors="replace")

  def value(value_type: int):
    nonlocal offset
    if value_type == _STRING:
      return string()
    if value_type != _ARRAY:
      return unpack(_SCALAR_FORMATS[value_type])
    item_type, count = unpack("<I"), unpack("<Q")
    if item_type in _SCALAR_FORMATS:
      items = np.frombuffer(buffer, np.dtype(_SCALAR_FORMATS[item_type]), count, offset)
      offset += items.nbytes
      return items.tolist()
    return [value(item_type) for _ in range(count)]

  if bytes(buffer[:4]) != b"GGUF":
    raise UserError(f"checkpoint {path} is not a GGUF file (no GGUF magic number)")
  offset = 4
  version, tensor_count, kv_count = unpack("<I"), unpack("<Q"), unpack("<Q")
  if version not in (2, 3):
    raise UserError(f"checkpoint {path}: GGUF version {version} is not supported; supported: 2, 3")
  metadata = {}
  for _ in range(kv_count):
    key = string()
    metadata[key] = value(unpack("<I"))
  infos = []
  for _ in range(tensor_count):
    name = string()
    dims = [unpack("<Q") for _ in range(unpack("<I"))]
    infos.append((name, tuple(reversed(dims)), unpack("<I"), unpack("<Q")))
  alignment = metadata.get("general.alignment", 32)
  data_start = -(-offset // alignment) * alignment
  tensors = {}
  for name, shape, type_id, tensor_offset in infos:
    if type_id not in set(gguf.GGMLQuantizationType) or gguf.GGMLQuantizationType(type_id) not in gguf.GGML_QUANT_SIZES:
      tensors[name] = GGUFTensor(name, shape, f"unknown type {type_id}", np.zeros((0, 0), np.uint8))
      continue
    tensor_type = gguf.GGMLQuantizationType(type_id)
    block_size, block_bytes = gguf.GGML_QUANT_SIZES[tensor_type]
    rows, row_bytes = int(np.prod(shape[:-1], dtype=np.int64)), shape[-1] // block_size * block_bytes
    data = np.frombuffer(buffer, np.uint8, rows * row_bytes, data_start + tensor_offset).reshape(rows, row_bytes)
    tensors[name] = GGUFTensor(name, shape, tensor_type.name, data)
  return GGUFFile(metadata, tensors)


def hf_config(path: str):
  """transformers' LlamaConfig built from the GGUF metadata (llama.* and tokenizer.ggml.* keys)."""
  import transformers  # pylint: disable=g-import-not-at-top
  values = read(path).metadata
  architecture = values.get("general.architecture")
  if architecture not in ARCHITECTURES:
    raise UserError(f"checkpoint {path}: GGUF architecture {architecture!r} is not supported; supported: "
                    f"{', '.join(ARCHITECTURES)}")
  tensor_names = set(read(path).tensors)
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
  vocab_size = get("vocab_size") or len(values["tokenizer.ggml.tokens"])
  return transformers.LlamaConfig(
      vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=get("feed_forward_length"),
      num_hidden_layers=get("block_count"), num_attention_heads=num_heads,
      num_key_value_heads=get("attention.head_count_kv", num_heads),
      head_dim=get("attention.key_length", hidden_size // num_heads),
      rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
      max_position_embeddings=get("context_length", 2048), rope_parameters=rope,
      tie_word_embeddings="output.weight" not in tensor_names,
      bos_token_id=values.get("tokenizer.ggml.bos_token_id"), eos_token_id=stop_token_ids(values) or None,
      pad_token_id=values.get("tokenizer.ggml.padding_token_id"))


def stop_token_ids(metadata: dict) -> list[int]:
  """The ids generation stops at, from GGUF metadata: llama.cpp's EOS, end-of-turn (EOT: Llama 3's <|eot_id|>) and
  end-of-message (EOM: <|eom_id|>) tokens, those present, in that order without repeats."""
  keys = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
  return list(dict.fromkeys(int(metadata[key]) for key in keys if metadata.get(key) is not None))


def hf_tensor_name(gguf_name: str) -> str | None:
  """transformers' name of a GGUF tensor ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight"), or
  None for a tensor the model does not use."""
  match = _TENSOR_NAME.match(gguf_name)
  if match is None:
    return None
  layer, stem, leaf = match.groups()
  if layer is None:
    return f"{GLOBAL_TENSOR_NAMES[stem]}.{leaf}" if stem in GLOBAL_TENSOR_NAMES else None
  return f"model.layers.{layer}.{LAYER_TENSOR_NAMES[stem]}.{leaf}" if stem in LAYER_TENSOR_NAMES else None


def unpermute_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Undoes llama.cpp's permutation of the rows [num_heads * head_dim, ...] of q_proj / k_proj (weights or biases):
  within each head, rows (0, 2, 4, ..., 1, 3, 5, ...) of the file are rows (0 .. head_dim/2, head_dim/2 ..)."""
  head_dim = weight.shape[0] // num_heads
  return weight.reshape(num_heads, head_dim // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


class GGUFSource(weights.TensorSource):
  """A GGUF file's tensors by transformers' names, dequantized to float32 one at a time, q/k rows unpermuted."""

  def __init__(self, path: str, config):
    self._path = path
    self._tensors = {}
    for tensor in read(path).tensors.values():
      name = hf_tensor_name(tensor.name)
      if name is not None:
        self._tensors[name] = tensor
    self._heads = {"self_attn.q_proj": config.num_attention_heads, "self_attn.k_proj": config.num_key_value_heads}

  def names(self) -> set[str]:
    return set(self._tensors)

  def shape(self, name: str) -> tuple[int, ...]:
    return self._tensors[name].shape

  def get(self, name: str) -> np.ndarray:
    import gguf  # pylint: disable=g-import-not-at-top
    tensor = self._tensors[name]
    if tensor.type_name not in SUPPORTED_TYPES:
      raise UserError(f"checkpoint {self._path}: tensor {tensor.name} has GGUF type {tensor.type_name}, which is not "
                      f"supported; supported: {', '.join(SUPPORTED_TYPES)}")
    tensor_type = gguf.GGMLQuantizationType[tensor.type_name]
    weight = gguf.quants.dequantize(tensor.data, tensor_type).astype(np.float32, copy=False).reshape(tensor.shape)
    heads = self._heads.get(".".join(name.split(".")[-3:-1]))
    return unpermute_rows(weight, heads) if heads else weight


def architecture(path: str, task: str, *, dtype, param_dtype) -> tuple[weights.Architecture, Any]:
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
  params = weights.load_params(built, GGUFSource(path, config), checkpoint=path, param_dtype=param_dtype,
                                      rng=jax.random.key(0))
  return built.module, params


def tokenizer(path: str):
  """The GGUF's tokenizer as a transformers PreTrainedTokenizerFast (with its chat template), built as
  transformers' `AutoTokenizer.from_pretrained(dir, gguf_file=...)` builds it, whose GGUF reader needs torch."""
  import transformers  # pylint: disable=g-import-not-at-top
  from transformers.integrations.gguf import gguf_tokenizer_mapping  # pylint: disable=g-import-not-at-top
  fields = read(path).metadata
  value = fields.get
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

