"""Fashion-MNIST and MNIST: 28x28 grayscale images of 10 classes, 60,000 for training and the official 10,000 for test.

Sources (`config.data.source`):
  files: the four IDX files (kd_jax/data/idx.py) in `data.data_dir`, plain or gzip-compressed (`<name>` or
         `<name>.gz`). For fashion_mnist, data_dir None means /usr/share/datasets/fashion-mnist, where the Debian
         package `dataset-fashion-mnist` installs them (`apt-get install dataset-fashion-mnist`).
  tfds:  `tfds.load(data.path or data.name, split='train' / 'test', data_dir=data.data_dir)`.

The official test images are the test split; the validation split is held out of the 60,000 training images
(data.validation_fraction, stratified, by data/__init__.load_task), so test_fraction does not apply. Images are
float32 in [0, 1], [N, 28, 28, 1]; labels int32 in [0, 9]; indices 0-59,999 for training, 60,000-69,999 for test.
"""

import os

import numpy as np

from kd_jax.data import idx
from kd_jax.data.examples import Examples
from kd_jax.errors import ConfigError, UserError

EVALUATOR = "classification"  # how it is evaluated: the name of its evaluator (kd_jax.evaluation.EVALUATORS)
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
# Where the Debian package dataset-fashion-mnist installs its files (MNIST has no such package).
DEFAULT_DATA_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
# The IDX files of each split: (images, labels), the names every MNIST-format distribution uses.
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_paths(data_config) -> dict[str, tuple[str, str]]:
  """{split: (images path, labels path)} of the IDX files of source 'files' in data.data_dir (each file plain, or
  with .gz).

  Raises:
    ConfigError: (on data.data_dir) no directory is given and the task has no default, or a file is missing.
  """
  directory = data_config.data_dir or DEFAULT_DATA_DIRS.get(data_config.name)
  if directory is None:
    raise ConfigError("data.data_dir", None, f"required for data.name={data_config.name!r} with data.source='files': "
                      f"the directory of its IDX files ({', '.join(sum(IDX_FILES.values(), ()))}, or .gz)")
  paths = {}
  for split, names in IDX_FILES.items():
    found = []
    for name in names:
      candidates = [os.path.join(directory, name + suffix) for suffix in ("", ".gz")]
      path = next((candidate for candidate in candidates if os.path.isfile(candidate)), None)
      if path is None:
        hint = ("; install it with `apt-get install dataset-fashion-mnist`" if directory == DEFAULT_DATA_DIRS.get(
            data_config.name) else "")
        raise ConfigError("data.data_dir", directory, f"has no {name} or {name}.gz (the {data_config.name} IDX file "
                          f"of the {split} {'images' if name == names[0] else 'labels'}){hint}; or set "
                          "data.source='tfds'")
      found.append(path)
    paths[split] = tuple(found)
  return paths


def check_config(config) -> None:
  """Raises ConfigError where source 'files' lacks an IDX file (`idx_paths`)."""
  if config.data.source == "files":
    idx_paths(config.data)


def example_inputs(config) -> np.ndarray:
  """One example's inputs [1, 28, 28, 1] (zeros), known before the data loads."""
  del config
  return np.zeros((1,) + IMAGE_SHAPE, np.float32)


def load_splits(config):
  """({'train', 'test'}: Examples of the source's images and labels; 10 classes; None)."""
  data_config = config.data
  if data_config.source == "files":
    arrays = {split: _read_idx_pair(*paths) for split, paths in idx_paths(data_config).items()}
  else:
    arrays = {split: _read_tfds(data_config, split) for split in IDX_FILES}
  splits, first_index = {}, 0
  for split, (images, labels) in arrays.items():
    splits[split] = Examples(inputs=(images.reshape((-1,) + IMAGE_SHAPE) / np.float32(255)).astype(np.float32),
                             label=labels.astype(np.int32),
                             index=np.arange(first_index, first_index + len(labels), dtype=np.int32))
    first_index += len(labels)
  return splits, NUM_CLASSES, None


def _read_idx_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images [N, 28, 28] and labels [N] of one split, checked against each other."""
  images, labels = idx.read(images_path), idx.read(labels_path)
  if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE[:2]:
    raise UserError(f"{images_path}: holds {images.dtype.name} {images.shape}, not uint8 images [N, 28, 28]")
  if labels.dtype != np.uint8 or labels.shape != images.shape[:1] or labels.max(initial=0) >= NUM_CLASSES:
    raise UserError(f"{labels_path}: holds {labels.dtype.name} {labels.shape} with values up to "
                    f"{labels.max(initial=0)}, not {len(images)} uint8 labels in [0, {NUM_CLASSES - 1}] (one per image "
                    f"of {images_path})")
  return images, labels


def _read_tfds(data_config, split: str) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images and labels of one TFDS split, whole (batch_size=-1)."""
  from kd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  pipeline.tensorflow()  # TensorFlow with its GPUs hidden, before TFDS imports it
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = data_config.path or data_config.name
  try:
    batch = tfds.as_numpy(tfds.load(name, split=split, data_dir=data_config.data_dir, batch_size=-1))
  except Exception as error:  # pylint: disable=broad-except  (download, missing data_dir, unknown name)
    message = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
    raise UserError(f"data set {data_config.name}: tfds.load({name!r}, split={split!r}, "
                    f"data_dir={data_config.data_dir!r}) failed ({error.__class__.__name__}: {message}); offline, use "
                    "data.source='files' with the IDX files in data.data_dir") from error
  images, labels = np.asarray(batch["image"]), np.asarray(batch["label"])
  if images.shape[1:] != IMAGE_SHAPE or len(labels) != len(images):
    raise UserError(f"data set {data_config.name}: tfds {name!r} split {split!r} has images {images.shape} and "
                    f"{len(labels)} labels, not [N, 28, 28, 1] with one label each")
  return images, labels
