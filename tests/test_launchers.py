"""Launchers in scripts/: TPU VM and SLURM commands for a 4-host example (--dry_run prints what a real launch runs),
and the Colab TPU notebook's code cells, executed on CPU with the smoke sweep."""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.artifacts import copy_of
from tests.helpers import REPO_ROOT, child_environment

TPU_EXAMPLE = ["--tpu=kd-v4-32", "--zone=us-central2-b", "--project=my-project",
               "--repo=https://github.com/example/kd_jax.git", "--setup=sudo mount -t nfs 10.0.0.2:/runs /mnt/runs",
               "--", "--config=configs/sweep_temp.py", "--workdir=/mnt/runs/sweep_temp",
               "--config.student.hidden_sizes=(64, 64)"]
SLURM_EXAMPLE = ["--nodes=4", "--gpus_per_node=8", "--partition=gpu", "--time=02:00:00",
                 "--setup=source ~/venv/bin/activate", "--", "--config=configs/default.py", "--workdir=/shared/runs/t2",
                 "--config.distill.temperature=2"]
# Stands in for gcloud and sbatch: records its name, arguments and standard input, one file per call.
FAKE_COMMAND = """#!/bin/bash
call="$FAKE_LOG/$(ls "$FAKE_LOG" | grep -c '[.]args$')"
{ basename "$0"; printf '%s\\0' "$@"; } > "$call.args"
cat > "$call.stdin"
echo 4242
"""


def launch(script: str, *arguments: str, cwd, fake_log=None, command=None) -> subprocess.CompletedProcess:
  """Runs scripts/<script> ARGUMENTS (or `command`, a bash script) with fake gcloud and sbatch first on PATH."""
  fake_bin = cwd / "fake_bin"
  fake_bin.mkdir(exist_ok=True)
  for name in ("gcloud", "sbatch"):
    (fake_bin / name).write_text(FAKE_COMMAND)
    (fake_bin / name).chmod(0o755)
  environment = child_environment()
  environment.update(PATH=f"{fake_bin}:{os.environ['PATH']}", PYTHON=sys.executable, FAKE_LOG=str(fake_log or cwd))
  argv = ["bash", "-c", command] if command is not None else ["bash", str(REPO_ROOT / "scripts" / script), *arguments]
  result = subprocess.run(argv, cwd=cwd, env=environment, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  return result


def recorded_calls(log_dir) -> list[tuple[str, list[str], str]]:
  calls = []
  for index in range(len(list(log_dir.glob("*.args")))):
    name, arguments = (log_dir / f"{index}.args").read_text().split("\n", 1)
    calls.append((name, arguments.split("\0")[:-1], (log_dir / f"{index}.stdin").read_text()))
  return calls


def assert_dry_run_prints_what_runs(script: str, arguments: list[str], tmp_path) -> str:
  """Runs the launcher for real (fake gcloud/sbatch) and its --dry_run output as a bash script: same calls."""
  dry_run = launch(script, "--dry_run", *arguments, cwd=tmp_path).stdout
  for mode in ("real", "dry_run"):
    (tmp_path / mode).mkdir()
  launch(script, *arguments, cwd=tmp_path, fake_log=tmp_path / "real")
  launch(script, cwd=tmp_path, fake_log=tmp_path / "dry_run", command=dry_run)
  real_calls = recorded_calls(tmp_path / "real")
  assert real_calls and real_calls == recorded_calls(tmp_path / "dry_run")
  return dry_run


def test_tpu_vm_pod_commands(tmp_path):
  lines = assert_dry_run_prints_what_runs("tpu_vm.sh", TPU_EXAMPLE, tmp_path).splitlines()
  commands = [shlex.split(line) for line in lines]
  assert len(commands) == 5
  ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "kd-v4-32", "--zone=us-central2-b", "--project=my-project",
         "--worker=all"]
  install, setup, run = (command[-1].removeprefix("--command=") for command in commands[:3])
  assert all(command[:-1] == ssh for command in commands[:3])  # every worker of the pod, all 4 hosts
  assert shlex.split(install.split("; ")[1]) == ["if", "[", "!", "-d", "kd_jax", "]"]
  assert "git clone -q https://github.com/example/kd_jax.git kd_jax" in install
  assert shlex.split(install.split("&& ")[-1]) == ["python3", "-m", "pip", "install", "-q", "-r", "requirements.txt",
                                                   "jax[tpu]>=0.10.2,<0.11"]  # requirements.txt's jax range
  assert setup == "sudo mount -t nfs 10.0.0.2:/runs /mnt/runs"
  assert shlex.split(run) == ["cd", "kd_jax", "&&", "python3", "main.py", "--distributed=on", *TPU_EXAMPLE[-3:]]
  assert commands[3] == ["mkdir", "-p", "runs/kd-v4-32"]
  assert commands[4] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "kd-v4-32:/mnt/runs/sweep_temp", "runs/kd-v4-32",
                         "--zone=us-central2-b", "--project=my-project", "--worker=0", "--recurse"]


def test_slurm_four_node_job(tmp_path):
  output = assert_dry_run_prints_what_runs("slurm.sh", SLURM_EXAMPLE, tmp_path)
  lines = output.splitlines()
  assert lines[0] == "sbatch <<'EOF'" and lines[-1] == "EOF"
  assert lines[1:-1] == [
      "#!/bin/bash", "#SBATCH --job-name=kd_jax", "#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1",
      "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu", "#SBATCH --time=02:00:00",
      "#SBATCH --output=kd_jax-%j.out", "set -eo pipefail", f"cd {REPO_ROOT}", "source ~/venv/bin/activate",
      "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7",
      "srun python3 main.py --config=configs/default.py --workdir=/shared/runs/t2 --config.distill.temperature=2"]


def test_slurm_one_process_per_gpu(tmp_path):
  output = launch("slurm.sh", "--dry_run", "--processes=per_gpu", *SLURM_EXAMPLE, cwd=tmp_path).stdout
  assert "#SBATCH --ntasks-per-node=8\n" in output  # 32 processes; JAX gives each the GPU of its local task id
  assert "JAX_LOCAL_DEVICE_IDS" not in output


def test_slurm_sweep_array_then_report(tmp_path):
  """The points are counted with main.py --list_points (configs/sweep_temp.py:smoke has 4)."""
  arguments = ["--sweep", "--nodes=4", "--gpus_per_node=8", "--", "--config=configs/sweep_temp.py:smoke",
               "--workdir=/shared/runs/sweep"]
  lines = launch("slurm.sh", "--dry_run", *arguments, cwd=tmp_path).stdout.splitlines()
  assert lines[0] == "job_id=$(sbatch --parsable <<'EOF'"
  assert "#SBATCH --array=0-3" in lines and "#SBATCH --output=kd_jax-%A_%a.out" in lines
  assert lines[lines.index("EOF") - 1] == ("srun python3 main.py --config=configs/sweep_temp.py:smoke "
                                           '--workdir=/shared/runs/sweep --sweep_index="$SLURM_ARRAY_TASK_ID"')
  assert lines[-2] == ")"
  assert shlex.split(lines[-1]) == [
      "sbatch", "--dependency=afterok:$job_id", "--job-name=kd_jax-report", "--nodes=1", "--ntasks=1",
      "--output=kd_jax-report-%j.out",
      f"--wrap=cd {REPO_ROOT} && python3 main.py --config=configs/sweep_temp.py:smoke --workdir=/shared/runs/sweep"]


@pytest.mark.parametrize("script, arguments, message", [
    ("slurm.sh", ["--nodes=0", "--", "--workdir=w"], "--nodes must be a positive integer"),
    ("slurm.sh", ["--processes=per_gpu", "--", "--workdir=w"], "--processes=per_gpu needs --gpus_per_node > 0"),
    ("slurm.sh", ["--nodes=2"], "main.py needs --workdir=DIR"),
    ("tpu_vm.sh", ["--tpu=t", "--zone=z", "--", "--workdir=w"], "--tpu, --zone and --repo"),
    ("multiprocess_local.sh", ["two", "--workdir=w"], "usage: bash"),
])
def test_launcher_usage_errors(script, arguments, message):
  result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / script), *arguments], capture_output=True, text=True,
                          timeout=60, check=False)
  assert result.returncode == 2 and message in result.stderr


FAKE_IPYTHON_DISPLAY = """import json, os


class Markdown:
  def __init__(self, data):
    self.record = {"markdown": data}


class Image:
  def __init__(self, filename):
    self.record = {"image": filename}


def display(item):
  with open(os.environ["DISPLAY_LOG"], "a") as stream:
    stream.write(json.dumps(item.record) + "\\n")
"""


@pytest.mark.slow
def test_colab_notebook_code_cells_run_on_cpu(tmp_path, smoke_sweep):
  """Every code cell in order, with the parameters cell's values replaced: this checkout, the smoke sweep, no pip.
  The notebook is rerun on a copy of the session's finished smoke sweep (the run its parameters cell describes:
  finished points skipped), so its `main.py` child reports without training; the sweep itself, trained from nothing
  through the same command line, is tests/artifacts.py's smoke_sweep (checked in tests/test_sweep.py)."""
  with open(REPO_ROOT / "scripts" / "colab_tpu.ipynb") as stream:
    notebook = json.load(stream)
  workdir = copy_of(smoke_sweep[0], tmp_path / "sweep")
  (workdir / "summary.md").unlink()  # what the notebook shows must be what its rerun wrote
  shutil.rmtree(workdir / "plots")
  overrides = (f"REPO_DIR = {str(REPO_ROOT)!r}\nCONFIG = 'configs/sweep_temp.py:smoke'\nWORKDIR = {str(workdir)!r}\n"
               "EXTRA_ARGS = []\nINSTALL = False\n")
  fake_ipython = tmp_path / "fake_ipython"  # IPython.display recording what the notebook shows, for this process only
  (fake_ipython / "IPython").mkdir(parents=True)
  (fake_ipython / "IPython" / "__init__.py").write_text("")
  (fake_ipython / "IPython" / "display.py").write_text(FAKE_IPYTHON_DISPLAY)
  program = [f"import sys\nsys.path.insert(0, {str(fake_ipython)!r})"]
  for cell in notebook["cells"]:
    if cell["cell_type"] == "code":
      program.append("".join(cell["source"]))
      if "parameters" in cell["metadata"].get("tags", []):
        program.append(overrides)
  assert len(program) > 5 and overrides in program
  environment = child_environment()
  environment["DISPLAY_LOG"] = str(tmp_path / "displayed.jsonl")
  result = subprocess.run([sys.executable, "-c", "\n\n".join(program)], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "devices: [CpuDevice(id=0)]" in result.stdout
  assert result.stdout.count("finished earlier, skipped") == 4  # the child's output, streamed into the notebook's
  with open(tmp_path / "displayed.jsonl") as stream:
    displayed = [json.loads(line) for line in stream]
  with open(workdir / "summary.md") as stream:
    assert displayed[0] == {"markdown": stream.read()}
  images = [item["image"] for item in displayed if "image" in item]
  assert images and images == sorted(str(path) for path in (workdir / "plots").glob("*.png"))
