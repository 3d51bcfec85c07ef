"""End to end: the real train_and_evaluate on the smoke config (the session's shared run, tests/artifacts.py), and
main.py's default run."""

import json
import os

import jax
import numpy as np
import pytest

from kd_jax import train
from tests.artifacts import copy_of
from tests.helpers import REPO_ROOT, load_config, run_main

SUMMARY_METRICS = ("accuracy", "nll", "ece", "brier", "agreement", "kl_to_teacher")


@pytest.mark.trains
def test_results_contract_and_learning(smoke_run):
  workdir, results = smoke_run
  with open(os.path.join(workdir, "results.json")) as stream:
    assert json.load(stream) == json.loads(json.dumps(results))
  for model in ("teacher", "student", "student_hard"):
    for name in ("accuracy", "ece", "nll", "agreement"):
      assert isinstance(results["metrics"][model][name], float), (model, name)
  assert results["train"]["num_devices"] == jax.device_count()
  assert results["train"]["resumed_from_step"] is None
  assert results["train"]["steps"] == results["train"]["phases"]["student"]["steps"] > 0
  assert results["train"]["examples_per_sec"] > 0 and results["train"]["wall_s"] > 0
  # Real learning on 10 classes (chance 0.1) with 126 labels.
  assert results["metrics"]["teacher"]["accuracy"] > 0.8
  assert results["metrics"]["student"]["accuracy"] > 0.7
  assert results["metrics"]["student_hard"]["accuracy"] > 0.5
  assert results["metrics"]["student"]["agreement"] > 0.8
  assert results["data"]["num_labeled"] + results["data"]["num_unlabeled"] == results["data"]["num_train"]
  # Validation metrics (what selects) and the cost of every model beside the test metrics (what is reported).
  assert results["data"]["num_validation"] == 60
  costs = results["efficiency"]
  for model in ("teacher", "student", "student_hard"):
    assert isinstance(results["validation_metrics"][model]["accuracy"], float), model
    assert costs[model]["params"] > 0 and costs[model]["flops_per_example"] > 0 and costs[model]["latency_ms"] > 0
  assert costs["teacher"]["params"] == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
  assert costs["student"]["compression_params"] == costs["teacher"]["params"] / costs["student"]["params"]
  assert results["train"]["phases"]["student"]["selected_step"] == results["train"]["steps"]  # select='last'
  # Per-device memory of each phase's compiled step: replicated parameters (float32) and AdamW's two moments.
  for phase in ("teacher", "student", "student_hard"):
    memory = results["memory"][phase]
    assert memory["params_bytes"] == 4 * costs[phase]["params"], phase
    assert memory["optimizer_bytes"] >= 2 * memory["params_bytes"] and memory["temp_bytes"] > 0, phase
    assert memory["peak_bytes"] >= memory["argument_bytes"] >= memory["params_bytes"] + memory["optimizer_bytes"]
  assert "memory" not in results["train"]["phases"]["student"]


@pytest.mark.trains
def test_outputs_in_workdir(smoke_run):
  workdir, results = smoke_run
  steps = results["train"]["steps"]
  for phase in ("student", "student_hard"):
    assert os.path.isdir(os.path.join(workdir, "checkpoints", phase, str(steps)))
  assert os.path.isdir(os.path.join(workdir, "teacher", "params"))
  with open(os.path.join(workdir, "config.json")) as stream:
    assert json.load(stream)["distill"]["temperature"] == 4.0
  with open(os.path.join(workdir, "history.jsonl")) as stream:
    history = [json.loads(line) for line in stream]
  phases = {record["phase"] for record in history}
  assert phases == {"teacher", "student", "student_hard"}
  assert any("validation/accuracy" in record for record in history)
  assert os.listdir(os.path.join(workdir, "tensorboard", "student"))


@pytest.mark.trains
def test_rerun_resumes_from_the_final_checkpoint(smoke_run, tmp_path):
  workdir, results = smoke_run
  again = train.train_and_evaluate(load_config(), str(copy_of(workdir, tmp_path / "run")))
  assert again["train"]["resumed_from_step"] == results["train"]["steps"]
  assert "teacher" not in again["train"]["phases"]  # the finished teacher is reused, not retrained
  for model in ("teacher", "student", "student_hard"):
    for name in SUMMARY_METRICS:
      assert again["metrics"][model][name] == results["metrics"][model][name]


@pytest.mark.slow
@pytest.mark.multidevice
def test_one_device_through_tf_data_equals_eight_devices(smoke_run, tmp_path):
  """1 device fed by the tf.data pipeline vs 8 devices gathering the batches from the training set on the devices."""
  _, results = smoke_run
  config = load_config()
  config.train.num_devices = 1
  config.train.device_data_max_mib = 0
  single = train.train_and_evaluate(config, str(tmp_path))
  assert single["train"]["num_devices"] == 1
  for phase in ("teacher", "student", "student_hard"):
    assert single["train"]["phases"][phase]["data_feed"] == "tf.data", phase
    assert results["train"]["phases"][phase]["data_feed"] == "device", phase
  for model in ("teacher", "student", "student_hard"):
    for name in SUMMARY_METRICS:
      np.testing.assert_allclose(single["metrics"][model][name], results["metrics"][model][name], atol=1e-5,
                                 err_msg=f"{model} {name}")


@pytest.mark.trains
def test_online_teacher_matches_cached_teacher(smoke_run, tmp_path):
  """The same teacher run inside the step gives the same student as its cached logits."""
  workdir, results = smoke_run
  config = load_config()
  config.teacher.workdir = os.path.join(workdir, "teacher")
  config.distill.teacher_mode = "online"
  config.baseline = False
  online = train.train_and_evaluate(config, str(tmp_path))
  assert "student_hard" not in online["metrics"]
  for name in SUMMARY_METRICS:
    np.testing.assert_allclose(online["metrics"]["student"][name], results["metrics"]["student"][name], atol=1e-4)


@pytest.mark.trains
def test_best_validation_selects_a_checkpoint_the_validation_metrics_confirm(smoke_run, tmp_path):
  """train.select='best_validation': each student ends with its evaluated step of best validation accuracy, whose
  validation accuracy is the best the history records, and results.json says which step it was."""
  workdir, _ = smoke_run
  config = load_config()
  config.teacher.workdir = os.path.join(workdir, "teacher")
  config.train.select = "best_validation"
  config.train.eval_every_steps = 50
  selected = train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "history.jsonl") as stream:
    history = [json.loads(line) for line in stream]
  for phase in ("student", "student_hard"):
    evaluated = {record["step"]: record["validation/accuracy"] for record in history
                 if record["phase"] == phase and "validation/accuracy" in record}
    step = selected["train"]["phases"][phase]["selected_step"]
    assert evaluated[step] == max(evaluated.values()) and min(evaluated) <= step <= max(evaluated), phase
    np.testing.assert_allclose(selected["validation_metrics"][phase]["accuracy"], evaluated[step], atol=1e-6)
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", f"{phase}_best"))


@pytest.mark.trains
def test_online_input_noise_trains(smoke_run, tmp_path):
  workdir, _ = smoke_run
  config = load_config()
  config.teacher.workdir = os.path.join(workdir, "teacher")
  config.distill.teacher_mode = "online"
  config.distill.input_noise_std = 0.1
  config.baseline = False
  noisy = train.train_and_evaluate(config, str(tmp_path))
  assert noisy["metrics"]["student"]["accuracy"] > 0.7


@pytest.mark.xla_optimized
@pytest.mark.slow
def test_default_run_through_main(tmp_path):
  """The README's first command (a relative --workdir): teacher >= 0.90 and the distilled student beats the
  hard-label student."""
  result = run_main(f"--config={REPO_ROOT / 'configs' / 'default.py'}", "--workdir=runs/default", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "runs" / "default" / "results.json") as stream:
    results = json.load(stream)
  accuracy = {model: results["metrics"][model]["accuracy"] for model in ("teacher", "student", "student_hard")}
  assert accuracy["teacher"] >= 0.90, accuracy
  assert accuracy["student"] > accuracy["student_hard"], accuracy
  assert "student (KD)" in result.stdout and "student (hard labels)" in result.stdout
  assert "test split (539 examples): reported" in result.stdout
  assert "validation split (60 examples): selects" in result.stdout and "efficiency" in result.stdout


@pytest.mark.slow
def test_gradient_accumulation_equals_one_step(smoke_run, tmp_path):
  """train.microbatches=4 (one row per micro-batch on each of the 8 devices) trains the student of microbatches=1:
  after 20 steps the same logged losses and norms and the same metrics within 1e-5. Dropout is on, so per-example
  keys matter, and 90% of the examples are unlabeled, so most micro-batches have no labeled row: a hard term
  normalized per micro-batch (not by the global batch's labeled weight) would differ by far more."""
  workdir, _ = smoke_run
  runs = {}
  for microbatches in (1, 4):
    config = load_config()
    config.teacher.workdir = os.path.join(workdir, "teacher")
    config.student.dropout_rate = 0.1
    config.baseline = False
    config.train.num_steps = 20
    config.train.log_every_steps = 5
    config.train.microbatches = microbatches
    run_dir = tmp_path / str(microbatches)
    results = train.train_and_evaluate(config, str(run_dir))
    with open(run_dir / "history.jsonl") as stream:
      history = [json.loads(line) for line in stream if '"student"' in line]
    runs[microbatches] = results, [record for record in history if record["phase"] == "student"]
  (one, one_history), (four, four_history) = runs[1], runs[4]
  logged = ("train/loss", "train/hard_loss", "train/soft_loss", "train/grad_norm", "train/param_norm")
  assert [record["step"] for record in one_history] == [record["step"] for record in four_history]
  assert sum(name in record for record in one_history for name in logged) >= 4 * len(logged)
  for record_one, record_four in zip(one_history, four_history):
    for name in logged:
      if name in record_one:
        np.testing.assert_allclose(record_four[name], record_one[name], rtol=1e-5, atol=1e-6,
                                   err_msg=f"step {record_one['step']} {name}")
  for name in SUMMARY_METRICS:
    np.testing.assert_allclose(four["metrics"]["student"][name], one["metrics"]["student"][name], atol=1e-5)
