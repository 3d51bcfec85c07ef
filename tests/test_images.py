"""Image tasks: the IDX reader, Fashion-MNIST's splits, the CNN (shapes, parameter counts, learning) and its smoke run.

The reader is checked on IDX files written here byte by byte; the tests that need the real Fashion-MNIST files (the
Debian package dataset-fashion-mnist, installed by .ci/run where apt-get is available) skip when they are absent.
"""

import gzip
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax import data, models, preflight, train
from kd_jax.data import idx, mnist
from kd_jax.errors import ConfigError, UserError
from kd_jax.models import cnn
from tests.helpers import load_config

REAL_DIR = mnist.DEFAULT_DATA_DIRS["fashion_mnist"]
HAVE_REAL_FILES = all(os.path.isfile(os.path.join(REAL_DIR, name + ".gz"))
                      for name in sum(mnist.IDX_FILES.values(), ()))
needs_real_files = pytest.mark.skipif(
    not HAVE_REAL_FILES, reason=f"Fashion-MNIST's IDX files are not in {REAL_DIR}: install them with "
                                "`apt-get install dataset-fashion-mnist` (.ci/run does where apt-get is available)")


def write_idx(path, array: np.ndarray, type_code: int, *, compress: bool) -> None:
  """The IDX file of `array`, written by hand: 0, 0, type code, ndim, big-endian uint32 sizes, big-endian values."""
  content = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  content += array.astype(array.dtype.newbyteorder(">")).tobytes()
  with open(path, "wb") as stream:
    stream.write(gzip.compress(content) if compress else content)


def hand_parsed(path: str) -> np.ndarray:
  """An MNIST-format .gz file parsed by hand: magic 2051 (images: n, rows, cols) or 2049 (labels: n), then uint8."""
  with gzip.open(path, "rb") as stream:
    content = stream.read()
  magic, count = struct.unpack(">II", content[:8])
  if magic == 2051:
    rows, cols = struct.unpack(">II", content[8:16])
    return np.frombuffer(content[16:], np.uint8).reshape(count, rows, cols)
  assert magic == 2049, magic
  return np.frombuffer(content[8:], np.uint8)


def write_fixture(directory, *, num_train: int = 200, num_test: int = 40, seed: int = 0) -> dict:
  """Four small IDX files in MNIST's format (train images .gz, the others plain); returns the arrays written."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, count in (("train", num_train), ("test", num_test)):
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    images_name, labels_name = mnist.IDX_FILES[split]
    compress = split == "train"
    write_idx(os.path.join(directory, images_name + (".gz" if compress else "")), images, 0x08, compress=compress)
    write_idx(os.path.join(directory, labels_name), labels, 0x08, compress=False)
    arrays[split] = (images, labels)
  return arrays


def fashion_config(**data_fields):
  config = load_config("configs/fashion_mnist.py", "smoke")
  for field, value in data_fields.items():
    config.data[field] = value
  return config


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reader_matches_hand_written_bytes(tmp_path, compress):
  rng = np.random.default_rng(0)
  cases = [(rng.integers(0, 256, (3, 4, 5)).astype(np.uint8), 0x08), (rng.integers(-128, 128, 7).astype(np.int8), 0x09),
           (rng.integers(-30000, 30000, (2, 3)).astype(np.int16), 0x0B),
           (rng.integers(-2**31, 2**31 - 1, (4,)).astype(np.int32), 0x0C),
           (rng.normal(size=(2, 2, 2)).astype(np.float32), 0x0D), (rng.normal(size=(5,)), 0x0E)]
  for i, (array, type_code) in enumerate(cases):
    path = tmp_path / f"array{i}"
    write_idx(path, array, type_code, compress=compress)
    read = idx.read(str(path))
    assert read.dtype == array.dtype and read.dtype.isnative, (read.dtype, array.dtype)
    np.testing.assert_array_equal(read, array)


def test_idx_reader_rejects_other_files_in_one_line(tmp_path):
  path = tmp_path / "not_idx"
  path.write_bytes(b"PK\x03\x04 a zip file")
  with pytest.raises(UserError, match=r"not_idx: not an IDX file"):
    idx.read(str(path))
  write_idx(path, np.zeros((3, 4), np.uint8), 0x08, compress=False)
  path.write_bytes(path.read_bytes()[:-2])
  with pytest.raises(UserError, match=r"truncated or padded IDX file \(its header gives shape \(3, 4\) of uint8: 12 "
                                       r"bytes of values, the file holds 10\)"):
    idx.read(str(path))


def test_fixture_files_give_the_official_test_split_and_a_validation_slice_of_train(tmp_path):
  arrays = write_fixture(tmp_path)
  config = fashion_config(data_dir=str(tmp_path), train_fraction=1.0, labeled_fraction=0.5)
  preflight.check(config)
  task = data.load_task(config)
  assert task.num_classes == 10
  # Test: the t10k files as they are, scaled to [0, 1], indices after the training images'.
  test_images, test_labels = arrays["test"]
  np.testing.assert_array_equal(task.test.index, np.arange(200, 240))
  np.testing.assert_array_equal(task.test.label, test_labels)
  assert task.test.inputs.dtype == np.float32 and task.test.inputs.shape == (40, 28, 28, 1)
  np.testing.assert_allclose(task.test.inputs[..., 0], test_images / 255.0, rtol=0, atol=1e-7)
  # Validation: 5% of the training images (one per class), all labeled; train keeps the rest, half
  # labeled.
  assert len(task.validation) == 10 and sorted(task.validation.label) == list(range(10))
  assert sorted(np.concatenate([task.train.index, task.validation.index])) == list(range(200))
  train_images, train_labels = arrays["train"]
  np.testing.assert_allclose(task.train.inputs[..., 0], train_images[task.train.index] / 255.0, rtol=0, atol=1e-7)
  labeled = task.train.label >= 0
  np.testing.assert_array_equal(task.train.label[labeled], train_labels[task.train.index[labeled]])
  assert labeled.sum() == 10 * round(0.5 * 19)  # 19 training images per class


def test_a_missing_idx_file_is_one_config_error_naming_the_file(tmp_path):
  write_fixture(tmp_path)
  os.remove(tmp_path / "t10k-labels-idx1-ubyte")
  with pytest.raises(ConfigError) as error:
    preflight.check(fashion_config(data_dir=str(tmp_path)))
  assert str(error.value) == (
      f"config.data.data_dir={str(tmp_path)!r}: has no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz (the "
      "fashion_mnist IDX file of the test labels); or set data.source='tfds'")
  config = fashion_config()
  config.data.name = "mnist"
  with pytest.raises(ConfigError, match=r"^config.data.data_dir=None: required for data.name='mnist' with "
                                        r"data.source='files'"):
    preflight.check(config)


@pytest.fixture(scope="module")
def real_task():
  """Fashion-MNIST from the real files, every training image labeled."""
  return data.load_task(fashion_config(train_fraction=1.0, labeled_fraction=1.0))


@needs_real_files
def test_real_fashion_mnist_matches_the_hand_parsed_files(real_task):
  task = real_task
  train_images = hand_parsed(os.path.join(REAL_DIR, "train-images-idx3-ubyte.gz"))
  train_labels = hand_parsed(os.path.join(REAL_DIR, "train-labels-idx1-ubyte.gz"))
  test_images = hand_parsed(os.path.join(REAL_DIR, "t10k-images-idx3-ubyte.gz"))
  assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
  assert np.bincount(train_labels).tolist() == [6000] * 10
  assert len(task.test) == 10000 and len(task.train) + len(task.validation) == 60000
  assert len(task.validation) == 3000 and np.bincount(task.validation.label).tolist() == [300] * 10
  np.testing.assert_array_equal(task.test.label, hand_parsed(os.path.join(REAL_DIR, "t10k-labels-idx1-ubyte.gz")))
  np.testing.assert_allclose(task.test.inputs[..., 0], test_images / 255.0, rtol=0, atol=1e-7)
  rows = task.validation.index
  np.testing.assert_allclose(task.validation.inputs[..., 0], train_images[rows] / 255.0, rtol=0, atol=1e-7)
  np.testing.assert_array_equal(task.validation.label, train_labels[rows])


def cnn_config(**fields):
  config = load_config("configs/fashion_mnist.py", "smoke").student
  for field, value in fields.items():
    config[field] = value
  return config


@pytest.mark.parametrize("conv_features, hidden_sizes, norm_groups, expected", [
    # conv 3*3*c_in*c_out + c_out, GroupNorm 2*c_out, Dense d_in*d_out + d_out; 28 -> 14 -> 7 (-> 3) per block.
    ((4, 8), (), 0, (9 * 1 * 4 + 4) + (9 * 4 * 8 + 8) + (7 * 7 * 8 * 10 + 10)),
    ((4, 8), (16,), 2, (9 * 4 + 4) + 8 + (9 * 4 * 8 + 8) + 16 + (392 * 16 + 16) + (16 * 10 + 10)),
    ((8, 8, 16), (), 8, (9 * 8 + 8) + 16 + (9 * 8 * 8 + 8) + 16 + (9 * 8 * 16 + 16) + 32 + (3 * 3 * 16 * 10 + 10)),
])
def test_cnn_shapes_and_parameter_count_by_hand(conv_features, hidden_sizes, norm_groups, expected):
  # Shapes only (jax.eval_shape): nothing is compiled or computed.
  model = cnn.CNN(conv_features=conv_features, hidden_sizes=hidden_sizes, num_classes=10, norm_groups=norm_groups)
  images = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)["params"]
  assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params)) == expected
  assert params["Conv_0"]["kernel"].shape == (3, 3, 1, conv_features[0])
  assert ("GroupNorm_0" in params) == bool(norm_groups)
  assert jax.eval_shape(model.apply, {"params": params}, images).shape == (2, 10)


@pytest.mark.slow
def test_cnn_logits_of_an_example_do_not_depend_on_its_batch():
  """GroupNorm normalizes each example on its own: an example's logits are the same alone or in any batch (what the
  per-example vmap of the train step and evaluation in batches both rely on). The model comes from the registry."""
  images = jax.random.uniform(jax.random.PRNGKey(1), (6, 28, 28, 1))
  model, params = models.create(cnn_config(conv_features=(8, 16), hidden_sizes=(16,), norm_groups=4), num_classes=10,
                                example_inputs=images[:1], rng=jax.random.PRNGKey(0))
  assert isinstance(model, cnn.CNN) and model.conv_features == (8, 16) and model.norm_groups == 4
  apply = jax.jit(model.apply)
  batched = apply({"params": params}, images)
  alone = jax.vmap(lambda image: apply({"params": params}, image[None])[0])(images)
  np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-5)
  assert np.std(np.asarray(batched), axis=0).max() > 1e-3  # the examples differ: the check can fail


@pytest.mark.slow
@needs_real_files
def test_cnn_learns_fashion_mnist_above_chance(real_task):
  """A small CNN trained for 100 steps on 2,000 real training images classifies 2,000 test images far above chance
  (0.1)."""
  task = real_task
  images, labels = task.train.inputs[:2000], task.train.label[:2000]
  model, params = models.create(cnn_config(conv_features=(4, 8), hidden_sizes=()), num_classes=10,
                                example_inputs=images[:1], rng=jax.random.PRNGKey(0))
  optimizer = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, batch_images, batch_labels):
    def loss_fn(params):
      logits = model.apply({"params": params}, batch_images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch_labels).mean()
    updates, opt_state = optimizer.update(jax.grad(loss_fn)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  for i in range(100):
    rows = np.random.default_rng(i).choice(len(images), 64, replace=False)
    params, opt_state = step(params, opt_state, images[rows], labels[rows])
  predictions = np.argmax(model.apply({"params": params}, task.test.inputs[:2000]), axis=-1)
  assert np.mean(predictions == task.test.label[:2000]) > 0.6


@needs_real_files
@pytest.mark.slow
def test_fashion_mnist_smoke_run(tmp_path):
  """configs/fashion_mnist.py:smoke end to end on 8 devices: every model learns, the CNNs have their hand counts."""
  results = train.train_and_evaluate(load_config("configs/fashion_mnist.py", "smoke"), str(tmp_path))
  assert results["data"]["num_test"] == 10000 and results["data"]["num_validation"] == 3000
  for model in ("teacher", "student", "student_hard"):
    assert results["metrics"][model]["accuracy"] > 0.3, model
  teacher_params = (9 * 16 + 16) + (9 * 16 * 32 + 32) + (7 * 7 * 32 * 128 + 128) + (128 * 10 + 10)
  assert results["efficiency"]["teacher"]["params"] == teacher_params
  assert results["efficiency"]["student"]["params"] == (9 * 4 + 4) + (9 * 4 * 8 + 8) + (7 * 7 * 8 * 10 + 10)
