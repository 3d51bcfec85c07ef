"""Running a sweep: its points in-process one after another (or one per process with `--sweep_index`), then the
report (kd_jax/reporting/report.py).

With `config.sweep.mode = "vectorized"`, the points that differ only in loss hyperparameters, learning rate and seed
train together in one compiled program (kd_jax/training/vectorized.py), with the same outputs per point.

Everything is checked before any point runs or anything is written: the sweep definition, every point's config,
the data sizes, and that an existing point directory holds a run of the same config (kd_jax/sweeps/expansion.py). The
first point that needs a teacher trains it and builds its cache; a file lock makes parallel processes wait for it,
the others reuse both. A rerun skips finished points (results.json written) and resumes the others from their
checkpoints.
"""

import contextlib
import fcntl
import glob
import logging
import os

import jax
import ml_collections

from kd_jax import files, train
from kd_jax.errors import UserError
from kd_jax.parallel import preemption
from kd_jax.reporting import report, results
from kd_jax.sweeps import expansion
from kd_jax.teachers import assistant, ensemble
from kd_jax.training import vectorized

logger = logging.getLogger(__name__)


def _teacher_ready(config: ml_collections.ConfigDict) -> bool:
  """The shared teacher directory holds the finished teacher and, unless the teacher runs online, a teacher cache
(dense, top-k or generations: kd_jax/teachers/student_data.py); for an ensemble, every member's directory does; with a
teacher assistant, its directory holds it finished and its cache too."""
  online = config.distill.teacher_mode == "online" and config.distill.strategy == "token"
  finished = lambda directory, trained: trained and (
      online or bool(glob.glob(os.path.join(directory, "*_cache", "*", "metadata.json"))))
  for member in ensemble.member_configs(config, config.teacher.workdir):
    directory = member.teacher.workdir
    if not finished(directory, member.teacher.init != "train" or os.path.isdir(os.path.join(directory, "params"))):
      return False
  if assistant.enabled(config):  # and the assistant distilled from it, with its cache
    directory = assistant.directory(config, config.teacher.workdir)
    return finished(directory, os.path.isdir(os.path.join(directory, "params")))
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


def run_point(point: expansion.Point, workdir: str, num_points: int) -> None:
  """Runs (or resumes) one point; a finished point is skipped."""
  status = expansion.point_status(point, workdir)
  what = {"finished": "finished earlier, skipped", "partial": "resuming", "new": "starting"}[status]
  logger.info("Sweep point %d (of %d points), %s: %s.", point.index, num_points, point.name, what)
  if status == "finished":
    return
  with _teacher_lock(point.config):
    train.run_group([_run_spec(point, workdir)])


def run_vectorized_group(group: list[expansion.Point], workdir: str) -> None:
  """Trains the unfinished points of a group (vectorized.groups) together; finished ones are skipped."""
  unfinished = [point for point in group if expansion.point_status(point, workdir) != "finished"]
  logger.info("Sweep points %s: %d of %d finished earlier; training %d together.",
              ", ".join(str(point.index) for point in group), len(group) - len(unfinished), len(group),
              len(unfinished))
  if unfinished:
    with _teacher_lock(unfinished[0].config):
      train.run_group([_run_spec(point, workdir) for point in unfinished], vectorize=True)


def _run_spec(point: expansion.Point, workdir: str) -> train.RunSpec:
  return train.RunSpec(point.config, os.path.join(workdir, point.name), point.name)


def run(config: ml_collections.ConfigDict, workdir: str, *, point_index: int | None = None,
        list_points: bool = False) -> str:
  """Checks the whole sweep of a validated `config` (preflight.check; each point is checked here), then
  lists its points, runs one of them, or runs all of them and writes the report.

  SIGTERM stops the point (or group) being trained at the next chunk with a checkpoint (`preemption.Preempted`);
  a rerun resumes it and skips the finished points.

  Returns:
    what to print: the listing (`list_points`), the report's summary.md (a whole sweep, on process 0), else ''.
  """
  if not expansion.is_sweep(config):
    raise UserError("--sweep_index and --list_points need a sweep config (config.sweep sets no grid, zipped "
                    "values or seeds > 1); see configs/sweep_*.py")
  points = expansion.expand(config, workdir)
  if point_index is not None and not 0 <= point_index < len(points):
    raise UserError(f"--sweep_index={point_index}: the sweep has {len(points)} points, 0 to {len(points) - 1} "
                    "(see --list_points)")
  expansion.check_points(config, points, workdir)
  if list_points:
    return "\n".join(f"{point.index}\t{expansion.point_status(point, workdir)}\t{point.name}" for point in points)
  vectorize = config.sweep.mode == "vectorized" and point_index is None
  if vectorize:
    vectorized.check(config)
  if jax.process_index() == 0:
    files.write_json(os.path.join(workdir, results.SWEEP_FILE), expansion.describe(config, points))
  with preemption.sigterm_requests_stop():
    if vectorize:
      for group in vectorized.groups(points):
        run_vectorized_group(group, workdir)
    else:
      for point in points if point_index is None else [points[point_index]]:
        run_point(point, workdir, len(points))
  if point_index is None and jax.process_index() == 0:
    written = report.write_sweep_report(workdir)
    logger.info("Sweep report: %s", ", ".join(path for path in written if not path.endswith(".pdf")))
    with open(os.path.join(workdir, "summary.md")) as stream:
      return stream.read()
  return ""
