"""Runs every config's `:smoke` form and records the numbers its results.json files hold; or compares two records.

A refactoring that must not change behaviour is checked with it: record the numbers on the commit before, record them
again after, compare. Timing fields (wall_s, examples_per_sec, latency...) and paths are left out; everything else a
results.json holds (metrics of every split and model, data sizes, steps, cache sizes, memory of the compiled steps) is
compared exactly.

    python scripts/compare_smoke_results.py record --out=before.json [--repo=DIR] [--only=default,sst2]
    python scripts/compare_smoke_results.py compare before.json after.json

`record` runs `python main.py --config=configs/<name>.py:smoke` of the repository `--repo` (default: this one) on one
CPU device, one config after another, in a temporary directory; a sweep config records each point's results.json.
"""

import argparse
import glob
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Every config file with a `smoke` option (configs/*.py), by name; default.py's smoke is the embedded default's.
CONFIGS = ("default", "fashion_mnist", "sst2", "esnli", "causal_lm", "sweep_temp", "sweep_alpha", "sweep_temp_alpha",
           "sweep_kd_weight", "sweep_label_smoothing", "sweep_data_size", "sweep_divergence", "sweep_student_size",
           "sweep_lora_rank")
# Keys whose values are timings, paths or dates: they differ from run to run by nature.
VOLATILE = ("wall_s", "wall_s_after_compile", "examples_per_sec", "latency_ms", "examples_per_s", "throughput",
            "throughput_per_s", "latency_speedup", "path", "compile_s", "time", "date", "workdir", "directory")


def numbers(tree, prefix: str = "") -> dict:
  """{dotted key: value} of the non-volatile leaves of a results.json tree."""
  flat = {}
  if isinstance(tree, dict):
    for key, value in tree.items():
      if any(key == volatile or key.endswith("_" + volatile) for volatile in VOLATILE):
        continue
      flat.update(numbers(value, f"{prefix}{key}."))
  elif isinstance(tree, list):
    for i, value in enumerate(tree):
      flat.update(numbers(value, f"{prefix}{i}."))
  else:
    flat[prefix[:-1]] = tree
  return flat


def record(repo: pathlib.Path, names: list[str], out: str) -> None:
  recorded = {}
  env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "PJRT_NPROC")}
  with tempfile.TemporaryDirectory() as root:
    for name in names:
      workdir = os.path.join(root, name)
      start = time.time()
      result = subprocess.run([sys.executable, "main.py", f"--config=configs/{name}.py:smoke", f"--workdir={workdir}"],
                              cwd=repo, env=env, capture_output=True, text=True, check=False)
      if result.returncode != 0:
        raise SystemExit(f"{name}: exit {result.returncode}\n{result.stderr[-3000:]}")
      runs = {}
      for path in sorted(glob.glob(os.path.join(workdir, "**", "results.json"), recursive=True)):
        with open(path) as stream:
          runs[os.path.relpath(os.path.dirname(path), workdir) or "."] = numbers(json.load(stream))
      recorded[name] = runs
      print(f"{name}: {len(runs)} results.json, {time.time() - start:.0f} s", flush=True)
  pathlib.Path(out).write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")


def same(a, b) -> bool:
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
    return True
  return a == b


def compare(before_path: str, after_path: str) -> int:
  before, after = (json.loads(pathlib.Path(path).read_text()) for path in (before_path, after_path))
  differences, compared = [], 0
  for name in sorted(set(before) | set(after)):
    if name not in before or name not in after:
      differences.append(f"{name}: recorded on one side only")
      continue
    for run in sorted(set(before[name]) | set(after[name])):
      a, b = before[name].get(run), after[name].get(run)
      if a is None or b is None:
        differences.append(f"{name}/{run}: results.json on one side only")
        continue
      for key in sorted(set(a) | set(b)):
        compared += 1
        if key not in a or key not in b:
          differences.append(f"{name}/{run}: {key} only {'after' if key in b else 'before'}")
        elif not same(a[key], b[key]):
          differences.append(f"{name}/{run}: {key} {a[key]!r} -> {b[key]!r}")
  runs = sum(len(runs) for runs in before.values())
  print(f"compared {compared} values of {runs} results.json files in {len(before)} configs: "
        f"{len(differences)} differ")
  for line in differences:
    print("  " + line)
  return 1 if differences else 0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest="command", required=True)
  record_parser = commands.add_parser("record")
  record_parser.add_argument("--out", required=True)
  record_parser.add_argument("--repo", default=str(REPO_ROOT))
  record_parser.add_argument("--only", default=",".join(CONFIGS), help="comma-separated config names")
  compare_parser = commands.add_parser("compare")
  compare_parser.add_argument("before")
  compare_parser.add_argument("after")
  args = parser.parse_args()
  if args.command == "record":
    record(pathlib.Path(args.repo), [name for name in args.only.split(",") if name], args.out)
    return 0
  return compare(args.before, args.after)


if __name__ == "__main__":
  sys.exit(main())
