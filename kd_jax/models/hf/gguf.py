"""llama.cpp GGUF files read and written without torch: the model (config from the GGUF metadata, tensors dequantized in
NumPy by the `gguf` package, the same code transformers uses) and its tokenizer.

`from_pretrained("dir/model.Q4_1.gguf", task="causal_lm")` works for the GGUF architectures "llama" (Llama 2/3,
Mistral and SmolLM2 are written as "llama"), "qwen2" (q/k/v biases) and "qwen3" (q/k RMS norms). For "llama",
llama.cpp's converter permutes the rows of q and k within each head so that its rotary embedding rotates interleaved
pairs (x0, x1), (x2, x3), ...; transformers (and kd_jax) rotate the halves (x_i, x_{i + head_dim/2}), so the
permutation is undone here as in transformers' LlamaTensorProcessor (llama.cpp rotates Qwen's halves as they are).
Llama 3.1's RoPE scaling is the tensor rope_freqs.weight: one divisor per frequency (llama.cpp's ggml_rope_ext
`freq_factors`: frequency i is base^(-2i/head_dim) / rope_freqs[i]), which llama.cpp's converter computes from the
llama3 rope_scaling (`rope_divisors`). transformers' GGUF loader drops it; it is read here as the RoPE transformers
computes the same frequencies with: longrope with short_factor = long_factor = rope_freqs and attention_factor 1.

`write` is the inverse (kd_jax/models/export.py's GGUF format): a Llama-family model's transformers config, tensors and
byte-level BPE tokenizer as a GGUF file in float32, float16 or Q8_0, q and k rows permuted where llama.cpp's converter
permutes them, with the tokenizer's vocabulary, merges, special tokens and chat template.
"""

import dataclasses
import functools
import json
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
ARCHITECTURES = ("llama", "qwen2", "qwen3")
# The GGUF architecture of each transformers model_type `write` takes (Mistral is written as "llama").
WRITE_ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
# The tensor types read (by name of gguf.GGMLQuantizationType); the package dequantizes these in NumPy.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                   "Q6_K")

# GGUF tensor name -> transformers' (Llama) tensor name.
GLOBAL_TENSOR_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
LAYER_TENSOR_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
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
  """transformers' LlamaConfig, Qwen2Config or Qwen3Config built from the GGUF metadata (<architecture>.* and
  tokenizer.ggml.* keys); Qwen's layers all attend fully (GGUF records no sliding window)."""
  import transformers  # pylint: disable=g-import-not-at-top
  values = read(path).metadata
  architecture = values.get("general.architecture")
  if architecture not in ARCHITECTURES:
    raise UserError(f"checkpoint {path}: GGUF architecture {architecture!r} is not supported; supported: "
                    f"{', '.join(ARCHITECTURES)}")
  tensor_names = set(read(path).tensors)
  get = lambda key, default=None: values.get(f"{architecture}.{key}", default)
  num_heads = get("attention.head_count")
  hidden_size = get("embedding_length")
  head_dim = get("attention.key_length", hidden_size // num_heads)
  rope = {"rope_type": "default", "rope_theta": float(get("rope.freq_base", 10000.0))}
  scaling = get("rope.scaling.type", "none")
  if scaling == "linear":
    rope.update(rope_type="linear", factor=float(get("rope.scaling.factor")))
  elif scaling != "none":
    raise UserError(f"checkpoint {path}: GGUF rope scaling {scaling!r} is not supported; supported: none, linear")
  if "rope_freqs.weight" in tensor_names:
    if scaling != "none":
      raise UserError(f"checkpoint {path}: GGUF rope scaling {scaling!r} with rope_freqs.weight is not supported; "
                      "supported: rope_freqs.weight alone (rope.scaling.type none)")
    divisors = _rope_freqs(path, head_dim)
    rope.update(rope_type="longrope", short_factor=divisors, long_factor=divisors, attention_factor=1.0, factor=1.0,
                original_max_position_embeddings=get("context_length", 2048))
  vocab_size = get("vocab_size") or len(values["tokenizer.ggml.tokens"])
  config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                  "qwen3": transformers.Qwen3Config}[architecture]
  return config_class(
      vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=get("feed_forward_length"),
      num_hidden_layers=get("block_count"), num_attention_heads=num_heads,
      num_key_value_heads=get("attention.head_count_kv", num_heads),
      head_dim=head_dim,
      rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
      max_position_embeddings=get("context_length", 2048), rope_parameters=rope,
      tie_word_embeddings="output.weight" not in tensor_names,
      bos_token_id=values.get("tokenizer.ggml.bos_token_id"), eos_token_id=_one_or_list(stop_token_ids(values)),
      pad_token_id=values.get("tokenizer.ggml.padding_token_id"))


def _rope_freqs(path: str, head_dim: int) -> list[float]:
  """The divisors of the RoPE frequencies in rope_freqs.weight (float32 [head_dim / 2])."""
  import gguf  # pylint: disable=g-import-not-at-top
  tensor = read(path).tensors["rope_freqs.weight"]
  if tensor.type_name not in ("F32", "F16") or tensor.shape != (head_dim // 2,):
    raise UserError(f"checkpoint {path}: tensor rope_freqs.weight of type {tensor.type_name} and shape "
                    f"{tensor.shape} is not supported; supported: F32 or F16 of shape ({head_dim // 2},)")
  values = gguf.quants.dequantize(tensor.data, gguf.GGMLQuantizationType[tensor.type_name])
  return [float(value) for value in np.asarray(values, np.float32).reshape(-1)]


def rope_divisors(rope: llama.Rope) -> np.ndarray | None:
  """rope_freqs.weight of a Rope (float32 [head_dim / 2]) as llama.cpp's converter writes it for a llama3
  rope_scaling (1 for short wavelengths, factor for long ones, 1 / ((1 - smooth) / factor + smooth) between), and
  for a longrope with equal factor lists and attention factor 1 (what `hf_config` reads rope_freqs as); None for the
  other RoPE types."""
  if rope.rope_type == "longrope" and rope.short_factor == rope.long_factor and rope.attention_factor == 1.0:
    return np.asarray(rope.short_factor, np.float32)
  if rope.rope_type != "llama3":
    return None
  frequencies = 1.0 / rope.theta ** (np.arange(0, rope.head_dim, 2, dtype=np.float32) / rope.head_dim)
  original = rope.original_max_position_embeddings
  divisors = []
  for frequency in frequencies:
    wavelength = 2 * np.pi / frequency
    if wavelength < original / rope.high_freq_factor:
      divisors.append(1.0)
    elif wavelength > original / rope.low_freq_factor:
      divisors.append(rope.factor)
    else:
      smooth = (original / wavelength - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
      divisors.append(1 / ((1 - smooth) / rope.factor + smooth))
  return np.asarray(divisors, np.float32)


def _one_or_list(ids: list[int]):
  """A config's eos_token_id: None, one id, or the list of several."""
  return None if not ids else ids[0] if len(ids) == 1 else ids


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
  """A GGUF file's tensors by transformers' names, dequantized to float32 one at a time, q/k rows unpermuted (GGUF
  architecture "llama")."""

  def __init__(self, path: str, config):
    self._path = path
    self._tensors = {}
    for tensor in read(path).tensors.values():
      name = hf_tensor_name(tensor.name)
      if name is not None:
        self._tensors[name] = tensor
    permuted = read(path).metadata.get("general.architecture") == "llama"
    self._heads = {"self_attn.q_proj": config.num_attention_heads,
                   "self_attn.k_proj": config.num_key_value_heads} if permuted else {}

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


# The tensor types `write` offers: GGUF file type name -> (gguf.GGMLQuantizationType name, gguf.LlamaFileType name).
WRITE_TYPES = {"f32": ("F32", "ALL_F32"), "f16": ("F16", "MOSTLY_F16"), "q8_0": ("Q8_0", "MOSTLY_Q8_0")}
_GLOBAL_GGUF_NAMES = {hf_name: stem for stem, hf_name in GLOBAL_TENSOR_NAMES.items()}
_LAYER_GGUF_NAMES = {hf_name: stem for stem, hf_name in LAYER_TENSOR_NAMES.items()}
_HF_TENSOR_NAME = re.compile(r"^(?:model\.layers\.(\d+)\.)?(.+)\.(weight|bias)$")


def gguf_tensor_name(hf_name: str) -> str | None:
  """The inverse of `hf_tensor_name`: "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"; None for a
  tensor GGUF has no name for."""
  layer, stem, leaf = _HF_TENSOR_NAME.match(hf_name).groups()
  if layer is None:
    return f"{_GLOBAL_GGUF_NAMES[stem]}.{leaf}" if stem in _GLOBAL_GGUF_NAMES else None
  return f"blk.{layer}.{_LAYER_GGUF_NAMES[stem]}.{leaf}" if stem in _LAYER_GGUF_NAMES else None


def permute_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """The inverse of `unpermute_rows` (llama.cpp's converter's permutation of q_proj / k_proj rows): within each head,
  rows (0 .. head_dim/2, head_dim/2 ..) become (0, 2, 4, ..., 1, 3, 5, ...)."""
  head_dim = weight.shape[0] // num_heads
  return weight.reshape(num_heads, 2, head_dim // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def writable(config) -> str | None:
  """Why a transformers config cannot be written as GGUF (and read back by `from_pretrained`), or None when it can:
  a Llama, Mistral, Qwen2 or Qwen3 model without sliding windows, Llama's optional biases, or RoPE scaling other
  than linear, llama3 (written as rope_freqs, architecture llama) or what rope_freqs reads back as."""
  model_type = config.model_type
  if model_type not in WRITE_ARCHITECTURES:
    return f"model_type {model_type!r} is not one of {', '.join(WRITE_ARCHITECTURES)}"
  dims = llama.dims_from_config(config, "")
  if any(window is not None for window in dims.sliding_windows):
    return "a layer attends through a sliding window, which GGUF does not record"
  for option in ("attention_bias", "mlp_bias"):
    if getattr(config, option, False):
      return f"{option}=True, which GGUF as kd_jax reads it does not record"
  if dims.rope.rope_type not in ("default", "linear") and (
      rope_divisors(dims.rope) is None or WRITE_ARCHITECTURES[model_type] != "llama"):
    return (f"rope type {dims.rope.rope_type!r} is not one GGUF records: default, linear, or (architecture llama) "
            "llama3 and longrope with equal factor lists and attention factor 1 as rope_freqs")
  return None


def write(path: str, config, tensors: dict[str, np.ndarray], tokenizer, file_type: str) -> None:
  """Writes a Llama-family model as GGUF.

  Args:
    path: the .gguf file to write.
    config: its transformers config (`writable(config)` is None).
    tensors: {transformers tensor name: array in PyTorch layout} (weights.to_tensors).
    tokenizer: its transformers tokenizer, byte-level BPE (tokenizer.ggml.model "gpt2").
    file_type: a key of WRITE_TYPES; 1-D tensors (norms) stay float32, and Q8_0 keeps rows whose length is not a
      multiple of its 32-value blocks in float16, as llama.cpp's converter does.
  """
  import gguf  # pylint: disable=g-import-not-at-top
  tensor_type, llama_file_type = WRITE_TYPES[file_type]
  tensor_type = gguf.GGMLQuantizationType[tensor_type]
  head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
  rope = llama.rope_from_config(config, head_dim, path)
  num_kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
  architecture = WRITE_ARCHITECTURES[config.model_type]
  writer = gguf.GGUFWriter(path, architecture)
  writer.add_type(gguf.GGUFType.MODEL)
  writer.add_name(os.path.splitext(os.path.basename(path))[0])
  writer.add_context_length(config.max_position_embeddings)
  writer.add_embedding_length(config.hidden_size)
  writer.add_block_count(config.num_hidden_layers)
  writer.add_feed_forward_length(config.intermediate_size)
  writer.add_head_count(config.num_attention_heads)
  writer.add_head_count_kv(num_kv_heads)
  writer.add_key_length(head_dim)
  writer.add_value_length(head_dim)
  writer.add_rope_dimension_count(head_dim)
  writer.add_rope_freq_base(rope.theta)
  if rope.rope_type == "linear":
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    writer.add_rope_scaling_factor(rope.factor)
  writer.add_layer_norm_rms_eps(config.rms_norm_eps)
  writer.add_vocab_size(config.vocab_size)
  writer.add_file_type(gguf.LlamaFileType[llama_file_type])
  _add_tokenizer(writer, tokenizer, config.vocab_size)
  divisors = rope_divisors(rope)
  if divisors is not None:
    writer.add_tensor("rope_freqs.weight", divisors)
  heads = {"attn_q": config.num_attention_heads, "attn_k": num_kv_heads} if architecture == "llama" else {}
  for hf_name, array in tensors.items():
    name = gguf_tensor_name(hf_name)
    assert name is not None, f"tensor {hf_name} has no GGUF name"
    array = np.asarray(array, np.float32)
    if name.split(".")[-2] in heads:
      array = permute_rows(array, heads[name.split(".")[-2]])
    quantized = tensor_type == gguf.GGMLQuantizationType.Q8_0
    if array.ndim == 1 or tensor_type == gguf.GGMLQuantizationType.F32:
      writer.add_tensor(name, array)
    elif quantized and array.shape[-1] % gguf.GGML_QUANT_SIZES[tensor_type][0] == 0:  # rows of whole blocks
      writer.add_tensor(name, gguf.quants.quantize(array, tensor_type), raw_dtype=tensor_type)
    else:
      writer.add_tensor(name, array.astype(np.float16))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
  """tokenizer.ggml.* and tokenizer.chat_template of a byte-level BPE tokenizer, as llama.cpp's converter writes them:
  every id below vocab_size (unused ones as [PAD<id>]), added special tokens as control tokens, the merges."""
  import gguf  # pylint: disable=g-import-not-at-top
  state = json.loads(tokenizer.backend_tokenizer.to_str())
  if state["model"]["type"] != "BPE":
    raise UserError(f"GGUF export writes byte-level BPE tokenizers (tokenizer.ggml.model 'gpt2'); this tokenizer's "
                    f"model is {state['model']['type']}")
  by_id = {token_id: token for token, token_id in tokenizer.get_vocab().items()}
  added = {token.content: token for token in tokenizer.added_tokens_decoder.values()}
  tokens, types = [], []
  for token_id in range(vocab_size):
    token = by_id.get(token_id)
    if token is None:
      tokens.append(f"[PAD{token_id}]")
      types.append(gguf.TokenType.UNUSED)
    else:
      tokens.append(token)
      types.append(gguf.TokenType.NORMAL if token not in added else
                   gguf.TokenType.CONTROL if added[token].special else gguf.TokenType.USER_DEFINED)
  merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in state["model"]["merges"]]
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre("gpt-2")
  writer.add_token_list(tokens)
  writer.add_token_types(types)
  writer.add_token_merges(merges)
  for key, token in (("bos", tokenizer.bos_token), ("eos", tokenizer.eos_token), ("unk", tokenizer.unk_token),
                     ("pad", tokenizer.pad_token)):
    if token is not None:
      getattr(writer, f"add_{key}_token_id")(tokenizer.convert_tokens_to_ids(token))
  starts_with_bos = tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]
  writer.add_add_bos_token(bool(starts_with_bos))
  if tokenizer.chat_template:
    writer.add_chat_template(tokenizer.chat_template)
