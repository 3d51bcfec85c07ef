"""Data sets, splits and the tf.data pipeline: determinism, stratification, resumable order, process shards."""

import itertools

import numpy as np
import pytest

from kd_jax import data
from kd_jax.data import pipeline
from kd_jax.errors import ConfigError


def test_digits_split_is_deterministic_stratified_and_disjoint(smoke_config):
  smoke_config.data.labeled_fraction = 0.1
  task = data.load_task(smoke_config)
  again = data.load_task(smoke_config)
  np.testing.assert_array_equal(task.train.index, again.train.index)
  assert task.fingerprint == again.fingerprint
  assert len(task.train.index) + len(task.validation.index) + len(task.test.index) == 1797
  assert not set(task.train.index) & set(task.test.index)
  assert not set(task.validation.index) & (set(task.train.index) | set(task.test.index))
  # The validation split: 5% of the 1,258 training images, every class, every example labeled.
  assert len(task.validation) == 60 and set(task.validation.label) == set(range(10))
  assert np.bincount(task.validation.label).min() >= 5
  labeled = task.train.label >= 0
  assert abs(labeled.mean() - 0.1) < 0.01
  # Every class keeps about 10% of its training images labeled, and the test split keeps the class balance.
  all_labels = np.concatenate([task.labeled_train.label, task.test.label])
  assert set(task.labeled_train.label) == set(range(10)) == set(all_labels)
  test_share = np.bincount(task.test.label) / len(task.test.label)
  assert np.all(np.abs(test_share - 0.1) < 0.02)


def test_split_seed_changes_the_split_and_fractions_shrink_it(smoke_config):
  task = data.load_task(smoke_config)
  smoke_config.data.split_seed = 1
  other = data.load_task(smoke_config)
  assert set(task.test.index) != set(other.test.index)
  assert task.fingerprint != other.fingerprint
  smoke_config.data.train_fraction = 0.5
  half = data.load_task(smoke_config)
  assert abs(len(half.train.index) - len(other.train.index) / 2) <= 10
  assert set(half.train.index) <= set(other.train.index)


def test_a_validation_split_that_empties_a_class_is_refused(smoke_config):
  smoke_config.data.name = "synthetic_clusters"
  smoke_config.data.synthetic.num_examples = 30  # 10 classes: some have a single training example
  with pytest.raises(ConfigError, match=r"^config.data.validation_fraction=0.05: leaves class 0 of data set "
                                        r"'synthetic_clusters' without training examples"):
    data.load_task(smoke_config)


def test_synthetic_tasks(smoke_config):
  for name in ("synthetic_clusters", "synthetic_random_labels"):
    smoke_config.data.name = name
    task = data.load_task(smoke_config)
    assert task.num_classes == smoke_config.data.synthetic.num_classes
    assert task.train.inputs.shape[1] == smoke_config.data.synthetic.num_features


def make_examples(num_examples):
  index = np.arange(num_examples, dtype=np.int32) + 1000
  return {"index": index, "inputs": index[:, None].astype(np.float32) * np.ones((1, 3), np.float32)}


def test_each_epoch_is_a_permutation_and_resume_reproduces_batches():
  examples = make_examples(50)
  batches = pipeline.train_batches(examples, batch_size=8, seed=3)
  epochs = [np.concatenate([next(batches)["index"] for _ in range(6)]) for _ in range(3)]
  for epoch in epochs:
    assert len(set(epoch)) == 48  # 6 full batches of distinct examples; 2 dropped
  assert not np.array_equal(epochs[0], epochs[1])
  uninterrupted = [b["index"] for b in itertools.islice(pipeline.train_batches(examples, batch_size=8, seed=3), 20)]
  resumed = [b["index"] for b in itertools.islice(
      pipeline.train_batches(examples, batch_size=8, seed=3, start_step=13), 7)]
  for expected, got in zip(uninterrupted[13:], resumed):
    np.testing.assert_array_equal(expected, got)


def test_process_shards_tile_the_global_batch():
  examples = make_examples(64)
  whole = next(pipeline.train_batches(examples, batch_size=16, seed=0))["index"]
  parts = [next(pipeline.train_batches(examples, batch_size=16, seed=0, process_index=p, process_count=4))["index"]
           for p in range(4)]
  np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_inference_batches_pad_and_keep_order():
  examples = {"x": np.arange(10)}
  batches = list(pipeline.inference_batches(examples, 4))
  assert [num_real for _, num_real in batches] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([b["x"][:n] for b, n in batches]), np.arange(10))
