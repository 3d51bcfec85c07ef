"""Model registry: configs name a model (`config.student.name="mlp"`), each model module knows how to build itself.

Every registered module exposes

    create(model_config, *, num_classes, example_inputs, rng) -> (flax module, params)

and the returned module is called as

    module.apply({"params": params}, inputs, train=bool, rngs={"dropout": key})

where `inputs` is a batch's `Examples.inputs` (a float array [batch, features] for the MLP tasks, [batch, height,
width, channels] for the image tasks (the MLP flattens them), a dict of token arrays for text) and the result is
logits ([batch, num_classes] for classification): the model protocol, which kd_jax/models/protocol.py states.
A config may also name a user's model, `package.module:factory` or `path/to/file.py:factory`, whose factory returns
a Flax NNX module, a Linen module or an (init_fn, apply_fn) pair; protocol.py adapts it.
Modules are imported on first use so that `import kd_jax` stays cheap.
"""

import dataclasses
import functools
import importlib
import os

from kd_jax import files
from kd_jax.config import schema
from kd_jax.errors import ConfigError, require

_MODEL_MODULES = {
    "mlp": "kd_jax.models.mlp",
    "cnn": "kd_jax.models.cnn",
    "hf": "kd_jax.models.hf",
}


def names() -> tuple[str, ...]:
  """The model names a config may use."""
  return tuple(_MODEL_MODULES)


def create(model_config, *, num_classes: int, example_inputs, rng, field: str = "model"):
  """Builds the model named by `model_config.name` and its initial (or pretrained) parameters.

  Args:
    model_config: the `config.teacher` or `config.student` section.
    num_classes: size of the classifier output.
    example_inputs: one batch of inputs (shapes and dtypes only matter), used to initialize parameters.
    rng: PRNG key for freshly initialized parameters.
    field: the config path of `model_config`, for error messages.

  Returns:
    (module, params).
  """
  if schema.is_user_model(model_config.name):
    from kd_jax.models import protocol  # pylint: disable=g-import-not-at-top  (flax.nnx: only when used)
    model, params = protocol.create(model_config, num_classes=num_classes, example_inputs=example_inputs, rng=rng,
                                    field=f"{field}.name")
    return _canonical(model), params
  if model_config.name not in _MODEL_MODULES:
    raise ConfigError(f"{field}.name", model_config.name, f"allowed: {', '.join(names())}")
  module = importlib.import_module(_MODEL_MODULES[model_config.name])
  model, params = module.create(model_config, num_classes=num_classes, example_inputs=example_inputs, rng=rng)
  return _canonical(model), params


def create_student(student_config, *, num_classes: int, example_inputs, rng, teacher_model=None,
                   teacher_params=None):
  """The student of config.student and its initial parameters: from the registry (`create`), or built from the
  teacher's layers `student_config.init_from_teacher_layers` (kd_jax/models/hf/from_teacher.py: the teacher model and
  its trained parameters are then required), with LoRA adapters when `student_config.lora.rank` > 0 (peft.py).

  Which of its parameters train is `peft.of_student(student_config)`; `peft.plain_model` and
  `peft.plain_params` give what evaluation sees.
  """
  if student_config.init_from_teacher_layers is not None:
    from kd_jax.models.hf import from_teacher  # pylint: disable=g-import-not-at-top
    model, params = from_teacher.create(teacher_model, teacher_params, tuple(student_config.init_from_teacher_layers),
                                        dtype=student_config.dtype, param_dtype=student_config.param_dtype,
                                        dropout=student_config.get("hf_dropout"))
  else:
    model, params = create(student_config, num_classes=num_classes, example_inputs=example_inputs, rng=rng,
                           field="student")
  from kd_jax.models import peft  # pylint: disable=g-import-not-at-top
  if student_config.lora.rank:
    model, params = peft.with_adapters(model, params, student_config.lora, rng)
  peft.check_trainable(student_config, params)
  return _canonical(model), params


def check_user_model(config, section: str):
  """What the factory of a user's model config[section].name (protocol.py) returns, built once before anything is
  written: ConfigError for a missing module, file or factory, a factory that raises, or a return that is not a
  model. None for the built-in models."""
  model_config = config[section]
  if not schema.is_user_model(model_config.name):
    return None
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  from kd_jax.models import protocol  # pylint: disable=g-import-not-at-top
  return protocol.build(model_config, num_classes=data.num_classes(config), field=f"{section}.name")


def remat_options() -> tuple[str, ...]:
  """The values of config.train.remat this jax offers: 'none', 'block', and those of the schema's
  jax.checkpoint_policies names that it has."""
  import jax  # pylint: disable=g-import-not-at-top  (kept out of `import kd_jax`)
  return tuple(name for name in schema.REMAT_OPTIONS
               if name in ("none", "block") or hasattr(jax.checkpoint_policies, name))


def check_config(config, section: str) -> None:
  """config[section]'s model ('teacher' or 'student') against the data, checkpoints and jax it meets: a CNN's blocks
  fit the images; the student's train.remat is a policy this jax has; a student built from the teacher's layers, or
  with LoRA adapters, fits the shapes of the checkpoint it starts from (read from its config.json, without loading
  weights)."""
  model_config = config[section]
  built = check_user_model(config, section)
  if model_config.name == "cnn":
    importlib.import_module(_MODEL_MODULES["cnn"]).check_blocks(model_config, section)
  if section != "student":
    return
  options = remat_options()
  require(config.train.remat in options, "train.remat", config.train.remat, f"allowed: {', '.join(options)}")
  if built is not None:
    from kd_jax import data  # pylint: disable=g-import-not-at-top
    _check_user_student(model_config, built, packing=config.data.packing, example_inputs=data.example_inputs(config))
    return
  if config.train.scan_layers:
    _check_scanned_family(config)
  if model_config.init_from_teacher_layers is None and not model_config.lora.rank:
    return
  from kd_jax.models.hf import from_teacher, pretrained  # pylint: disable=g-import-not-at-top  (jax, transformers)
  teacher = config.teacher
  layers = model_config.init_from_teacher_layers
  if layers is not None:
    abstract = pretrained.abstract_params(teacher.checkpoint, teacher.task or "sequence_classification")
    depth = min(from_teacher.stack_depths(abstract).values())
    require(max(layers) < depth, "student.init_from_teacher_layers", tuple(layers),
            f"teacher layer indices must be < {depth}, the depth of teacher.checkpoint={teacher.checkpoint!r}")
  else:
    abstract = pretrained.abstract_params(model_config.checkpoint, model_config.task or "sequence_classification")
  if model_config.lora.rank:
    from kd_jax.models import peft  # pylint: disable=g-import-not-at-top
    peft.check_rank(model_config.lora, abstract)


def _check_scanned_family(config) -> None:
  """train.scan_layers on an HF student (config rules checked the fields): the checkpoint its module is built from
  (the teacher's, for a student of the teacher's layers) is of the Llama family (config.json or GGUF metadata, no
  weights), so that a GPT-2 student is refused before anything is written, not when its step is built."""
  from kd_jax.models.hf import llama, pretrained  # pylint: disable=g-import-not-at-top  (jax, transformers)
  section = "teacher" if config.student.init_from_teacher_layers is not None else "student"
  checkpoint = config[section].checkpoint
  family, _ = pretrained.family_and_config(checkpoint, "causal_lm")
  require(family is llama, "train.scan_layers", True, f"{schema.SCAN_LAYERS_NEEDS}; {section}.checkpoint="
          f"{checkpoint!r}, which the student is built from, is of the {family.__name__.rsplit('.', 1)[-1]} "
          "family: use False")


def _check_user_student(student_config, built, *, packing: bool, example_inputs) -> None:
  """LoRA and freezing on a user's student (what its factory returned): no LoRA dropout where the adapters are merged
  (protocol.merges_adapters); where its parameter shapes are known before it is initialized (an NNX module; a Linen
  module or a function pair traced on the task's `example_inputs`, data.example_inputs), the targets and rank fit
  its linear layers and student.trainable selects some of its parameters. A causal LM trained on packed rows
  (data.packing) takes their segment_ids and position_ids."""
  from kd_jax.models import peft, protocol  # pylint: disable=g-import-not-at-top
  if packing and protocol.is_causal_lm(student_config):
    missing = [name for name in ("segment_ids", "position_ids") if name not in protocol.call_input_names(built)]
    require(not missing, "data.packing", packing, f"needs a student whose call takes segment_ids and position_ids "
            f"(packed rows: attention within each example, positions restarting); {student_config.name!r} does not "
            f"take {' or '.join(missing)}")
  lora = student_config.lora
  require(not (lora.rank and lora.dropout and protocol.merges_adapters(built)), "student.lora.dropout", lora.dropout,
          "must be 0 for an NNX or (init_fn, apply_fn) student: its adapters are merged into the weights before each "
          "call (dropout on x A B needs a Linen module)")
  params = protocol.abstract_params(built, student_config, example_inputs)
  if params is None:
    return
  if lora.rank:
    peft.check_rank(lora, params)
  else:
    peft.check_trainable(student_config, params)


def check_tensor_parallel(config, section: str, tensor: int) -> None:
  """ConfigError unless config[section]'s model ('teacher' or 'student') declares its tensor-parallel placement and
  fits a tensor axis of `tensor` (> 1) devices: an HF checkpoint's family (pretrained.tensor_parallel_problem: its
  rules, its heads); a registry model without rules (MLP, CNN) is refused rather than silently replicated."""
  model_config = config[section]
  built = check_user_model(config, section)
  if built is not None and getattr(built, "partition_rules", None) is not None:
    return  # the user's module declares its placement
  if model_config.name != "hf":
    raise ConfigError("mesh.tensor", config.mesh.tensor,
                      f"must be 1: {section}.name={model_config.name!r} declares no tensor-parallel placement (the HF "
                      "families do; mesh.fsdp splits any model's parameters)")
  checkpoint = model_config.checkpoint or (config.teacher.checkpoint if section == "student" else None)
  if checkpoint:
    from kd_jax.models.hf import pretrained  # pylint: disable=g-import-not-at-top  (transformers)
    problem = pretrained.tensor_parallel_problem(checkpoint, tensor, f"{section}.checkpoint")
    require(problem is None, "mesh.tensor", config.mesh.tensor, problem)


def partition_rules(model, mesh) -> tuple:
  """The tensor-parallel placement `model` declares for `mesh` ((regular expression, axes) pairs for
  sharding.param_spec, after config.mesh.rules): an HF model's family's (`partition_rules` beside its modules, e.g.
  kd_jax/models/hf/llama.py), a LoRA model's base's (its adapters follow their kernels: sharding.megatron_rules);
  () on a mesh whose tensor axis is 1. A model without rules on a larger tensor axis is a ConfigError (config
  validation refuses it first: `check_tensor_parallel`), never silently replicated."""
  from kd_jax.models import peft  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import sharding  # pylint: disable=g-import-not-at-top  (jax)
  tensor = dict(mesh.shape).get(sharding.TENSOR_AXIS, 1)
  if tensor == 1:
    return ()
  base = peft.plain_model(model)
  if getattr(base, "partition_rules", None) is None:
    raise ConfigError("mesh.tensor", tensor, f"must be 1: {type(base).__name__} declares no tensor-parallel placement")
  return tuple(base.partition_rules(tensor))


def num_layers(model_config) -> int | None:
  """The number of (hidden) layers of a teacher or student, where known from the config or a local checkpoint's
  config.json; None for hub ids (known once the model is loaded)."""
  if model_config.name == "mlp":
    return len(model_config.hidden_sizes)
  if model_config.get("init_from_teacher_layers") is not None:  # a student built from the teacher's layers
    return len(model_config.init_from_teacher_layers)
  path = os.path.join(model_config.checkpoint or "", "config.json")
  if not os.path.isfile(path):
    return None
  hf_config = files.read_json(path)
  return next((hf_config[key] for key in ("num_hidden_layers", "n_layers", "num_layers") if key in hf_config), None)


def num_decoder_layers(model_config) -> int | None:
  """The decoder layers of an encoder-decoder teacher or student (T5: config.json's num_decoder_layers, else its
  num_layers), where a local checkpoint's config.json tells; None otherwise (known once the model is loaded)."""
  path = os.path.join(model_config.get("checkpoint") or "", "config.json")
  if model_config.name != "hf" or not os.path.isfile(path):
    return None
  hf_config = files.read_json(path)
  if not hf_config.get("is_encoder_decoder"):
    return None
  return hf_config.get("num_decoder_layers") or hf_config.get("num_layers")


def with_remat(model, remat: str, attention_chunk: int = 0, scan_layers: bool = False):
  """`model` as it trains with config.train.remat = `remat` (kd_jax/models/hf/layers.rematerialized),
  config.train.attention_chunk (decoder-only LMs: layers.query_chunked) and config.train.scan_layers (the Llama
  family: llama.LlamaModel.scanned_layers): an HF model's module cloned with them (a LoRA model's base likewise); the
  same function of the same parameters. 'none', 0 and False: `model`. A module without scan_layers (another family,
  known only once a hub checkpoint is loaded) is refused with scan_layers."""
  if remat == "none" and not attention_chunk and not scan_layers:
    return model
  from kd_jax.models import peft  # pylint: disable=g-import-not-at-top
  if isinstance(model, peft.LoraModel):
    return _canonical(dataclasses.replace(model, base=with_remat(model.base, remat, attention_chunk, scan_layers)))
  assert hasattr(model.module, "remat"), f"{type(model.module).__name__} has no transformer blocks to rematerialize"
  fields = {"remat": remat}
  if attention_chunk:
    assert hasattr(model.module, "attention_chunk"), f"{type(model.module).__name__} has no attention_chunk"
    fields["attention_chunk"] = attention_chunk
  if scan_layers:
    require(hasattr(model.module, "scan_layers"), "train.scan_layers", scan_layers,
            f"{schema.SCAN_LAYERS_NEEDS}; the student is a {type(model.module).__name__}: use False")
    fields["scan_layers"] = True
  return _canonical(dataclasses.replace(model, module=model.module.clone(**fields)))


def with_attention_chunk(model, attention_chunk: int, scan_layers: bool = False):
  """A teacher as it runs forward only (an online teacher in the student's step, a top-k cache build) with
  config.train.attention_chunk and config.train.scan_layers: its module cloned with query-chunked attention and its
  layers as one scan where it has the fields (the decoder-only HF LMs; the Llama family), else as it is (remat does
  not apply: nothing is kept for a backward pass). A scanned teacher compiles one layer and holds one attention mask:
  unrolled, XLA kept each layer's copy of the mask and each layer's weights converted for its dots alive together
  (3.3 GiB of the Qwen3-0.6B-shaped KD step's plan, docs/benchmark.md)."""
  module = getattr(model, "module", None)
  attention_chunk = attention_chunk if hasattr(module, "attention_chunk") else 0
  scan_layers = scan_layers and hasattr(module, "scan_layers")
  if not attention_chunk and not scan_layers:
    return model
  return with_remat(model, "none", attention_chunk, scan_layers)


@functools.lru_cache(maxsize=32)
def compiled_init(module):
  """module.init compiled once per process and architecture (the runs of a sweep create the same models): for the
  registry's own flax modules (MLP, CNN), which are hashable by their fields."""
  import jax  # pylint: disable=g-import-not-at-top  (kept out of `import kd_jax`)
  return jax.jit(module.init)


def _canonical(model):
  """The first created model equal to `model`. Equal models are then one object, and so are their bound `apply`
  methods (compared by identity), which train states hold in their tree structure: the runs of a sweep reuse each
  other's compiled steps. A user's Linen module with unhashable fields (a list) stays its own object."""
  try:
    return _first_equal(model)
  except TypeError:
    return model


@functools.lru_cache(maxsize=64)
def _first_equal(model):
  return model


def from_pretrained(name_or_path: str, task: str = "sequence_classification", **kwargs):
  """A Hugging Face checkpoint (hub id, directory or llama.cpp .gguf file) as (Flax module, params); see
  kd_jax.models.hf.from_pretrained.

  task: "encoder", "sequence_classification", "seq2seq" or "causal_lm"; kwargs: num_labels, dtype, param_dtype, rng.
  """
  from kd_jax.models import hf  # pylint: disable=g-import-not-at-top  (jax, transformers: only when used)
  return hf.from_pretrained(name_or_path, task, **kwargs)


def load_exported(directory: str):
  """(model, params) of a model exported with `scripts/export.py --format=params` (a user's model, the MLP or the
  CNN): see kd_jax.models.export.load_exported."""
  from kd_jax.models import export  # pylint: disable=g-import-not-at-top
  return export.load_exported(directory)
