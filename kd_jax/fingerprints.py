"""Short content hashes that identify data, parameters and configs (for cache and teacher identity)."""

import hashlib
import json

import jax
import numpy as np


def fingerprint_arrays(*arrays, as_dtype=None) -> str:
  """sha256 (first 16 hex digits) of the arrays' dtypes, shapes and bytes, in order.

  With `as_dtype` (dtype -> dtype), each array is hashed as if converted to `as_dtype(its dtype)` (converted a block
  at a time, never whole): arrays stored narrow hash as their wide form, so the fingerprint is one of the values.
  """
  digest = hashlib.sha256()
  for array in arrays:
    dtype = np.dtype(array.dtype) if as_dtype is None else np.dtype(as_dtype(array.dtype))
    if dtype == array.dtype:
      array = np.ascontiguousarray(array)
      digest.update(f"{array.dtype}{array.shape}".encode())
      digest.update(memoryview(array.reshape(-1).view(np.uint8)))  # the bytes in place (tobytes copies)
      continue
    flat = np.asarray(array).reshape(-1)
    digest.update(f"{dtype}{flat.shape if np.ndim(array) == 0 else np.shape(array)}".encode())
    for start in range(0, flat.size, 1 << 22):
      digest.update(memoryview(np.ascontiguousarray(flat[start:start + (1 << 22)], dtype).view(np.uint8)))
  return digest.hexdigest()[:16]


def fingerprint_tree(tree) -> str:
  """fingerprint_arrays over the leaves of a pytree (e.g. model parameters), with its structure."""
  leaves, treedef = jax.tree.flatten(tree)
  digest = hashlib.sha256(str(treedef).encode())
  digest.update(fingerprint_arrays(*[np.asarray(leaf) for leaf in leaves]).encode())
  return digest.hexdigest()[:16]


def fingerprint_json(value) -> str:
  """sha256 (first 16 hex digits) of a JSON-serializable value, keys sorted."""
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
