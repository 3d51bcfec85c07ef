"""Test set-up: 8 forced CPU devices (before JAX starts), and helpers shared by the tests."""

import importlib.util
import os
import pathlib
import subprocess
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kd_jax  # pylint: disable=unused-import,wrong-import-position  (before jax: sizes XLA's CPU thread pools)
import pytest  # pylint: disable=wrong-import-position

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_config(path: str = "configs/default.py", arg: str | None = "smoke"):
  """get_config(arg) of a config file of this repository."""
  spec = importlib.util.spec_from_file_location(f"config_{pathlib.Path(path).stem}", REPO_ROOT / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def run_main(*args: str, cwd=REPO_ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
  """Runs `python main.py ARGS` in a subprocess (1 CPU device unless XLA_FLAGS says otherwise)."""
  env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "PJRT_NPROC")}
  return subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)


@pytest.fixture
def smoke_config():
  """The default config's smoke variant (a few seconds of training)."""
  return load_config()


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs (subprocesses, full smoke runs); the fast tier is "
                                     "`pytest -m 'not slow'`")
