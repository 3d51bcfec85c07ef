"""The models the sections train, built by kd_jax with random weights: the default config's MLP and DistilBERT-,
SmolLM2- (Llama) and T5-shaped Flax models of the transformers families kd_jax implements."""

import functools

from . import settings


def mlp_student(config, task, seed: int = 0):
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax import models  # pylint: disable=g-import-not-at-top
  return models.create(config.student, num_classes=task.num_classes, example_inputs=task.train.inputs[:1],
                       rng=jax.random.PRNGKey(seed))


def random_params(architecture, length: int | None = None):
  """The architecture's parameters initialized from PRNGKey(0) on (1, length) token ids, or on its own example
  inputs when length is None."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  if length is None:
    inputs = architecture.example_inputs
  else:
    ids = jnp.zeros((1, length), jnp.int32)
    inputs = dict(input_ids=ids, attention_mask=ids)
  return jax.jit(architecture.module.init)(jax.random.PRNGKey(0), **inputs)["params"]


def _built_once(build):
  """`build(dims, dtype)` remembered per (dims, dtype, SEQUENCE_LENGTH, LLM_LENGTH, SMOKE: dims None are the settings'
  models, which --smoke shrinks): the sections that train, infer and compile the same model share one initialization
  (its jit(init) traced and compiled or loaded once). No section changes the parameters in place: the training
  programs start from a host copy."""
  built = {}

  @functools.wraps(build)
  def cached(dims: dict | None = None, dtype: str = "float32"):
    key = (build.__name__, None if dims is None else tuple(sorted(dims.items())), dtype, settings.SEQUENCE_LENGTH,
           settings.LLM_LENGTH, settings.SMOKE)
    if key not in built:
      built[key] = build(dims, dtype)
    return built[key]
  return cached


@_built_once
def distilbert_student(dims: dict | None = None, dtype: str = "float32"):
  """kd_jax's Flax DistilBERT classifier with `dims` (default DISTILBERT) and random float32 weights, computing in
  `dtype`."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import distilbert, pretrained  # pylint: disable=g-import-not-at-top
  architecture = distilbert.build(transformers.DistilBertConfig(**(dims or settings.DISTILBERT)), checkpoint="random",
                                  task="sequence_classification", num_labels=settings.NUM_LABELS,
                                  dtype=jnp.dtype(dtype), param_dtype=jnp.float32)
  return pretrained.RegistryModel(architecture.module), random_params(architecture, settings.SEQUENCE_LENGTH)


@_built_once
def smollm2_student(dims: dict | None = None, dtype: str = "float32"):
  """kd_jax's Flax Llama causal LM with `dims` (default SMOLLM2_STUDENT) and random float32 weights, computing in
  `dtype`: (raw module, params)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import llama  # pylint: disable=g-import-not-at-top
  architecture = llama.build(transformers.LlamaConfig(**(dims or settings.SMOLLM2_STUDENT)), checkpoint="random",
                             task="causal_lm", num_labels=None, dtype=jnp.dtype(dtype), param_dtype=jnp.float32)
  return architecture.module, random_params(architecture, settings.LLM_LENGTH)


def t5_model(dims: dict, dtype: str, param_dtype: str):
  """kd_jax's Flax T5ForConditionalGeneration with `dims` (T5Config fields) and random weights, on the default
  device: (RegistryModel, params)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import pretrained, t5  # pylint: disable=g-import-not-at-top
  architecture = t5.build(transformers.T5Config(**dims), checkpoint="random", task="seq2seq", num_labels=None,
                          dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))
  return pretrained.RegistryModel(architecture.module), random_params(architecture)
