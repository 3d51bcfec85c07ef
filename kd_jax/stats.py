"""Statistics over repeated runs (seeds): mean and spread, paired differences with a bootstrap interval.

Pure NumPy functions of 1-D arrays of per-seed values; NaN marks a missing value and is left out.
"""

import dataclasses

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE_LEVEL = 0.95


def mean_std(values) -> tuple[float, float]:
  """(mean, sample standard deviation with ddof=1) of the non-NaN values; std is NaN for fewer than 2 values."""
  values = _finite(values)
  if values.size == 0:
    return float("nan"), float("nan")
  std = float(values.std(ddof=1)) if values.size > 1 else float("nan")
  return float(values.mean()), std


def bootstrap_mean_interval(values, *, num_resamples: int = BOOTSTRAP_RESAMPLES, level: float = CONFIDENCE_LEVEL,
                            seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean: resample the n values with replacement `num_resamples` times and
  take the (1 - level)/2 and (1 + level)/2 quantiles of the resampled means. Deterministic given `seed`."""
  values = _finite(values)
  if values.size == 0:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  resampled_means = values[rng.integers(0, values.size, size=(num_resamples, values.size))].mean(axis=1)
  low, high = np.quantile(resampled_means, [(1 - level) / 2, (1 + level) / 2])
  return float(low), float(high)


@dataclasses.dataclass(frozen=True)
class PairedDifference:
  """d_i = a_i - b_i over the n seeds where both exist: mean, std (ddof=1) and bootstrap interval of the mean."""
  mean: float
  std: float
  low: float
  high: float
  n: int

  @property
  def exceeds_spread(self) -> bool:
    """|mean difference| > the standard deviation of the differences over seeds (False when n < 2)."""
    return bool(np.isfinite(self.std) and abs(self.mean) > self.std)

  @property
  def sign(self) -> int:
    """+1 if the whole interval is above 0, -1 if below, 0 if it contains 0 (or there is no interval)."""
    if self.low > 0:
      return 1
    if self.high < 0:
      return -1
    return 0


def paired_difference(a, b, **bootstrap_options) -> PairedDifference:
  """The paired difference a - b of per-seed values (same seed, same position); see `bootstrap_mean_interval`."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape and a.ndim == 1, f"paired values need equal 1-D shapes, got {a.shape} and {b.shape}"
  differences = a - b
  mean, std = mean_std(differences)
  low, high = bootstrap_mean_interval(differences, **bootstrap_options)
  return PairedDifference(mean=mean, std=std, low=low, high=high, n=int(np.isfinite(differences).sum()))


def _finite(values) -> np.ndarray:
  values = np.asarray(values, np.float64).ravel()
  return values[~np.isnan(values)]
