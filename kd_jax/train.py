"""Training and evaluation: `train_and_evaluate(config, workdir)`.

Fixed order: validate config -> data -> teacher (trained here, or restored) -> teacher-logit cache -> distilled
student -> hard-label student (baseline) -> evaluation -> results.json. Every training phase restores its latest
checkpoint first, so rerunning the same command resumes where a previous run stopped.
"""

import dataclasses
import functools
import os
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax.training import train_state

from kd_jax import (checkpointing, config_validation, data, distributed, files, fingerprints, fused, inference,
                    losses, metric_writer, metrics, models, preemption, seq2seq, seq2seq_cache, sharding,
                    teacher_cache)
from kd_jax.data import pipeline
from kd_jax.errors import NonFiniteError, UserError

TrainState = train_state.TrainState
PHASES = ("teacher", "student", "student_hard")


@flax.struct.dataclass
class LossHyperparams:
  """The numeric loss settings, passed to the train step as arguments rather than compiled in.

  One compiled step thus serves every temperature / weight (and can be vmapped over them for sweeps).
  loss = hard_weight * CE_eps + soft_weight * s * D(z_s / T, z_t / T); see `losses.distillation_loss`.
  """
  hard_weight: jax.Array
  soft_weight: jax.Array
  temperature: jax.Array
  label_smoothing: jax.Array


def loss_hyperparams(distill_config: ml_collections.ConfigDict, *, hard_labels_only: bool = False) -> LossHyperparams:
  """The distillation loss of `config.distill`, or plain (label-smoothed) CE for the hard-label baseline."""
  if hard_labels_only:
    weights = losses.LossWeights(hard=1.0, soft=0.0)
  else:
    weights = losses.loss_weights(distill_config.alpha, distill_config.ce_weight, distill_config.kd_weight)
  return LossHyperparams(hard_weight=jnp.float32(weights.hard), soft_weight=jnp.float32(weights.soft),
                         temperature=jnp.float32(distill_config.temperature),
                         label_smoothing=jnp.float32(distill_config.label_smoothing))


def teacher_hyperparams() -> LossHyperparams:
  """The teacher learns from hard labels alone (no smoothing)."""
  return LossHyperparams(hard_weight=jnp.float32(1.0), soft_weight=jnp.float32(0.0), temperature=jnp.float32(1.0),
                         label_smoothing=jnp.float32(0.0))


def learning_rate_schedule(optim_config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to the peak over warmup_ratio * num_steps steps, then linear decay to 0 at num_steps."""
  peak = optim_config.learning_rate
  warmup_steps = int(optim_config.warmup_ratio * num_steps)
  decay = optax.linear_schedule(peak, 0.0, max(num_steps - warmup_steps, 1))
  if warmup_steps == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), decay], [warmup_steps])


def learning_rates(optim_config: ml_collections.ConfigDict, num_steps: int) -> np.ndarray:
  """The learning rate of every step [num_steps] (host copy, for logging): the schedule evaluated once, not per log
  line (each evaluation runs several small JAX ops)."""
  return np.asarray(learning_rate_schedule(optim_config, num_steps)(np.arange(num_steps)))


def make_optimizer(optim_config: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """AdamW on the schedule above; weight decay on matrices only (not biases or norm scales), optional clipping.

  Equal settings give the same object: the optimizer is part of the train state's tree structure, so runs with
  equal settings (the points of a sweep) reuse compiled steps instead of tracing and compiling their own.
  """
  return _make_optimizer(ml_collections.FrozenConfigDict(optim_config), num_steps)


@functools.lru_cache(maxsize=64)
def _make_optimizer(optim_config: ml_collections.FrozenConfigDict, num_steps: int) -> optax.GradientTransformation:
  adamw = optax.adamw(learning_rate_schedule(optim_config, num_steps), weight_decay=optim_config.weight_decay,
                      mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params))
  if optim_config.grad_clip_norm is None:
    return adamw
  return optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), adamw)


def create_train_state(model, params, optim_config: ml_collections.ConfigDict, num_steps: int) -> TrainState:
  """A fresh training state (step 0) for `params`."""
  return TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(optim_config, num_steps))


def _add_batch_axis(tree):
  return jax.tree.map(lambda value: value[None], tree)


def train_step(state: TrainState, teacher_params, hyperparams: LossHyperparams, rng: jax.Array, batch: dict, *,
               model, teacher_model, teacher_mode: str, divergence_kind: str, t2_scaling: bool,
               input_noise_std: float) -> tuple[TrainState, dict]:
  """One data-parallel optimizer step on this device's shard of the global batch.

  Randomness (dropout, input noise) is drawn per example from fold_in(fold_in(rng, step), example index), so it
  depends neither on the device count nor on where a batch lands, and a resumed run redraws the same masks.
  The loss is normalized over the global batch (`losses.global_mean`) and gradients are averaged with pmean.

  Args:
    state: replicated training state of the model being trained.
    teacher_params: replicated teacher parameters (teacher_mode 'online'), else None.
    hyperparams: replicated loss hyperparameters.
    rng: replicated base PRNG key of this training run.
    batch: this device's rows: inputs, label (-1: unlabeled), index; in 'cached' mode teacher_logits, or the
      top-k arrays of seq2seq tasks (seq2seq_cache.join_topk); teacher_inputs when the teacher has its own
      tokenizer; token_weights [rows, T] for seq2seq targets (0 on padding).
    model, teacher_model: flax modules (static).
    teacher_mode: 'cached' (logits in the batch), 'online' (teacher forward here, no gradient) or 'none'.
    divergence_kind, t2_scaling: see `losses.divergence`.
    input_noise_std: Gaussian noise on the inputs, seen by teacher and student alike.

  Returns:
    (new state, metrics averaged over devices).
  """
  step_rng = jax.random.fold_in(rng, state.step)
  example_rngs = jax.vmap(functools.partial(jax.random.fold_in, step_rng))(batch["index"])
  dropout_rngs, noise_rngs = jnp.moveaxis(jax.vmap(lambda key: jax.random.split(key, 2))(example_rngs), 1, 0)
  inputs = batch["inputs"]
  if input_noise_std > 0:
    noise = jax.vmap(lambda key, x: jax.random.normal(key, x.shape, x.dtype))(noise_rngs, inputs)
    inputs = inputs + input_noise_std * noise
  if teacher_mode == "online":
    teacher_inputs = batch.get("teacher_inputs", inputs)
    teacher_logits = jax.lax.stop_gradient(teacher_model.apply({"params": teacher_params}, teacher_inputs,
                                                               train=False))
  elif teacher_mode == "cached":
    teacher_logits = seq2seq_cache.topk_logits(batch) if seq2seq_cache.has_topk(batch) else batch["teacher_logits"]
  else:
    teacher_logits = None
  labels = batch["label"]
  example_weights = batch.get("token_weights", jnp.ones(labels.shape, jnp.float32))

  def loss_fn(params):
    def example_logits(example_inputs, dropout_rng):
      return model.apply({"params": params}, _add_batch_axis(example_inputs), train=True,
                         rngs={"dropout": dropout_rng})[0]

    logits = jax.vmap(example_logits)(inputs, dropout_rngs)
    terms = losses.distillation_loss(
        logits, teacher_logits, labels, example_weights,
        weights=losses.LossWeights(hyperparams.hard_weight, hyperparams.soft_weight),
        temperature=hyperparams.temperature, label_smoothing=hyperparams.label_smoothing,
        divergence_kind=divergence_kind, t2_scaling=t2_scaling, axis_name=sharding.DATA_AXIS)
    return terms.loss, terms

  grads, terms = jax.grad(loss_fn, has_aux=True)(state.params)
  grads = sharding.mean_over_devices(grads)
  new_state = state.apply_gradients(grads=grads)
  step_metrics = {"loss": terms.loss, "hard_loss": terms.hard, "soft_loss": terms.soft}
  step_metrics = sharding.mean_over_devices(step_metrics)
  step_metrics["grad_norm"] = optax.tree.norm(grads)
  step_metrics["param_norm"] = optax.tree.norm(new_state.params)
  return new_state, step_metrics


def compile_train_step(mesh, *, model, teacher_model, teacher_mode: str, distill_config: ml_collections.ConfigDict):
  """train_step with its static settings bound, compiled data-parallel over `mesh`; the state is donated."""
  step = functools.partial(train_step, model=model, teacher_model=teacher_model, teacher_mode=teacher_mode,
                           divergence_kind=distill_config.divergence, t2_scaling=distill_config.t2_scaling,
                           input_noise_std=distill_config.input_noise_std)
  return sharding.data_parallel(step, mesh, num_replicated_args=4)


def compile_train_chunk(mesh, *, model, teacher_model, teacher_mode: str, distill_config: ml_collections.ConfigDict,
                        device_resident: bool):
  """train_step run `num_steps` times per call (`fused.compile_chunk`): chunk(state, teacher_params, hyperparams,
  rng, num_steps, *fused.ChunkFeeder.next(num_steps)) -> (state, stacked metrics).

  One compiled program per model and static loss settings for the whole process: the runs of a sweep, which differ
  in hyperparameters (arguments), seeds and data of the same shapes, reuse it instead of compiling their own.
  """
  return _compiled_chunk(mesh, model, teacher_model, teacher_mode, distill_config.divergence,
                         distill_config.t2_scaling, distill_config.input_noise_std, device_resident)


@functools.lru_cache(maxsize=16)
def _compiled_chunk(mesh, model, teacher_model, teacher_mode, divergence_kind, t2_scaling, input_noise_std,
                    device_resident):
  return fused.compile_chunk(functools.partial(
      train_step, model=model, teacher_model=teacher_model, teacher_mode=teacher_mode,
      divergence_kind=divergence_kind, t2_scaling=t2_scaling, input_noise_std=input_noise_std), mesh,
                             device_resident=device_resident)


@dataclasses.dataclass
class TrainingRun:
  """What one training phase needs beyond its compiled step."""
  phase: str
  examples: dict
  hyperparams: LossHyperparams
  optim_config: ml_collections.ConfigDict
  num_steps: int
  batch_size: int
  seed: int
  checkpoint_dir: str
  teacher_params: object = None


def train_model(run: TrainingRun, *, model, init_params, compile_chunk, mesh, train_config: ml_collections.ConfigDict,
                writer: metric_writer.MetricWriter, evaluate_fn) -> tuple[object, dict]:
  """Trains (or resumes training) for `run.num_steps` steps, checkpointing, logging and evaluating on the way.

  `compile_chunk(device_resident=...)` gives the compiled chunk (`compile_train_chunk` with the rest of its
  arguments bound) for the data placement the feeder chose: each call runs the steps up to the next log / eval /
  checkpoint step, at most train.steps_per_dispatch and about a second of them; a SIGTERM stops the run at the end
  of the chunk it arrives in.

  Returns:
    (final params, stats): steps, trained_steps (in this call), wall_s, examples_per_sec, resumed_from_step,
    data_feed ('device': the training set on the devices, or 'tf.data').
  """
  # From a host copy: the step donates the state's buffers, and `init_params` may serve another run (the baseline).
  state = create_train_state(model, jax.device_get(init_params), run.optim_config, run.num_steps)
  state = sharding.replicate(state, mesh)
  store = checkpointing.CheckpointStore(run.checkpoint_dir, train_config.max_checkpoints_to_keep)
  restored = store.restore_latest(state)
  if restored is not None:
    state = restored
  start_step = int(state.step)
  resumed_from_step = start_step if restored is not None else None
  if resumed_from_step is not None:
    logging.info("%s: resuming from step %d of %d (%s).", run.phase, start_step, run.num_steps, run.checkpoint_dir)
  writer.drop_after(start_step)
  rates = learning_rates(run.optim_config, run.num_steps)
  rng = sharding.replicate(jax.random.PRNGKey(run.seed), mesh)
  teacher_params = run.teacher_params
  hyperparams = sharding.replicate(run.hyperparams, mesh)
  feeder = fused.ChunkFeeder(run.examples, batch_size=run.batch_size, seed=run.seed, start_step=start_step,
                             max_steps=train_config.steps_per_dispatch, mesh=mesh,
                             device_data_max_bytes=int(train_config.device_data_max_mib * 2**20))
  chunk_fn = compile_chunk(device_resident=feeder.device_resident)
  clock = fused.ChunkClock(start_step, run.num_steps, train_config)
  # (first step, steps, on-device stacked metrics) of the chunks not yet fetched: one host sync per log / eval /
  # checkpoint, not per step or chunk.
  unchecked = []
  interval_metrics = []  # fetched metrics since the last log line
  try:
    while clock.running():
      first_step, num_steps = clock.step, clock.next_length()
      state, chunk_metrics = chunk_fn(state, teacher_params, hyperparams, rng, np.int32(num_steps),
                                      *feeder.next(num_steps))
      unchecked.append((first_step, num_steps, chunk_metrics))
      end = clock.chunk_done(num_steps, state)
      if end.log or end.eval or end.checkpoint:
        interval_metrics += fetch_finite_metrics(run.phase, unchecked, store)
        unchecked = []
      if end.log:
        log_training(run, writer, end.step, interval_metrics, rates[end.step - 1], clock.interval_steps_per_sec())
        interval_metrics = []
      if end.eval:
        writer.write_scalars(end.step, {f"test/{key}": value for key, value in evaluate_fn(state.params).items()})
      if end.checkpoint:
        store.save(end.step, state)
      if end.preempted:
        raise preemption.Preempted(
            f"{run.phase}: stopped by SIGTERM at step {end.step} of {run.num_steps}; checkpoint saved in "
            f"{run.checkpoint_dir}; rerun the same command to resume")
    jax.block_until_ready(state)
  finally:
    store.close()
  stats = {"steps": run.num_steps, "trained_steps": run.num_steps - start_step,
           "wall_s": time.time() - clock.start_time,
           "examples_per_sec": clock.examples_per_sec(run.batch_size),
           "resumed_from_step": resumed_from_step, "data_feed": "device" if feeder.device_resident else "tf.data"}
  return state.params, stats


def fetch_finite_metrics(phase: str, unchecked: list, store: checkpointing.CheckpointStore,
                         run_names: list[str] | None = None) -> list[dict]:
  """Fetches the per-step metrics of the chunks in `unchecked`, (first step, steps, stacked metrics) each, and
  raises NonFiniteError at the first NaN or Inf.

  With `run_names` (vectorized sweeps), every metric holds one value per stacked run [R] and the error names the
  run. Checked before every checkpoint is saved, so the last checkpoint always precedes the first bad step.
  """
  fetched = jax.device_get([stacked for _, _, stacked in unchecked])
  per_step = []
  for (first_step, num_steps, _), stacked in zip(unchecked, fetched):
    per_step += [(first_step + 1 + i, metrics_of_step)
                 for i, metrics_of_step in enumerate(fused.unstack_metrics(stacked, num_steps))]
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


def log_training(run: TrainingRun, writer: metric_writer.MetricWriter, step: int, interval_metrics: list[dict],
                 learning_rate: float, steps_per_sec: float) -> None:
  """Writes and logs the training metrics averaged over the steps since the last log line."""
  scalars = {f"train/{name}": float(np.mean([metrics_of_step[name] for metrics_of_step in interval_metrics]))
             for name in interval_metrics[0]}
  scalars["train/learning_rate"] = float(learning_rate)
  if steps_per_sec > 0:
    scalars["train/examples_per_sec"] = steps_per_sec * run.batch_size
  writer.write_scalars(step, scalars)
  eta = (run.num_steps - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
  logging.info("%s step %d/%d | loss %.4f (hard %.4f, soft %.4f) | lr %.2e | %s ex/s | ETA %s", run.phase, step,
               run.num_steps, scalars["train/loss"], scalars["train/hard_loss"], scalars["train/soft_loss"],
               learning_rate, f"{scalars['train/examples_per_sec']:.0f}" if steps_per_sec > 0 else "-",
               _format_duration(eta))


def _format_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "-"
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}"


def num_train_steps(num_examples: int, batch_size: int, num_epochs: int, num_steps: int | None = None) -> int:
  """`num_steps` if given, else epochs times the full batches per epoch."""
  return num_steps or num_epochs * pipeline.steps_per_epoch(num_examples, batch_size)


def teacher_directory(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Where this run's trained teacher and logit caches live."""
  return config.teacher.workdir or os.path.join(workdir, "teacher")


def _teacher_identity(config: ml_collections.ConfigDict, task: data.TaskData) -> dict:
  """What a trained teacher depends on: its config, the labeled training examples and the batch size."""
  labeled = data.teacher_view(task.labeled_train)
  return {"teacher": config.teacher.to_dict() | {"workdir": None, "init": "train"},
          "batch_size": config.data.batch_size, "num_classes": task.num_classes,
          "labeled_train_fingerprint": fingerprints.fingerprint_arrays(*jax.tree.leaves(labeled["inputs"]),
                                                                       labeled["label"], labeled["index"])}


def obtain_teacher(config: ml_collections.ConfigDict, task: data.TaskData, mesh, workdir: str, train_fn):
  """The teacher module and parameters: trained here (resumable, reused once finished) or restored from a directory.

  Returns:
    (model, params, stats or None when the teacher was not trained in this call).
  """
  example_inputs = jax.tree.map(lambda value: value[:1], data.teacher_view(task.train)["inputs"])
  model, params = models.create(config.teacher, num_classes=task.num_classes, example_inputs=example_inputs,
                                rng=jax.random.PRNGKey(config.teacher.seed), field="teacher")
  if config.teacher.init == "pretrained":
    return model, params, None
  if config.teacher.init != "train":
    return model, _restore_teacher_params(config.teacher.init, params, mesh), None
  directory = teacher_directory(config, workdir)
  identity = _teacher_identity(config, task)
  identity_path = os.path.join(directory, "teacher.json")
  if os.path.exists(identity_path) and files.read_json(identity_path) != files.as_json_value(identity):
    raise UserError(f"teacher directory {directory} holds a teacher trained with another config or data set; "
                    "use a new --workdir or point config.teacher.workdir elsewhere")
  params_dir = os.path.join(directory, "params")
  trained = os.path.isdir(params_dir)
  distributed.check_same_on_all_processes(trained, f"whether {params_dir} holds a trained teacher")
  if trained:
    logging.info("teacher: reusing the trained teacher in %s.", directory)
    return model, _restore_teacher_params(directory, params, mesh), None
  if distributed.is_main_process():
    files.write_json(identity_path, identity)
  labeled = data.teacher_view(task.labeled_train)
  run = TrainingRun(
      phase="teacher", examples=labeled, hyperparams=teacher_hyperparams(), optim_config=config.teacher.optim,
      num_steps=num_train_steps(len(labeled["index"]), config.data.batch_size, config.teacher.num_epochs),
      batch_size=config.data.batch_size, seed=config.teacher.seed,
      checkpoint_dir=os.path.join(directory, "checkpoints"))
  params, stats = train_fn(run, model=model, init_params=params)
  # Every process saves (orbax's multi-process path: process 0 writes the metadata, the owner of each shard its data).
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.abspath(params_dir), params)
  return model, params, stats


def _restore_teacher_params(directory: str, target_params, mesh):
  """The final teacher parameters saved in `<directory>/params`, shaped like `target_params`, replicated on `mesh`."""
  params_dir = os.path.abspath(os.path.join(directory, "params"))
  if not os.path.isdir(params_dir):
    raise UserError(f"teacher directory {directory} has no params/ (its training did not finish); "
                    "rerun the run that trains it, or set teacher.init='train'")
  checkpointer = ocp.StandardCheckpointer()
  abstract = jax.tree.map(lambda value: jax.ShapeDtypeStruct(value.shape, value.dtype,
                                                             sharding=sharding.replicated(mesh)), target_params)
  try:
    return checkpointer.restore(params_dir, abstract)
  except (ValueError, KeyError) as error:
    raise UserError(f"teacher checkpoint {params_dir} does not match the teacher described by config.teacher "
                    f"({error.__class__.__name__}: {str(error).splitlines()[0]})") from error


def check_data_sizes(config: ml_collections.ConfigDict, task: data.TaskData) -> None:
  """Each training phase needs at least one full global batch."""
  sizes = {"training": len(task.train["index"])}
  if config.teacher.init == "train":
    sizes["labeled training (the teacher's)"] = len(task.labeled_train["index"])
  for what, size in sizes.items():
    if size < config.data.batch_size:
      raise UserError(f"config.data.batch_size={config.data.batch_size}: larger than the {size} {what} examples of "
                      f"data set {task.name!r}; lower it or raise data.train_fraction / data.labeled_fraction")


# Config fields a resumed run may change: they affect logging, checkpoint cadence and placement, not the result.
OPERATIONAL_FIELDS = frozenset({"train.log_every_steps", "train.eval_every_steps", "train.checkpoint_every_steps",
                                "train.max_checkpoints_to_keep", "train.num_devices", "data.eval_batch_size",
                                "train.steps_per_dispatch", "train.device_data_max_mib"})


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def claim_workdir(config: ml_collections.ConfigDict, workdir: str, overwrite: bool) -> None:
  """Refuses to resume a workdir that holds a run of another config; with `overwrite`, moves that run aside.

  The earlier run is renamed to `<workdir>.replaced-<time>`, never deleted.
  """
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    return
  previous = _flatten(files.read_json(config_path))
  current = _flatten(files.as_json_value(config.to_dict()))
  differing = sorted(field for field in set(previous) | set(current)
                     if field not in OPERATIONAL_FIELDS and previous.get(field) != current.get(field))
  if not differing:
    return
  if not overwrite:
    shown = ", ".join(f"{field}: {previous.get(field)!r} -> {current.get(field)!r}" for field in differing[:3])
    more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
    raise UserError(f"--workdir={workdir} holds a run of another config ({shown}{more}); use a new workdir, or "
                    "--overwrite to move that run aside and start over")
  replaced = f"{workdir.rstrip(os.sep)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
  if distributed.is_main_process():
    os.rename(workdir, replaced)
  logging.warning("Moved the earlier run of another config from %s to %s.", workdir, replaced)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False) -> dict:
  """Runs teacher -> cache -> students -> evaluation, writes `<workdir>/results.json` and returns its content.

  SIGTERM stops the run at the next step with a checkpoint (`preemption.Preempted`); a rerun resumes it. A workdir
  holding another config's run is refused unless `overwrite`.
  """
  with preemption.sigterm_requests_stop():
    return _train_and_evaluate(config, workdir, overwrite)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, overwrite: bool) -> dict:
  start_time = time.time()
  config_validation.validate(config)
  task = data.load_task(config)
  check_data_sizes(config, task)
  mesh = sharding.make_mesh(config.train.num_devices)
  num_devices = mesh.size
  num_labeled = len(task.labeled_train["index"])
  logging.info("Data %s: %d training examples (%d labeled), %d test; %d classes. Mesh: %d devices.", task.name,
               len(task.train["index"]), num_labeled, len(task.test["index"]), task.num_classes, num_devices)

  claim_workdir(config, workdir, overwrite)
  os.makedirs(workdir, exist_ok=True)
  if distributed.is_main_process():
    files.write_json(os.path.join(workdir, "config.json"), config.to_dict())
  writers = {phase: metric_writer.MetricWriter(workdir, phase) for phase in PHASES}
  test_labels = task.test["label"]
  seq2seq_evaluation = seq2seq.Evaluation(config, task, mesh) if task.seq2seq is not None else None

  def run_training(run, *, model, init_params, compile_chunk, eval_teacher_logits):
    predict = inference.make_predict_fn(model, mesh)

    def evaluate(params):
      if seq2seq_evaluation is not None:
        return seq2seq_evaluation.during_training(model, params)
      test_split = data.teacher_view(task.test) if run.phase == "teacher" else task.test  # its own tokens
      logits = inference.predict_logits(predict, params, test_split["inputs"], batch_size=config.data.eval_batch_size,
                                        num_devices=num_devices)
      test_metrics = metrics.classification_metrics(logits, test_labels, eval_teacher_logits)
      return {key: test_metrics[key] for key in ("accuracy", "nll", "ece") + (
          ("agreement",) if eval_teacher_logits is not None else ())}

    return train_model(run, model=model, init_params=init_params, compile_chunk=compile_chunk, mesh=mesh,
                       train_config=config.train, writer=writers[run.phase], evaluate_fn=evaluate)

  def train_teacher(run, *, model, init_params):
    compile_chunk = functools.partial(compile_train_chunk, mesh, model=model, teacher_model=None, teacher_mode="none",
                                      distill_config=config.distill)
    return run_training(run, model=model, init_params=init_params, compile_chunk=compile_chunk,
                        eval_teacher_logits=None)

  teacher_model, teacher_params, teacher_stats = obtain_teacher(config, task, mesh, workdir, train_teacher)
  teacher_params = sharding.replicate(teacher_params, mesh)
  teacher_predict = inference.make_predict_fn(teacher_model, mesh)
  if seq2seq_evaluation is None:
    teacher_test_logits = inference.predict_logits(teacher_predict, teacher_params,
                                                   data.teacher_view(task.test)["inputs"],
                                                   batch_size=config.data.eval_batch_size, num_devices=num_devices)
    teacher_metrics = metrics.classification_metrics(teacher_test_logits, test_labels, teacher_test_logits)
  else:
    teacher_test_logits = None  # [N, T, V] is too large to keep: the students' KL is computed beside the teacher
    teacher_metrics = seq2seq_evaluation.teacher_metrics(teacher_model, teacher_params)
  results = {"data": {"name": task.name, "num_classes": task.num_classes, "num_train": len(task.train["index"]),
                      "num_labeled": num_labeled, "num_unlabeled": len(task.train["index"]) - num_labeled,
                      "num_test": len(task.test["index"])},
             "metrics": {"teacher": teacher_metrics},
             "train": {"num_devices": num_devices, "num_processes": jax.process_count(), "phases": {}}}
  if teacher_stats is not None:
    results["train"]["phases"]["teacher"] = teacher_stats

  student_examples = task.train
  teacher_mode = config.distill.teacher_mode
  student_hyperparams = loss_hyperparams(config.distill)
  if config.distill.strategy == "sequence":
    # Kim & Rush 2016: cross-entropy on the teacher's own outputs, without a distillation term.
    student_examples, results["teacher_generations"] = seq2seq.sequence_level_examples(
        config, task, teacher_model, teacher_params, mesh, teacher_directory(config, workdir))
    teacher_mode, student_hyperparams = "none", loss_hyperparams(config.distill, hard_labels_only=True)
  elif teacher_mode == "cached" and task.seq2seq is not None:
    cache, results["teacher_cache"] = seq2seq.build_topk_cache(config, task, teacher_model, teacher_params, mesh,
                                                               teacher_directory(config, workdir))
    student_examples = seq2seq_cache.join_topk(task.train, cache)
  elif teacher_mode == "cached":
    cache, cache_stats = build_teacher_cache(config, task, teacher_predict, teacher_params, workdir, num_devices)
    student_examples = teacher_cache.join(task.train, cache)
    results["teacher_cache"] = cache_stats

  example_inputs = jax.tree.map(lambda value: value[:1], task.train["inputs"])
  student_model, student_init_params = models.create(config.student, num_classes=task.num_classes,
                                                     example_inputs=example_inputs,
                                                     rng=jax.random.PRNGKey(config.seed), field="student")
  num_steps = num_train_steps(len(task.train["index"]), config.data.batch_size, config.train.num_epochs,
                              config.train.num_steps)
  checkpoints_dir = os.path.join(workdir, "checkpoints")

  def student_run(phase, examples, hyperparams, run_teacher_params):
    return TrainingRun(phase=phase, examples=examples, hyperparams=hyperparams, optim_config=config.optim,
                       num_steps=num_steps, batch_size=config.data.batch_size, seed=config.seed,
                       checkpoint_dir=os.path.join(checkpoints_dir, phase), teacher_params=run_teacher_params)

  student_chunk = functools.partial(compile_train_chunk, mesh, model=student_model, teacher_model=teacher_model,
                                    teacher_mode=teacher_mode, distill_config=config.distill)
  student_predict = inference.make_predict_fn(student_model, mesh)
  trained = {}
  run = student_run("student", student_examples, student_hyperparams,
                    teacher_params if teacher_mode == "online" else None)
  trained["student"] = run_training(run, model=student_model, init_params=student_init_params,
                                    compile_chunk=student_chunk, eval_teacher_logits=teacher_test_logits)
  if config.baseline:
    hard_chunk = functools.partial(compile_train_chunk, mesh, model=student_model, teacher_model=None,
                                   teacher_mode="none", distill_config=config.distill)
    run = student_run("student_hard", task.train, loss_hyperparams(config.distill, hard_labels_only=True), None)
    trained["student_hard"] = run_training(run, model=student_model, init_params=student_init_params,
                                           compile_chunk=hard_chunk, eval_teacher_logits=teacher_test_logits)
  for phase, (params, stats) in trained.items():
    if seq2seq_evaluation is not None:
      results["metrics"][phase] = seq2seq_evaluation.final(student_model, params, teacher_model, teacher_params)
    else:
      logits = inference.predict_logits(student_predict, params, task.test["inputs"],
                                        batch_size=config.data.eval_batch_size, num_devices=num_devices)
      results["metrics"][phase] = metrics.classification_metrics(logits, test_labels, teacher_test_logits)
    results["train"]["phases"][phase] = stats
  student_stats = trained["student"][1]
  # Where this run took up an interrupted one: the first phase (teacher, student, student_hard) resumed from a
  # checkpoint before its last step, and that step (else the first phase restored at its end, as in a rerun of a
  # finished run).
  phases = results["train"]["phases"]
  resumed = [(phase, stats["resumed_from_step"]) for phase, stats in phases.items()
             if stats.get("resumed_from_step") is not None]
  resumed = [(phase, step) for phase, step in resumed if step < phases[phase]["steps"]] + resumed
  results["train"].update({"steps": student_stats["steps"], "examples_per_sec": student_stats["examples_per_sec"],
                           "resumed_from_step": resumed[0][1] if resumed else None,
                           "resumed_phase": resumed[0][0] if resumed else None,
                           "wall_s": time.time() - start_time})
  for writer in writers.values():
    writer.close()
  if distributed.is_main_process():
    files.write_json(os.path.join(workdir, "results.json"), results)
    logging.info("Wrote %s (%.1fs).", os.path.join(workdir, "results.json"), results["train"]["wall_s"])
  return results


def build_teacher_cache(config, task: data.TaskData, teacher_predict, teacher_params, workdir: str,
                        num_devices: int) -> tuple[teacher_cache.TeacherLogitCache, dict]:
  """Loads or computes the teacher's eval-mode logits for the training split, keyed by example index."""
  metadata = teacher_cache.expected_metadata(
      data_name=task.name, split="train", data_fingerprint=task.fingerprint, size=len(task.train["index"]),
      num_classes=task.num_classes, teacher_fingerprint=fingerprints.fingerprint_tree(jax.device_get(teacher_params)))
  cache_dir = os.path.join(teacher_directory(config, workdir), "logit_cache", task.fingerprint)
  start_time = time.time()
  cache, built = teacher_cache.load_or_build(
      cache_dir, metadata, task.train["index"],
      lambda: inference.predict_logits(teacher_predict, teacher_params, data.teacher_view(task.train)["inputs"],
                                       batch_size=config.data.eval_batch_size, num_devices=num_devices))
  wall_s = time.time() - start_time
  logging.info("Teacher-logit cache %s: %s %d examples in %.2fs.", cache_dir, "built for" if built else "loaded",
               len(cache.index), wall_s)
  return cache, {"path": cache_dir, "built": built, "wall_s": wall_s,
                 "bytes_per_example": cache.logits.itemsize * cache.logits.shape[-1] + cache.index.itemsize}
