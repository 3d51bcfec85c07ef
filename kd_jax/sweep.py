"""Sweeps: one config, many runs. `config.sweep` (see kd_jax/schema.py) expands into points, which run in-process
one after another (or one per process with `--sweep_index`), then the report is written (kd_jax/report.py).

With `config.sweep.mode = "vectorized"`, the points that differ only in loss hyperparameters, learning rate and seed
train together in one compiled program (kd_jax/vectorized.py), with the same outputs per point.

A point is the base config with one value of every factor (a grid field, or a zipped group) and a seed. Point
`name` runs through `train.run_group` in `<workdir>/<name>/`, e.g. `<workdir>/distill.temperature=2,seed=1/`,
so each has its own results.json, config.json, history.jsonl and checkpoints. Points that train the same teacher
share `<workdir>/teachers/<key>/`: the first of them trains it and builds its logit cache, the others reuse both;
a file lock makes parallel processes wait for the one that is training it.

Everything is checked before any point runs or anything is written: the sweep definition, every point's config,
the data sizes, and that an existing point directory holds a run of the same config. A rerun skips finished points
(results.json written) and resumes the others from their checkpoints. `<workdir>/sweep.json` records the factors
and points for the report.
"""

import contextlib
import dataclasses
import fcntl
import glob
import itertools
import os

import jax
import ml_collections
from absl import logging

from kd_jax import (config_paths, config_validation, data, ensemble, files, fingerprints, preemption, report, results,
                    schema, teacher, train, vectorized)
from kd_jax.errors import ConfigError, UserError

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
  reset: a point is a single run.
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
        config_paths.set_value(point_config, path, value)
      point_config.seed = seed
      for key in single_run.keys():
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
      config_validation.validate(point.config)
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


def _teacher_ready(config: ml_collections.ConfigDict) -> bool:
  """The shared teacher directory holds the finished teacher and, unless the teacher runs online, a teacher cache
(dense, top-k or generations: kd_jax/student_data.py); for an ensemble, every member's directory does."""
  online = config.distill.teacher_mode == "online" and config.distill.strategy == "token"
  for member in ensemble.member_configs(config, config.teacher.workdir):
    directory = member.teacher.workdir
    trained = member.teacher.init != "train" or os.path.isdir(os.path.join(directory, "params"))
    if not (trained and (online or glob.glob(os.path.join(directory, "*_cache", "*", "metadata.json")))):
      return False
  return True


@contextlib.contextmanager
def _teacher_lock(config: ml_collections.ConfigDict):
  """While the shared teacher is not ready, runs the point under an exclusive lock on `<teacher dir>.lock`.

  train.run_group trains the teacher and builds its cache first, so another process that wants the same teacher
  waits for this point, then finds both ready and runs alongside. Single-process jobs only: the processes of one
  multi-host job train a teacher together, and one of them waiting for another's lock would deadlock them.
  """
  if jax.process_count() > 1 or _teacher_ready(config):
    yield
    return
  lock_path = os.path.normpath(config.teacher.workdir) + ".lock"
  os.makedirs(os.path.dirname(lock_path) or ".", exist_ok=True)
  with open(lock_path, "a") as lock_file:
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    if _teacher_ready(config):  # another process finished it while this one waited
      fcntl.flock(lock_file, fcntl.LOCK_UN)
    yield


def run_point(point: Point, workdir: str, num_points: int) -> None:
  """Runs (or resumes) one point; a finished point is skipped."""
  status = point_status(point, workdir)
  what = {"finished": "finished earlier, skipped", "partial": "resuming", "new": "starting"}[status]
  logging.info("Sweep point %d (of %d points), %s: %s.", point.index, num_points, point.name, what)
  if status == "finished":
    return
  with _teacher_lock(point.config):
    train.run_group([_run_spec(point, workdir)])


def run_vectorized_group(group: list[Point], workdir: str) -> None:
  """Trains the unfinished points of a group (vectorized.groups) together; finished ones are skipped."""
  unfinished = [point for point in group if point_status(point, workdir) != "finished"]
  logging.info("Sweep points %s: %d of %d finished earlier; training %d together.",
               ", ".join(str(point.index) for point in group), len(group) - len(unfinished), len(group),
               len(unfinished))
  if unfinished:
    with _teacher_lock(unfinished[0].config):
      train.run_group([_run_spec(point, workdir) for point in unfinished], vectorize=True)


def _run_spec(point: Point, workdir: str) -> train.RunSpec:
  return train.RunSpec(point.config, os.path.join(workdir, point.name), point.name)


def run(config: ml_collections.ConfigDict, workdir: str, *, point_index: int | None = None,
        list_points: bool = False) -> str:
  """Checks the whole sweep of a validated `config` (config_validation.validate; each point is validated here), then
  lists its points, runs one of them, or runs all of them and writes the report.

  SIGTERM stops the point (or group) being trained at the next chunk with a checkpoint (`preemption.Preempted`);
  a rerun resumes it and skips the finished points.

  Returns:
    what to print: the listing (`list_points`), the report's summary.md (a whole sweep, on process 0), else ''.
  """
  if not is_sweep(config):
    raise UserError("--sweep_index and --list_points need a sweep config (config.sweep sets no grid, zipped "
                    "values or seeds > 1); see configs/sweep_*.py")
  points = expand(config, workdir)
  if point_index is not None and not 0 <= point_index < len(points):
    raise UserError(f"--sweep_index={point_index}: the sweep has {len(points)} points, 0 to {len(points) - 1} "
                    "(see --list_points)")
  check_points(config, points, workdir)
  if list_points:
    return "\n".join(f"{point.index}\t{point_status(point, workdir)}\t{point.name}" for point in points)
  vectorize = config.sweep.mode == "vectorized" and point_index is None
  if vectorize:
    vectorized.check(config)
  if jax.process_index() == 0:
    files.write_json(os.path.join(workdir, results.SWEEP_FILE), describe(config, points))
  with preemption.sigterm_requests_stop():
    if vectorize:
      for group in vectorized.groups(points):
        run_vectorized_group(group, workdir)
    else:
      for point in points if point_index is None else [points[point_index]]:
        run_point(point, workdir, len(points))
  if point_index is None and jax.process_index() == 0:
    written = report.write_sweep_report(workdir)
    logging.info("Sweep report: %s", ", ".join(path for path in written if not path.endswith(".pdf")))
    with open(os.path.join(workdir, "summary.md")) as stream:
      return stream.read()
  return ""
