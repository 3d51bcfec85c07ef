"""Statistics over repeated runs (seeds): mean and spread, paired differences with the interval their seeds allow.

Pure functions of 1-D arrays of per-seed values (NumPy; scipy for Student's t); NaN marks a missing value and is
left out.
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


# Intervals of a mean over n seeds: none below MIN_SEEDS_FOR_INTERVAL (two differences say nothing about their
# spread's distribution), Student's t from there, and the percentile bootstrap beside it from MIN_SEEDS_FOR_BOOTSTRAP
# (below that the bootstrap distribution has too few distinct resamples to hold its nominal level).
MIN_SEEDS_FOR_INTERVAL = 3
MIN_SEEDS_FOR_BOOTSTRAP = 10


def t_mean_interval(values, *, level: float = CONFIDENCE_LEVEL) -> tuple[float, float]:
  """Student's t interval of the mean of n values: mean ± t_{(1+level)/2, n-1} s / sqrt(n), s the sample std (ddof=1).
  Exact for normally distributed values; NaN for fewer than 2 values."""
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  values = _finite(values)
  if values.size < 2:
    return float("nan"), float("nan")
  mean, std = values.mean(), values.std(ddof=1)
  half_width = scipy_stats.t.ppf((1 + level) / 2, values.size - 1) * std / np.sqrt(values.size)
  return float(mean - half_width), float(mean + half_width)


@dataclasses.dataclass(frozen=True)
class PairedDifference:
  """d_i = a_i - b_i over the n seeds where both exist: mean, std (ddof=1), the values, and the interval of the mean.

  method: 't' (Student's t, n - 1 degrees of freedom) from MIN_SEEDS_FOR_INTERVAL seeds, None below (no interval:
  low and high are NaN); bootstrap_low/high: the percentile bootstrap interval from MIN_SEEDS_FOR_BOOTSTRAP seeds,
  else NaN.
  """
  mean: float
  std: float
  low: float
  high: float
  n: int
  values: tuple[float, ...] = ()
  method: str | None = None
  bootstrap_low: float = float("nan")
  bootstrap_high: float = float("nan")

  @property
  def sign(self) -> int:
    """+1 if the whole interval is above 0, -1 if below, 0 if it contains 0 (or there is no interval)."""
    if self.low > 0:
      return 1
    if self.high < 0:
      return -1
    return 0


def paired_difference(a, b, **bootstrap_options) -> PairedDifference:
  """The paired difference a - b of per-seed values (same seed, same position), with the interval its number of
  seeds allows (see PairedDifference)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape and a.ndim == 1, f"paired values need equal 1-D shapes, got {a.shape} and {b.shape}"
  differences = _finite(a - b)
  mean, std = mean_std(differences)
  n = int(differences.size)
  low, high, method = float("nan"), float("nan"), None
  if n >= MIN_SEEDS_FOR_INTERVAL:
    (low, high), method = t_mean_interval(differences), "t"
  bootstrap = bootstrap_mean_interval(differences, **bootstrap_options) if n >= MIN_SEEDS_FOR_BOOTSTRAP else (
      float("nan"), float("nan"))
  return PairedDifference(mean=mean, std=std, low=low, high=high, n=n, values=tuple(differences.tolist()),
                          method=method, bootstrap_low=bootstrap[0], bootstrap_high=bootstrap[1])


def _finite(values) -> np.ndarray:
  values = np.asarray(values, np.float64).ravel()
  return values[~np.isnan(values)]
