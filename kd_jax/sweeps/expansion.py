"""A sweep's points: `config.sweep` (see kd_jax/config/schema.py) expanded into single runs, checked before any runs.

A point is the base config with one value of every factor (a grid field, or a zipped group) and a seed. Point
`name` runs in `<workdir>/<name>/`, e.g. `<workdir>/distill.temperature=2,seed=1/`, so each has its own
results.json, config.json, history.jsonl and checkpoints. Points that train the same teacher share
`<workdir>/teachers/<key>/` (kd_jax/sweeps/runner.py runs them). `<workdir>/sweep.json` (`describe`) records the
factors and points for the report.
"""

import dataclasses
import itertools
import os

import ml_collections

from kd_jax import data, files, fingerprints, preflight, train
from kd_jax.config import paths, schema
from kd_jax.errors import ConfigError, UserError
from kd_jax.reporting import results
from kd_jax.teachers import teacher

TEACHERS_DIR = "teachers"


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a sweep."""
  index: int
  name: str
  value_indices: tuple[int, ...]  # per factor, which of its values
  assignments: dict  # dotted field path -> value, seed excluded
  seed: int
  config: ml_collections.ConfigDict


def is_sweep(config: ml_collections.ConfigDict) -> bool:
  """Whether the config defines more than one run."""
  return bool(config.sweep.grid) or bool(config.sweep.zipped) or config.sweep.seeds > 1


def factors(sweep_config: ml_collections.ConfigDict) -> tuple[results.Factor, ...]:
  """The factors of a validated `config.sweep`: each grid field, then each zipped group, in config order."""
  grid = [results.Factor((path,), tuple((value,) for value in values)) for path, values in sweep_config.grid]
  zipped = [results.Factor(tuple(path for path, _ in group), tuple(zip(*(values for _, values in group))))
            for group in sweep_config.zipped]
  return tuple(grid + zipped)


def point_name(assignments: dict, seed: int) -> str:
  """`path=value,...,seed=s` in factor order, e.g. 'distill.temperature=2,seed=1' (see `results.format_value`)."""
  return ",".join([f"{path}={results.format_value(value)}" for path, value in assignments.items()] + [f"seed={seed}"])


def expand(config: ml_collections.ConfigDict, workdir: str) -> list[Point]:
  """The points: the factors' cartesian product (the first factor outermost), each with seeds 0..seeds-1.

  A point's config is the base config with its values and seed set, teacher.workdir set to its shared teacher
  directory `<workdir>/teachers/<teacher.identity_key>` (unless the base config sets one), and the sweep section
  reset (a point is a single run) but for sweep.selection_metric: what its validation computes (a seq2seq task's
  generated metrics) and train.select='best_validation' keeps.
  """
  sweep_factors = factors(config.sweep)
  for factor in sweep_factors:
    labels = [factor.value_label(i) for i in range(len(factor.values))]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
      raise ConfigError(factor.fields[0], tuple(values[0] for values in factor.values),
                        f"lists the same value more than once ({', '.join(duplicates)})")
  single_run = schema.default_config().sweep
  points = []
  for value_indices in itertools.product(*(range(len(factor.values)) for factor in sweep_factors)):
    assignments = {}
    for factor, i in zip(sweep_factors, value_indices):
      assignments.update(zip(factor.fields, factor.values[i]))
    for seed in range(config.sweep.seeds):
      point_config = config.copy_and_resolve_references()
      for path, value in assignments.items():
        paths.set_value(point_config, path, value)
      point_config.seed = seed
      for key in set(single_run.keys()) - {"selection_metric"}:  # the metric a point's validation selects and computes
        point_config.sweep[key] = single_run[key]
      if config.teacher.workdir is None:
        point_config.teacher.workdir = os.path.join(workdir, TEACHERS_DIR, teacher.identity_key(point_config))
      points.append(Point(index=len(points), name=point_name(assignments, seed), value_indices=value_indices,
                          assignments=assignments, seed=seed, config=point_config))
  return points


def check_points(config: ml_collections.ConfigDict, points: list[Point], workdir: str) -> None:
  """Raises ConfigError / UserError, naming the point, for anything that would fail once points run."""
  if config.teacher.workdir is not None and len({teacher.identity_key(point.config) for point in points}) > 1:
    raise ConfigError("teacher.workdir", config.teacher.workdir,
                      "must be None in a sweep whose swept fields change the teacher or the data: each teacher then "
                      f"gets its own directory under {os.path.join(workdir, TEACHERS_DIR)}")
  data_checked = set()
  for point in points:
    try:
      preflight.check(point.config)
      data_key = fingerprints.fingerprint_json(files.as_json_value(
          {"data": point.config.data.to_dict(), "teacher_init": point.config.teacher.init}))
      if data_key not in data_checked:
        train.check_data_sizes(point.config, data.load_task(point.config))
        data_checked.add(data_key)
    except ConfigError as error:
      raise ConfigError(error.field, error.value, f"{error.allowed} (sweep point {point.name})") from None
    except UserError as error:
      raise UserError(f"{error} (sweep point {point.name})") from None
    _check_existing_run(point, workdir)


def _check_existing_run(point: Point, workdir: str) -> None:
  """A point directory left by an earlier run must hold the same config, or resuming it would mix two runs."""
  directory = os.path.join(workdir, point.name)
  differing = train.stored_config_differences(point.config, directory)
  if differing:
    raise UserError(f"{directory} holds a run of another config (config.{', config.'.join(differing)} differ); use "
                    "a new --workdir or delete that directory")


def point_status(point: Point, workdir: str) -> str:
  """'finished' (results.json written), 'partial' (started, resumable) or 'new'."""
  directory = os.path.join(workdir, point.name)
  if os.path.exists(os.path.join(directory, "results.json")):
    return "finished"
  return "partial" if os.path.exists(os.path.join(directory, "config.json")) else "new"


def describe(config: ml_collections.ConfigDict, points: list[Point]) -> dict:
  """The content of sweep.json: what the report needs to group the points' results."""
  return files.as_json_value({
      "factors": [factor.to_json() for factor in factors(config.sweep)], "seeds": config.sweep.seeds,
      "selection_metric": config.sweep.selection_metric,
      "points": [{"index": point.index, "name": point.name, "value_indices": point.value_indices,
                  "assignments": point.assignments, "seed": point.seed} for point in points],
      "config": config.to_dict()})
