"""Vectorized sweeps: grouping, validation, and the same results as the sequential mode (8 CPU devices: 2-D mesh)."""

import csv
import glob
import json
import os
import signal

import pytest

from kd_jax import files, preflight
from kd_jax.errors import ConfigError
from kd_jax.sweeps import expansion, runner
from kd_jax.training import vectorized
from tests.helpers import Child, load_config, run_main

# The sweeps' reports draw every figure, cheaply: no test here looks at them (test_report.py does).
pytestmark = pytest.mark.usefixtures("draft_plots")


def sweep_config(mode, grid=(), zipped=(), seeds=1):
  config = load_config()
  config.sweep.grid, config.sweep.zipped, config.sweep.seeds, config.sweep.mode = grid, zipped, seeds, mode
  return config


def test_points_that_differ_in_shapes_form_separate_groups(tmp_path):
  config = sweep_config("vectorized", grid=(("distill.temperature", (1.0, 4.0)), ("optim.learning_rate", (3e-3, 1e-3))),
                        zipped=((("student.hidden_sizes", ((16,), (32,))), ("distill.divergence", ("js", "mse"))),),
                        seeds=2)
  preflight.check(config)
  groups = vectorized.groups(expansion.expand(config, str(tmp_path)))
  assert [len(group) for group in groups] == [8, 8]
  for group in groups:
    assert len({tuple(point.config.student.hidden_sizes) for point in group}) == 1
    assert {(p.config.distill.temperature, p.config.optim.learning_rate, p.seed) for p in group} == {
        (t, lr, s) for t in (1.0, 4.0) for lr in (3e-3, 1e-3) for s in (0, 1)}


def test_invalid_mode_and_seq2seq_are_refused():
  with pytest.raises(ConfigError, match=r"^config.sweep.mode='parallel': allowed: sequential, vectorized$"):
    preflight.check(sweep_config("parallel", seeds=2))
  config = sweep_config("vectorized", seeds=2)
  config.data.name = "esnli"
  with pytest.raises(ConfigError, match=r"^config.sweep.mode='vectorized': supports classification tasks; "):
    vectorized.check(config)


@pytest.mark.slow
@pytest.mark.multidevice  # the 8 points spread over the sweep axis of the 8 devices
def test_vectorized_sweep_matches_sequential_sweep(tmp_path):
  """8 points (2 temperatures x 2 learning rates x 2 seeds) trained together give the per-point results.json and
  results.csv of the same sweep run point by point, up to float rounding; 4 hard-label baselines serve 8 points.
  The vectorized points accumulate gradients over 4 micro-batches (train.microbatches: a scan over micro-batches
  inside the step, under the vmap over points), the sequential ones take one step per batch."""
  rows = {}
  for mode in ("sequential", "vectorized"):
    config = sweep_config(mode, grid=(("distill.temperature", (1.0, 4.0)), ("optim.learning_rate", (3e-3, 1e-3))),
                          seeds=2)
    config.train.microbatches = 4 if mode == "vectorized" else 1
    config.teacher.num_epochs = 10
    config.train.num_steps = 60
    config.train.log_every_steps, config.train.eval_every_steps, config.train.checkpoint_every_steps = 10, 30, 30
    workdir = str(tmp_path / mode)
    runner.run(config, workdir)
    with open(os.path.join(workdir, "results.csv")) as stream:
      rows[mode] = list(csv.DictReader(stream))
  assert [row["point"] for row in rows["vectorized"]] == [row["point"] for row in rows["sequential"]]
  # Metrics and sizes; not the timings (latency, throughput and the speedup over the teacher are measured anew).
  compared = [column for column in rows["sequential"][0] if column.split("_")[0] in ("student", "teacher")
              and not column.endswith(("latency_ms", "throughput_per_s", "latency_speedup"))]
  assert "student_accuracy" in compared and "student_hard_nll" in compared
  for sequential_row, vectorized_row in zip(rows["sequential"], rows["vectorized"]):
    for column in compared:
      if sequential_row[column] == "":  # a field the model has not (the teacher's compression over itself)
        assert vectorized_row[column] == "", (sequential_row["point"], column)
        continue
      assert float(vectorized_row[column]) == pytest.approx(float(sequential_row[column]), rel=1e-4, abs=1e-5), (
          sequential_row["point"], column)
  workdir = str(tmp_path / "vectorized")
  results = [files.read_json(os.path.join(workdir, row["point"], "results.json")) for row in rows["vectorized"]]
  assert {r["train"]["phases"]["student"]["vectorized_runs"] for r in results} == {8}
  assert {r["train"]["phases"]["student_hard"]["vectorized_runs"] for r in results} == {4}
  assert {r["train"]["phases"]["student_hard"]["shared_by_points"] for r in results} == {2}
  assert results[0]["train"]["phases"]["student"]["mesh"] == {"sweep": 8, "data": 1, "fsdp": 1, "tensor": 1}
  # The same results.json contract in both modes: the same keys, recursively (per-model metric lists aside).
  for row in rows["vectorized"]:
    vectorized_keys, sequential_keys = (
        nested_keys(files.read_json(os.path.join(str(tmp_path / mode), row["point"], "results.json")))
        for mode in ("vectorized", "sequential"))
    assert vectorized_keys == sequential_keys, (row["point"], vectorized_keys ^ sequential_keys)
  assert {r["train"]["resumed_phase"] for r in results} == {None}
  assert {r["train"]["phases"]["student"]["data_feed"] for r in results} == {"device"}
  for row in rows["vectorized"]:
    history = open(os.path.join(workdir, row["point"], "history.jsonl")).read()
    assert history.count('"phase": "student"') == history.count('"phase": "student_hard"') == 6 + 2
  assert os.path.exists(os.path.join(workdir, "summary.md"))


@pytest.mark.slow
def test_vectorized_sweep_over_beta_and_a_schedule_matches_sequential(tmp_path):
  """generalized_js at beta 0 (forward KL) and 0.5 with a linear temperature schedule (4 -> 1, its end swept too):
  beta and the schedule's end reach the stacked step as arrays, and the points equal the sequential sweep's; the
  history logs the scheduled temperature of each logged step."""
  rows = {}
  for mode in ("sequential", "vectorized"):
    config = sweep_config(mode, grid=(("distill.beta", (0.0, 0.5)), ("distill.temperature_end", (1.0, 2.0))))
    config.distill.divergence, config.distill.schedule = "generalized_js", "linear"
    config.teacher.num_epochs = 10
    config.train.num_steps = 41
    config.train.log_every_steps, config.train.eval_every_steps, config.train.checkpoint_every_steps = 10, 40, 40
    workdir = str(tmp_path / mode)
    runner.run(config, workdir)
    with open(os.path.join(workdir, "results.csv")) as stream:
      rows[mode] = list(csv.DictReader(stream))
  assert len(rows["vectorized"]) == 4
  for sequential_row, vectorized_row in zip(rows["sequential"], rows["vectorized"]):
    assert sequential_row["point"] == vectorized_row["point"]
    for column in ("student_accuracy", "student_nll", "student_kl_to_teacher", "student_hard_accuracy"):
      assert float(vectorized_row[column]) == pytest.approx(float(sequential_row[column]), rel=1e-4, abs=1e-5), (
          sequential_row["point"], column)
  # Every point trains a different student.
  assert len({row["student_nll"] for row in rows["sequential"]}) == 4
  for mode in ("sequential", "vectorized"):
    point = os.path.join(str(tmp_path / mode), "distill.beta=0.5,distill.temperature_end=2,seed=0")
    history = [json.loads(line) for line in open(os.path.join(point, "history.jsonl"))]
    logged = {row["step"]: row["train/temperature"] for row in history
              if row["phase"] == "student" and "train/temperature" in row}
    # History step s logs the value of the last step it ran (0-based s - 1): T = 4 - 2 (s - 1) / 40.
    assert logged == pytest.approx({10: 3.55, 20: 3.05, 30: 2.55, 40: 2.05, 41: 2.0}), mode


def nested_keys(value, prefix=""):
  """Every key path of a nested dict (metrics' per-model contents aside: models report the metrics they have)."""
  if not isinstance(value, dict):
    return set()
  keys = set()
  for key, item in value.items():
    keys.add(prefix + key)
    keys |= nested_keys(item, f"{prefix}{key}.")
  return keys


# The smoke temperature sweep, vectorized, with a student phase long enough to be interrupted.
VECTORIZED_ARGS = ("--config=configs/sweep_temp.py:smoke", "--config.sweep.mode=vectorized",
                   "--config.train.num_steps=2000", "--config.train.checkpoint_every_steps=50",
                   "--config.train.eval_every_steps=1000")


def point_results(workdir):
  sweep_json = files.read_json(os.path.join(workdir, "sweep.json"))
  return {point["name"]: files.read_json(os.path.join(workdir, point["name"], "results.json"))
          for point in sweep_json["points"]}


@pytest.mark.slow
def test_sigterm_during_a_vectorized_student_phase_checkpoints_exits_143_and_resumes_exactly(tmp_path):
  """SIGTERM while the 4 stacked students train: one `preempted:` line, exit 143, a checkpoint at the stop step and
  no half-written one; the rerun resumes there and every point's metrics equal an uninterrupted sweep's, bitwise."""
  reference_dir = tmp_path / "reference"  # checkpointed twice, not every 50 steps: saving changes no number
  done = run_main(*VECTORIZED_ARGS, f"--workdir={reference_dir}", "--config.train.checkpoint_every_steps=1000")
  assert done.returncode == 0, done.stderr[-3000:]
  reference = point_results(reference_dir)

  workdir = tmp_path / "interrupted"
  child = Child.main(*VECTORIZED_ARGS, f"--workdir={workdir}")
  child.wait_for_step("student", 300)
  child.send_signal(signal.SIGTERM)
  stopped = child.finish()
  assert stopped.returncode == 143, stopped.stderr[-3000:]
  message = stopped.stderr.strip().splitlines()[-1]
  assert message.startswith("preempted: student: stopped by SIGTERM at step "), message
  stopped_at = int(message.split("at step ")[1].split()[0])
  assert 300 <= stopped_at < 2000
  (checkpoint_dir,) = glob.glob(str(workdir / "vectorized" / "*" / "student"))
  assert os.path.isdir(os.path.join(checkpoint_dir, str(stopped_at)))  # saved at the step it stopped
  assert not [name for name in os.listdir(checkpoint_dir) if "tmp" in name]  # no save cut off by the exit
  assert not glob.glob(str(workdir / "*" / "results.json"))

  done = run_main(*VECTORIZED_ARGS, f"--workdir={workdir}")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "orbax-checkpoint-tmp" not in done.stderr
  resumed = point_results(workdir)
  assert list(resumed) == list(reference)
  for name, results in resumed.items():
    assert results["train"]["phases"]["student"]["resumed_from_step"] == stopped_at, name
    assert (results["train"]["resumed_phase"], results["train"]["resumed_from_step"]) == ("student", stopped_at)
    for model in ("teacher", "student", "student_hard"):
      for metric in ("accuracy", "nll", "ece", "brier", "agreement", "kl_to_teacher"):
        assert results["metrics"][model][metric] == reference[name]["metrics"][model][metric], (name, model, metric)

