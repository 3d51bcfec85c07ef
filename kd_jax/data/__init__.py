"""Data sets by name. Every example carries a stable integer `index`; labels of -1 mean "no label".

`load_task(config)` returns a `TaskData` whose splits are dicts of NumPy arrays with the same first dimension:
  inputs: [N, ...] model inputs;  label: [N] int32 (-1: unlabeled);  index: [N] int32, unique across splits.
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
}


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
    test: test split (all labeled).
    fingerprint: hash of the examples and preprocessing; part of the teacher-cache identity.
  """
  name: str
  num_classes: int
  train: dict
  test: dict
  fingerprint: str

  @property
  def labeled_train(self) -> dict:
    """The labeled part of the training split (what the teacher is trained on)."""
    return select(self.train, self.train["label"] >= 0)


def select(examples: dict, mask: np.ndarray) -> dict:
  """The examples where `mask` is True (every array indexed alike)."""
  return {key: value[mask] for key, value in examples.items()}


def load_task(config) -> TaskData:
  """Loads `config.data.name`, splits it and applies `train_fraction` / `labeled_fraction` (all from split_seed)."""
  data_config = config.data
  if data_config.name not in _TASK_MODULES:
    raise ConfigError("data.name", data_config.name, f"allowed: {', '.join(names())}")
  module = importlib.import_module(_TASK_MODULES[data_config.name])
  inputs, labels, num_classes = module.load(data_config)
  examples = {"inputs": inputs, "label": labels.astype(np.int32), "index": np.arange(len(labels), dtype=np.int32)}
  rng = np.random.default_rng(data_config.split_seed)
  test_mask = splits.stratified_mask(labels, data_config.test_fraction, rng)
  train, test = select(examples, ~test_mask), select(examples, test_mask)
  if data_config.train_fraction < 1.0:
    train = select(train, splits.stratified_mask(train["label"], data_config.train_fraction, rng))
  labeled_mask = splits.stratified_mask(train["label"], data_config.labeled_fraction, rng)
  train["label"] = np.where(labeled_mask, train["label"], -1).astype(np.int32)
  fingerprint = fingerprints.fingerprint_arrays(train["inputs"], train["label"], train["index"], test["index"])
  return TaskData(name=data_config.name, num_classes=num_classes, train=train, test=test, fingerprint=fingerprint)
