"""Vectorized sweeps (`config.sweep.mode = "vectorized"`): points that differ only in the fields below train together.

The points of a sweep whose configs are equal but for VECTORIZED_FIELDS (loss hyperparameters, the learning rate, the
seed) have the same array shapes: one compiled program trains them all, `jax.vmap` of `train.train_step` over stacked
student states [P, ...], per-point loss hyperparameters [P], PRNG keys [P] and, when the seeds differ, per-point
batches [P, B, ...] (with one seed, one batch and its cached teacher logits serve every point). Steps run in fused
chunks (kd_jax/fused.py) over training examples held on every device (gathered there by row numbers). With several
devices the points spread over a ('sweep', 'data') mesh (`sharding.make_sweep_mesh`). Points that differ in anything
else (the student's width, the data, the divergence...) form separate groups, each trained this way in turn.

Per point, the outputs are those of a sequential run (results.json, config.json, history.jsonl, with the same
metrics up to float rounding), so the report reads both alike; the group's checkpoints of the stacked states live in
`<sweep workdir>/vectorized/<group>/<phase>/` (a rerun resumes them), not in the point directories. The hard-label
baseline depends on the seed, label smoothing and learning rate only: each distinct combination is trained once and
shared by the points that have it. Per-point learning rates: the optimizer runs at peak learning rate 1 and a
per-point `optax.scale` (its step size held in the optimizer state) multiplies its updates, so that
lr(t) = peak * shape(t) exactly as in a sequential run, up to rounding.

Restrictions (checked before anything runs): one process, classification tasks (not seq2seq).
"""

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from kd_jax import (checkpointing, data, files, fingerprints, fused, inference, metric_writer, metrics, models,
                    preemption, sharding, teacher_cache, train)
from kd_jax.data import pipeline
from kd_jax.errors import ConfigError

# The fields points of one group may differ in.
VECTORIZED_FIELDS = ("seed", "distill.temperature", "distill.alpha", "distill.ce_weight", "distill.kd_weight",
                     "distill.label_smoothing", "optim.learning_rate")
# Those the hard-label baseline depends on.
BASELINE_FIELDS = ("seed", "distill.label_smoothing", "optim.learning_rate")
VECTORIZED_DIR = "vectorized"


def _value(config: ml_collections.ConfigDict, path: str):
  for part in path.split("."):
    config = config[part]
  return config


def _key(config: ml_collections.ConfigDict, without: tuple[str, ...]) -> str:
  """Fingerprint of the config but the fields `without`."""
  config_dict = files.as_json_value(config.to_dict())
  for path in without:
    *sections, name = path.split(".")
    section = config_dict
    for part in sections:
      section = section[part]
    del section[name]
  return fingerprints.fingerprint_json(config_dict)


def groups(points: list) -> list[list]:
  """The points (sweep.Point) in groups of configs equal but for VECTORIZED_FIELDS, in order of first appearance."""
  by_key = {}
  for point in points:
    by_key.setdefault(_key(point.config, VECTORIZED_FIELDS), []).append(point)
  return list(by_key.values())


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError where vectorized mode cannot run this sweep."""
  if jax.process_count() > 1:
    raise ConfigError("sweep.mode", config.sweep.mode,
                      f"needs a single process (this job has {jax.process_count()}); use mode 'sequential', or "
                      "--sweep_index to run points as separate jobs")
  if config.data.name in data.SEQ2SEQ_TASKS:
    raise ConfigError("sweep.mode", config.sweep.mode,
                      f"supports classification tasks; data.name={config.data.name!r} is seq2seq: use 'sequential'")


@dataclasses.dataclass(frozen=True)
class PointRun:
  """One of the runs a group trains together: its loss hyperparameters, learning rate and seed."""
  hyperparams: train.LossHyperparams
  learning_rate: float
  seed: int


class FanOutWriter:
  """A MetricWriter interface over the writers of every point that shares a run (the hard-label baselines)."""

  def __init__(self, writers: list[metric_writer.MetricWriter]):
    self._writers = writers

  def drop_after(self, step: int) -> None:
    for writer in self._writers:
      writer.drop_after(step)

  def write_scalars(self, step: int, scalars: dict) -> None:
    for writer in self._writers:
      writer.write_scalars(step, scalars)


@functools.lru_cache(maxsize=8)
def points_optimizer(optim_config: ml_collections.FrozenConfigDict, num_steps: int) -> optax.GradientTransformation:
  """AdamW at peak learning rate 1 (train.make_optimizer), then a per-point scale (the peak) held in the state."""
  unit = ml_collections.ConfigDict(optim_config.as_configdict())
  unit.learning_rate = 1.0
  return optax.chain(train.make_optimizer(unit, num_steps), optax.inject_hyperparams(optax.scale)(step_size=1.0))


def point_state(model, params, tx: optax.GradientTransformation, learning_rate: float) -> train.TrainState:
  """A point's fresh state under `points_optimizer`'s `tx`, its update scale set to the point's peak learning rate."""
  state = train.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  *inner, scale = state.opt_state
  return state.replace(opt_state=(*inner, scale._replace(hyperparams={"step_size": jnp.float32(learning_rate)})))


@functools.lru_cache(maxsize=8)
def compile_points_chunk(mesh, model, teacher_model, teacher_mode: str, divergence_kind: str, t2_scaling: bool,
                         shared_batches: bool):
  """chunk(states, teacher_params, hyperparams, rngs, num_steps, examples, rows) -> (states, metrics [max_steps, P]).

  states, hyperparams, rngs: stacked over points [P, ...], split over the mesh's sweep axis. examples: the training
  examples, on every device. rows: the example rows of each step's batch, [max_steps, B] when every point sees the
  same batches (`shared_batches`), else [max_steps, P, B]; split over the data axis. The states are donated.
  """
  step_fn = functools.partial(train.train_step, model=model, teacher_model=teacher_model, teacher_mode=teacher_mode,
                              divergence_kind=divergence_kind, t2_scaling=t2_scaling, input_noise_std=0.0)
  points_step = jax.vmap(step_fn, in_axes=(0, None, 0, 0, None if shared_batches else 0))
  rows_spec = P(None, sharding.DATA_AXIS) if shared_batches else P(None, sharding.SWEEP_AXIS, sharding.DATA_AXIS)
  points = P(sharding.SWEEP_AXIS)
  return sharding.sweep_parallel(functools.partial(fused.run_steps, points_step), mesh,
                                 in_specs=(points, P(), points, points, P(), P(), rows_spec),
                                 out_specs=(points, P(None, sharding.SWEEP_AXIS)))


def train_points(phase: str, runs: list[PointRun], *, model, init_params: dict, examples: dict,
                 config: ml_collections.ConfigDict, num_steps: int, mesh, teacher_model, teacher_params,
                 teacher_mode: str, checkpoint_dir: str, writers: list, evaluate_fn, names: list[str]):
  """Trains (or resumes) `runs` together for `num_steps` steps: train.train_model's loop over stacked states.

  Args:
    init_params: initial parameters by seed.
    writers: per run, where its training and test scalars go; evaluate_fn(params) -> test scalars of one run.
    names: per run, how errors name it.

  Returns:
    (final params per run, as NumPy trees; stats shared by the runs).
  """
  num_runs = len(runs)
  points_sharding = NamedSharding(mesh, P(sharding.SWEEP_AXIS))
  tx = points_optimizer(ml_collections.FrozenConfigDict(config.optim), num_steps)
  states = [point_state(model, jax.device_get(init_params[run.seed]), tx, run.learning_rate) for run in runs]
  state = jax.device_put(jax.tree.map(lambda *values: np.stack(values), *states), points_sharding)
  store = checkpointing.CheckpointStore(checkpoint_dir, config.train.max_checkpoints_to_keep)
  restored = store.restore_latest(state)
  if restored is not None:
    state = restored
  start_step = int(state.step[0])
  resumed_from_step = start_step if restored is not None else None
  for writer in writers:
    writer.drop_after(start_step)
  stack = lambda trees: jax.device_put(jax.tree.map(lambda *values: np.stack(values), *trees), points_sharding)
  hyperparams = stack([jax.device_get(run.hyperparams) for run in runs])
  rngs = stack([jax.device_get(jax.random.PRNGKey(run.seed)) for run in runs])
  seeds = sorted({run.seed for run in runs})
  shared_batches = len(seeds) == 1
  max_steps = config.train.steps_per_dispatch
  device_examples = jax.device_put(examples, NamedSharding(mesh, P()))
  row_iterators = {seed: pipeline.train_rows(len(examples["index"]), batch_size=config.data.batch_size, seed=seed,
                                             start_step=start_step) for seed in seeds}
  rows_sharding = NamedSharding(mesh, P(None, sharding.DATA_AXIS) if shared_batches else
                                P(None, sharding.SWEEP_AXIS, sharding.DATA_AXIS))
  chunk_fn = compile_points_chunk(mesh, model, teacher_model, teacher_mode, config.distill.divergence,
                                  config.distill.t2_scaling, shared_batches)
  rates = [train.learning_rates(ml_collections.ConfigDict(
      config.optim.to_dict() | {"learning_rate": run.learning_rate}), num_steps) for run in runs]
  clock = fused.ChunkClock(start_step, num_steps, config.train)
  unchecked, interval_metrics = [], []
  try:
    while clock.running():
      first_step, length = clock.step, clock.next_length()
      rows = {seed: fused.next_rows(iterator, length, max_steps) for seed, iterator in row_iterators.items()}
      rows = rows[seeds[0]] if shared_batches else np.stack([rows[run.seed] for run in runs], axis=1)
      state, chunk_metrics = chunk_fn(state, teacher_params, hyperparams, rngs, np.int32(length), device_examples,
                                      jax.device_put(rows.astype(np.int32), rows_sharding))
      unchecked.append((first_step, length, chunk_metrics))
      end = clock.chunk_done(length, state)
      done = end.step
      if end.log or end.eval or end.checkpoint:
        interval_metrics += train.fetch_finite_metrics(phase, unchecked, store, run_names=names)
        unchecked = []
      if end.log:
        steps_per_sec = clock.interval_steps_per_sec()
        for i, writer in enumerate(writers):
          scalars = {f"train/{name}": float(np.mean([step_metrics[name][i] for step_metrics in interval_metrics]))
                     for name in interval_metrics[0]}
          scalars["train/learning_rate"] = float(rates[i][done - 1])
          if steps_per_sec > 0:
            scalars["train/examples_per_sec"] = steps_per_sec * config.data.batch_size
          writer.write_scalars(done, scalars)
        logging.info("%s (%d runs vectorized) step %d/%d | loss %s | %s steps/s", phase, num_runs, done, num_steps,
                     " ".join(f"{np.mean([m['loss'][i] for m in interval_metrics]):.4f}" for i in range(num_runs)),
                     f"{steps_per_sec:.0f}" if steps_per_sec > 0 else "-")
        interval_metrics = []
      if end.eval:
        host_params = jax.device_get(state.params)
        for i, writer in enumerate(writers):
          scalars = evaluate_fn(jax.tree.map(lambda values, i=i: values[i], host_params))
          writer.write_scalars(done, {f"test/{key}": value for key, value in scalars.items()})
      if end.checkpoint:
        store.save(done, state)
      if end.preempted:
        raise preemption.Preempted(f"{phase}: stopped by SIGTERM at step {done} of {num_steps}; checkpoint saved in "
                                   f"{checkpoint_dir}; rerun the same command to resume")
    jax.block_until_ready(state)
  finally:
    store.close()
  trained_steps = num_steps - start_step
  examples_per_sec = clock.examples_per_sec(config.data.batch_size * num_runs)
  stats = {"steps": num_steps, "trained_steps": trained_steps, "wall_s": time.time() - clock.start_time,
           "examples_per_sec": examples_per_sec, "resumed_from_step": resumed_from_step, "vectorized_runs": num_runs,
           "mesh": dict(mesh.shape)}
  host_params = jax.device_get(state.params)
  return [jax.tree.map(lambda values, i=i: values[i], host_params) for i in range(num_runs)], stats


def run_group(points: list, workdir: str) -> None:
  """Trains the points of one group together and writes each point's config.json, history.jsonl, results.json."""
  start_time = time.time()
  config = points[0].config
  task = data.load_task(config)
  train.check_data_sizes(config, task)
  data_mesh = sharding.make_mesh(config.train.num_devices)
  num_devices = data_mesh.size
  point_dirs = [os.path.join(workdir, point.name) for point in points]
  for point, directory in zip(points, point_dirs):
    os.makedirs(directory, exist_ok=True)
    files.write_json(os.path.join(directory, "config.json"), point.config.to_dict())
  writers = [{phase: metric_writer.MetricWriter(directory, phase) for phase in train.PHASES}
             for directory in point_dirs]
  test_labels = task.test["label"]

  def evaluator(model, eval_teacher_logits):
    predict = inference.make_predict_fn(model, data_mesh)

    def evaluate(params):
      logits = inference.predict_logits(predict, sharding.replicate(params, data_mesh), task.test["inputs"],
                                        batch_size=config.data.eval_batch_size, num_devices=num_devices)
      test_metrics = metrics.classification_metrics(logits, test_labels, eval_teacher_logits)
      return {key: test_metrics[key] for key in ("accuracy", "nll", "ece") + (
          ("agreement",) if eval_teacher_logits is not None else ())}

    return evaluate

  def train_teacher(run, *, model, init_params):
    compile_chunk = functools.partial(train.compile_train_chunk, data_mesh, model=model, teacher_model=None,
                                      teacher_mode="none", distill_config=config.distill)
    return train.train_model(run, model=model, init_params=init_params, compile_chunk=compile_chunk, mesh=data_mesh,
                             train_config=config.train, writer=writers[0]["teacher"],
                             evaluate_fn=evaluator(model, None))

  teacher_model, teacher_params, teacher_stats = train.obtain_teacher(config, task, data_mesh, point_dirs[0],
                                                                      train_teacher)
  teacher_params = sharding.replicate(teacher_params, data_mesh)
  teacher_predict = inference.make_predict_fn(teacher_model, data_mesh)
  teacher_test_logits = inference.predict_logits(teacher_predict, teacher_params,
                                                 data.teacher_view(task.test)["inputs"],
                                                 batch_size=config.data.eval_batch_size, num_devices=num_devices)
  teacher_metrics = metrics.classification_metrics(teacher_test_logits, test_labels, teacher_test_logits)
  student_examples, cache_stats = task.train, None
  if config.distill.teacher_mode == "cached":
    cache, cache_stats = train.build_teacher_cache(config, task, teacher_predict, teacher_params, point_dirs[0],
                                                   num_devices)
    student_examples = teacher_cache.join(task.train, cache)

  example_inputs = jax.tree.map(lambda value: value[:1], task.train["inputs"])
  student_model, init_params = None, {}
  for seed in sorted({point.seed for point in points}):
    student_model, init_params[seed] = models.create(config.student, num_classes=task.num_classes,
                                                     example_inputs=example_inputs, rng=jax.random.PRNGKey(seed),
                                                     field="student")
  num_steps = train.num_train_steps(len(task.train["index"]), config.data.batch_size, config.train.num_epochs,
                                    config.train.num_steps)
  group_dir = os.path.join(workdir, VECTORIZED_DIR, fingerprints.fingerprint_json([p.name for p in points]))
  evaluate_student = evaluator(student_model, teacher_test_logits)
  point_mesh = sharding.make_sweep_mesh(len(points), config.train.num_devices)
  common = dict(model=student_model, init_params=init_params, config=config, num_steps=num_steps,
                evaluate_fn=evaluate_student)
  runs = [PointRun(train.loss_hyperparams(point.config.distill), point.config.optim.learning_rate, point.seed)
          for point in points]
  online = config.distill.teacher_mode == "online"
  student_params, student_stats = train_points(
      "student", runs, examples=student_examples, mesh=point_mesh, teacher_model=teacher_model,
      teacher_params=jax.device_put(jax.device_get(teacher_params), NamedSharding(point_mesh, P())) if online else None,
      teacher_mode=config.distill.teacher_mode, checkpoint_dir=os.path.join(group_dir, "student"),
      writers=[point_writers["student"] for point_writers in writers], names=[p.name for p in points], **common)
  trained = {"student": (student_params, [student_stats] * len(points))}
  if config.baseline:
    sharing = {}  # baseline fields' values -> the indices of the points that share that baseline
    for i, point in enumerate(points):
      sharing.setdefault(tuple(_value(point.config, path) for path in BASELINE_FIELDS), []).append(i)
    sharing = list(sharing.values())
    hard_runs = [PointRun(train.loss_hyperparams(points[indices[0]].config.distill, hard_labels_only=True),
                          points[indices[0]].config.optim.learning_rate, points[indices[0]].seed)
                 for indices in sharing]
    hard_params, hard_stats = train_points(
        "student_hard", hard_runs, examples=task.train,
        mesh=sharding.make_sweep_mesh(len(hard_runs), config.train.num_devices), teacher_model=None,
        teacher_params=None, teacher_mode="none", checkpoint_dir=os.path.join(group_dir, "student_hard"),
        writers=[FanOutWriter([writers[i]["student_hard"] for i in indices]) for indices in sharing],
        names=[", ".join(points[i].name for i in indices) for indices in sharing], **common)
    run_of_point = {i: run for run, indices in enumerate(sharing) for i in indices}
    trained["student_hard"] = (
        [hard_params[run_of_point[i]] for i in range(len(points))],
        [hard_stats | {"shared_by_points": len(sharing[run_of_point[i]])} for i in range(len(points))])

  student_predict = inference.make_predict_fn(student_model, data_mesh)
  for i, (point, directory) in enumerate(zip(points, point_dirs)):
    results = {"data": {"name": task.name, "num_classes": task.num_classes, "num_train": len(task.train["index"]),
                        "num_labeled": len(task.labeled_train["index"]),
                        "num_unlabeled": len(task.train["index"]) - len(task.labeled_train["index"]),
                        "num_test": len(task.test["index"])},
               "metrics": {"teacher": teacher_metrics},
               "train": {"num_devices": num_devices, "num_processes": 1, "phases": {}}}
    if teacher_stats is not None and i == 0:
      results["train"]["phases"]["teacher"] = teacher_stats
    for phase, (params, stats) in trained.items():
      logits = inference.predict_logits(student_predict, sharding.replicate(params[i], data_mesh), task.test["inputs"],
                                        batch_size=config.data.eval_batch_size, num_devices=num_devices)
      results["metrics"][phase] = metrics.classification_metrics(logits, test_labels, teacher_test_logits)
      results["train"]["phases"][phase] = stats[i]
    results["train"].update({"steps": student_stats["steps"], "examples_per_sec": student_stats["examples_per_sec"],
                             "resumed_from_step": student_stats["resumed_from_step"],
                             "wall_s": time.time() - start_time})
    if cache_stats is not None:
      results["teacher_cache"] = cache_stats
    for writer in writers[i].values():
      writer.close()
    files.write_json(os.path.join(directory, "results.json"), results)
  logging.info("Vectorized group of %d points trained in %.1fs: %s.", len(points), time.time() - start_time,
               ", ".join(point.name for point in points))
