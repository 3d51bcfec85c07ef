"""Vectorized sweeps: grouping, validation, and the same results as the sequential mode (8 CPU devices: 2-D mesh)."""

import csv
import os

import pytest

from kd_jax import config_validation, files, sweep, vectorized
from kd_jax.errors import ConfigError
from tests.conftest import load_config


def sweep_config(mode, grid=(), zipped=(), seeds=1):
  config = load_config()
  config.sweep.grid, config.sweep.zipped, config.sweep.seeds, config.sweep.mode = grid, zipped, seeds, mode
  return config


def test_points_that_differ_in_shapes_form_separate_groups(tmp_path):
  config = sweep_config("vectorized", grid=(("distill.temperature", (1.0, 4.0)), ("optim.learning_rate", (3e-3, 1e-3))),
                        zipped=((("student.hidden_sizes", ((16,), (32,))), ("distill.divergence", ("js", "mse"))),),
                        seeds=2)
  config_validation.validate(config)
  groups = vectorized.groups(sweep.expand(config, str(tmp_path)))
  assert [len(group) for group in groups] == [8, 8]
  for group in groups:
    assert len({tuple(point.config.student.hidden_sizes) for point in group}) == 1
    assert {(p.config.distill.temperature, p.config.optim.learning_rate, p.seed) for p in group} == {
        (t, lr, s) for t in (1.0, 4.0) for lr in (3e-3, 1e-3) for s in (0, 1)}


def test_invalid_mode_and_seq2seq_are_refused():
  with pytest.raises(ConfigError, match=r"^config.sweep.mode='parallel': allowed: sequential, vectorized$"):
    config_validation.validate(sweep_config("parallel", seeds=2))
  config = sweep_config("vectorized", seeds=2)
  config.data.name = "esnli"
  with pytest.raises(ConfigError, match=r"^config.sweep.mode='vectorized': supports classification tasks; "):
    vectorized.check(config)


def test_vectorized_sweep_matches_sequential_sweep(tmp_path):
  """8 points (2 temperatures x 2 learning rates x 2 seeds) trained together give the per-point results.json and
  results.csv of the same sweep run point by point, up to float rounding; 4 hard-label baselines serve 8 points."""
  rows = {}
  for mode in ("sequential", "vectorized"):
    config = sweep_config(mode, grid=(("distill.temperature", (1.0, 4.0)), ("optim.learning_rate", (3e-3, 1e-3))),
                          seeds=2)
    config.teacher.num_epochs = 10
    config.train.num_steps = 60
    config.train.log_every_steps, config.train.eval_every_steps, config.train.checkpoint_every_steps = 10, 30, 30
    workdir = str(tmp_path / mode)
    sweep.run(config, workdir)
    with open(os.path.join(workdir, "results.csv")) as stream:
      rows[mode] = list(csv.DictReader(stream))
  assert [row["point"] for row in rows["vectorized"]] == [row["point"] for row in rows["sequential"]]
  compared = [column for column in rows["sequential"][0]
              if column.split("_")[0] in ("student", "teacher") and column != "student_hard_shared_by_points"]
  assert "student_accuracy" in compared and "student_hard_nll" in compared
  for sequential_row, vectorized_row in zip(rows["sequential"], rows["vectorized"]):
    for column in compared:
      assert float(vectorized_row[column]) == pytest.approx(float(sequential_row[column]), rel=1e-4, abs=1e-5), (
          sequential_row["point"], column)
  workdir = str(tmp_path / "vectorized")
  results = [files.read_json(os.path.join(workdir, row["point"], "results.json")) for row in rows["vectorized"]]
  assert {r["train"]["phases"]["student"]["vectorized_runs"] for r in results} == {8}
  assert {r["train"]["phases"]["student_hard"]["vectorized_runs"] for r in results} == {4}
  assert {r["train"]["phases"]["student_hard"]["shared_by_points"] for r in results} == {2}
  assert results[0]["train"]["phases"]["student"]["mesh"] == {"sweep": 8, "data": 1}
  for row in rows["vectorized"]:
    history = open(os.path.join(workdir, row["point"], "history.jsonl")).read()
    assert history.count('"phase": "student"') == history.count('"phase": "student_hard"') == 6 + 2
  assert os.path.exists(os.path.join(workdir, "summary.md"))
