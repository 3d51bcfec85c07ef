"""Fault injection: kills, preemption, damaged checkpoints and caches, NaN, a reused workdir. (Bad configs through the
command line: tests/test_config_validation.py.)"""

import glob
import json
import os
import shutil
import signal
import subprocess

import numpy as np
import pytest

from kd_jax.errors import NonFiniteError
from kd_jax.parallel import inference, preemption
from kd_jax.training import loop
from tests.helpers import Child, run_main

# The smoke run, stretched so that each phase lasts long enough to be interrupted, with frequent checkpoints.
RUN_ARGS = ("--config=configs/default.py:smoke", "--config.teacher.num_epochs=200", "--config.train.num_steps=1000",
            "--config.train.checkpoint_every_steps=50", "--config.train.eval_every_steps=500")
COMPARED = ("accuracy", "nll", "ece", "brier", "agreement", "kl_to_teacher")


def read_results(workdir):
  with open(os.path.join(workdir, "results.json")) as stream:
    return json.load(stream)


def assert_same_metrics(results, reference):
  """Bitwise equality on CPU: data order, dropout and the schedule are functions of the step."""
  for model in ("teacher", "student", "student_hard"):
    for name in COMPARED:
      assert results["metrics"][model][name] == reference["metrics"][model][name], (model, name)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("reference"))
  result = run_main(*RUN_ARGS, f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, read_results(workdir)


def interrupt_when(workdir, phase: str, step: int, sig) -> subprocess.CompletedProcess:
  """Starts the run in a child process and sends it `sig` once it logs `phase`'s training at `step` or later."""
  child = Child.main(*RUN_ARGS, f"--workdir={workdir}")
  child.wait_for_step(phase, step)
  child.send_signal(sig)
  finished = child.finish()
  assert not os.path.exists(os.path.join(workdir, "results.json")), "the run finished before it was interrupted"
  return finished


@pytest.mark.slow
def test_sigkill_during_student_then_rerun_gives_the_same_result(reference_run, tmp_path):
  _, reference = reference_run
  # At the log line of step 400 the save of step 350 has started, so that of step 300 has ended (one save at a time).
  killed = interrupt_when(str(tmp_path), "student", 400, signal.SIGKILL)
  assert killed.returncode == -signal.SIGKILL
  result = run_main(*RUN_ARGS, f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  results = read_results(tmp_path)
  assert results["train"]["resumed_from_step"] is not None and results["train"]["resumed_from_step"] >= 300
  assert results["train"]["resumed_phase"] == "student"
  assert_same_metrics(results, reference)


@pytest.mark.slow
@pytest.mark.parametrize("phase, phase_dir", [("teacher", "teacher/checkpoints"),
                                              ("student_hard", "checkpoints/student_hard")])
def test_sigterm_saves_a_checkpoint_exits_143_and_resumes(reference_run, tmp_path, phase, phase_dir):
  _, reference = reference_run
  stopped = interrupt_when(str(tmp_path), phase, 100, signal.SIGTERM)
  assert stopped.returncode == 143, stopped.stderr[-2000:]
  message = stopped.stderr.strip().splitlines()[-1]
  assert message.startswith("preempted: ") and "stopped by SIGTERM at step" in message, message
  stopped_at = int(message.split("at step ")[1].split()[0])
  assert os.path.isdir(os.path.join(tmp_path, phase_dir, str(stopped_at)))  # saved at the step it stopped
  result = run_main(*RUN_ARGS, f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  results = read_results(tmp_path)
  assert results["train"]["phases"][phase]["resumed_from_step"] == stopped_at
  assert (results["train"]["resumed_phase"], results["train"]["resumed_from_step"]) == (phase, stopped_at)
  assert_same_metrics(results, reference)


@pytest.mark.slow
def test_damaged_newest_checkpoint_is_skipped_for_the_previous_one(reference_run, tmp_path):
  reference_dir, reference = reference_run
  workdir = tmp_path / "run"
  shutil.copytree(reference_dir, workdir)
  os.remove(workdir / "results.json")
  for data_file in glob.glob(str(workdir / "checkpoints" / "student" / "1000" / "**" / "d" / "*"), recursive=True):
    with open(data_file, "r+b") as stream:  # cut off mid-write
      stream.truncate(os.path.getsize(data_file) // 2)
  result = run_main(*RUN_ARGS, f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "checkpoints/student/1000 cannot be restored" in result.stderr
  results = read_results(workdir)
  assert results["train"]["resumed_from_step"] == 950
  assert_same_metrics(results, reference)


@pytest.mark.slow
def test_damaged_teacher_cache_is_rebuilt(reference_run, tmp_path):
  reference_dir, reference = reference_run
  workdir = tmp_path / "run"
  shutil.copytree(reference_dir, workdir)
  (logits_file,) = glob.glob(str(workdir / "teacher" / "logit_cache" / "*" / "logits.npy"))
  with open(logits_file, "r+b") as stream:
    stream.truncate(64)
  result = run_main(*RUN_ARGS, f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  results = read_results(workdir)
  assert results["teacher_cache"]["built"] is True
  assert_same_metrics(results, reference)


@pytest.mark.slow
def test_nan_stops_training_names_step_and_term_and_keeps_good_checkpoints(reference_run, tmp_path):
  reference_dir, _ = reference_run
  result = run_main(*RUN_ARGS, f"--workdir={tmp_path}", f"--config.teacher.init={reference_dir}/teacher",
                    "--config.optim.learning_rate=1e12", "--config.optim.warmup_ratio=0.5")
  assert result.returncode == 1, result.stderr[-2000:]
  message = result.stderr.strip().splitlines()[-1]
  assert message.startswith("error: student: non-finite ") and " at step " in message, message
  assert "loss=nan" in message or "loss=inf" in message or "grad_norm=" in message or "param_norm=" in message
  bad_step = int(message.split(" at step ")[1].split(";")[0])
  saved = [int(name) for name in os.listdir(tmp_path / "checkpoints" / "student") if name.isdigit()]
  assert all(step < bad_step for step in saved), (saved, bad_step)
  assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_same_config_twice_gives_identical_metrics(reference_run, tmp_path):
  _, reference = reference_run
  result = run_main(*RUN_ARGS, f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert_same_metrics(read_results(tmp_path), reference)


@pytest.mark.slow
def test_workdir_of_another_config_is_refused_unless_overwrite(reference_run, tmp_path):
  reference_dir, _ = reference_run
  workdir = tmp_path / "run"
  shutil.copytree(reference_dir, workdir)
  before = sorted(os.listdir(workdir))
  result = run_main(*RUN_ARGS, f"--workdir={workdir}", "--config.data.name=synthetic_clusters")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: --workdir={workdir} holds a run of another config (data.name: 'digits' -> 'synthetic_clusters')")
  assert sorted(os.listdir(workdir)) == before
  result = run_main(*RUN_ARGS, f"--workdir={workdir}", "--config.data.name=synthetic_clusters",  # a short new run
                    "--config.teacher.num_epochs=1", "--config.train.num_steps=10", "--config.baseline=False",
                    "--overwrite")
  assert result.returncode == 0, result.stderr[-3000:]
  assert read_results(workdir)["data"]["name"] == "synthetic_clusters"
  (moved,) = glob.glob(f"{workdir}.replaced-*")
  assert read_results(moved)["data"]["name"] == "digits"  # the earlier run is kept, not deleted


def test_preemption_during_inference_stops_cleanly():
  with preemption.sigterm_requests_stop():
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(preemption.Preempted, match="during inference"):
      inference.predict_logits(lambda params, inputs: inputs, None, np.zeros((10, 2)), batch_size=4, num_devices=1)


@pytest.mark.slow
@pytest.mark.usefixtures("draft_plots")  # reads the report's tables, not its figures
def test_two_sweep_index_processes_share_one_workdir_and_teacher(tmp_path):
  """Points 0 and 2 of the smoke temperature sweep (same teacher) run as two processes at once."""
  workdir = tmp_path / "W"
  children = [Child.main("--config=configs/sweep_temp.py:smoke", f"--workdir={workdir}", f"--sweep_index={index}")
              for index in (0, 2)]
  for finished in [child.finish() for child in children]:
    assert finished.returncode == 0, finished.stderr[-3000:]
  sweep = json.load(open(workdir / "sweep.json"))
  finished = [point["name"] for point in sweep["points"] if (workdir / point["name"] / "results.json").exists()]
  assert finished == [sweep["points"][0]["name"], sweep["points"][2]["name"]]
  # One of the two trained the shared teacher; the other waited for it and reused it.
  trained_teacher = ["teacher" in read_results(workdir / name)["train"]["phases"] for name in finished]
  assert sorted(trained_teacher) == [False, True]
  teachers = [name for name in os.listdir(workdir / "teachers") if not name.endswith(".lock")]
  assert len(teachers) == 1
  # The rest of the sweep then runs in-process, skipping the two finished points, and reports all four.
  result = run_main("--config=configs/sweep_temp.py:smoke", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.count("finished earlier, skipped") == 2
  assert "4 of 4 points finished" in open(workdir / "summary.md").read()


class _Store:
  """What fetch_finite_metrics asks of a checkpoint store."""
  directory = "/runs/x/checkpoints/student"

  def latest_step(self):
    return 20


def test_non_finite_metrics_name_the_step_term_and_stacked_run():
  """One chunk of 3 steps from step 20: step 22's loss is NaN for the second of two stacked runs only."""
  stacked = {"loss": np.array([[0.5, 0.4], [0.3, np.nan], [0.2, 0.1], [0.0, 0.0]]),
             "grad_norm": np.ones((4, 2))}
  unchecked = [(20, 3, stacked)]
  with pytest.raises(NonFiniteError, match=r"^student of T=2: non-finite loss=nan at step 22; training stopped, "
                                           r"last good checkpoint: step 20 in /runs/x/checkpoints/student;"):
    loop.fetch_finite_metrics("student", unchecked, _Store(), run_names=["T=1", "T=2"])
  first_run = [(20, 3, {name: values[:, 0] for name, values in stacked.items()})]
  fetched = loop.fetch_finite_metrics("student", first_run, _Store())
  assert [float(step_metrics["loss"]) for step_metrics in fetched] == [0.5, 0.3, 0.2]
  with pytest.raises(NonFiniteError, match=r"^student: non-finite loss=nan at step 22;"):
    loop.fetch_finite_metrics("student", [(20, 3, {name: values[:, 1] for name, values in stacked.items()})],
                               _Store())
