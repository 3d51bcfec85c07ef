"""Sweeps: expansion (product, zip, seeds), point names, shared teachers, validation before anything runs, and a smoke
sweep end to end through main.py (report files; a rerun skips finished points and resumes an unfinished one)."""

import csv
import os

import ml_collections
import pytest

from kd_jax import files, preflight
from kd_jax.config import schema
from kd_jax.errors import ConfigError, UserError
from kd_jax.reporting import results
from kd_jax.sweeps import expansion
from tests.artifacts import copy_of
from tests.helpers import load_config, run_main


def sweep_config(grid=(), zipped=(), seeds=1):
  config = load_config()
  config.sweep.grid = grid
  config.sweep.zipped = zipped
  config.sweep.seeds = seeds
  return config


def test_grid_is_a_product_with_seeds_innermost(tmp_path):
  config = sweep_config(grid=(("distill.temperature", (1.0, 2.0)), ("distill.alpha", (0.5, 0.9))), seeds=2)
  preflight.check(config)
  points = expansion.expand(config, str(tmp_path))
  expected = [(t, a, s) for t in (1.0, 2.0) for a in (0.5, 0.9) for s in (0, 1)]
  assert [(p.config.distill.temperature, p.config.distill.alpha, p.config.seed) for p in points] == expected
  assert [p.name for p in points[:3]] == ["distill.temperature=1,distill.alpha=0.5,seed=0",
                                          "distill.temperature=1,distill.alpha=0.5,seed=1",
                                          "distill.temperature=1,distill.alpha=0.9,seed=0"]
  assert [p.index for p in points] == list(range(8))
  assert points[5].value_indices == (1, 0) and points[5].assignments == {"distill.temperature": 2.0,
                                                                         "distill.alpha": 0.5}
  single_run = schema.default_config().sweep.to_dict()
  for point in points:
    assert point.config.sweep.to_dict() == single_run and not expansion.is_sweep(point.config)
    preflight.check(point.config)
  # One teacher for all: only student-side fields are swept.
  assert len({p.config.teacher.workdir for p in points}) == 1
  assert points[0].config.teacher.workdir.startswith(os.path.join(str(tmp_path), "teachers", ""))
  assert (config.distill.temperature, config.seed, config.teacher.workdir) == (4.0, 0, None)  # base untouched


def test_points_keep_the_sweeps_selection_metric(tmp_path):
  """A causal-LM sweep's points select on its metric (here bits per byte): reset to the default 'accuracy', which the task
  does not compute, every point was refused (and a seq2seq point would neither generate for ROUGE nor select on it)."""
  config = load_config("configs/causal_lm.py", "smoke")
  config.sweep.grid = (("distill.temperature", (1.0, 2.0)),)
  config.sweep.selection_metric = "bits_per_byte"
  points = expansion.expand(config, str(tmp_path))
  assert [point.config.sweep.selection_metric for point in points] == ["bits_per_byte"] * 2
  for point in points:
    assert not expansion.is_sweep(point.config)
    preflight.check(point.config)


def test_zipped_values_advance_together_and_multiply_with_the_grid(tmp_path):
  config = sweep_config(grid=(("distill.temperature", (1.0, 2.0)),),
                        zipped=((("student.hidden_sizes", ((16,), (64, 64))), ("optim.learning_rate", (3e-3, 1e-3))),))
  preflight.check(config)
  assert [factor.label for factor in expansion.factors(config.sweep)] == [
      "distill.temperature", "student.hidden_sizes+optim.learning_rate"]
  points = expansion.expand(config, str(tmp_path))
  assert [(p.config.distill.temperature, tuple(p.config.student.hidden_sizes), p.config.optim.learning_rate)
          for p in points] == [(1.0, (16,), 3e-3), (1.0, (64, 64), 1e-3), (2.0, (16,), 3e-3), (2.0, (64, 64), 1e-3)]
  assert points[1].name == "distill.temperature=1,student.hidden_sizes=64x64,optim.learning_rate=0.001,seed=0"


def test_seeds_only_sweep(tmp_path):
  config = sweep_config(seeds=3)
  assert expansion.is_sweep(config) and not expansion.is_sweep(sweep_config())
  assert [(p.name, p.config.seed) for p in expansion.expand(config, str(tmp_path))] == [
      ("seed=0", 0), ("seed=1", 1), ("seed=2", 2)]


@pytest.mark.parametrize("value, text", [
    (2.0, "2"), (0.5, "0.5"), (1e-05, "1e-05"), (3, "3"), (True, "True"), (None, "None"), ((64, 64), "64x64"),
    ((32,), "32"), ((), "()"), ("google/flan-t5-small", "google_flan-t5-small"), ("forward_kl", "forward_kl")])
def test_value_names(value, text):
  assert results.format_value(value) == text


def test_teacher_directories_follow_what_the_teacher_depends_on(tmp_path):
  config = sweep_config(grid=(("data.train_fraction", (0.5, 1.0)), ("distill.temperature", (1.0, 2.0))))
  teachers = {}
  for point in expansion.expand(config, str(tmp_path)):
    teachers.setdefault(point.config.data.train_fraction, set()).add(point.config.teacher.workdir)
  assert all(len(directories) == 1 for directories in teachers.values())
  assert teachers[0.5] != teachers[1.0]


INVALID_SWEEPS = [
    (dict(grid=(("distill.temprature", (1.0, 2.0)),)),
     "config.distill.temprature=(1.0, 2.0): unknown field in config.sweep.grid; known fields of config.distill: "
     "akl_mu, alpha, alpha_end, attention_weight, beta, ce_weight"),
    (dict(grid=(("distill.temperature", ()),)),
     "config.distill.temperature=(): needs a non-empty tuple of values in config.sweep.grid"),
    (dict(grid=(("distill.temperature", (1.0, "hot")),)),
     "config.distill.temperature='hot': must be of type float (value 1 of its list in config.sweep.grid)"),
    (dict(grid=(("train.num_epochs", (10, 2.5)),)),
     "config.train.num_epochs=2.5: must be of type int (value 1 of its list in config.sweep.grid)"),
    (dict(zipped=((("student.hidden_sizes", ((16,), (64,), (128,))), ("optim.learning_rate", (3e-3, 1e-3))),)),
     "config.optim.learning_rate=(0.003, 0.001): has 2 values but student.hidden_sizes in the same group of "
     "config.sweep.zipped[0] has 3; zipped lists advance together and need equal lengths"),
    (dict(grid=(("distill", (1.0,)),)), "config.distill=(1.0,): is a section, not a field; sweep one of its fields: "),
    (dict(grid=(("seed", (0, 1)),)), "config.seed=(0, 1): is set by config.sweep.seeds"),
    (dict(grid=(("distill.temperature", (1.0,)),), zipped=((("distill.temperature", (2.0,)),),)),
     "config.distill.temperature=(2.0,): is swept twice: in config.sweep.grid and config.sweep.zipped[0]"),
    (dict(grid=("distill.temperature", (1.0, 2.0))),
     "config.sweep.grid=('distill.temperature', (1.0, 2.0)): must be a tuple of (dotted field path, tuple of "
     "values) pairs"),
    (dict(seeds=0), "config.sweep.seeds=0: must be an integer >= 1"),
]


@pytest.mark.parametrize("definition, message", INVALID_SWEEPS, ids=[m.split(":")[0] for _, m in INVALID_SWEEPS])
def test_invalid_sweep_names_the_field(definition, message):
  with pytest.raises(ConfigError) as error:
    preflight.check(sweep_config(**definition))
  assert str(error.value).startswith(message)


def test_point_values_and_data_sizes_are_checked_before_any_point_runs(tmp_path):
  workdir = str(tmp_path / "w")
  config = sweep_config(grid=(("distill.temperature", (2.0, -1.0)),))
  with pytest.raises(ConfigError, match=r"^config.distill.temperature=-1.0: must be > 0 \(sweep point "
                                        r"distill.temperature=-1,seed=0\)$"):
    expansion.check_points(config, expansion.expand(config, workdir), workdir)
  config = sweep_config(grid=(("distill.temperature", (2, 2.0)),))
  with pytest.raises(ConfigError, match=r"config.distill.temperature=\(2, 2.0\): lists the same value more than once"):
    expansion.expand(config, workdir)
  config = sweep_config(grid=(("data.labeled_fraction", (0.1, 0.01)),))
  with pytest.raises(UserError, match=r"^config.data.batch_size=32: .* \(sweep point data.labeled_fraction=0.01,"
                                      r"seed=0\)$"):
    expansion.check_points(config, expansion.expand(config, workdir), workdir)
  config = sweep_config(grid=(("teacher.num_epochs", (5, 10)),))
  config.teacher.workdir = str(tmp_path / "my_teacher")
  with pytest.raises(ConfigError, match=r"^config.teacher.workdir='.*my_teacher': must be None in a sweep whose"):
    expansion.check_points(config, expansion.expand(config, workdir), workdir)
  assert not os.path.exists(workdir)


def test_a_point_directory_of_another_config_is_refused(tmp_path):
  workdir = str(tmp_path)
  config = sweep_config(grid=(("distill.temperature", (1.0, 2.0)),))
  points = expansion.expand(config, workdir)
  stored = points[1].config.to_dict()
  stored["distill"]["label_smoothing"] = 0.1
  del stored["train"]["num_devices"]  # a field the schema gained since: not a difference
  files.write_json(os.path.join(workdir, points[1].name, "config.json"), stored)
  with pytest.raises(UserError, match=r"distill.temperature=2,seed=0 holds a run of another config "
                                      r"\(config.distill.label_smoothing differ\)"):
    expansion.check_points(config, points, workdir)
  stored["distill"]["label_smoothing"] = 0.0
  files.write_json(os.path.join(workdir, points[1].name, "config.json"), stored)
  expansion.check_points(config, points, workdir)
  assert [expansion.point_status(point, workdir) for point in points] == ["new", "partial"]


@pytest.mark.parametrize("args, message", [
    (["--config=configs/sweep_temp.py:smoke", "--config.sweep.grid=(('distill.temprature', (1.0, 2.0)),)"],
     "error: config.distill.temprature=(1.0, 2.0): unknown field in config.sweep.grid; known fields of "
     "config.distill: "),
    (["--config=configs/sweep_temp.py:smoke", "--config.sweep.zipped=((('distill.label_smoothing', (0.0, 0.1)), "
      "('distill.alpha', (0.5,))),)"],
     "error: config.distill.alpha=(0.5,): has 1 values but distill.label_smoothing in the same group of "
     "config.sweep.zipped[0] has 2; zipped lists advance together and need equal lengths"),
    (["--config=configs/sweep_temp.py:smoke", "--sweep_index=4"],
     "error: --sweep_index=4: the sweep has 4 points, 0 to 3 (see --list_points)"),
    (["--config=configs/default.py:smoke", "--list_points"],
     "error: --sweep_index and --list_points need a sweep config"),
])
def test_bad_sweeps_through_main_exit_2_and_write_nothing(tmp_path, args, message):
  workdir = tmp_path / "w"
  done = run_main(*args, f"--workdir={workdir}")
  assert done.returncode == 2, done.stderr[-2000:]
  assert done.stderr.strip().splitlines()[-1].startswith(message)
  assert not workdir.exists()


def test_list_points_with_a_seed_override_writes_nothing(tmp_path):
  workdir = tmp_path / "w"
  done = run_main("--config=configs/sweep_alpha.py:smoke", "--config.sweep.seeds=3", f"--workdir={workdir}",
                  "--list_points")
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.splitlines() == [f"{i}\tnew\tdistill.alpha={alpha},seed={seed}"
                                      for i, (alpha, seed) in enumerate((a, s) for a in ("0", "0.9") for s in range(3))]
  assert not workdir.exists()


@pytest.mark.slow
def test_smoke_sweep_writes_points_and_report(smoke_sweep):
  """The acceptance command, configs/sweep_temp.py:smoke through the command line (the session's shared sweep)."""
  workdir, stdout = smoke_sweep
  with open(os.path.join(workdir, "results.csv")) as stream:
    rows = list(csv.DictReader(stream))
  assert [(float(row["distill.temperature"]), int(row["seed"])) for row in rows] == [
      (1.0, 0), (1.0, 1), (4.0, 0), (4.0, 1)]
  for row in rows:
    for column in ("student_accuracy", "student_hard_accuracy", "teacher_accuracy"):
      assert 0.5 < float(row[column]) <= 1.0, (column, row)
  summary = open(os.path.join(workdir, "summary.md")).read()
  assert "4 of 4 points finished" in summary and "## Findings" in summary and "| teacher |" in summary
  assert stdout == summary + "\n"  # main.py prints the summary, as a single run prints its table
  for stem in ("accuracy_vs_distill.temperature", "reliability", "confusion", "training_curves"):
    for extension in ("png", "pdf"):
      assert os.path.getsize(os.path.join(workdir, "plots", f"{stem}.{extension}")) > 1000
  # The teacher is trained and its logits cached once, by the first point, then reused by the others.
  assert len([name for name in os.listdir(os.path.join(workdir, "teachers")) if not name.endswith(".lock")]) == 1
  results = [files.read_json(os.path.join(workdir, row["point"], "results.json")) for row in rows]
  assert ["teacher" in r["train"]["phases"] for r in results] == [True, False, False, False]
  assert [r["teacher_cache"]["built"] for r in results] == [True, False, False, False]


@pytest.mark.slow
@pytest.mark.usefixtures("draft_plots")  # reads the report's tables, not its figures
def test_rerun_skips_finished_points_and_resumes_an_unfinished_one(smoke_sweep, tmp_path):
  workdir = copy_of(smoke_sweep[0], tmp_path / "W")
  names = [point["name"] for point in files.read_json(os.path.join(workdir, "sweep.json"))["points"]]
  results_paths = [os.path.join(workdir, name, "results.json") for name in names]
  modified = [os.stat(path).st_mtime_ns for path in results_paths]
  done = run_main("--config=configs/sweep_temp.py:smoke", f"--workdir={workdir}")
  assert done.returncode == 0, done.stderr[-3000:]
  # Nothing trained again: every point skipped, its results.json untouched, no phase started.
  assert [os.stat(path).st_mtime_ns for path in results_paths] == modified
  assert done.stderr.count("finished earlier, skipped") == 4
  assert " step " not in done.stderr

  # A point killed after its last checkpoint: --sweep_index resumes it alone, from that checkpoint.
  steps = files.read_json(results_paths[3])["train"]["steps"]
  os.remove(results_paths[3])
  listed = run_main("--config=configs/sweep_temp.py:smoke", f"--workdir={workdir}", "--list_points")
  assert [line.split("\t")[1] for line in listed.stdout.splitlines()] == ["finished"] * 3 + ["partial"]
  done = run_main("--config=configs/sweep_temp.py:smoke", f"--workdir={workdir}", "--sweep_index=3")
  assert done.returncode == 0, done.stderr[-3000:]
  assert files.read_json(results_paths[3])["train"]["resumed_from_step"] == steps
  assert [os.stat(path).st_mtime_ns for path in results_paths[:3]] == modified[:3]


def test_a_teacher_field_added_later_keys_teachers_only_when_set():
  """teacher.hf_dropout came after sweeps began keying teacher directories by the teacher's identity: unset, the keys
  (the teacher's and its assistant's directories) are those of a config without the field, as runs started before it
  stored; set, the teacher is another one."""
  from kd_jax.teachers import assistant, teacher  # pylint: disable=import-outside-toplevel
  config = load_config("configs/findings/sweep_fashion_capacity.py", "smoke")
  earlier = ml_collections.ConfigDict(config.to_dict())
  del earlier.teacher["hf_dropout"]
  del earlier.teacher.assistant["hf_dropout"]
  assert teacher.identity_key(config) == teacher.identity_key(earlier)
  assert assistant.directory(config, "T") == assistant.directory(earlier, "T")
  config.teacher.hf_dropout = 0.0
  assert teacher.identity_key(config) != teacher.identity_key(earlier)
