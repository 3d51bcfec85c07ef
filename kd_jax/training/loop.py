"""The training loop: one for every mode (a single run, a vectorized sweep group, the teacher, every later mode).

`train(phase, program, runs, ...)` restores the newest checkpoint, then runs the program's compiled chunks (many
optimizer steps per call) up to `num_steps`, stopping at log, eval and checkpoint steps: it fetches the step metrics
and stops at the first NaN/Inf (before any checkpoint could hold it), writes the metric history (history.jsonl and
TensorBoard) of every run, evaluates each run, saves checkpoints, and on SIGTERM saves one at the step it stopped
and raises `preemption.Preempted`. What it trains is the caller's `Program`: the state (one run, or several runs
stacked on a leading axis), the compiled chunk and the data feed.
"""

import dataclasses
import logging
import os
import shutil
import time
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import files
from kd_jax.errors import NonFiniteError
from kd_jax.parallel import distributed, preemption, sharding
from kd_jax.training import checkpointing

logger = logging.getLogger(__name__)

# A chunk is cut short to take about this long (seconds, estimated from the steps measured so far), so that a
# SIGTERM, which is honored at the end of a chunk, is answered within about a second.
TARGET_CHUNK_SECONDS = 1.0


class Feed(Protocol):
  """The training data of consecutive steps, as the arguments a program's chunk takes after the step count."""

  def next(self, num_steps: int) -> tuple:
    ...


@dataclasses.dataclass(frozen=True)
class Program:
  """The compiled side of one training phase.

  Attributes:
    state: the initial training state, on the devices: one run's TrainState, or several runs' stacked [R, ...].
    chunk: chunk(state, num_steps, *feed data) -> (state, metrics): num_steps optimizer steps in one call; each
      metric is [max_steps] (one run) or [max_steps, R] (stacked runs), rows past num_steps unused.
    feed: feed(start_step) -> the Feed of the steps from start_step on.
    run_params: params of the state -> the params of each run (one run: [params]).
    stacked: whether the state and metrics hold several runs.
    examples_per_step: training examples of one step, over all runs (for throughput).
    stats: what the phase's stats in results.json add (data_feed, mesh, vectorized_runs).
    memory: memory(state, num_steps, *feed data) -> per-device bytes of the chunk's compiled program
      (sharding.memory_stats), measured after the first chunk; None: not measured.
  """
  state: Any
  chunk: Callable[..., tuple]
  feed: Callable[[int], Feed]
  run_params: Callable[[Any], list]
  stacked: bool
  examples_per_step: int
  stats: dict
  memory: Callable[..., dict] | None = None


@dataclasses.dataclass(frozen=True)
class RunLog:
  """Where one run of a program reports: its name in messages ('' for a lone run), its metric writer (or a writer
  fanning out to the points that share the run), and the learning rate of each step [num_steps] for the history,
  with any other scheduled value by name (`scheduled`: {name: [num_steps]}, e.g. the distillation temperature),
  each logged as its value at the logged step."""
  name: str
  writer: Any
  learning_rates: np.ndarray
  scheduled: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Selection:
  """Keep, per run, the parameters of the evaluated step with the best validation `metric` (train.select)."""
  metric: str
  higher_is_better: bool


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What a phase ends with: each run's final parameters (the selected step's) and that step, and the phase's
  stats: steps, trained_steps (in this call), wall_s, wall_s_after_compile (from the end of the first, compiling,
  chunk), examples_per_sec, resumed_from_step (None for a fresh start) and the program's stats."""
  params: list
  selected_steps: list
  stats: dict


def train(phase: str, program: Program, runs: Sequence[RunLog], *, num_steps: int, checkpoint_dir: str,
          train_config, evaluate: Callable[[Any], dict], selection: Selection | None = None) -> Outcome:
  """Trains (or resumes) `program` to step `num_steps`, checkpointing, logging and evaluating on the way.

  Args:
    phase: 'teacher', 'student' or 'student_hard' (history lines, messages).
    program: what is trained.
    runs: one RunLog per run of the program, in the order of its stacked axis.
    num_steps: the phase's total steps.
    checkpoint_dir: the phase's checkpoints; the newest readable one is restored first.
    train_config: config.train (log / eval / checkpoint cadence, steps_per_dispatch, checkpoints kept).
    evaluate: params of one run -> validation scalars (written as validation/<name> at eval steps and at the end).
    selection: None to end with the last step's parameters; else each run ends with those of its evaluated step
      with the best selection.metric, kept in `<checkpoint_dir>_best/` so that a resumed run keeps them.
  """
  store = checkpointing.CheckpointStore(checkpoint_dir, train_config.max_checkpoints_to_keep)
  best = None
  try:
    restored = store.restore_latest(program.state)
    state = program.state if restored is None else restored
    start_step = int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])
    resumed_from_step = None if restored is None else start_step
    if resumed_from_step is not None:
      logger.info("%s: resuming from step %d of %d (%s).", phase, start_step, num_steps, store.directory)
    for run in runs:
      run.writer.drop_after(start_step)
    if selection is not None:
      best = _Best(f"{store.directory}_best", selection, len(runs), program.stacked, state.params)
    feed = program.feed(start_step)
    clock = ChunkClock(start_step, num_steps, train_config)
    history = _History(phase, runs, program.stacked, store)
    memory = None
    while clock.running():
      first_step, length = clock.step, clock.next_length()
      data = feed.next(length)
      state, chunk_metrics = program.chunk(state, np.int32(length), *data)
      if memory is None and program.memory is not None:
        memory = program.memory(state, np.int32(length), *data)
        logger.info("%s: per device: parameters %s, optimizer state %s, temporaries %s, peak %s (compiled step).",
                    phase, *(sharding.format_bytes(memory.get(key, float("nan"))) for key in
                              ("params_bytes", "optimizer_bytes", "temp_bytes", "peak_bytes")))
      history.add_chunk(first_step, length, chunk_metrics)
      end = clock.chunk_done(length, state)
      if end.log or end.eval or end.checkpoint:
        history.check_finite()
      if end.log:
        history.log(end.step, num_steps, clock.interval_steps_per_sec(), program.examples_per_step // len(runs))
      if end.eval:
        evaluated = [evaluate(params) for params in program.run_params(state.params)]
        for run, scalars in zip(runs, evaluated):
          run.writer.write_scalars(end.step, {f"validation/{key}": value for key, value in scalars.items()})
        if best is not None:
          best.update(end.step, state.params, [scalars[selection.metric] for scalars in evaluated])
      if end.checkpoint:
        store.save(end.step, state)
      if end.preempted:
        raise preemption.Preempted(f"{phase}: stopped by SIGTERM at step {end.step} of {num_steps}; checkpoint saved "
                                   f"in {store.directory}; rerun the same command to resume")
    jax.block_until_ready(state)
  finally:
    store.close()
  end_time = time.time()
  stats = {"steps": num_steps, "trained_steps": num_steps - start_step, "wall_s": end_time - clock.start_time,
           "wall_s_after_compile": end_time - (clock.first_step_done_time or end_time),
           "examples_per_sec": clock.examples_per_sec(program.examples_per_step),
           "resumed_from_step": resumed_from_step, **program.stats}
  if memory is not None:
    stats["memory"] = memory
  if best is None:
    return Outcome(program.run_params(state.params), [num_steps] * len(runs), stats)
  return Outcome(program.run_params(best.params), best.steps, stats)


class _Best:
  """Each run's best validation value so far, its step, and the parameters of those steps (stacked like the
  state's). They live in `<directory>/best-<step>/` (the newest improvement's step) with `best.json` naming it,
  written after the parameters: a killed save leaves the previous best in force. Held as copies: the loop donates
  the state's buffers to the next chunk."""

  def __init__(self, directory: str, selection: Selection, num_runs: int, stacked: bool, params):
    self._directory, self._selection, self._stacked = directory, selection, stacked
    self.params, self.steps, self._values = jax.tree.map(jnp.copy, params), [None] * num_runs, [None] * num_runs
    record_path = os.path.join(directory, "best.json")
    if os.path.exists(record_path):
      record = files.read_json(record_path)
      self.params = checkpointing.restore_params(os.path.join(directory, record["directory"]), params)
      self.steps, self._values = record["steps"], record["values"]

  def _better(self, value: float, best: float | None) -> bool:
    if best is None:
      return bool(np.isfinite(value))
    return value > best if self._selection.higher_is_better else value < best

  def update(self, step: int, params, values: list[float]) -> None:
    """Takes each run's parameters at `step` where its validation value beats its best so far."""
    improved = np.array([self._better(value, best) for value, best in zip(values, self._values)])
    if not improved.any():
      return
    if self._stacked:
      self.params = jax.tree.map(
          lambda kept, new: jnp.where(improved.reshape((-1,) + (1,) * (new.ndim - 1)), new, kept), self.params,
          params)
    else:
      self.params = jax.tree.map(jnp.copy, params)
    self.steps = [step if better else kept for better, kept in zip(improved, self.steps)]
    self._values = [float(value) if better else kept for better, value, kept in zip(improved, values, self._values)]
    name = f"best-{step}"
    os.makedirs(self._directory, exist_ok=True)
    checkpointing.save_params(os.path.join(self._directory, f".{name}.tmp"), self.params, force=True)
    if distributed.is_main_process():
      os.replace(os.path.join(self._directory, f".{name}.tmp"), os.path.join(self._directory, name))
      files.write_json(os.path.join(self._directory, "best.json"),
                       {"directory": name, "steps": self.steps, "values": self._values,
                        "metric": self._selection.metric})
      for stale in os.listdir(self._directory):
        if stale.startswith("best-") and stale != name:
          shutil.rmtree(os.path.join(self._directory, stale))
    distributed.barrier(f"best parameters {self._directory}/{name}")


class _History:
  """The step metrics of a phase: kept on the devices chunk by chunk, fetched and checked at log / eval /
  checkpoint steps (one host sync there, not per step or chunk), averaged per run into history lines at log steps."""

  def __init__(self, phase: str, runs: Sequence[RunLog], stacked: bool, store: checkpointing.CheckpointStore):
    self._phase, self._runs, self._stacked, self._store = phase, runs, stacked, store
    self._unchecked = []  # (first step, steps, on-device stacked metrics) of the chunks not yet fetched
    self._interval = []  # fetched metrics of the steps since the last log line

  def add_chunk(self, first_step: int, num_steps: int, stacked_metrics: dict) -> None:
    self._unchecked.append((first_step, num_steps, stacked_metrics))

  def check_finite(self) -> None:
    run_names = [run.name for run in self._runs] if self._stacked else None
    self._interval += fetch_finite_metrics(self._phase, self._unchecked, self._store, run_names=run_names)
    self._unchecked = []

  def log(self, step: int, num_steps: int, steps_per_sec: float, batch_size: int) -> None:
    """Writes each run's training scalars averaged since the last log line, and one log line."""
    all_scalars = []
    for i, run in enumerate(self._runs):
      scalars = {f"train/{name}": float(np.mean([_of_run(step_metrics[name], i, self._stacked)
                                                  for step_metrics in self._interval]))
                 for name in self._interval[0]}
      scalars["train/learning_rate"] = float(run.learning_rates[step - 1])
      scalars |= {f"train/{name}": float(values[step - 1]) for name, values in run.scheduled.items()}
      if steps_per_sec > 0:
        scalars["train/examples_per_sec"] = steps_per_sec * batch_size
      run.writer.write_scalars(step, scalars)
      all_scalars.append(scalars)
    self._interval = []
    eta = _format_duration((num_steps - step) / steps_per_sec if steps_per_sec > 0 else float("nan"))
    speed = f"{steps_per_sec * batch_size * len(self._runs):.0f}" if steps_per_sec > 0 else "-"
    if len(all_scalars) == 1:
      (scalars,) = all_scalars
      extra = "".join(f", {name} {scalars[f'train/{name}_loss']:.4f}" for name in ("feature", "attention")
                      if f"train/{name}_loss" in scalars)
      logger.info("%s step %d/%d | loss %.4f (hard %.4f, soft %.4f%s) | lr %.2e | %s ex/s | ETA %s", self._phase,
                  step, num_steps, scalars["train/loss"], scalars["train/hard_loss"], scalars["train/soft_loss"],
                  extra, scalars["train/learning_rate"], speed, eta)
    else:
      logger.info("%s (%d runs vectorized) step %d/%d | loss %s | %s ex/s | ETA %s", self._phase, len(all_scalars),
                  step, num_steps, " ".join(f"{scalars['train/loss']:.4f}" for scalars in all_scalars), speed, eta)


def _of_run(value, run: int, stacked: bool):
  return value[run] if stacked else value


def fetch_finite_metrics(phase: str, unchecked: list, store: checkpointing.CheckpointStore,
                         run_names: list[str] | None = None) -> list[dict]:
  """Fetches the per-step metrics of the chunks in `unchecked`, (first step, steps, stacked metrics) each, and
  raises NonFiniteError at the first NaN or Inf.

  With `run_names` (stacked runs), every metric holds one value per run [R] and the error names the run. Checked
  before every checkpoint is saved, so the last checkpoint always precedes the first bad step.
  """
  fetched = jax.device_get([stacked for _, _, stacked in unchecked])
  per_step = []
  for (first_step, num_steps, _), stacked in zip(unchecked, fetched):
    per_step += [(first_step + 1 + i, {name: values[i] for name, values in stacked.items()}) for i in range(num_steps)]
  runs = [(None, "")] if run_names is None else [(run, f" of {name}") for run, name in enumerate(run_names)]
  for step, metrics_of_step in per_step:
    for run, of_run in runs:
      values = {name: value if run is None else value[run] for name, value in metrics_of_step.items()}
      bad = {name: float(value) for name, value in values.items() if not np.isfinite(value)}
      if bad:
        last_good = store.latest_step()
        raise NonFiniteError(
            f"{phase}{of_run}: non-finite {', '.join(f'{name}={value}' for name, value in bad.items())} at step "
            f"{step}; training stopped, last good checkpoint: "
            f"{'none' if last_good is None else f'step {last_good} in {store.directory}'}; results.json not written. "
            "Lower the learning rate or set grad_clip_norm")
  return [metrics_of_step for _, metrics_of_step in per_step]


def _format_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "-"
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}"


def chunk_length(step: int, num_steps: int, boundary_every: tuple[int, ...], max_steps: int,
                 seconds_per_step: float | None) -> int:
  """Steps in the chunk starting at `step`: up to the next multiple of any of `boundary_every` (log, eval and
  checkpoint steps) or the end, at most `max_steps`, and about TARGET_CHUNK_SECONDS long when the step time is known.
  """
  next_boundary = min([num_steps] + [(step // every + 1) * every for every in boundary_every])
  length = min(next_boundary - step, max_steps)
  if seconds_per_step:
    length = min(length, max(1, int(TARGET_CHUNK_SECONDS / seconds_per_step)))
  return length


@dataclasses.dataclass(frozen=True)
class ChunkEnd:
  """What the loop does after the chunk that ended at `step`."""
  step: int
  last: bool
  log: bool
  eval: bool
  checkpoint: bool
  preempted: bool


class ChunkClock:
  """The chunk lengths and the log / eval / checkpoint / stop decisions of the loop from `start_step` to `num_steps`.

  The first two chunks are single steps: the first compiles, the second times a step. Later chunks run up to the
  next log / eval / checkpoint step and for about TARGET_CHUNK_SECONDS, from the step time measured again at every
  log step. In a multi-process job the step time and the SIGTERM flag are agreed by all processes, so that every
  process runs the same chunks (the same collectives) and stops at the same step.
  """

  def __init__(self, start_step: int, num_steps: int, train_config):
    self.start_step, self.step, self.num_steps = start_step, start_step, num_steps
    self.start_time = time.time()
    self.first_step_done_time = None  # when the first (compiling) chunk ended
    self._log_every, self._eval_every = train_config.log_every_steps, train_config.eval_every_steps
    self._checkpoint_every, self._max_steps = train_config.checkpoint_every_steps, train_config.steps_per_dispatch
    self._seconds_per_step = None
    self._chunk_start_time = None
    self._interval_start_time, self._interval_start_step = self.start_time, start_step

  def running(self) -> bool:
    return self.step < self.num_steps

  def next_length(self) -> int:
    """Steps in the chunk about to run (starts its timer)."""
    self._chunk_start_time = time.time()
    if self._seconds_per_step is None:
      return 1
    return chunk_length(self.step, self.num_steps, (self._log_every, self._eval_every, self._checkpoint_every),
                        self._max_steps, self._seconds_per_step)

  def chunk_done(self, length: int, state) -> ChunkEnd:
    """Records a dispatched chunk of `length` steps (waiting for `state` while the step time is being measured)."""
    self.step += length
    done = self.step
    if self.first_step_done_time is None:
      jax.block_until_ready(state)
      self.first_step_done_time = self._interval_start_time = time.time()
      self._interval_start_step = done
    elif self._seconds_per_step is None:
      jax.block_until_ready(state)
      self._seconds_per_step = distributed.max_over_processes(time.time() - self._chunk_start_time)
    preempted = distributed.any_process(preemption.requested())
    last = done == self.num_steps
    return ChunkEnd(step=done, last=last, log=done % self._log_every == 0 or last,
                    eval=done % self._eval_every == 0 or last,
                    checkpoint=done % self._checkpoint_every == 0 or last or preempted, preempted=preempted)

  def interval_steps_per_sec(self) -> float:
    """Steps per second since the previous call (at log steps; 0 when unknown); re-times the chunks by it."""
    now = time.time()
    elapsed_steps = self.step - self._interval_start_step
    steps_per_sec = elapsed_steps / (now - self._interval_start_time) if elapsed_steps > 0 else 0
    if steps_per_sec > 0:  # on every process alike: the steps since the previous call are the same everywhere
      self._seconds_per_step = distributed.max_over_processes(1 / steps_per_sec)
    self._interval_start_time, self._interval_start_step = now, self.step
    return steps_per_sec

  def examples_per_sec(self, examples_per_step: int) -> float | None:
    """Training throughput after the first (compiling) chunk, at the end of the loop."""
    timed_steps = self.num_steps - self.start_step - 1
    end_time = time.time()
    if self.first_step_done_time is None or timed_steps <= 0 or end_time <= self.first_step_done_time:
      return None
    return timed_steps * examples_per_step / (end_time - self.first_step_done_time)
