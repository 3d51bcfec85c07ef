"""Data sets by name. Every example carries a stable integer `index`; labels of -1 mean "no label".

`load_task(config)` returns a `TaskData` whose splits are `Examples` (kd_jax/data/examples.py: inputs, label,
index, and per task teacher_inputs, token_weights, class_label).

A task module either returns one pool of examples (`load(data_config)`, split here with `data.test_fraction`) or
its own train/test splits (`load_splits(config)`, e.g. GLUE's train and validation); train_fraction and
labeled_fraction then apply alike. It names its evaluator: `EVALUATOR`, a name in kd_jax.evaluation.EVALUATORS.
"""

import ctypes
import dataclasses
import importlib

import numpy as np

from kd_jax import fingerprints
from kd_jax.config import schema
from kd_jax.data import splits
from kd_jax.data.examples import Examples, wide_dtype
from kd_jax.errors import ConfigError, require

_TASK_MODULES = {
    "digits": "kd_jax.data.digits",
    "synthetic_clusters": "kd_jax.data.synthetic",
    "synthetic_random_labels": "kd_jax.data.synthetic",
    "sst2": "kd_jax.data.sst2",
    "esnli": "kd_jax.data.esnli",
    "causal_lm": "kd_jax.data.causal_lm",
    "fashion_mnist": "kd_jax.data.mnist",
    "mnist": "kd_jax.data.mnist",
}
# The kinds of tasks, declared beside data.name in the schema (text, seq2seq, causal LM, images).
TEXT_TASKS, SEQ2SEQ_TASKS = schema.TEXT_TASKS, schema.SEQ2SEQ_TASKS
CAUSAL_LM_TASKS, IMAGE_TASKS = schema.CAUSAL_LM_TASKS, schema.IMAGE_TASKS


def names() -> tuple[str, ...]:
  """The data set names a config may use."""
  return tuple(_TASK_MODULES)


def _task_module(name: str):
  if name not in _TASK_MODULES:
    raise ConfigError("data.name", name, f"allowed: {', '.join(names())}")
  return importlib.import_module(_TASK_MODULES[name])


def evaluator_of(name: str) -> str:
  """The name of the evaluator (kd_jax.evaluation.EVALUATORS) of data set `name`: what its task module declares."""
  return _task_module(name).EVALUATOR


def num_classes(config) -> int | None:
  """The number of classes of config.data's task where known before it loads (checking a user's model: kd_jax/models
  check_user_model): the synthetic tasks' data.synthetic.num_classes, or its module's `num_classes(config)` (causal
  LM: a user's student's vocabulary size) or NUM_CLASSES; else None."""
  if config.data.name.startswith("synthetic"):
    return config.data.synthetic.num_classes
  module = _task_module(config.data.name)
  return module.num_classes(config) if hasattr(module, "num_classes") else getattr(module, "NUM_CLASSES", None)


def example_inputs(config):
  """One example's inputs ([1, ...] zeros) of config.data's task where their shapes are known before it loads (what a
  user's Linen or (init_fn, apply_fn) model is traced with in the preflight check: kd_jax/models check_config): the
  synthetic tasks' data.synthetic.num_features, or its module's `example_inputs(config)`; else None."""
  if config.data.name.startswith("synthetic"):
    return np.zeros((1, config.data.synthetic.num_features), np.float32)
  module = _task_module(config.data.name)
  return module.example_inputs(config) if hasattr(module, "example_inputs") else None


def check_config(config) -> None:
  """Raises ConfigError where config.data asks for what this job lacks: a seq2seq or causal-LM task needs a single
  process, and a task module may check its own inputs (`check_config(config)`, e.g. mnist's IDX files)."""
  import jax  # pylint: disable=g-import-not-at-top  (kept out of `import kd_jax.data`)
  # The top-k and generation caches and the generation evaluation are computed on one process's devices.
  require(config.data.name not in SEQ2SEQ_TASKS + CAUSAL_LM_TASKS or jax.process_count() == 1, "data.name",
          config.data.name, f"seq2seq and causal-LM tasks run in a single process (this job has "
          f"{jax.process_count()}); use one host's devices")
  module = _task_module(config.data.name)
  if hasattr(module, "check_config"):
    module.check_config(config)


@dataclasses.dataclass(frozen=True)
class TaskData:
  """A classification task ready for training.

  Attributes:
    name: data set name.
    num_classes: number of classes.
    train: training split after train_fraction / labeled_fraction (unlabeled examples have label -1).
    validation: validation split (all labeled): evaluation during training and every selection (final model, a
      sweep's best point). Held out of the training split (data.validation_fraction, stratified) unless the source
      has one (data.validation_split).
    test: test split, for reporting only (examples labeled -1, such as GLUE's test split, are left out of metrics).
    fingerprint: hash of the examples and preprocessing; part of the teacher-cache identity.
    seq2seq: what seq2seq evaluation needs besides the arrays (decoding, label parsing, references); None for
      classification tasks.
    causal_lm: what causal-LM evaluation needs (data.causal_lm.CausalLMInfo: tokenizer, references); None for the
      other tasks.
    evaluator: the name of its evaluator (kd_jax.evaluation.EVALUATORS), as its task module declares.
  """
  name: str
  num_classes: int
  train: Examples
  validation: Examples
  test: Examples
  fingerprint: str
  evaluator: str
  seq2seq: object = None
  causal_lm: object = None

  @property
  def labeled_train(self) -> Examples:
    """The labeled part of the training split (what the teacher is trained on)."""
    return self.train.select(labeled_rows(self.train.label))


def labeled_rows(labels: np.ndarray) -> np.ndarray:
  """[N] bool: examples with a label ([N] labels >= 0, or [N, T] targets with at least one token)."""
  return (np.asarray(labels) >= 0).reshape(len(labels), -1).any(axis=1)


def _leaves(tree) -> list:
  """The arrays of a dict of arrays (nested dicts allowed), in key order; an array is its own leaf."""
  if isinstance(tree, dict):
    return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
  return [tree]


def load_task(config) -> TaskData:
  """Loads `config.data.name` and splits it (all from split_seed): the test split (test_fraction, or the source's),
  the validation split (held out of the training split by validation_fraction, or the source's), then the
  `train_fraction` / `labeled_fraction` subsets of what remains for training."""
  data_config = config.data
  module = _task_module(data_config.name)
  rng = np.random.default_rng(data_config.split_seed)
  info = None  # the task module's text.Seq2SeqInfo or causal_lm.CausalLMInfo
  if hasattr(module, "load_splits"):
    source_splits, num_classes, info = module.load_splits(config)
    train, validation, test = (source_splits.get(role) for role in ("train", "validation", "test"))
  else:
    inputs, labels, num_classes = module.load(data_config)
    examples = Examples(inputs=inputs, label=labels.astype(np.int32), index=np.arange(len(labels), dtype=np.int32))
    test_mask = splits.stratified_mask(labels, data_config.test_fraction, rng)
    train, test, validation = examples.select(~test_mask), examples.select(test_mask), None
  if validation is None:
    held_out = splits.stratified_mask(train.strata, data_config.validation_fraction, rng)
    classes = set(np.unique(train.strata).tolist())
    validation, train = train.select(held_out), train.select(~held_out)
    left = classes - set(np.unique(train.strata).tolist())
    if left:
      raise ConfigError("data.validation_fraction", data_config.validation_fraction,
                        f"leaves class {sorted(left)[0]} of data set {data_config.name!r} without training examples "
                        "(every class keeps at least one validation example); lower it or add data")
  if data_config.train_fraction < 1.0:
    train = train.select(splits.stratified_mask(train.strata, data_config.train_fraction, rng))
  labeled_mask = splits.stratified_mask(train.strata, data_config.labeled_fraction, rng)
  label = train.label
  train = train.replace(
      label=np.where(labeled_mask.reshape((-1,) + (1,) * (label.ndim - 1)), label, -1).astype(label.dtype))
  extra = {field.name: getattr(train, field.name) for field in dataclasses.fields(train)
           if field.name not in ("inputs", "label", "index") and getattr(train, field.name) is not None}
  # Token arrays stored narrow (uint16, uint8) hash as their int32 values: a cache keyed by the same data stays valid.
  fingerprint = fingerprints.fingerprint_arrays(*_leaves(train.inputs), train.label, train.index, validation.index,
                                                test.index, *_leaves(extra), as_dtype=wide_dtype)
  _return_freed_memory()
  return TaskData(name=data_config.name, num_classes=num_classes, train=train, validation=validation, test=test,
                  fingerprint=fingerprint, evaluator=module.EVALUATOR,
                  seq2seq=None if data_config.name in CAUSAL_LM_TASKS else info,
                  causal_lm=info if data_config.name in CAUSAL_LM_TASKS else None)


def _return_freed_memory() -> None:
  """Hands the heap memory freed after loading (the tokenizer's per-text objects, the text columns) back to the OS:
  glibc keeps it otherwise (malloc_trim; 77 of 343 MiB at a tenth of e-SNLI's size). A no-op elsewhere."""
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass
