"""Atomic file writes: a reader (or a rerun after a killed run) never sees a half-written file."""

import contextlib
import json
import os
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_open(path: str):
  """Yields a binary stream on a temporary file next to `path`; on success it is fsynced and renamed over `path`.

  On any exception (or a kill) `path` keeps its previous content and the temporary file is removed (a kill may
  leave a hidden `.<name>.*.tmp` file behind, never a truncated `path`).
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temporary_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(handle, "wb") as stream:
      yield stream
      stream.flush()
      os.fsync(stream.fileno())
    os.replace(temporary_path, path)
  finally:
    if os.path.exists(temporary_path):
      os.remove(temporary_path)


def write_json(path: str, value) -> None:
  """Atomically writes `value` as indented JSON."""
  with atomic_open(path) as stream:
    stream.write((json.dumps(value, indent=2) + "\n").encode())


def read_json(path: str):
  """Parses the JSON file at `path`."""
  with open(path) as stream:
    return json.load(stream)


def write_npy(path: str, array: np.ndarray) -> None:
  """Atomically writes one array in .npy format (memory-mappable on read)."""
  with atomic_open(path) as stream:
    np.save(stream, array)


def as_json_value(value):
  """`value` as it reads back from JSON (tuples become lists, keys strings)."""
  return json.loads(json.dumps(value))
