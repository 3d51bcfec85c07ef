"""Artifacts the tests of a session share, each built once by whichever xdist worker asks first (the others wait on a
file lock, then read it): tests point at them (read-only) or copy them.

`shared_artifact(tmp_path_factory, name, build)` is the mechanism; the fixtures below (registered by conftest.py) are
the artifacts: finished runs of configs/default.py:smoke, configs/sst2.py:smoke and configs/causal_lm.py:smoke (their
trained teachers and caches included), and a finished configs/sweep_temp.py:smoke sweep.
"""

import fcntl
import os
import pathlib
import shutil
from typing import Callable

import pytest

from tests import helpers

DONE = ".built"


def shared_artifact(tmp_path_factory: pytest.TempPathFactory, name: str,
                    build: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """The directory of artifact `name`, built by `build(directory)` once per test session (all xdist workers).

  The builder writes into a temporary directory that is renamed into place when `build` returns; a worker that finds
  the artifact missing waits on `<name>.lock` for the one building it. A failed build is retried by the next caller.
  """
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # the session's directory, shared by its workers
  root = base / "shared-artifacts"
  root.mkdir(parents=True, exist_ok=True)
  target = root / name
  with open(root / f"{name}.lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (target / DONE).exists():
      building = root / f"{name}.building"
      shutil.rmtree(building, ignore_errors=True)
      shutil.rmtree(target, ignore_errors=True)
      building.mkdir()
      build(building)
      (building / DONE).touch()
      building.rename(target)
  return target


def copy_of(artifact: pathlib.Path, destination: pathlib.Path) -> pathlib.Path:
  """A private copy of an artifact's directory (for a test that writes into it)."""
  shutil.copytree(artifact, destination, ignore=shutil.ignore_patterns(DONE))
  return destination


def _smoke_run(directory: pathlib.Path) -> None:
  from kd_jax import files, train  # pylint: disable=import-outside-toplevel
  returned = train.train_and_evaluate(helpers.load_config(), str(directory / "run"))
  files.write_json(str(directory / "returned.json"), returned)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> tuple[pathlib.Path, dict]:
  """(workdir, what train_and_evaluate returned) of a finished `configs/default.py:smoke` run on this session's
  devices. Its trained teacher, `<workdir>/teacher` (with its dense logit cache of the smoke data), may be pointed at
  by configs of the same data (config.teacher.workdir); copy the run (`copy_of`) to write into it."""
  root = shared_artifact(tmp_path_factory, "default-smoke", _smoke_run)
  from kd_jax import files  # pylint: disable=import-outside-toplevel
  return root / "run", files.read_json(str(root / "returned.json"))


def _smoke_sweep(directory: pathlib.Path) -> None:
  done = helpers.run_main("--config=configs/sweep_temp.py:smoke", f"--workdir={directory / 'sweep'}")
  assert done.returncode == 0, done.stderr[-3000:]
  (directory / "stdout.txt").write_text(done.stdout)


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> tuple[pathlib.Path, str]:
  """(workdir, what the command line printed) of a finished `configs/sweep_temp.py:smoke` sweep (through the
  in-process command line): its points, shared teacher, sweep.json and report. Read-only: copy it to write."""
  root = shared_artifact(tmp_path_factory, "sweep-temp-smoke", _smoke_sweep)
  return root / "sweep", (root / "stdout.txt").read_text()


def _sst2_smoke_run(directory: pathlib.Path) -> None:
  from kd_jax import files, train  # pylint: disable=import-outside-toplevel
  config = helpers.load_config("configs/sst2.py", "smoke")
  config.baseline = False  # the hard-label run is the KD run's code with the soft weight at 0 (test_train.py)
  returned = train.train_and_evaluate(config, str(directory / "run"))
  files.write_json(str(directory / "returned.json"), returned)


@pytest.fixture(scope="session")
def sst2_smoke_run(tmp_path_factory) -> tuple[pathlib.Path, dict]:
  """(workdir, what train_and_evaluate returned) of `configs/sst2.py:smoke` without the hard-label student: the
  fixture RoBERTa teacher fine-tuned in the run, `<workdir>/teacher` with its dense logit cache, which the other SST-2
  smoke runs of the tests reuse (--config.teacher.workdir: the same teacher and data). Read-only."""
  root = shared_artifact(tmp_path_factory, "sst2-smoke", _sst2_smoke_run)
  from kd_jax import files  # pylint: disable=import-outside-toplevel
  return root / "run", files.read_json(str(root / "returned.json"))


def _causal_lm_smoke_run(directory: pathlib.Path) -> None:
  done = helpers.run_main("--config=configs/causal_lm.py:smoke", f"--workdir={directory / 'run'}",
                          "--config.baseline=False")
  assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="session")
def causal_lm_smoke_run(tmp_path_factory) -> pathlib.Path:
  """The workdir of a finished `configs/causal_lm.py:smoke` run (through the in-process command line) without its
  hard-label student: the fixture Llama teacher trained in the run, `<workdir>/teacher` (no logit cache: the smoke
  distils online), is the teacher of configs/custom_lm.py:smoke too (the same teacher and data sections), whose runs
  point config.teacher.workdir at it instead of training it again. Read-only."""
  return shared_artifact(tmp_path_factory, "causal-lm-smoke", _causal_lm_smoke_run) / "run"
