"""What several test modules use: configs, the command line in-process and in a child process, small models.

Test modules import from here (never from each other, nor from conftest.py, which only holds pytest's hooks). JAX is
imported inside the functions: conftest.py loads this module (through tests/artifacts.py) before it sets the device
count.
"""

import contextlib
import importlib.util
import io
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# A child process that runs longer than this is killed (a hung child fails its test instead of hanging the suite).
CHILD_TIMEOUT_SECONDS = 900


def _load_module(name: str, path: pathlib.Path):
  """The Python file at `path` executed as a module named `name` (not entered in sys.modules)."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(path: str = "configs/default.py", arg: str | None = "smoke"):
  """get_config(arg) of a config file of this repository."""
  return _load_module(f"config_{pathlib.Path(path).stem}", REPO_ROOT / path).get_config(arg)


def load_script(name: str):
  """scripts/<name>.py as a module: its functions and main callable in this process."""
  return _load_module(f"{name}_script", REPO_ROOT / "scripts" / f"{name}.py")


def run_main(*args: str, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
  """`python main.py ARGS`, run in this process (kd_jax.cli.main): its exit status, stdout and stderr as a
  CompletedProcess. On this session's devices; relative paths resolve from `cwd` (the repository)."""
  from kd_jax import cli  # pylint: disable=import-outside-toplevel
  stdout, stderr = io.StringIO(), io.StringIO()
  previous = os.getcwd()
  os.chdir(cwd)
  try:
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
      returncode = cli.main(["main.py", *args])
  finally:
    os.chdir(previous)
  return subprocess.CompletedProcess(["main.py", *args], returncode, stdout.getvalue(), stderr.getvalue())


def with_device_count(xla_flags: str, devices: int) -> str:
  """`xla_flags` (XLA_FLAGS) with its forced host device count replaced by `devices` (none for 1 device)."""
  flags = [flag for flag in xla_flags.split() if not flag.startswith("--xla_force_host_platform_device_count")]
  return " ".join(flags + ([f"--xla_force_host_platform_device_count={devices}"] if devices > 1 else []))


def child_environment(devices: int = 1, **variables: str) -> dict:
  """The environment of a child process on `devices` CPU devices (with the session's XLA compilation cache, its
  compile flags and optimization level: tests/conftest.py)."""
  env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "PJRT_NPROC")}
  flags = with_device_count(os.environ.get("XLA_FLAGS", ""), devices)
  return env | ({"XLA_FLAGS": flags} if flags else {}) | variables


class Child:
  """A command in a new interpreter, its stderr read line by line as it comes (`wait_for`), its stdout drained in the
  background, so that it never blocks on a full pipe; killed after CHILD_TIMEOUT_SECONDS.

  Only where the process boundary is what a test is about: signals, the real entry point's exit statuses and
  output, what is read from the environment at start, several processes at once.
  """

  def __init__(self, command: list[str], *, cwd=REPO_ROOT, env: dict | None = None):
    self.command = command
    self.process = subprocess.Popen(command, cwd=cwd, env=env if env is not None else child_environment(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    self.stderr_lines: list[str] = []
    self._stdout: list[str] = []
    self._reader = threading.Thread(target=lambda: self._stdout.extend(self.process.stdout), daemon=True)
    self._reader.start()
    self._watchdog = threading.Timer(CHILD_TIMEOUT_SECONDS, self.process.kill)
    self._watchdog.start()

  @classmethod
  def main(cls, *args: str, devices: int = 1, cwd=REPO_ROOT, main_py=REPO_ROOT / "main.py",
           python=sys.executable) -> "Child":
    """`python main.py ARGS` on `devices` CPU devices."""
    return cls([str(python), str(main_py), *args], cwd=cwd, env=child_environment(devices))

  def wait_for(self, pattern: str, until=lambda match: True) -> re.Match:
    """Reads stderr up to the first line matching `pattern` for which `until(match)` holds; fails if the child
    ends first."""
    for line in self.process.stderr:
      self.stderr_lines.append(line)
      match = re.search(pattern, line)
      if match and until(match):
        return match
    self.finish()
    raise AssertionError(f"{' '.join(self.command)} ended (exit {self.process.returncode}) without logging "
                         f"{pattern!r}; its stderr ends with:\n{''.join(self.stderr_lines[-30:])}")

  def wait_for_step(self, phase: str, step: int) -> int:
    """Reads stderr up to the loop's log line of `phase` (e.g. 'student', 'teacher', 'student_hard') at step
    >= `step`; returns that step. A vectorized group's lines count too."""
    match = self.wait_for(rf"(?<![\w]){re.escape(phase)}( \(\d+ runs vectorized\))? step (\d+)/",
                          until=lambda match: int(match.group(2)) >= step)
    return int(match.group(2))

  def send_signal(self, sig: signal.Signals) -> None:
    self.process.send_signal(sig)

  def finish(self) -> subprocess.CompletedProcess:
    """Waits for the child to end; its exit status, stdout and all of its stderr."""
    self.stderr_lines.extend(self.process.stderr)
    self.process.wait()
    self._reader.join()
    self._watchdog.cancel()
    return subprocess.CompletedProcess(self.command, self.process.returncode, "".join(self._stdout),
                                       "".join(self.stderr_lines))


def run_child(command: list[str], **kwargs) -> subprocess.CompletedProcess:
  """Runs a command in a new interpreter to its end (see Child)."""
  return Child(command, **kwargs).finish()


def run_main_subprocess(*args: str, devices: int = 1, cwd=REPO_ROOT, main_py=REPO_ROOT / "main.py",
                        python=sys.executable) -> subprocess.CompletedProcess:
  """`python main.py ARGS` in a new interpreter, to its end (see Child)."""
  return Child.main(*args, devices=devices, cwd=cwd, main_py=main_py, python=python).finish()


class SigtermAt:
  """A metric writer that records what the loop writes, and sends this process SIGTERM once it writes `step`."""

  def __init__(self, step=None):
    self.step, self.records = step, []

  def drop_after(self, step):
    self.records = [record for record in self.records if record[0] <= step]

  def write_scalars(self, step, scalars):
    self.records.append((step, scalars))
    if step == self.step:
      self.step = None
      os.kill(os.getpid(), signal.SIGTERM)


def digits_student(log_every_steps: int, eval_every_steps: int, checkpoint_every_steps: int, **student):
  """(config, examples, model, params, objective): the smoke config (with these train.*_every_steps, and the
  config.student fields `student`, e.g. name='tests/user_models.py:nnx_mlp') and its student on digits, the training
  examples carrying random cached teacher logits."""
  import jax  # pylint: disable=import-outside-toplevel
  from kd_jax import data, models  # pylint: disable=import-outside-toplevel
  from kd_jax.training.objective import Objective  # pylint: disable=import-outside-toplevel
  config = load_config()
  config.train.log_every_steps, config.train.eval_every_steps = log_every_steps, eval_every_steps
  config.train.checkpoint_every_steps = checkpoint_every_steps
  config.student.update(student)
  task = data.load_task(config)
  logits = np.random.default_rng(0).normal(size=(len(task.train), task.num_classes)).astype(np.float32)
  examples = task.train.replace(teacher=logits)
  model, params = models.create(config.student, num_classes=task.num_classes, example_inputs=task.train.inputs[:1],
                                rng=jax.random.PRNGKey(0))
  return config, examples, model, params, Objective.from_config(config)


def random_distilbert(hidden_size: int, num_heads: int, seed: int):
  """A randomly initialized 2-layer DistilBERT classifier of the given width and heads (registry convention)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from kd_jax import models  # pylint: disable=import-outside-toplevel
  from kd_jax.models.hf import distilbert, layers  # pylint: disable=import-outside-toplevel
  from kd_jax.models.hf.pretrained import RegistryModel  # pylint: disable=import-outside-toplevel
  dims = distilbert.DistilBertDims(
      encoder=layers.EncoderDims(hidden_size=hidden_size, num_heads=num_heads, intermediate_size=2 * hidden_size,
                                 activation="gelu", layer_norm_eps=1e-12, hidden_dropout=0.1, attention_dropout=0.1,
                                 attention_output_dropout=False),
      num_layers=2, vocab_size=50, max_position_embeddings=16, classifier_dropout=0.1, initializer_range=0.02)
  model = RegistryModel(distilbert.DistilBertForSequenceClassification(dims, num_labels=2))
  # One compiled init (models.compiled_init, once per architecture): op by op, each random initializer compiles on
  # its own (7.2 -> 4.7 CPU-s for the two models of test_remat_and_microbatches_keep_the_train_step).
  params = models.compiled_init(model.module)(jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))["params"]
  return model, params


class NullWriter:
  """A metric writer that keeps nothing."""

  def drop_after(self, step):
    del step

  def write_scalars(self, step, scalars):
    del step, scalars


def assert_resumed_after_step_2_is_bitwise(config, task, teacher, student, num_steps: int, tmp_path,
                                           examples=None) -> None:
  """The student phase of `num_steps` steps on `examples` (task.train), checkpointed every 2, run once whole and
  once resumed from the checkpoint a stop after step 2 left: both end with exactly the same parameters. `teacher`:
  (model, params) run in the step, or None (the examples carry a cached teacher)."""
  import shutil  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from kd_jax.parallel import sharding  # pylint: disable=import-outside-toplevel
  from kd_jax.training import loop, steps  # pylint: disable=import-outside-toplevel
  from kd_jax.training.objective import Objective  # pylint: disable=import-outside-toplevel
  model, params = student
  config.train.checkpoint_every_steps, config.train.steps_per_dispatch, config.train.log_every_steps = 2, 2, 2
  config.train.max_checkpoints_to_keep = 3
  mesh = sharding.make_mesh()
  objective = Objective.from_config(config, num_steps=num_steps, task=task, model=model)
  placed_teacher = None if teacher is None else (teacher[0], sharding.replicate(teacher[1], mesh))

  def train(directory):
    program = steps.program(model=model, init_params=params, optim_config=config.optim, num_steps=num_steps,
                            objective=objective, examples=task.train if examples is None else examples, batch_size=16,
                            seed=config.seed, mesh=mesh, train_config=config.train, teacher=placed_teacher)
    return loop.train("student", program, [loop.RunLog("", NullWriter(), np.zeros(num_steps))],
                      num_steps=num_steps, checkpoint_dir=str(directory), train_config=config.train,
                      evaluate=lambda params: {})

  uninterrupted = train(tmp_path / "a")
  shutil.copytree(tmp_path / "a" / "2", tmp_path / "b" / "2")  # the run as a stop after step 2 left it
  resumed = train(tmp_path / "b")
  assert resumed.stats["resumed_from_step"] == 2
  for expected, got in zip(jax.tree.leaves(uninterrupted.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listened on a moment ago (bound to port 0, then closed): for a server or
  a coordinator the test starts, or a closed port a client must be refused at."""
  import socket  # pylint: disable=import-outside-toplevel
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


# Where tests look for an interpreter with llama-cpp-python's server (`pip install 'llama-cpp-python[server]'`, which
# builds llama.cpp from source): $KD_JAX_LLAMA_PYTHON, else the repository's .llamaenv, else this interpreter.
LLAMA_ENV_PYTHON = REPO_ROOT / ".llamaenv" / "bin" / "python"


def llama_cpp_python() -> str | None:
  """An interpreter that has llama-cpp-python's server, or None."""
  if os.environ.get("KD_JAX_LLAMA_PYTHON"):
    return os.environ["KD_JAX_LLAMA_PYTHON"]
  if LLAMA_ENV_PYTHON.exists():
    return str(LLAMA_ENV_PYTHON)
  return sys.executable if importlib.util.find_spec("llama_cpp") is not None else None


@contextlib.contextmanager
def llama_server(model_path: str, log_path: str, *args: str, context: int = 2048, start_timeout_s: float = 60.0):
  """llama-cpp-python's OpenAI-compatible server on 127.0.0.1 serving the GGUF `model_path` (its output in
  `log_path`; `args`: more of its flags), stopped on exit; yields its URL. The caller skips where
  `llama_cpp_python()` is None."""
  import time  # pylint: disable=import-outside-toplevel
  import urllib.request  # pylint: disable=import-outside-toplevel
  port = free_port()
  command = [llama_cpp_python(), "-m", "llama_cpp.server", "--model", model_path, "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", str(context), "--verbose", "False", *args]
  url = f"http://127.0.0.1:{port}"
  with open(log_path, "wb") as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + start_timeout_s
    while True:
      try:
        with urllib.request.urlopen(url + "/v1/models", timeout=5):
          break
      except OSError:
        if process.poll() is not None or time.monotonic() > deadline:
          with open(log_path, errors="replace") as log:
            raise AssertionError(f"{' '.join(command)} did not start (exit {process.poll()}); its output ends "
                                 f"with:\n{log.read()[-3000:]}") from None
        time.sleep(0.2)
    yield url
  finally:
    process.terminate()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


LLAMA31_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def llama31_checkpoint(tmp_path: pathlib.Path) -> pathlib.Path:
  """llama_chat (head_dim 8: wavelengths 6.3, 63, 628 and 6283) with Llama 3.1's RoPE scaling over 64 original
  positions: one frequency kept, one smoothed, two divided by the factor."""
  path = tmp_path / "llama31"
  shutil.copytree(REPO_ROOT / "tests" / "fixtures" / "hf" / "llama_chat", path)
  config = json.loads((path / "config.json").read_text())
  config["rope_parameters"] = LLAMA31_ROPE
  (path / "config.json").write_text(json.dumps(config))
  return path


def llama_cpp_rope_freqs(rope: dict, head_dim: int) -> np.ndarray:
  """llama.cpp's convert_hf_to_gguf.py LlamaModel.generate_extra_tensors: rope_freqs of a llama3 rope_scaling."""
  factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
  old_context_len = rope["original_max_position_embeddings"]
  freqs = 1.0 / (rope["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
  factors = []
  for freq in freqs:
    wavelen = 2 * np.pi / freq
    if wavelen < old_context_len / high:
      factors.append(1)
    elif wavelen > old_context_len / low:
      factors.append(factor)
    else:
      smooth = (old_context_len / wavelen - low) / (high - low)
      factors.append(1 / ((1 - smooth) / factor + smooth))
  return np.asarray(factors, np.float32)
