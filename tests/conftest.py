"""Test set-up: the device count (before JAX starts), a persistent XLA compilation cache, offline Hugging Face
libraries, and the markers.

Tiers: unit (`-m "not slow and not trains"`: no training), fast (`-m "not slow"`), full (everything; the README's test
command and .ci/run).

XLA: most tests compile more than they run, so the session compiles cheaply: with XLA:CPU's COMPILE_FLAGS (older
fusion emitters, code generated in one piece) and at LLVM -O0 (jax_disable_most_optimizations); a test marked
`xla_optimized` (training long enough for XLA's optimizations to pay) compiles at the level users get.
`JAX_DISABLE_MOST_OPTIMIZATIONS=0 pytest ...` runs every test compiled as users compile (optimized, XLA's default
flags). docs/tests.md has the measurements.

Devices: every test runs on 1 CPU device, except those marked `multidevice`, which compare results across device
counts or shard over a mesh: they run in their own session on 8 forced CPU devices, `pytest --devices=8 tests`,
where the others are deselected (and vice versa). The README's test command runs both sessions.

What test modules share is in tests/helpers.py (this file holds pytest's hooks and fixtures only, and imports no jax:
the device count must be set before JAX starts); the artifacts built once per test session, whichever xdist worker
asks first, are tests/artifacts.py's fixtures.
"""

import ctypes.util
import gc
import os
import shutil
import tempfile

import pytest

from kd_jax.parallel import environment
from tests import helpers
from tests.artifacts import causal_lm_smoke_run, smoke_run, smoke_sweep, sst2_smoke_run  # noqa: F401 (fixtures)

MULTIDEVICE_COUNT = 8
# XLA:CPU's compile flags for the test session (XLA_FLAGS, in this process and its children; one given in XLA_FLAGS
# wins): its older fusion emitters (LLVM IR instead of the MLIR emitters) compiled compile-bound tests in 27% less CPU
# time (18.2 -> 13.4 CPU-s, two runs each) and trained the long runs about as fast (70.1 -> 67.8 CPU-s); LLVM's code
# generation in one piece instead of split for parallel threads (the workers already use every core): 14.3 -> 12.7.
COMPILE_FLAGS = ("--xla_cpu_use_fusion_emitters=false", "--xla_cpu_parallel_codegen_split_count=1")
# The session's default for jax_disable_most_optimizations (module docstring); children inherit it through the
# environment, which pytest_runtest_setup sets per test.
UNOPTIMIZED = "JAX_DISABLE_MOST_OPTIMIZATIONS"
_CHEAP_COMPILES = pytest.StashKey[bool]()  # whether this session compiles cheaply (pytest_configure decides)
# The persistent XLA compilation cache of a test session: compiled programs are reused by later tests, by the other
# xdist worker and by the subprocesses the tests start (through the environment). Entries of every size and compile
# time are kept: the suite compiles the same small programs many times.
COMPILATION_CACHE_VARIABLES = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                               "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


# TCMalloc for the xdist workers and the child processes, where the machine has it (Debian: libtcmalloc-minimal4;
# .ci/run installs it): XLA's compiler and JAX's tracing allocate and free millions of small blocks, and glibc's
# malloc was ~12% of a compile-bound test's CPU time (perf); with TCMalloc and the collector's settings below, the
# same tests took 12% less CPU time (1,507 -> 1,331 s in the 1-device session, 384 -> 336 s in the 8-device one).
# Numbers do not change (the allocator is not in the math). Its report of large allocations is switched off: it would
# write to the stderr that tests read.
TCMALLOC = "tcmalloc_minimal"
TCMALLOC_VARIABLES = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(2**62)}


def _preload_tcmalloc() -> None:
  """Adds TCMalloc to LD_PRELOAD for the processes this one starts (read when a process starts: the controller sets
  it before xdist starts its workers)."""
  library = ctypes.util.find_library(TCMALLOC)
  preloaded = os.environ.get("LD_PRELOAD", "")
  if library and TCMALLOC not in preloaded:
    os.environ["LD_PRELOAD"] = f"{preloaded} {library}".strip()
    os.environ.update(TCMALLOC_VARIABLES)


def pytest_addoption(parser):
  parser.addoption("--devices", type=int, default=1, choices=(1, MULTIDEVICE_COUNT),
                   help=f"1 (default): the tests not marked multidevice, on 1 CPU device; {MULTIDEVICE_COUNT}: the "
                        f"multidevice tests, on {MULTIDEVICE_COUNT} forced CPU devices")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs (full smoke runs, child processes) and tests that take "
                                     "more than ~5 s on 2 cores (compiling a transformer's steps); the fast tier is "
                                     "`pytest -m 'not slow'`")
  config.addinivalue_line("markers", "trains: a fast test that runs optimizer steps; the unit tier, which trains "
                                     "nothing, is `pytest -m 'not slow and not trains'`")
  config.addinivalue_line("markers", "xla_optimized: compiled with XLA's backend optimizations on (the session "
                                     "compiles at -O0 by default): tests that train long enough for them to pay")
  config.addinivalue_line("markers", f"multidevice: needs {MULTIDEVICE_COUNT} devices; runs in the session "
                                     f"`pytest --devices={MULTIDEVICE_COUNT}`")
  # JAX_DISABLE_MOST_OPTIMIZATIONS=0 at the start: every test compiled as users compile.
  cheap = config.stash[_CHEAP_COMPILES] = os.environ.get(UNOPTIMIZED) != "0"
  # Before any test module imports jax (this runs first in the controller and in every xdist worker).
  flags = os.environ.get("XLA_FLAGS", "").split()
  if cheap:
    flags += [flag for flag in COMPILE_FLAGS if not any(given.startswith(flag.split("=")[0] + "=") for given in flags)]
  os.environ["XLA_FLAGS"] = helpers.with_device_count(" ".join(flags), config.getoption("--devices"))
  os.environ.pop("PJRT_NPROC", None)
  os.environ.setdefault(UNOPTIMIZED, "1")
  environment.prepare()
  # The tests never reach a network: Hugging Face's libraries read these when first imported, and without them every
  # hub lookup of a test (an error path, a missing local copy) waits for its connection to time out.
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the controller; xdist workers inherit its environment
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="kd_jax-tests-xla-cache-")
    os.environ.update(COMPILATION_CACHE_VARIABLES)
    _preload_tcmalloc()


def pytest_collection_finish(session):  # pylint: disable=unused-argument
  """After the test modules (jax, flax, TensorFlow, transformers) are imported: their objects leave the collector's
  generations, so its passes no longer walk them (gc.freeze)."""
  gc.collect()
  gc.freeze()


def pytest_unconfigure(config):
  """The controller removes the session's compilation cache (a worker's `workerinput` says it is a worker)."""
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", "")
  if not hasattr(config, "workerinput") and os.path.basename(cache).startswith("kd_jax-tests-xla-cache-"):
    shutil.rmtree(cache, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
  """Before the test's fixtures are set up: XLA's optimizations on for a test marked `xla_optimized`, off for the
  others (unless the session was started with JAX_DISABLE_MOST_OPTIMIZATIONS=0), in this process and its children."""
  import jax  # pylint: disable=import-outside-toplevel  (after pytest_configure has set the device count)
  if item.config.stash[_CHEAP_COMPILES]:
    unoptimized = item.get_closest_marker("xla_optimized") is None
    os.environ[UNOPTIMIZED] = "1" if unoptimized else "0"
    jax.config.update("jax_disable_most_optimizations", unoptimized)


def pytest_collection_modifyitems(config, items):
  """Keeps the tests of this session's device count: multidevice ones with --devices=8, the others with 1."""
  multidevice = config.getoption("--devices") > 1
  selected = [item for item in items if (item.get_closest_marker("multidevice") is not None) == multidevice]
  deselected = [item for item in items if (item.get_closest_marker("multidevice") is not None) != multidevice]
  if deselected:
    config.hook.pytest_deselected(items=deselected)
    items[:] = selected


def pytest_report_header(config):
  return (f"kd_jax: {config.getoption('--devices')} CPU device(s); "
          f"XLA compilation cache {os.environ.get('JAX_COMPILATION_CACHE_DIR')}")


@pytest.fixture
def smoke_config():
  """The default config's smoke variant (a few seconds of training)."""
  return helpers.load_config()


@pytest.fixture
def draft_plots(monkeypatch):
  """A sweep report's figures drawn and saved as PNG only, at 30 dpi (instead of PNG and PDF at 200 dpi): for tests
  that run a sweep and do not look at its figures (every figure is still drawn and written)."""
  from kd_jax.reporting import plots  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(plots, "FORMATS", ("png",))
  monkeypatch.setitem(plots.STYLE, "savefig.dpi", 30)


@pytest.fixture(scope="session", autouse=True)
def brief_timings():
  """efficiency.measure times each model's latency and throughput over MIN_REPEATS calls instead of ~0.2 s each (up
  to 0.8 s of busy CPU per run and model pair): no test asserts more of a timing than that it is positive."""
  from kd_jax.reporting import efficiency  # pylint: disable=import-outside-toplevel
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(efficiency, "TIMING_BUDGET_S", 0.0)
    yield
