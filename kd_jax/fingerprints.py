"""Short content hashes that identify data, parameters and configs (for cache and teacher identity)."""

import hashlib
import json

import jax
import numpy as np


def fingerprint_arrays(*arrays) -> str:
  """sha256 (first 16 hex digits) of the arrays' dtypes, shapes and bytes, in order."""
  digest = hashlib.sha256()
  for array in arrays:
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(memoryview(array.reshape(-1).view(np.uint8)))  # the bytes in place (tobytes copies)
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
