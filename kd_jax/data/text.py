"""Text data sets from Hugging Face `datasets`, TFDS or local files, tokenized with each model's own tokenizer.

Sources (`config.data.source`), each giving the columns of one split as Python lists:
  hub:   `datasets.load_dataset(data.path, data.subset, split=...)` through the HF cache, e.g. ("nyu-mll/glue",
         "sst2") or ("esnli/esnli", None); HF_DATASETS_OFFLINE=1 reads the cache only.
  tfds:  `tfds.load(data.path, split=..., data_dir=data.data_dir)`, e.g. "glue/sst2" or "esnli".
  files: `data.path` is a directory with one file per split: `<split>.csv`, `<split>.jsonl` or `<split>.parquet`.
  disk:  `data.path` is a `datasets.DatasetDict` written by `save_to_disk` (read with `load_from_disk`).

Tokenization pads every split to its longest example, truncated at the configured maximum, so batches have one
static shape per split.
"""

import collections.abc
import dataclasses
import json
import os
from typing import Any, Callable

import numpy as np

from kd_jax.config import schema
from kd_jax.errors import UserError

FILE_FORMATS = ("csv", "jsonl", "parquet")


@dataclasses.dataclass(frozen=True)
class Seq2SeqInfo:
  """What seq2seq evaluation needs besides the token arrays of `TaskData`.

  Attributes:
    tokenizer: the (shared) tokenizer; decodes generated ids.
    label_names: class names, in label-id order.
    sources: example index -> the source text the models read (every split; `Texts`).
    explanations: example index -> the reference (gold) explanation (every split; `Texts`).
    parse: generated text -> (label id or None when unparseable, the explanation part of the text).
    max_target_length: target length T (generation stops after T new tokens).
    decoder_start_token_id: first decoder input of teacher forcing and generation.
  """
  tokenizer: Any
  label_names: tuple[str, ...]
  sources: dict
  explanations: dict
  parse: Callable[[str], tuple[int | None, str]]
  max_target_length: int
  decoder_start_token_id: int


class Texts(collections.abc.Mapping):
  """Texts by position 0..N-1 (a read-only mapping), held as one UTF-8 buffer and its offsets: a Python str and its
  dict entry cost about 150 bytes besides the text, 3 times the text itself at e-SNLI's length."""

  def __init__(self, texts=()):
    encoded = [text.encode("utf-8") for text in texts]
    self._buffer = np.frombuffer(b"".join(encoded), np.uint8)
    self._offsets = np.cumsum([0] + [len(value) for value in encoded], dtype=np.int64)

  def __add__(self, other: "Texts") -> "Texts":
    """The texts of `self` followed by those of `other`."""
    # pylint: disable=protected-access
    joined = Texts()
    joined._buffer = np.concatenate([self._buffer, other._buffer])
    joined._offsets = np.concatenate([self._offsets, self._offsets[-1] + other._offsets[1:]])
    return joined

  def __len__(self) -> int:
    return len(self._offsets) - 1

  def __iter__(self):
    return iter(range(len(self)))

  def __getitem__(self, position: int) -> str:
    if not 0 <= position < len(self):
      raise KeyError(position)
    return self._buffer[self._offsets[position]:self._offsets[position + 1]].tobytes().decode("utf-8")


def source_splits(data_config) -> list[tuple[str, str, int | None]]:
  """(role, the source's split name, the most examples to read) of every split a text task reads: 'train', then
  'validation' (when data.validation_split names one; else it is held out of train by data/__init__.load_task) and
  'test'."""
  roles = [("train", data_config.train_split, None)]
  if data_config.validation_split is not None:
    roles.append(("validation", data_config.validation_split, data_config.max_eval_examples))
  return roles + [("test", data_config.test_split, data_config.max_eval_examples)]


def describe_source(data_config) -> str:
  """The source of `data_config` in words, for messages."""
  if data_config.source == "hub":
    subset = f", {data_config.subset!r}" if data_config.subset else ""
    return f"HF datasets load_dataset({data_config.path!r}{subset})"
  if data_config.source == "tfds":
    return f"tfds.load({data_config.path!r}, data_dir={data_config.data_dir!r})"
  return f"{data_config.source} source {data_config.path}"


def _local_copy_hint(name: str) -> str:
  return (f"offline, point the config at a local copy of {name}: config.data.source='files' with config.data.path=<a "
          "directory of <split>.csv/.jsonl/.parquet files>, or 'disk' with a save_to_disk directory, or 'tfds' with "
          "config.data.data_dir=<a TFDS data_dir>")


def load_columns(data_config, split: str, columns: tuple[str, ...]) -> tuple[dict[str, list], str]:
  """The `columns` of split `split` of the configured source, as Python lists (text as str), and where they are from
  (for messages: the file, or the source and split).

  Raises:
    UserError: the data set cannot be read (missing, unreachable without network) or lacks a column.
  """
  name = data_config.name
  where = f"{describe_source(data_config)} split {split!r}"
  if data_config.source == "hub":
    table = _load_hub(data_config, split, name, where)
  elif data_config.source == "tfds":
    table = _load_tfds(data_config, split, name, where)
  elif data_config.source == "files":
    table, where = _load_file(data_config.path, split, name)
  else:
    table = _load_disk(data_config.path, split, name, where)
  missing = [column for column in columns if column not in table]
  if missing:
    raise UserError(f"data set {name}: {where} has no column {missing[0]!r} (columns: {', '.join(sorted(table))})")
  values = {column: [value.decode("utf-8") if isinstance(value, bytes) else value for value in table[column]]
            for column in columns}
  return values, f"data set {name} ({where})"


def _load_hub(data_config, split: str, name: str, where: str) -> dict:
  import datasets  # pylint: disable=g-import-not-at-top  (slow; text tasks only)
  try:
    dataset = datasets.load_dataset(data_config.path, data_config.subset, split=split, cache_dir=data_config.data_dir)
  except Exception as error:  # pylint: disable=broad-except  (network, cache and hub errors of many kinds)
    raise UserError(f"data set {name}: {where} failed ({error.__class__.__name__}: "
                    f"{str(error).strip().splitlines()[0] if str(error).strip() else 'no message'}); "
                    f"{_local_copy_hint(name)}") from error
  return dataset.to_dict()


def _load_tfds(data_config, split: str, name: str, where: str) -> dict:
  from kd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  pipeline.tensorflow()  # TensorFlow with its GPUs hidden, before TFDS imports it
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    dataset = tfds.load(data_config.path, split=split, data_dir=data_config.data_dir)
  except Exception as error:  # pylint: disable=broad-except  (download, missing data_dir, unknown name)
    raise UserError(f"data set {name}: {where} failed ({error.__class__.__name__}: "
                    f"{str(error).strip().splitlines()[0] if str(error).strip() else 'no message'}); "
                    f"{_local_copy_hint(name)}") from error
  table = {}
  for batch in tfds.as_numpy(dataset.batch(4096)):
    for column, values in batch.items():
      table.setdefault(column, []).extend(values.tolist())
  return table


def _load_file(directory: str, split: str, name: str) -> tuple[dict, str]:
  import pandas as pd  # pylint: disable=g-import-not-at-top
  candidates = [os.path.join(directory, f"{split}.{extension}") for extension in FILE_FORMATS]
  path = next((candidate for candidate in candidates if os.path.isfile(candidate)), None)
  if path is None:
    raise UserError(f"data set {name}: no file for split {split!r} in {directory} (expected one of "
                    f"{', '.join(os.path.basename(candidate) for candidate in candidates)}); {_local_copy_hint(name)}")
  try:
    if path.endswith(".csv"):
      frame = pd.read_csv(path, keep_default_na=False)
    elif path.endswith(".jsonl"):
      return _read_jsonl(path), path
    else:
      frame = pd.read_parquet(path)
  except Exception as error:  # pylint: disable=broad-except  (pandas' and json's parser errors)
    raise UserError(f"data set {name}: cannot read {path} ({error.__class__.__name__}: "
                    f"{str(error).strip().splitlines()[0]})") from error
  return {column: frame[column].tolist() for column in frame.columns}, path


def _read_jsonl(path: str) -> dict[str, list]:
  """The columns of a JSON-lines file, read line by line (pandas' reader holds the file, its parse and a frame at
  once: several times the memory of the columns at e-SNLI's size); a key missing from a row reads None."""
  columns, rows = {}, 0
  with open(path, encoding="utf-8") as stream:
    for line in stream:
      if not line.strip():
        continue
      row = json.loads(line)
      if not isinstance(row, dict):
        raise ValueError(f"line {rows + 1} is not a JSON object")
      for key, value in row.items():
        if key not in columns:
          columns[key] = [None] * rows  # a key first seen in this row: None in the rows before
        columns[key].append(value)
      rows += 1
      for values in columns.values():
        if len(values) < rows:
          values.append(None)
  return columns


def _load_disk(directory: str, split: str, name: str, where: str) -> dict:
  import datasets  # pylint: disable=g-import-not-at-top
  try:
    dataset_dict = datasets.load_from_disk(directory)
  except FileNotFoundError as error:
    raise UserError(f"data set {name}: {directory} is not a directory written by datasets' save_to_disk; "
                    f"{_local_copy_hint(name)}") from error
  if split not in dataset_dict:
    raise UserError(f"data set {name}: {where} is missing (splits: {', '.join(dataset_dict)})")
  return dataset_dict[split].to_dict()


def check_labels(labels: list, num_classes: int, where: str, *, allow_unlabeled: bool) -> np.ndarray:
  """Labels as int32 [N], each an integer in [0, num_classes) (or -1 where allowed); else a UserError naming the row."""
  for row, label in enumerate(labels):
    valid = isinstance(label, (int, np.integer)) and not isinstance(label, bool) and (
        0 <= label < num_classes or (allow_unlabeled and label == -1))
    if not valid:
      allowed = f"an integer in [0, {num_classes})" + (" or -1 (no label)" if allow_unlabeled else "")
      raise UserError(f"{where}, row {row}: label {label!r} is not {allowed}")
  return np.asarray(labels, np.int32).reshape(len(labels))


def check_texts(texts: list, where: str) -> None:
  """Every entry is a non-empty string; else a UserError naming the row."""
  for row, text in enumerate(texts):
    if not isinstance(text, str) or not text.strip():
      raise UserError(f"{where}, row {row}: text {text!r} is empty or not a string")


def load_tokenizer(checkpoint: str, field: str):
  """The tokenizer stored with an HF checkpoint (hub id, directory or GGUF file); a UserError if it has none."""
  from kd_jax.models.hf import pretrained  # pylint: disable=g-import-not-at-top
  try:
    return pretrained.load_tokenizer(checkpoint)  # a GGUF file's own, or the directory's / hub id's
  except (OSError, ValueError) as error:
    raise UserError(f"config.{field}={checkpoint!r}: no usable tokenizer ({error.__class__.__name__}: "
                    f"{str(error).strip().splitlines()[0]})") from error


def student_checkpoint_field(config) -> tuple[str, str]:
  """(checkpoint, its config field) of the student's tokenizer and vocabulary: the teacher's when the student is built
  from the teacher's layers (student.init_from_teacher_layers), or is a user's model without a student.checkpoint
  (kd_jax/models/protocol.py); else student.checkpoint."""
  student = config.student
  if student.init_from_teacher_layers is not None or (schema.is_user_model(student.name) and not student.checkpoint):
    return config.teacher.checkpoint, "teacher.checkpoint"
  return student.checkpoint, "student.checkpoint"


def shares_vocabulary(config, tokenizer, teacher_tokenizer) -> bool:
  """Teacher and student tokenize alike: equal vocabularies (token -> id) and, where both checkpoints have a
  config.json, equal vocab_size."""
  student_checkpoint, _ = student_checkpoint_field(config)
  sizes = [None if checkpoint.endswith(".gguf") else checkpoint_config(checkpoint).get("vocab_size")
           for checkpoint in (config.teacher.checkpoint, student_checkpoint)]
  return teacher_tokenizer.get_vocab() == tokenizer.get_vocab() and (None in sizes or sizes[0] == sizes[1])


def check_shared_vocabulary(config, tokenizer, teacher_tokenizer, what: str,
                            why: str = "cross-tokenizer distillation is not supported") -> None:
  """`shares_vocabulary`, else a UserError naming both checkpoints, `what` needs them to share one (`why`)."""
  if not shares_vocabulary(config, tokenizer, teacher_tokenizer):
    raise UserError(f"config.teacher.checkpoint={config.teacher.checkpoint!r} and config.student.checkpoint="
                    f"{config.student.checkpoint!r} do not share one vocabulary (tokenizer and vocab_size); "
                    f"{what} needs them to ({why})")


def checkpoint_config(checkpoint: str) -> dict:
  """The config.json of an HF checkpoint (hub id or directory)."""
  from kd_jax.models.hf import weights  # pylint: disable=g-import-not-at-top
  return weights.read_config(weights.resolve(checkpoint), checkpoint)


def id_dtype(tokenizer, signed: bool = False) -> np.dtype:
  """The narrowest of (u)int16 and int32 that holds every token id of `tokenizer` (and -1 when `signed`)."""
  narrow = np.dtype(np.int16 if signed else np.uint16)
  return narrow if len(tokenizer) - 1 <= np.iinfo(narrow).max else np.dtype(np.int32)


def tokenize(tokenizer, texts: list[str], max_length: int, block_size: int = 1024) -> dict[str, np.ndarray]:
  """Token arrays [N, L], L = the longest tokenized text, at most max_length (longer ones are truncated).

  The texts are tokenized `block_size` at a time (a fast tokenizer encodes each block in parallel threads), so that
  the tokenizer's per-text objects live for one block, never for the whole data set; the blocks are padded on the
  tokenizer's padding side to L: the arrays equal those of one call with padding='longest'.

  Returns:
    input_ids (uint16 where the vocabulary fits, else int32), attention_mask (and token_type_ids where the tokenizer
    makes them) uint8: stored narrow, a third of int32's bytes at e-SNLI's shape; batches reach the models as int32
    (`examples.widened`).
  """
  dtypes = {"input_ids": id_dtype(tokenizer), "attention_mask": np.uint8, "token_type_ids": np.uint8}
  blocks = []
  for start in range(0, len(texts), block_size):
    encoded = tokenizer(texts[start:start + block_size], truncation=True, max_length=max_length, padding="longest",
                        return_tensors="np")
    blocks.append({key: np.asarray(value).astype(dtypes[key]) for key, value in encoded.items() if key in dtypes})
  if len(blocks) == 1:
    return blocks[0]
  length = max(block["input_ids"].shape[1] for block in blocks)
  pad_values = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0,
                "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0)}
  arrays = {key: np.full((len(texts), length), pad_values[key], dtypes[key]) for key in blocks[0]}
  row = 0
  for block in blocks:
    for key, values in block.items():
      columns = slice(length - values.shape[1], None) if tokenizer.padding_side == "left" else slice(0, values.shape[1])
      arrays[key][row:row + len(values), columns] = values
    row += len(values)
  return arrays


def targets_from_generations(tokens: np.ndarray, *, eos_token_id: int, pad_token_id: int,
                             decoder_start_token_id: int) -> dict:
  """Teacher-forcing arrays of generated ids [N, T]: every token up to and including the first EOS is real.

  Returns:
    label (-1 after the first EOS), token_weights, decoder_input_ids (label shifted right behind the start token).
  """
  is_eos = tokens == eos_token_id
  real = (np.cumsum(is_eos, axis=1) - is_eos) == 0
  label = np.where(real, tokens, -1).astype(np.int32)
  shifted = np.where(real, tokens, pad_token_id)[:, :-1]
  decoder_input_ids = np.concatenate([np.full_like(tokens[:, :1], decoder_start_token_id), shifted], axis=1)
  return {"label": label, "token_weights": real.astype(np.float32),
          "decoder_input_ids": decoder_input_ids.astype(np.int32)}
