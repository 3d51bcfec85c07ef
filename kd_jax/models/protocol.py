"""The model protocol: what kd_jax needs from a model, and the adapters that give it to a user's Flax NNX module, Linen
module or (init_fn, apply_fn) pair.

A kd_jax model is a hashable object (it is static in the compiled steps: equal models share them) with

    apply(variables, inputs, train=False, rngs=None, **options) -> logits

- `variables` is {"params": params}; params is a nested dict of arrays with string keys. It is what the optimizer
  updates, orbax checkpoints store, sharding places (mesh.fsdp splits any of it), vectorized sweeps stack and vmap,
  and what LoRA, freezing (student.trainable) and sharding rules name by '/'-joined path ('conv1/kernel').
- `inputs` is a batch's `Examples.inputs`: [batch, features] (digits, synthetic), [batch, height, width, channels]
  (the image tasks), a dict of token arrays (text: HF models; causal LMs: user's models too, see below).
- `train` switches dropout on; `rngs` is then {"dropout": key}, the step's key of the example: the same key gives the
  same masks, so a resumed run redraws them bit for bit.
- The task kind fixes the logits: [batch, num_classes] for classification, [batch, length, vocab] for seq2seq
  decoders and causal LMs.
- options: `mutable=["intermediates"]` returns (logits, {"intermediates": {..., "hidden_states": (h_0, ..., h_L)}})
  for feature distillation (kd_jax/training/feature_losses.py; attention transfer adds `attention_logits`). HF
  models also take `project=False` (final hidden states, with `output_head(params)`: chunked losses) and declare
  `partition_rules(tensor)` (tensor parallelism).

The built-in models (kd_jax/models/mlp.py, cnn.py, hf/) are Linen modules: Linen's own apply is the protocol. A
user's model is named in a config as `package.module:factory` or `path/to/file.py:factory` (`load`); the factory
gets the model's config block (and, where its signature names them, `num_classes` and `rngs`: an nnx.Rngs seeded
by the run) and returns

- a flax.nnx.Module (`NnxModel`): split into its graph (static) and its nnx.Param state (the params dict); dropout
  draws from its RNG streams, reseeded from the step's key on every call; non-parameter state (BatchNorm's batch
  statistics, caches) is refused: a step applies the model one example at a time, where batch statistics do not
  exist.
- a flax.linen.Module (`LinenModel`) whose `__call__(inputs)` or `__call__(inputs, train=...)` takes the inputs.
- an (init_fn, apply_fn) pair (`FunctionModel`): init_fn(rng, example_inputs) -> params; apply_fn(params, inputs)
  -> logits, given `train=` and `rng=` (the dropout key, None when not training) where its signature names them.

A user's causal LM (config.<section>.task = 'causal_lm', data.name = 'causal_lm') is called with the token ids (its
`inputs` above are the input_ids; the optional inputs it names are keywords): `__call__(input_ids [batch, length])`
-> logits [batch, length, vocab_size], also given `attention_mask` (1 on the real tokens), `position_ids` and
`segment_ids` (packed rows, data.packing) where its signature names them. It must be causal (position t sees tokens
0..t): kd_jax right-pads every sequence, in training and in generation (kd_jax/models/generation.py recomputes the
whole prefix for each new token: it has no KV cache), so the padding never reaches a real token. The factory finds
the vocabulary size (the width of the teacher's logits) in the config block it gets, `config.vocab_size` (kd_jax adds
it to a copy of the block), and as `num_classes`.
"""

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
from flax import nnx

from kd_jax.errors import ConfigError

RETURNS = "a flax.nnx.Module, a flax.linen.Module or an (init_fn, apply_fn) pair"
# What a user's causal LM is given besides input_ids, where its call names them (the module docstring).
CAUSAL_LM_OPTIONAL_INPUTS = ("attention_mask", "position_ids", "segment_ids")


def _takes(function: Callable, name: str) -> bool:
  """Whether `function` can be called with the keyword `name`."""
  try:
    parameters = inspect.signature(function).parameters
  except (TypeError, ValueError):
    return False
  return name in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())


def causal_lm_input_names(call: Callable) -> tuple[str, ...]:
  """The inputs a user's causal LM `call` is given: input_ids, then each of CAUSAL_LM_OPTIONAL_INPUTS it names."""
  return ("input_ids",) + tuple(name for name in CAUSAL_LM_OPTIONAL_INPUTS if _takes(call, name))


def _call_inputs(inputs, input_names: tuple[str, ...]) -> tuple[tuple, dict]:
  """(positional, keyword) arguments of a user's model for a batch's `inputs`: the inputs themselves, or for a causal
  LM (`input_names` from causal_lm_input_names) the token ids and those of the optional inputs the batch holds."""
  if not input_names:
    return (inputs,), {}
  return (inputs[input_names[0]],), {name: inputs[name] for name in input_names[1:] if name in inputs}


def _string_keys(tree):
  """A nested dict with every key a string (an nnx.List's layers are 0, 1, ...: orbax restores them as '0', '1')."""
  return {str(key): _string_keys(value) for key, value in tree.items()} if isinstance(tree, dict) else tree


@functools.lru_cache(maxsize=32)
def _initializer(call: Callable) -> Callable:
  """rng -> (parameters, RNG streams) of the NNX module `call(rng)` builds, compiled once per `call`."""
  return jax.jit(lambda rng: nnx.split(call(rng), nnx.Param, nnx.RngState, ...)[1:3])


def _check_no_other_state(state, field: str, name: str) -> None:
  """ConfigError unless an NNX module's state outside its parameters, RNG streams and intermediates is empty."""
  if jax.tree.leaves(state):
    kinds = sorted({type(variable).__name__ for _, variable in nnx.to_flat_state(state)})
    raise ConfigError(field, name, f"the NNX module holds non-parameter state ({', '.join(kinds)}): kd_jax trains "
                      "parameters only, one example at a time, where batch statistics do not exist (use LayerNorm "
                      "or GroupNorm)")


@dataclasses.dataclass(frozen=True)
class NnxModel:
  """A Flax NNX module as a kd_jax model: apply merges the graph with the params (and its RNG streams, reseeded from
  the dropout key), calls it in train or eval mode (`nnx.view(deterministic=...)`, and `train=` where its
  `__call__` takes it), and returns its logits (with its sown nnx.Intermediate values on request)."""
  graphdef: Any  # nnx.GraphDef: the module's structure and static attributes (hashable)
  params_template: Any = dataclasses.field(compare=False)  # the nnx.Param state, shapes only
  rng_state: Any = dataclasses.field(compare=False)  # the RNG streams' keys and counts (reseeded before use)
  streams: tuple[str, ...] = ()
  takes_train: bool = False
  partition_rules: Callable | None = dataclasses.field(default=None, compare=False)
  input_names: tuple[str, ...] = ()  # a causal LM's (causal_lm_input_names); () passes the inputs whole

  @classmethod
  def create(cls, abstract: nnx.Module, call: Callable, rng, field: str, name: str,
             input_names: tuple[str, ...] = ()):
    """(NnxModel, params): the graph of `abstract` (the module built by `call(rng)`, shapes only), its parameters and
    RNG streams built by `call(rng)` compiled, called with `input_names` (a causal LM's). ConfigError for
    non-parameter state."""
    graphdef, _, _, _, rest = nnx.split(abstract, nnx.Param, nnx.RngState, nnx.Intermediate, ...)
    _check_no_other_state(rest, field, name)
    params, rng_state = _initializer(call)(rng)
    streams = tuple(sorted({variable.tag for _, variable in nnx.to_flat_state(rng_state)}))
    template = jax.tree.map(lambda value: jax.ShapeDtypeStruct(value.shape, value.dtype), params)
    model = cls(graphdef, template, rng_state, streams, _takes(type(abstract).__call__, "train"),
                getattr(abstract, "partition_rules", None), input_names)
    return model, _string_keys(nnx.to_pure_dict(params))

  def module(self, params, train: bool, dropout_key=None) -> nnx.Module:
    """The NNX module holding `params`, in train or eval mode, its RNG streams reseeded from `dropout_key`."""
    state = jax.tree.map(lambda value: value, self.params_template)  # a copy: replace_by_pure_dict writes into it
    nnx.replace_by_pure_dict(state, nnx.restore_int_paths(params))
    module = nnx.merge(self.graphdef, state, jax.tree.map(lambda value: value, self.rng_state))
    module = nnx.view(module, deterministic=not train, raise_if_not_found=False)
    if dropout_key is not None and self.streams:
      if not jax.dtypes.issubdtype(dropout_key.dtype, jax.dtypes.prng_key):
        dropout_key = jax.random.wrap_key_data(dropout_key)
      nnx.reseed(module, **{stream: jax.random.fold_in(dropout_key, i) for i, stream in enumerate(self.streams)})
    return module

  def apply(self, variables, inputs, train: bool = False, rngs=None, mutable=(), **options):
    module = self.module(variables["params"], train, (rngs or {}).get("dropout"))
    if self.takes_train:
      options["train"] = train
    args, keywords = _call_inputs(inputs, self.input_names)
    logits, intermediates = nnx.capture(lambda m, args, keywords: m(*args, **keywords, **options),
                                        nnx.Intermediate)(module, args, keywords)
    if "intermediates" not in mutable:
      return logits
    return logits, {"intermediates": nnx.to_pure_dict(intermediates)}


@dataclasses.dataclass(frozen=True)
class LinenModel:
  """A Linen module whose `__call__` takes the inputs (and `train=` where it names it) as a kd_jax model."""
  module: nn.Module
  takes_train: bool = False
  input_names: tuple[str, ...] = ()  # a causal LM's (causal_lm_input_names); () passes the inputs whole

  @property
  def partition_rules(self):
    return getattr(self.module, "partition_rules", None)

  def init_params(self, rng, example_inputs):
    rngs = {"params": rng, "dropout": jax.random.fold_in(rng, 1)}
    train = {"train": False} if self.takes_train else {}

    def init(rngs, inputs):
      args, keywords = _call_inputs(inputs, self.input_names)
      return self.module.init(rngs, *args, **keywords, **train)

    return jax.jit(init)(rngs, example_inputs)["params"]

  def apply(self, variables, inputs, train: bool = False, rngs=None, **options):
    if self.takes_train:
      options["train"] = train
    args, keywords = _call_inputs(inputs, self.input_names)
    return self.module.apply(variables, *args, rngs=rngs, **keywords, **options)


@dataclasses.dataclass(frozen=True)
class FunctionModel:
  """An (init_fn, apply_fn) pair as a kd_jax model (see the module docstring)."""
  init_fn: Callable
  apply_fn: Callable
  input_names: tuple[str, ...] = ()  # a causal LM's (causal_lm_input_names of apply_fn); () passes the inputs whole
  partition_rules = None

  def init_params(self, rng, example_inputs):
    (inputs,), _ = _call_inputs(example_inputs, self.input_names)  # a causal LM's init_fn gets its input_ids
    return _string_keys(jax.jit(self.init_fn)(rng, inputs))

  def apply(self, variables, inputs, train: bool = False, rngs=None, mutable=()):
    keywords = {}
    if _takes(self.apply_fn, "train"):
      keywords["train"] = train
    if _takes(self.apply_fn, "rng"):
      keywords["rng"] = (rngs or {}).get("dropout")
    args, inputs_by_name = _call_inputs(inputs, self.input_names)
    logits = self.apply_fn(variables["params"], *args, **inputs_by_name, **keywords)
    return (logits, {"intermediates": {}}) if "intermediates" in mutable else logits  # it sows nothing


def load_factory(name: str, field: str) -> Callable:
  """The factory `name` ('package.module:factory' or 'path/to/file.py:factory', a path relative to the working
  directory or absolute) names; ConfigError (on `field`) for a missing module, file or factory."""
  target, _, attribute = name.rpartition(":")
  if target.endswith(".py"):
    path = os.path.abspath(target)
    if not os.path.isfile(path):
      raise ConfigError(field, name, f"no such file {target!r} (a path relative to {os.getcwd()} or absolute)")
    module = _file_module(path, field, name)
  else:
    try:
      module = importlib.import_module(target)
    except ModuleNotFoundError as error:
      raise ConfigError(field, name, f"no module named {error.name!r} (give 'package.module:factory' importable from "
                        "here, or 'path/to/file.py:factory')") from None
    except Exception as error:  # pylint: disable=broad-except  (the user's module: its error, in one line)
      raise ConfigError(field, name, f"importing {target!r} raised {_one_line(error)}") from None
  factory = getattr(module, attribute, None)
  if not callable(factory):
    raise ConfigError(field, name, f"{target!r} has no factory {attribute!r} (a function of the model's config "
                      f"block returning {RETURNS})")
  return factory


_FILE_MODULES = {}


def _file_module(path: str, field: str, name: str):
  """The module of a Python file, executed once per process (its factories stay the same objects: equal models)."""
  if path not in _FILE_MODULES:
    module_name = "kd_jax_user_model_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
      spec.loader.exec_module(module)
    except Exception as error:  # pylint: disable=broad-except  (the user's file: its error, in one line)
      raise ConfigError(field, name, f"executing {path!r} raised {_one_line(error)}") from None
    _FILE_MODULES[path] = module
  return _FILE_MODULES[path]


def _one_line(error: BaseException) -> str:
  return f"{type(error).__name__}: " + " ".join(str(error).split())


def is_causal_lm(model_config) -> bool:
  """Whether a model config block describes a causal LM (its task 'causal_lm'): called with token ids (the module
  docstring)."""
  return model_config.get("task") == "causal_lm"


def _factory_call(model_config, *, num_classes: int, field: str) -> Callable:
  """call(rng) -> what the factory config.<section>.name names returns for `model_config` (given `num_classes` and
  `rngs=nnx.Rngs(rng)` where its signature names them; a causal LM's block with `vocab_size` = num_classes added):
  an nnx.Module, a linen.Module or an (init_fn, apply_fn) pair. ConfigError on `field` where it cannot be loaded,
  raises, or returns no model. Equal configs give the same `call` (the runs of a sweep compile an NNX module's
  initialization once: `_initializer`)."""
  if is_causal_lm(model_config):
    model_config = ml_collections.ConfigDict({**model_config.to_dict(), "vocab_size": num_classes})
  return _cached_factory_call(ml_collections.FrozenConfigDict(model_config), num_classes, field)


@functools.lru_cache(maxsize=32)
def _cached_factory_call(model_config, num_classes: int, field: str) -> Callable:
  name = model_config.name
  factory = load_factory(name, field)

  def call(rng):
    keywords = {}
    if _takes(factory, "num_classes"):
      keywords["num_classes"] = num_classes
    if _takes(factory, "rngs"):
      keywords["rngs"] = nnx.Rngs(rng)
    try:
      built = factory(model_config, **keywords)
    except Exception as error:  # pylint: disable=broad-except  (the user's factory: its error, in one line)
      raise ConfigError(field, name, f"the factory raised {_one_line(error)}") from None
    is_pair = isinstance(built, tuple) and len(built) == 2 and all(callable(f) for f in built)
    if not isinstance(built, (nnx.Module, nn.Module)) and not is_pair:
      raise ConfigError(field, name, f"the factory returned {type(built).__name__}, not a model: it must return "
                        f"{RETURNS}")
    return built

  return call


def _abstractly(call):
  """What `call(rng)` returns, an NNX module built abstractly (nnx.eval_shape: shapes, no arrays computed)."""
  others = []

  def build():
    built = call(jax.random.PRNGKey(0))
    if isinstance(built, nnx.Module):
      return built
    others.append(built)
    return None

  abstract = nnx.eval_shape(build)
  return others[0] if others else abstract


def build(model_config, *, num_classes: int, field: str):
  """What a user's factory returns (an NNX module abstractly: `_abstractly`), checked as `create` would check it,
  without computing its parameters: the preflight check (kd_jax/models check_user_model)."""
  built = _abstractly(_factory_call(model_config, num_classes=num_classes, field=field))
  if isinstance(built, nnx.Module):
    _check_no_other_state(nnx.state(built, nnx.Not(nnx.Any(nnx.Param, nnx.RngState, nnx.Intermediate))), field,
                          model_config.name)
  return built


def create(model_config, *, num_classes: int, example_inputs, rng, field: str):
  """(kd_jax model, initial params) of the user's model config.<section>.name names: an NNX module's parameters as
  its factory initializes them from `rng` (compiled), a Linen module's or a pair's from its init."""
  call = _factory_call(model_config, num_classes=num_classes, field=field)
  built = _abstractly(call)
  input_names = call_input_names(built) if is_causal_lm(model_config) else ()
  if isinstance(built, nnx.Module):
    return NnxModel.create(built, call, rng, field, model_config.name, input_names)
  model = _linen_or_function_model(built, input_names)
  return model, model.init_params(rng, example_inputs)


def _linen_or_function_model(built, input_names: tuple[str, ...]):
  """The kd_jax model of a Linen module or an (init_fn, apply_fn) pair a factory returned."""
  if isinstance(built, nn.Module):
    return LinenModel(built, _takes(type(built).__call__, "train"), input_names)
  return FunctionModel(*built, input_names)


def call_input_names(built) -> tuple[str, ...]:
  """The inputs what a factory returned (`build`) takes when it is a causal LM: causal_lm_input_names of its call."""
  return causal_lm_input_names(built[1] if isinstance(built, tuple) else type(built).__call__)


def abstract_params(built, model_config=None, example_inputs=None):
  """The params (shapes only) of what `build` returned, known before anything is initialized: an NNX module's from
  its abstract state; a Linen module's or an (init_fn, apply_fn) pair's from tracing its init on `example_inputs`
  (one example, data.example_inputs: None where the task's inputs are not known before it loads) without computing
  anything. None where neither is at hand."""
  if isinstance(built, nnx.Module):
    return _string_keys(nnx.to_pure_dict(nnx.state(built, nnx.Param)))
  if example_inputs is None or model_config is None:
    return None
  model = _linen_or_function_model(built, call_input_names(built) if is_causal_lm(model_config) else ())
  return jax.eval_shape(model.init_params, jax.random.PRNGKey(0), example_inputs)


def merges_adapters(model) -> bool:
  """Whether LoRA adapts `model` (a kd_jax model, or what a factory returned) by merging its adapters into the
  weights before each call, W + scale A B: NNX modules and function pairs, which Linen's method interception (that
  adds scale dropout(x) A B beside each adapted layer) cannot reach."""
  return isinstance(model, (NnxModel, FunctionModel, nnx.Module, tuple))
