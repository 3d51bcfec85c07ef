"""The commands of README.md and docs/*.md name existing configs, config arguments, fields, scripts and modules
(scripts/doc_commands.py --check, in process: nothing is trained), and their links existing pages and headings."""

import pathlib

import pytest

from tests.helpers import REPO_ROOT, load_script

doc_commands = load_script("doc_commands")


def test_every_command_of_the_readme_and_docs_checks():
  problems = doc_commands.check()
  assert not problems, "\n".join(f"{command}: {'; '.join(found)}" for command, found in problems)


def test_every_link_of_the_readme_and_docs_names_a_page_and_heading():
  assert not doc_commands.check_links()


def test_the_readme_keeps_its_two_first_commands_and_the_test_command_marker():
  commands = [command.text for command in doc_commands.list_commands() if command.file == "README.md"]
  assert "python main.py --config=configs/default.py --workdir=runs/default" in commands
  readme = (REPO_ROOT / "README.md").read_text()
  assert "<!-- test-command -->\n```bash\n" in readme


@pytest.mark.parametrize("command, problem", [
    ("python main.py --config=configs/no_such.py --workdir=w", "no such config file"),
    ("python main.py --config=configs/default.py:no_such_option --workdir=w", "get_config('no_such_option') raised"),
    ("python main.py --config=configs/default.py --workdir=w --config.distill.temprature=2",
     "no field config.distill.temprature"),
    ("python main.py --workdir=w --config.seed.x=1", "no field config.seed.x"),
    ('N=$(python main.py --config=configs/sweep_temp.py:smok --workdir=$W --list_points | wc -l)', "raised"),
    ('sbatch --wrap "python main.py --config=configs/sweep_tmp.py --workdir=$W"', "no such config file"),
    ("bash scripts/no_such.sh", "scripts/no_such.sh: no such file"),
    ("python -m kd_jax.report W", "python -m kd_jax.report: no such module"),
    ("pip install -r requirements-none.txt", "no such requirements file"),
    ("python scripts/memory_plan.py --config=configs/esnli.py --config.teacher.nope=1", "no field config.teacher.nope"),
])
def test_a_bad_command_is_one_problem_naming_what_is_missing(command, problem):
  problems = doc_commands.check_command(command)
  assert len(problems) >= 1 and any(problem in found for found in problems), problems


@pytest.mark.parametrize("command", [
    "python main.py --config=configs/sweep_temp.py:sst2,smoke --workdir=runs/s --config.sweep.seeds=3",
    "XLA_FLAGS=--xla_force_host_platform_device_count=8 python main.py --workdir=w --config.mesh.fsdp=8",
    "python -m kd_jax.reporting.report runs/sweep_temp",
    "python -m pytest -q tests",
])
def test_a_good_command_has_no_problem(command):
  assert doc_commands.check_command(command) == []


def test_blocks_join_continuations_split_at_and_and_drop_comments():
  text = ("intro\n```bash\n# a comment\npython main.py --config=configs/default.py \\\n  --workdir=w   # trailing\n"
          "a && b 'c && d'\n```\n```python\nnot = 'a command'\n```\n  ```bash\n  indented\n  ```\n")
  commands = [command for first, lines in doc_commands.bash_blocks(text)
              for _, command in doc_commands.block_commands(first, lines)]
  assert commands == ["python main.py --config=configs/default.py --workdir=w", "a", "b 'c && d'", "indented"]


def test_the_smoke_form_adds_smoke_and_moves_run_paths(tmp_path):
  environment, argv = doc_commands.smoke_form(
      "XLA_FLAGS=--x python main.py --config=configs/sst2.py:from_teacher --workdir=runs/a "
      "--config.teacher.workdir=runs/b/teacher", tmp_path)
  assert environment == {"XLA_FLAGS": "--x"}
  assert argv[1:] == ["main.py", "--config=configs/sst2.py:from_teacher,smoke", f"--workdir={tmp_path}/runs/a",
                      f"--config.teacher.workdir={tmp_path}/runs/b/teacher"]
  assert doc_commands.smoke_form("python main.py --workdir=$W", tmp_path) is None
  assert doc_commands.smoke_form("bash scripts/sweep.sh configs/sweep_temp.py W", tmp_path) is None


def test_a_broken_link_or_heading_is_found(tmp_path):
  (tmp_path / "docs").mkdir()
  (tmp_path / "README.md").write_text("[a](docs/a.md#the-heading) [b](docs/missing.md) [c](docs/a.md#nope)\n")
  (tmp_path / "docs" / "a.md").write_text("# The heading\n```\n# not a heading\n```\n[up](../README.md)\n")
  problems = doc_commands.check_links(pathlib.Path(tmp_path))
  assert problems == ["README.md:1: link to docs/missing.md: no such file",
                      "README.md:1: link to docs/a.md#nope: no such heading"]
  assert doc_commands.heading_anchor("Text tasks: SST-2 and e-SNLI") == "text-tasks-sst-2-and-e-snli"
