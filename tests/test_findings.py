"""The findings configs (configs/findings/, docs/findings.md) in their `:smoke` forms, on tiny IDX files written here
(the real Fashion-MNIST files may be absent: the configs' full runs are the findings page's, not the tests').

The images are random, so nothing here learns: the tests check the protocol the findings rest on (a teacher on every
label, restored by a sweep at other labeled fractions, paired intervals in the report) rather than accuracies.
"""

import csv
import os
import re

import pytest

from kd_jax import files
from tests.helpers import run_main
from tests.test_images import write_fixture

# The sweeps' reports are read for their tables and summaries; their figures are drawn as drafts (conftest.py).
pytestmark = pytest.mark.usefixtures("draft_plots")


@pytest.fixture(scope="module")
def strong_run(tmp_path_factory):
  """A finished configs/findings/fashion_strong.py:smoke run on 200 + 40 fixture images: (data dir, workdir)."""
  root = tmp_path_factory.mktemp("findings")
  write_fixture(root)
  workdir = root / "strong"
  done = run_main("--config=configs/findings/fashion_strong.py:smoke", f"--workdir={workdir}",
                  f"--config.data.data_dir={root}", "--config.data.train_fraction=1.0")
  assert done.returncode == 0, done.stderr[-3000:]
  return root, workdir


@pytest.mark.slow
def test_strong_teacher_trains_on_every_training_label(strong_run):
  _, workdir = strong_run
  results = files.read_json(os.path.join(workdir, "results.json"))
  assert results["data"]["num_validation"] == 10 and results["data"]["num_test"] == 40
  assert results["data"]["num_labeled"] == results["data"]["num_train"] == 190
  # The smoke teacher, counted by hand: conv 4 and 8 channels (3x3), Dense 16, head 10.
  assert results["efficiency"]["teacher"]["params"] == (9 * 4 + 4) + (9 * 4 * 8 + 8) + (7 * 7 * 8 * 16 + 16) + (16 * 10 + 10)
  assert os.path.isdir(os.path.join(workdir, "teacher", "params"))


@pytest.mark.slow
def test_showcase_sweep_restores_one_teacher_at_both_labeled_fractions(strong_run):
  """configs/findings/sweep_fashion_showcase.py:smoke with teacher.init at the strong run's teacher (as the full
  sweep does): every point reports that teacher's test metrics, whatever its labeled fraction; the report's paired
  intervals never call a difference real when they contain 0."""
  data_dir, strong_workdir = strong_run
  workdir = data_dir / "showcase"
  done = run_main("--config=configs/findings/sweep_fashion_showcase.py:smoke", f"--workdir={workdir}",
                  f"--config.data.data_dir={data_dir}", "--config.data.train_fraction=1.0",
                  f"--config.teacher.init={strong_workdir / 'teacher'}", "--config.sweep.seeds=3")  # 3: intervals
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(workdir, "results.csv")) as stream:
    rows = list(csv.DictReader(stream))
  assert len(rows) == 2 * 2 * 3
  assert sorted({float(row["data.labeled_fraction"]) for row in rows}) == [0.3, 1.0]
  teacher_accuracy = files.read_json(os.path.join(strong_workdir, "results.json"))["metrics"]["teacher"]["accuracy"]
  assert {float(row["teacher_accuracy"]) for row in rows} == {teacher_accuracy}
  for row in rows:
    point = files.read_json(os.path.join(workdir, row["point"], "results.json"))
    labeled = point["data"]["num_labeled"]
    assert labeled == 190 if float(row["data.labeled_fraction"]) == 1.0 else 0.25 * 190 < labeled < 0.35 * 190
    assert "teacher" not in point["train"]["phases"]  # restored, not trained
  summary = open(os.path.join(workdir, "summary.md")).read()
  assert "12 of 12 points finished" in summary and "95% t interval" in summary
  assert_no_real_difference_claimed_inside_an_interval_containing_zero(summary)


def assert_no_real_difference_claimed_inside_an_interval_containing_zero(summary: str) -> None:
  """The findings' KD-vs-hard line calls KD better or worse somewhere exactly when some row of the difference table
  has a KD - hard interval that excludes 0 (issue 25: an interval containing 0 is never stated as a difference)."""
  intervals = [(float(low), float(high)) for low, high in re.findall(
      r"\| student \(KD\) − hard labels \| [^|]+ \| 95% t interval \[([-+0-9.]+), ([-+0-9.]+)\]", summary)]
  assert intervals, summary
  verdict = next(line for line in summary.splitlines() if line.startswith("- KD vs hard labels"))
  claims = "better at" in verdict or "worse at" in verdict
  assert claims == any(not low <= 0.0 <= high for low, high in intervals), (verdict, intervals)


@pytest.mark.slow
def test_labeled_fraction_sweep_smoke(strong_run):
  """configs/findings/sweep_fashion_labeled.py:smoke (its teacher restored, as the full sweep does): the small student
  at each labeled fraction, the KD and hard-label students on the same number of steps."""
  data_dir, strong_workdir = strong_run
  workdir = data_dir / "labeled"
  done = run_main("--config=configs/findings/sweep_fashion_labeled.py:smoke", f"--workdir={workdir}",
                  f"--config.data.data_dir={data_dir}", "--config.data.train_fraction=1.0",
                  f"--config.teacher.init={strong_workdir / 'teacher'}")
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(workdir, "results.csv")) as stream:
    rows = list(csv.DictReader(stream))
  assert [(float(row["data.labeled_fraction"]), int(row["seed"])) for row in rows] == [
      (0.3, 0), (0.3, 1), (1.0, 0), (1.0, 1)]
  assert {int(row["student_params"]) for row in rows} == {(9 * 4 + 4) + (9 * 4 * 8 + 8) + (7 * 7 * 8 * 10 + 10)}


@pytest.mark.slow
def test_temperature_sweep_smoke(strong_run):
  """configs/findings/sweep_fashion_temperature.py:smoke with 3 seeds (its teacher restored, as the full sweep does):
  every temperature in the difference table with its t interval, one hard-label student per seed shared by every
  temperature, and neither the KD-vs-hard line nor the best-vs-neighbours line calls a difference whose interval
  contains 0."""
  data_dir, strong_workdir = strong_run
  workdir = data_dir / "temperature"
  done = run_main("--config=configs/findings/sweep_fashion_temperature.py:smoke", f"--workdir={workdir}",
                  f"--config.data.data_dir={data_dir}", "--config.data.train_fraction=1.0",
                  f"--config.teacher.init={strong_workdir / 'teacher'}", "--config.sweep.seeds=3")
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(workdir, "results.csv")) as stream:
    rows = list(csv.DictReader(stream))
  temperatures = (1.0, 4.0, 16.0)
  assert [(float(row["distill.temperature"]), int(row["seed"])) for row in rows] == [
      (t, seed) for t in temperatures for seed in range(3)]
  for seed in range(3):  # the hard-label student does not depend on T: one per seed, the same in every row
    assert len({row["student_hard_accuracy"] for row in rows if int(row["seed"]) == seed}) == 1
  summary = open(os.path.join(workdir, "summary.md")).read()
  for t in ("1", "4", "16"):
    assert re.search(rf"\| (\*\*)?{t}(\*\*)?( \(best\))? \| student \(KD\) − hard labels \| [^|]+ \| 95% t interval \[",
                     summary), (t, summary)
  assert_no_real_difference_claimed_inside_an_interval_containing_zero(summary)
  neighbours = next(line for line in summary.splitlines() if "against its neighbours" in line)
  compared = re.findall(r"interval \[([-+0-9.]+), ([-+0-9.]+)\], n = 3\), ([a-z ]+)", neighbours)
  assert len(compared) == (1 if "**1** (best)" in summary or "**16** (best)" in summary else 2), neighbours
  for low, high, outcome in compared:
    assert (outcome in ("better", "worse")) == (not float(low) <= 0.0 <= float(high)), neighbours


@pytest.mark.slow
def test_capacity_sweep_smoke(strong_run):
  """configs/findings/sweep_fashion_capacity.py:smoke with 3 seeds: five teachers (student-size, medium, strong,
  early-stopped, strong -> assistant) of one small student, the hard-label student trained with the first teacher's
  points only, the chain sharing the strong teacher (one directory, one training) and reporting its assistant; the
  report's KD-vs-hard and best-vs-neighbours lines call a difference only where its interval excludes 0."""
  data_dir, _ = strong_run
  workdir = data_dir / "capacity"
  done = run_main("--config=configs/findings/sweep_fashion_capacity.py:smoke", f"--workdir={workdir}",
                  f"--config.data.data_dir={data_dir}", "--config.data.train_fraction=1.0", "--config.sweep.seeds=3")
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(workdir, "results.csv")) as stream:
    rows = list(csv.DictReader(stream))
  assert [(row["teacher.num_epochs"], row["teacher.assistant.name"], int(row["seed"])) for row in rows] == [
      (epochs, assistant, seed) for epochs, assistant in (("1", ""), ("2", ""), ("3", ""), ("1", ""), ("3", "cnn"))
      for seed in range(3)]
  assert [bool(row["student_hard_accuracy"]) for row in rows] == [True] * 3 + [False] * 12
  assert [bool(row["assistant_accuracy"]) for row in rows] == [False] * 12 + [True] * 3
  strong, chain = rows[6:9], rows[12:15]
  assert {row["teacher_accuracy"] for row in strong} == {row["teacher_accuracy"] for row in chain}
  assert len(os.listdir(workdir / "teachers")) == 4 + 4  # four teachers (the chain's is the strong one) and locks
  assert {int(row["student_params"]) for row in rows} == {(9 * 4 + 4) + (9 * 4 * 8 + 8) + (7 * 7 * 8 * 10 + 10)}
  summary = open(os.path.join(workdir, "summary.md")).read()
  assert "15 of 15 points finished" in summary and "| teacher assistant |" in summary
  assert_no_real_difference_claimed_inside_an_interval_containing_zero(summary)
  neighbours = next(line for line in summary.splitlines() if "against its neighbours" in line)
  for low, high, outcome in re.findall(r"interval \[([-+0-9.]+), ([-+0-9.]+)\], n = 3\), ([a-z ]+)", neighbours):
    assert (outcome in ("better", "worse")) == (not float(low) <= 0.0 <= float(high)), neighbours
