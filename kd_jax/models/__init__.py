"""Model registry: configs name a model (`config.student.name="mlp"`), each model module knows how to build itself.

Every registered module exposes

    create(model_config, *, num_classes, example_inputs, rng) -> (flax module, params)

and the returned module is called as

    module.apply({"params": params}, inputs, train=bool, rngs={"dropout": key})

where `inputs` is a batch's `Examples.inputs` (a float array [batch, features] for the MLP tasks, [batch, height,
width, channels] for the image tasks (the MLP flattens them), a dict of token arrays for text) and the result is
logits ([batch, num_classes] for classification).
Modules are imported on first use so that `import kd_jax` stays cheap.
"""

import functools
import importlib

from kd_jax.errors import ConfigError

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
                                        dtype=student_config.dtype, param_dtype=student_config.param_dtype)
  else:
    model, params = create(student_config, num_classes=num_classes, example_inputs=example_inputs, rng=rng,
                           field="student")
  from kd_jax.models import peft  # pylint: disable=g-import-not-at-top
  if student_config.lora.rank:
    model, params = peft.with_adapters(model, params, student_config.lora, rng)
  peft.check_trainable(student_config, params)
  return _canonical(model), params


@functools.lru_cache(maxsize=32)
def compiled_init(module):
  """module.init compiled once per process and architecture (the runs of a sweep create the same models): for the
  registry's own flax modules (MLP, CNN), which are hashable by their fields."""
  import jax  # pylint: disable=g-import-not-at-top  (kept out of `import kd_jax`)
  return jax.jit(module.init)


@functools.lru_cache(maxsize=64)
def _canonical(model):
  """The first created model equal to `model`. Equal models are then one object, and so are their bound `apply`
  methods (compared by identity), which train states hold in their tree structure: the runs of a sweep reuse each
  other's compiled steps."""
  return model


def from_pretrained(name_or_path: str, task: str = "sequence_classification", **kwargs):
  """A Hugging Face checkpoint (hub id, directory or llama.cpp .gguf file) as (Flax module, params); see
  kd_jax.models.hf.from_pretrained.

  task: "encoder", "sequence_classification", "seq2seq" or "causal_lm"; kwargs: num_labels, dtype, param_dtype, rng.
  """
  from kd_jax.models import hf  # pylint: disable=g-import-not-at-top  (jax, transformers: only when used)
  return hf.from_pretrained(name_or_path, task, **kwargs)
