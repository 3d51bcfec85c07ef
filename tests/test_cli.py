"""The command line (kd_jax/cli.py, main.py): help, one-line errors for bad flags, and what a run prints."""

import os
import re
import sys

import pytest

from tests.helpers import REPO_ROOT, run_main, run_main_subprocess

# kd_jax's module files: the only ones whose INFO lines a run prints (absl's format names the file: `train.py:67]`).
KD_JAX_FILES = {path.name for path in (REPO_ROOT / "kd_jax").rglob("*.py")}


def test_help_lists_the_flags_the_config_files_and_the_field_reference():
  result = run_main("--help")
  assert result.returncode == 0 and not result.stderr
  assert result.stdout.startswith("usage: python main.py --config=configs/<file>.py")
  for name in ("default.py", "sweep_temp.py", "sst2.py", "causal_lm.py"):
    assert name in result.stdout, name
  assert "docs/config.md" in result.stdout and (REPO_ROOT / "docs" / "config.md").exists()
  for flag in ("--config", "--workdir", "--overwrite", "--list_points", "--sweep_index", "--distributed"):
    assert f"  {flag}: " in result.stdout, flag


@pytest.mark.parametrize("args, message", [
    (["--config.distil.temperature=2"],
     'error: --config.distil.temperature=2: unknown config section config.distil; did you mean "distill"?'),
    (["--config.distill.temprature=2"],
     'error: --config.distill.temprature=2: unknown config field config.distill.temprature; did you mean '
     '"temperature"?'),
    (["--config.distill.temperature.x=2"],
     "error: --config.distill.temperature.x=2: unknown config field config.distill.temperature.x: "
     "config.distill.temperature is a field, not a section"),
    (["--config=configs/default.py:smok"],
     "error: --config=configs/default.py:smok: unknown config argument 'smok'; allowed: smoke, sst2, esnli, "
     "fashion_mnist"),
    (["--config.distill.temperature=warm"],
     "error: --config.distill.temperature=warm: could not convert string to float: 'warm'"),
    (["--sweep_index=first"], "error: flag --sweep_index=first: invalid literal for int() with base 10: 'first'"),
    (["--config=configs/nope.py"], "error: --config=configs/nope.py: no such config file"),
    (["surplus"], "error: unexpected arguments: surplus"),
])
def test_bad_flags_are_one_line_exit_2_and_write_nothing(tmp_path, args, message):
  workdir = tmp_path / "run"
  result = run_main(f"--workdir={workdir}", *args)
  assert (result.returncode, result.stderr) == (2, message + "\n")
  assert not workdir.exists()


def test_a_missing_workdir_flag_is_one_line():
  result = run_main("--config=configs/default.py:smoke")
  assert (result.returncode, result.stderr) == (
      2, "error: --workdir: required (the directory for checkpoints, metrics and results.json)\n")


def test_a_workdir_that_is_a_file_is_refused_before_any_work(tmp_path):
  regular_file = tmp_path / "results"
  regular_file.write_text("kept")
  for workdir, what in ((regular_file, "is a file"), (regular_file / "run", f"lies under {regular_file}, which is a "
                                                                           "file")):
    result = run_main("--config=configs/default.py:smoke", f"--workdir={workdir}")
    assert (result.returncode, result.stderr) == (2, f"error: --workdir={workdir}: {what}, not a directory\n")
    assert result.stdout == ""
  assert regular_file.read_text() == "kept"


@pytest.mark.slow
def test_a_clone_named_kd_jax_with_its_venv_inside_prints_progress_not_library_chatter(tmp_path):
  """The README's set-up: the clone is `kd_jax/` and its `.venv` is inside it, so every library's file path contains
  'kd_jax'. The real entry point (a new interpreter) prints kd_jax's progress lines and its own warnings only, and
  a bad config as its one line."""
  if sys.prefix == sys.base_prefix:
    pytest.skip("the tests run outside a virtual environment: no .venv to place inside the clone")
  clone = tmp_path / "kd_jax"
  clone.mkdir()
  for name in ("main.py", "kd_jax", "configs"):
    (clone / name).symlink_to(REPO_ROOT / name)
  (clone / ".venv").symlink_to(sys.prefix)  # the libraries are then imported from <clone>/.venv/lib/...
  python = clone / ".venv" / "bin" / "python"
  probe = run_main_subprocess("--config=configs/default.py:smoke", "--workdir=run", "--config.distill.alpha=2",
                              cwd=clone, main_py=clone / "main.py", python=python)
  assert (probe.returncode, probe.stderr) == (2, "error: config.distill.alpha=2.0: must be in [0.0, 1.0]\n")
  result = run_main_subprocess("--config=configs/default.py:smoke", "--workdir=run", cwd=clone,
                               main_py=clone / "main.py", python=python)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (clone / "run" / "results.json").exists()
  lines = result.stderr.splitlines()
  others = [line for line in lines if not (re.match(r"^I\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\] ", line) and
                                           re.match(r"^I\d{4} [\d:.]+ +\d+ ([\w.]+):", line).group(1) in KD_JAX_FILES)]
  assert not others, "\n".join(others[:20])
  assert 10 < len(lines) < 60, len(lines)  # the progress of three phases: no per-library lines
  assert "test split (539 examples): reported" in result.stdout
  assert os.path.realpath(clone / ".venv") == os.path.realpath(sys.prefix)
