"""Multi-process runs: when kd_jax joins a JAX job, 2 processes against 1 on the smoke config (the acceptance), and a
SIGTERM to one process of a job."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from kd_jax.errors import UserError
from kd_jax.parallel import distributed
from tests.helpers import REPO_ROOT, Child, child_environment, free_port, run_main

LAUNCH_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_STEP_NODELIST",
                    "SLURM_NTASKS")
ERROR_MARKS = ("Error", "error:", "Check failed", "Traceback", "Fatal", "failed")
SUMMARY_METRICS = ("accuracy", "nll", "ece", "brier", "agreement", "kl_to_teacher")


@pytest.fixture
def initialize_calls(monkeypatch):
  """The arguments of every jax.distributed.initialize call made by distributed.initialize (none really made)."""
  for name in LAUNCH_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  monkeypatch.setattr(distributed, "_label_log_lines", lambda: None)
  return calls


def test_a_plain_launch_stays_single_process(initialize_calls, monkeypatch):
  distributed.initialize("auto")
  monkeypatch.setenv("SLURM_STEP_NODELIST", "node001")  # srun with one task: a single run
  monkeypatch.setenv("SLURM_NTASKS", "1")
  distributed.initialize("auto")
  distributed.initialize("off", coordinator_address="10.0.0.1:1234", num_processes=2, process_id=0)
  assert not initialize_calls


def test_joins_from_flags_or_environment(initialize_calls, monkeypatch):
  distributed.initialize("auto", coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3)
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:5555")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_PROCESS_ID", "1")
  distributed.initialize("auto")
  distributed.initialize("auto", process_id=0)  # a flag wins over its variable
  assert initialize_calls == [
      {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3},
      {"coordinator_address": "127.0.0.1:5555", "num_processes": 2, "process_id": 1},
      {"coordinator_address": "127.0.0.1:5555", "num_processes": 2, "process_id": 0}]


def test_cluster_detection_is_left_to_jax(initialize_calls, monkeypatch):
  distributed.initialize("on")  # TPU VM pods: JAX finds the coordinator, process count and id
  monkeypatch.setenv("SLURM_STEP_NODELIST", "node[001-004]")
  monkeypatch.setenv("SLURM_NTASKS", "4")
  distributed.initialize("auto")
  unset = {"coordinator_address": None, "num_processes": None, "process_id": None}
  assert initialize_calls == [unset, unset]


@pytest.mark.parametrize("settings, message", [
    ({"num_processes": 2}, "missing: --coordinator_address, --process_id"),
    ({"coordinator_address": "127.0.0.1:5555", "num_processes": 2, "process_id": 2}, "--process_id=2: must be in"),
    ({"mode": "sometimes"}, "--distributed=sometimes: allowed: auto, on, off"),
])
def test_incomplete_or_inconsistent_launches_are_user_errors(initialize_calls, settings, message):
  settings = dict(settings)
  with pytest.raises(UserError, match=message):
    distributed.initialize(settings.pop("mode", "auto"), **settings)
  assert not initialize_calls


def launcher_environment(**variables) -> dict:
  """The environment of scripts/multiprocess_local.sh: each process of a launch gets 1 CPU device."""
  return child_environment(**({"PYTHON": sys.executable} | variables))


def test_launcher_stops_the_job_when_a_process_fails(tmp_path):
  """Process 1 fails while process 0 would wait for it forever: the launcher ends both with process 1's status."""
  fake_python = tmp_path / "python"
  fake_python.write_text('#!/bin/bash\nif [ "$JAX_PROCESS_ID" = 1 ]; then exit 3; fi\nexec sleep 120\n')
  fake_python.chmod(0o755)
  start = time.time()
  launch = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "multiprocess_local.sh"), "2", "--workdir=x"],
                          env=launcher_environment(PYTHON=str(fake_python), COORDINATOR_PORT="1"),
                          capture_output=True, text=True, timeout=60, check=False)
  assert launch.returncode == 3, launch.stderr
  assert "a process failed (exit status 3)" in launch.stderr
  assert time.time() - start < 30


def _process_pid(port: int, process_id: int) -> int | None:
  """The pid of the launched process with this coordinator port and JAX_PROCESS_ID, from /proc."""
  wanted = {f"JAX_COORDINATOR_ADDRESS=127.0.0.1:{port}".encode(), f"JAX_PROCESS_ID={process_id}".encode()}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/environ", "rb") as stream:
        variables = set(stream.read().split(b"\0"))
      with open(f"/proc/{entry}/cmdline", "rb") as stream:
        is_main = b"main.py" in stream.read()
    except OSError:
      continue
    if is_main and wanted <= variables:
      return int(entry)
  return None


@pytest.mark.slow
def test_two_processes_stopped_by_sigterm_to_one_resume_to_the_one_process_results(tmp_path):
  """`multiprocess_local.sh 2 --config=configs/default.py:smoke` with FSDP over both processes (mesh.data=1,
  mesh.fsdp=2: every parameter and optimizer array split between them; both 1 CPU device a process), SIGTERM to
  process 1 only while the KD student trains: both processes stop after the same step with one checkpoint, exit 143
  (without the agreement, process 0 would wait in a collective forever); the rerun of the same launch resumes there
  and ends with the results of `main.py` in one process, uninterrupted.

  The two processes read their shares of every batch through tf.data (train.device_data_max_mib=0); the single
  process gathers its batches on its device. 6 epochs of the teacher (18 steps), 3 of each student: their 111 steps
  pass an eval step (100) and checkpoint steps before their end (a 2-process step costs ~50 ms: gloo and tf.data).
  (One job for what were two: an uninterrupted 2-process FSDP run against 1 process, and a SIGTERM-stopped 2-process
  data-parallel run with a 40-epoch teacher and its rerun. The data-parallel 2-process path is what FSDP's runs too,
  with the parameters replicated instead of split: batches split between the processes, their gradients reduced, the
  stop agreed; the restored sharded checkpoint is the harder case.)
  """
  arguments = ["--config=configs/default.py:smoke", "--config.teacher.num_epochs=6", "--config.train.num_epochs=3",
               "--config.train.eval_every_steps=100", "--config.train.checkpoint_every_steps=20"]
  two_workdir, one_workdir = tmp_path / "two_processes", tmp_path / "one_process"
  launch_arguments = ["bash", "scripts/multiprocess_local.sh", "2", *arguments, "--config.train.device_data_max_mib=0",
                      "--config.mesh.data=1", "--config.mesh.fsdp=2", f"--workdir={two_workdir}"]
  port = free_port()
  launch = Child(launch_arguments, env=launcher_environment(COORDINATOR_PORT=str(port)))
  # The KD student's first log step (50) comes after its first checkpoint (step 20); 61 of its 111 steps and the
  # hard-label student's remain (the teacher, trained on the labeled tenth, has 18).
  launch.wait_for_step("student", 50)
  process_1 = _process_pid(port, 1)
  assert process_1 is not None, "process 1 of the launch not found in /proc"
  os.kill(process_1, signal.SIGTERM)
  stopped = launch.finish()
  stderr = stopped.stderr
  assert stopped.returncode == 143, stderr[-3000:]
  assert "a process failed" in stderr  # the launcher saw process 1 end with 143 ...
  assert "Killed" not in stderr  # ... and process 0 ended on its own, not by the launcher's SIGKILL
  # Both processes print their stop; on a loaded machine their stderr writes may land in one line, so search the
  # whole text rather than line starts.
  stops = re.findall(r"preempted: (\w+): stopped by SIGTERM at step (\d+) of", stderr)
  assert len(stops) == 2 and stops[0] == stops[1], (stops, stderr[-3000:])  # the same phase and step in both
  phase, stopped_at = stops[0][0], int(stops[0][1])
  assert not (two_workdir / "results.json").exists()
  assert re.search(r"Teacher cache \(dense\) .*: built for", stderr)  # by the 2 processes, reused by the rerun

  rerun = Child(launch_arguments, env=launcher_environment())
  one_process = run_main(*arguments, f"--workdir={one_workdir}")
  finished = rerun.finish()
  stdout, stderr = finished.stdout, finished.stderr
  assert one_process.returncode == 0, one_process.stderr[-3000:]
  first_errors = [line for line in stderr.splitlines() if any(mark in line for mark in ERROR_MARKS)][:20]
  assert finished.returncode == 0, "\n".join(first_errors) + "\n...\n" + stderr[-3000:]
  with open(one_workdir / "results.json") as stream:
    one = json.load(stream)
  with open(two_workdir / "results.json") as stream:
    two = json.load(stream)
  assert (two["train"]["resumed_phase"], two["train"]["resumed_from_step"]) == (phase, stopped_at)
  assert (one["train"]["num_processes"], one["train"]["num_devices"]) == (1, 1)
  assert (two["train"]["num_processes"], two["train"]["num_devices"]) == (2, 2)
  assert two["train"]["phases"]["student"]["data_feed"] == "tf.data"
  assert two["train"]["phases"]["student"]["mesh"] == {"sweep": 1, "data": 1, "fsdp": 2, "tensor": 1}
  # Each process holds half of each student's parameters and optimizer state (the biases of 10 classes split too; the
  # rerun trained no teacher, so its results hold the students' memory only).
  for phase in ("student", "student_hard"):
    assert two["memory"][phase]["params_bytes"] * 2 == one["memory"][phase]["params_bytes"], phase
  for model in ("teacher", "student", "student_hard"):
    for name in SUMMARY_METRICS:
      np.testing.assert_allclose(two["metrics"][model][name], one["metrics"][model][name], atol=1e-4,
                                 err_msg=f"{model} {name}")
  # One job: process 0 alone prints the table and writes the files; both processes log, each saying who speaks.
  assert stdout.count("test split") == 1 and stdout.count("student (KD)") == 3  # test, validation, efficiency
  assert "[process 0/2]" in stderr and "[process 1/2]" in stderr
  with open(two_workdir / "history.jsonl") as stream:
    history = [json.loads(line) for line in stream]
  with open(one_workdir / "history.jsonl") as stream:
    assert len(history) == len(stream.readlines())
  assert not two["teacher_cache"]["built"]
  assert os.path.exists(os.path.join(two["teacher_cache"]["path"], "metadata.json"))
