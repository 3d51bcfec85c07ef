"""The sections of scripts/benchmark.py, a module each, and what they share (the script's docstring lists them and
their keys).

Modules import JAX, NumPy and kd_jax inside their functions: the script imports kd_jax before JAX (kd_jax sizes
XLA:CPU's thread pools when imported) and sets JAX's memory fraction first, and the PyTorch worker runs the script
in an interpreter that may lack JAX and kd_jax.
"""

import importlib
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# The command line: the worker processes run it again (--torch_worker, --fsdp_worker).
SCRIPT = REPO_ROOT / "scripts" / "benchmark.py"


def repo_config(name: str):
  """configs/<name>.py as a module (the repository root on sys.path: the sections run outside main() too)."""
  sys.path.insert(0, str(REPO_ROOT))
  return importlib.import_module(f"configs.{name}")
