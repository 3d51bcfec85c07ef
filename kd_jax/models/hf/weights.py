"""Pretrained weights of Hugging Face checkpoints: finding the directory, reading its tensors, converting them into Flax
parameters (the checkpoints of our own training are kd_jax/training/checkpointing.py's).

A checkpoint is a directory with config.json and one of model.safetensors, a sharded model.safetensors.index.json
or flax_model.msgpack; a hub id is resolved to such a directory in huggingface_hub's cache. Tensors are read one at a
time in PyTorch layout (Linear weights [out, in]) and converted straight into the parameter dtype, so the host
never holds a second full copy of the weights.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
from typing import Any, Callable, Iterator, Mapping

import flax.linen as nn
import flax.serialization
import jax
import numpy as np
import safetensors

from kd_jax.errors import UserError

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
MSGPACK_FILE = "flax_model.msgpack"


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A Flax model built for one checkpoint and task, and how its parameters are found in the checkpoint.

  A parameter at path (a, b, ..., leaf) is the tensor named "a.b....weight" (leaf "kernel", transposed; "embedding";
  "scale"; "weight") or "a.b....bias".
  """
  module: nn.Module
  # The transformers class whose checkpoints `module` reads, for messages ("BertForSequenceClassification").
  class_name: str
  # Keyword inputs of `module` (any values, shapes and dtypes only) for deriving the parameter shapes.
  example_inputs: Mapping[str, Any]
  # Prefix of the base model's tensors ("bert"), absent from checkpoints of the bare base model ("" for none).
  base_prefix: str
  # Tensor-name prefixes of the task head, freshly initialized when the checkpoint has none of them.
  head_prefixes: tuple[str, ...] = ()
  # Other names under which a tensor may be saved, tried in order when the tensor's own name is absent.
  tensor_aliases: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  # (checkpoint tensor name, tensor) -> the tensor in the layout `module` holds it (same shape), for a family whose
  # module orders a tensor's entries otherwise than its checkpoint (GPT-2's fused c_attn); None: as saved. And its
  # inverse, for writing checkpoints (`in_checkpoint_layout`).
  to_module_layout: Callable[[str, np.ndarray], np.ndarray] | None = None
  to_checkpoint_layout: Callable[[str, np.ndarray], np.ndarray] | None = None


def resolve(name_or_path: str) -> pathlib.Path:
  """The local directory of a checkpoint: `name_or_path` itself, or the hub id's snapshot in the hub cache.

  Downloads config.json, the *.json index/tokenizer files, chat templates (*.jinja) and the safetensors weights
  (flax_model.msgpack only when the repository has no safetensors) through huggingface_hub, which honors
  HF_HUB_OFFLINE and HF_HUB_CACHE.
  """
  if os.path.isdir(name_or_path):
    return pathlib.Path(name_or_path)
  import huggingface_hub  # pylint: disable=g-import-not-at-top  (only hub ids need it)
  from huggingface_hub import errors  # pylint: disable=g-import-not-at-top
  try:
    directory = pathlib.Path(huggingface_hub.snapshot_download(name_or_path, allow_patterns=["*.json", "*.jinja",
                                                                                             "*.safetensors"]))
    if not (directory / SAFETENSORS_FILE).exists() and not (directory / SAFETENSORS_INDEX_FILE).exists():
      huggingface_hub.hf_hub_download(name_or_path, MSGPACK_FILE)
  except errors.HFValidationError:
    raise UserError(f"checkpoint {name_or_path} is neither a local directory nor a valid hub id") from None
  except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, errors.RepositoryNotFoundError,
          errors.EntryNotFoundError, OSError) as error:
    reason = "offline mode: HF_HUB_OFFLINE=1" if huggingface_hub.constants.is_offline_mode() else (
        type(error).__name__)
    raise UserError(
        f"checkpoint {name_or_path} is not a local directory and could not be fetched from the Hugging Face hub "
        f"({reason}): download it where there is network "
        f"(hf download {name_or_path}) or point the checkpoint at a local directory with config.json and "
        f"model.safetensors (none at {os.path.abspath(name_or_path)})") from None
  return directory


def read_config(directory: pathlib.Path, checkpoint: str) -> dict[str, Any]:
  """The parsed config.json of a checkpoint directory."""
  path = directory / CONFIG_FILE
  if not path.exists():
    raise UserError(f"checkpoint {checkpoint} has no {CONFIG_FILE} in {directory}")
  with path.open() as f:
    return json.load(f)


class TensorSource:
  """The tensors of a checkpoint by name, in PyTorch layout, read one at a time."""

  def names(self) -> set[str]:
    raise NotImplementedError

  def shape(self, name: str) -> tuple[int, ...]:
    raise NotImplementedError

  def get(self, name: str) -> np.ndarray:
    raise NotImplementedError


class SafetensorsSource(TensorSource):
  """model.safetensors, or the shards listed by model.safetensors.index.json; files are memory-mapped."""

  def __init__(self, files_by_name: Mapping[str, pathlib.Path], stack: contextlib.ExitStack):
    self._files_by_name = files_by_name
    self._handles = {path: stack.enter_context(safetensors.safe_open(path, framework="numpy"))
                     for path in set(files_by_name.values())}

  def names(self) -> set[str]:
    return set(self._files_by_name)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._handles[self._files_by_name[name]].get_slice(name).get_shape())

  def get(self, name: str) -> np.ndarray:
    return self._handles[self._files_by_name[name]].get_tensor(name)


class MsgpackSource(TensorSource):
  """flax_model.msgpack of transformers' former Flax models, renamed to PyTorch names and layout.

  msgpack cannot be read lazily, so the restored arrays are held until each is converted (and then dropped).
  """
  _LEAF_RENAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight"}

  def __init__(self, path: pathlib.Path):
    state = flax.serialization.msgpack_restore(path.read_bytes())
    if set(state) == {"params"}:
      state = state["params"]
    self._arrays = {}
    for path_keys, array in jax.tree_util.tree_flatten_with_path(state)[0]:
      keys = [str(key.key) for key in path_keys]
      if keys[-1] == "kernel":
        array = array.T  # Flax Dense kernels are [in, out]; PyTorch Linear weights [out, in].
      keys[-1] = self._LEAF_RENAMES.get(keys[-1], keys[-1])
      self._arrays[".".join(keys)] = array

  def names(self) -> set[str]:
    return set(self._arrays)

  def shape(self, name: str) -> tuple[int, ...]:
    return self._arrays[name].shape

  def get(self, name: str) -> np.ndarray:
    return self._arrays.pop(name)


@contextlib.contextmanager
def open_tensors(directory: pathlib.Path, checkpoint: str) -> Iterator[TensorSource]:
  """The checkpoint's tensors, from the first of model.safetensors, its sharded index, flax_model.msgpack."""
  with contextlib.ExitStack() as stack:
    if (directory / SAFETENSORS_FILE).exists():
      with safetensors.safe_open(directory / SAFETENSORS_FILE, framework="numpy") as f:
        names = list(f.keys())
      yield SafetensorsSource({name: directory / SAFETENSORS_FILE for name in names}, stack)
    elif (directory / SAFETENSORS_INDEX_FILE).exists():
      with (directory / SAFETENSORS_INDEX_FILE).open() as f:
        weight_map = json.load(f)["weight_map"]
      missing_shards = sorted({shard for shard in weight_map.values() if not (directory / shard).exists()})
      if missing_shards:
        raise UserError(f"checkpoint {checkpoint}: {SAFETENSORS_INDEX_FILE} lists missing shard(s) "
                        f"{', '.join(missing_shards)}")
      yield SafetensorsSource({name: directory / shard for name, shard in weight_map.items()}, stack)
    elif (directory / MSGPACK_FILE).exists():
      yield MsgpackSource(directory / MSGPACK_FILE)
    else:
      raise UserError(f"checkpoint {checkpoint} has no weights: none of {SAFETENSORS_FILE}, "
                      f"{SAFETENSORS_INDEX_FILE}, {MSGPACK_FILE} in {directory}")


def tensor_name(path: tuple[str, ...]) -> str:
  """The checkpoint name of a parameter: ("bert", "encoder.layer.0.output.dense", "kernel") ->
  "bert.encoder.layer.0.output.dense.weight"."""
  leaf = path[-1]
  return ".".join(path[:-1] + ("bias" if leaf == "bias" else "weight",))


def to_tensors(params) -> dict[str, np.ndarray]:
  """The inverse of `load_params`: {checkpoint tensor name: host array in PyTorch layout} of a parameter tree (kernels
  transposed to [out, in], every other leaf as it is, in its own dtype), what model.safetensors holds."""
  tensors = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = tuple(str(key.key) for key in path)
    array = np.asarray(jax.device_get(leaf))
    tensors[tensor_name(keys)] = np.ascontiguousarray(array.T if keys[-1] == "kernel" else array)
  return tensors


def in_checkpoint_layout(architecture: Architecture, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`to_tensors`' tensors with those that `architecture`'s module holds in another layout than its checkpoints
  (Architecture.to_checkpoint_layout: GPT-2's fused c_attn) put back in the checkpoint's; the others as they are."""
  if architecture.to_checkpoint_layout is None:
    return tensors
  return {name: architecture.to_checkpoint_layout(name, tensor) for name, tensor in tensors.items()}


def _legacy_names(name: str) -> tuple[str, ...]:
  """Old BERT checkpoints (converted from TensorFlow) call LayerNorm's weight and bias gamma and beta."""
  if ".LayerNorm." not in name:
    return ()
  return (name.replace(".LayerNorm.weight", ".LayerNorm.gamma").replace(".LayerNorm.bias", ".LayerNorm.beta"),)


def load_params(architecture: Architecture, source: TensorSource, *, checkpoint: str, param_dtype,
                rng: jax.Array) -> dict[str, Any]:
  """The parameters of `architecture.module` read from `source`, cast to `param_dtype` tensor by tensor.

  Head parameters (architecture.head_prefixes) absent from the checkpoint are freshly initialized from `rng`.
  """
  module = architecture.module
  abstract_params = jax.eval_shape(lambda: module.init(jax.random.key(0), **architecture.example_inputs))["params"]
  available = source.names()
  prefix = architecture.base_prefix + "."
  # A checkpoint of the bare base model (BertModel) names its tensors without the prefix of the task models.
  strip_prefix = bool(architecture.base_prefix) and not any(name.startswith(prefix) for name in available)

  def own_name(path) -> str:
    name = tensor_name(path)
    return name[len(prefix):] if strip_prefix and name.startswith(prefix) else name

  def checkpoint_names(path) -> tuple[str, ...]:
    name = own_name(path)
    candidates = (name,) + tuple(architecture.tensor_aliases.get(name, ())) + _legacy_names(name)
    return tuple(candidate for candidate in candidates if candidate in available)

  flat_abstract = {tuple(str(key.key) for key in path): leaf
                   for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
  fresh_paths = [path for path in flat_abstract
                 if tensor_name(path).startswith(architecture.head_prefixes) and not checkpoint_names(path)]
  flat_params = _init_subset(architecture, fresh_paths, param_dtype, rng) if fresh_paths else {}

  for path, abstract in flat_abstract.items():
    if path in flat_params:
      continue
    names = checkpoint_names(path)
    if not names:
      raise UserError(f"checkpoint {checkpoint} has no tensor {own_name(path)} expected by {architecture.class_name}")
    tensor = source.get(names[0])
    if architecture.to_module_layout is not None:
      tensor = architecture.to_module_layout(names[0], tensor)
    is_kernel = path[-1] == "kernel"
    expected_shape = abstract.shape[::-1] if is_kernel else abstract.shape
    if tensor.shape != expected_shape:
      raise UserError(f"checkpoint {checkpoint}: tensor {names[0]} has shape {list(tensor.shape)}, "
                      f"{architecture.class_name} expects {list(expected_shape)}")
    flat_params[path] = jax.device_put(np.ascontiguousarray(tensor.T if is_kernel else tensor, dtype=param_dtype))
    del tensor  # Free this tensor's host copy before reading the next.
  return _unflatten(flat_params)


def _init_subset(architecture: Architecture, paths, param_dtype, rng) -> dict[tuple[str, ...], jax.Array]:
  """Freshly initialized parameters at `paths` only: XLA prunes the initializers of all others."""
  module = architecture.module

  def init_subset(rng):
    params = module.init(rng, **architecture.example_inputs)["params"]
    flat = {tuple(str(key.key) for key in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    return {path: flat[path].astype(param_dtype) for path in paths}

  return jax.jit(init_subset)(rng)


def _unflatten(flat_params: Mapping[tuple[str, ...], jax.Array]) -> dict[str, Any]:
  """{("a", "b"): x} -> {"a": {"b": x}}."""
  params: dict[str, Any] = {}
  for path, value in flat_params.items():
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return params

