"""Data sets by name. Every example carries a stable integer `index`; labels of -1 mean "no label".

`load_task(config)` returns a `TaskData` whose splits are dicts of NumPy arrays (or of dicts of them) with the
same first dimension:
  inputs: [N, ...] model inputs, or a dict of token arrays for text (input_ids, attention_mask, ...);
  label: [N] int32 (-1: unlabeled), or [N, T] target token ids (-1 on padding) for seq2seq tasks;
  index: [N] int32, unique across splits;
  teacher_inputs: (text classification) the same examples tokenized with the teacher's tokenizer;
  token_weights: (seq2seq) [N, T] float32, 1 on real target tokens, 0 on padding;
  class_label: (seq2seq) [N] int32 class of each example (the e-SNLI label), for stratified subsets.

A task module either returns one pool of examples (`load(data_config)`, split here with `data.test_fraction`) or
its own train/test splits (`load_splits(config)`, e.g. GLUE's train and validation); train_fraction and
labeled_fraction then apply alike.
"""

import dataclasses
import importlib

import numpy as np

from kd_jax import fingerprints
from kd_jax.data import splits
from kd_jax.errors import ConfigError

_TASK_MODULES = {
    "digits": "kd_jax.data.digits",
    "synthetic_clusters": "kd_jax.data.synthetic",
    "synthetic_random_labels": "kd_jax.data.synthetic",
    "sst2": "kd_jax.data.sst2",
    "esnli": "kd_jax.data.esnli",
}
# Text tasks: tokenized with the models' own tokenizers (HF models only); the seq2seq ones have token targets.
TEXT_TASKS = ("sst2", "esnli")
SEQ2SEQ_TASKS = ("esnli",)


def names() -> tuple[str, ...]:
  """The data set names a config may use."""
  return tuple(_TASK_MODULES)


@dataclasses.dataclass(frozen=True)
class TaskData:
  """A classification task ready for training.

  Attributes:
    name: data set name.
    num_classes: number of classes.
    train: training split after train_fraction / labeled_fraction (unlabeled examples have label -1).
    test: test split (all labeled; examples labeled -1, such as GLUE's test split, are left out of metrics).
    fingerprint: hash of the examples and preprocessing; part of the teacher-cache identity.
    seq2seq: what seq2seq evaluation needs besides the arrays (decoding, label parsing, references); None for
      classification tasks.
  """
  name: str
  num_classes: int
  train: dict
  test: dict
  fingerprint: str
  seq2seq: object = None

  @property
  def labeled_train(self) -> dict:
    """The labeled part of the training split (what the teacher is trained on)."""
    return select(self.train, labeled_rows(self.train["label"]))


def labeled_rows(labels: np.ndarray) -> np.ndarray:
  """[N] bool: examples with a label ([N] labels >= 0, or [N, T] targets with at least one token)."""
  return (np.asarray(labels) >= 0).reshape(len(labels), -1).any(axis=1)


def select(examples: dict, rows: np.ndarray) -> dict:
  """The examples where the boolean mask `rows` is True, or at the row numbers `rows`, in that order (every array
  indexed alike, also inside nested dicts of arrays)."""
  return {key: select(value, rows) if isinstance(value, dict) else value[rows] for key, value in examples.items()}


def teacher_view(examples: dict) -> dict:
  """The examples as the teacher sees them: `inputs` replaced by `teacher_inputs` where the task has them."""
  if "teacher_inputs" not in examples:
    return examples
  return {**{key: value for key, value in examples.items() if key != "teacher_inputs"},
          "inputs": examples["teacher_inputs"]}


def _leaves(tree) -> list:
  """The arrays of a dict of arrays (nested dicts allowed), in key order; an array is its own leaf."""
  if isinstance(tree, dict):
    return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
  return [tree]


def load_task(config) -> TaskData:
  """Loads `config.data.name`, splits it and applies `train_fraction` / `labeled_fraction` (all from split_seed)."""
  data_config = config.data
  if data_config.name not in _TASK_MODULES:
    raise ConfigError("data.name", data_config.name, f"allowed: {', '.join(names())}")
  module = importlib.import_module(_TASK_MODULES[data_config.name])
  rng = np.random.default_rng(data_config.split_seed)
  seq2seq = None
  if hasattr(module, "load_splits"):
    train, test, num_classes, seq2seq = module.load_splits(config)
  else:
    inputs, labels, num_classes = module.load(data_config)
    examples = {"inputs": inputs, "label": labels.astype(np.int32), "index": np.arange(len(labels), dtype=np.int32)}
    test_mask = splits.stratified_mask(labels, data_config.test_fraction, rng)
    train, test = select(examples, ~test_mask), select(examples, test_mask)
  strata = train.get("class_label", train["label"])
  if data_config.train_fraction < 1.0:
    kept = splits.stratified_mask(strata, data_config.train_fraction, rng)
    train, strata = select(train, kept), strata[kept]
  labeled_mask = splits.stratified_mask(strata, data_config.labeled_fraction, rng)
  label = train["label"]
  train["label"] = np.where(labeled_mask.reshape((-1,) + (1,) * (label.ndim - 1)), label, -1).astype(np.int32)
  extra = {key: value for key, value in train.items() if key not in ("inputs", "label", "index")}
  fingerprint = fingerprints.fingerprint_arrays(*_leaves(train["inputs"]), train["label"], train["index"],
                                                test["index"], *_leaves(extra))
  return TaskData(name=data_config.name, num_classes=num_classes, train=train, test=test, fingerprint=fingerprint,
                  seq2seq=seq2seq)
