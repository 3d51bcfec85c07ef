"""Deterministic stratified subsets."""

import numpy as np


def stratified_mask(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
  """Boolean mask selecting round(fraction * n_c) examples of every class c (at least one), drawn with `rng`.

  Classes are visited in sorted order and each draws one permutation, so the mask is a function of the labels,
  the fraction and the generator's state.
  """
  mask = np.zeros(len(labels), dtype=bool)
  if fraction >= 1.0:
    mask[:] = True
    return mask
  for label in np.unique(labels):
    positions = np.flatnonzero(labels == label)
    count = max(1, int(round(fraction * len(positions))))
    mask[rng.permutation(positions)[:count]] = True
  return mask
