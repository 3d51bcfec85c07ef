"""The optimizer step and its compiled forms: `train_step`, many steps per call (`run_steps`), and the program of one
run that the training loop (kd_jax/training/loop.py) trains.

`train_step` is pure: its settings (model, teacher model, input noise) are bound with functools.partial before
compiling, and everything numeric comes in as arguments: the state, the teacher's parameters, the objective
(kd_jax/training/objective.py: the loss's weights, temperature, smoothing...; its static parts in its tree structure),
the run's PRNG key and the batch.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from flax.training import train_state
from jax.extend import core as jax_core

from kd_jax.data import Examples, feed, pipeline
from kd_jax import models
from kd_jax.models import peft
from kd_jax.parallel import sharding
from kd_jax.training import chunked, cross_tokenizer, feature_losses, loop, losses
from kd_jax.training.objective import Objective


class TrainState(train_state.TrainState):
  """flax's TrainState and which parameters training updates (`peft.Trainable`; None: all), static like its tx."""
  trainable: peft.Trainable | None = struct.field(pytree_node=False, default=None)


def num_train_steps(num_examples: int, batch_size: int, num_epochs: int, num_steps: int | None = None) -> int:
  """`num_steps` if given, else epochs times the full batches per epoch."""
  return num_steps or num_epochs * pipeline.steps_per_epoch(num_examples, batch_size)


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


def make_optimizer(optim_config: ml_collections.ConfigDict, num_steps: int,
                   trainable: peft.Trainable | None = None) -> optax.GradientTransformation:
  """AdamW on the schedule above (its first moment in optim_config.moment_dtype); weight decay on matrices only (not
  biases or norm scales), optional clipping; with `trainable`, over the trained parameters only (clipping by their
  norm), the frozen ones left unchanged and without optimizer state.

  Equal settings give the same object: the optimizer is part of the train state's tree structure, so runs with
  equal settings (the points of a sweep) reuse compiled steps instead of tracing and compiling their own.
  """
  return _make_optimizer(ml_collections.FrozenConfigDict(optim_config), num_steps, trainable)


@functools.lru_cache(maxsize=64)
def _make_optimizer(optim_config: ml_collections.FrozenConfigDict, num_steps: int,
                    trainable: peft.Trainable | None) -> optax.GradientTransformation:
  tx = optax.adamw(learning_rate_schedule(optim_config, num_steps), weight_decay=optim_config.weight_decay,
                   mu_dtype=jnp.dtype(optim_config.moment_dtype),
                   mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params))
  if optim_config.grad_clip_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), tx)
  if trainable is None:
    return tx
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, trainable.labels)


def create_train_state(model, params, optim_config: ml_collections.ConfigDict, num_steps: int,
                       trainable: peft.Trainable | None = None) -> TrainState:
  """A fresh training state (step 0) for `params`, training those `trainable` selects (None: all)."""
  return TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(optim_config, num_steps, trainable),
                           trainable=trainable)


def _add_batch_axis(tree):
  return jax.tree.map(lambda value: value[None], tree)


def _attention_mask(inputs):
  """The token mask [batch, length] of text inputs; None for the MLP tasks' feature vectors."""
  return inputs["attention_mask"] if isinstance(inputs, dict) else None


def train_step(state: TrainState, teacher_params, objective: Objective, rng: jax.Array, batch: Examples, *,
               model, teacher_model, input_noise_std: float, microbatches: int = 1) -> tuple[TrainState, dict]:
  """One data-parallel optimizer step on this device's shard of the global batch.

  The teacher's signal is the teacher run here on the student's batch (`teacher_model` given: online), else what
  the batch carries (`batch.teacher`: cached logits or top-k, joined by example index), else none (the objective's soft
  weight is then 0: the hard-label baseline, the teacher's own training, sequence-level targets). With on-policy
  sampling (`objective.on_policy`) the batch's responses are first replaced by the student's own samples in a share of
  the steps, before anything else sees the batch.

  Randomness (dropout, input noise) is drawn per example from fold_in(fold_in(rng, step), example index), so it
  depends neither on the device count nor on where a batch lands, and a resumed run redraws the same masks.
  The loss is normalized over the global batch (`losses.global_mean`) and gradients are averaged with pmean.
  With chunked losses (config.distill.loss_chunk > 0) the models return their final hidden states instead of their
  logits, and the loss projects them with their LM heads a chunk of positions at a time (kd_jax/training/chunked.py).
  With feature distillation (`objective.feature_loss`) both models also return their intermediates, the feature and
  attention terms are added (logged as feature_loss, attention_loss), and `state.params` holds the student's params
  and the projections (feature_losses.join_params).

  Gradient accumulation (`microbatches` k > 1): this device's rows are split into k micro-batches of consecutive
  rows, run one after another in a lax.scan (teacher, student forward and backward: the activations of one
  micro-batch are alive at a time). Each micro-batch's loss is its share of the whole batch's loss, normalized by
  the weight of all the rows (`losses.global_mean`'s weight_sum), so the summed gradients and logged losses are
  those of k = 1 up to float rounding; the optimizer then steps once. Dropout keys follow the example index, so
  they do not depend on k either.

  Args:
    state: training state of the model being trained (replicated over the data axis; split over fsdp / tensor as
      sharding.param_shardings places it).
    teacher_params: teacher parameters (placed alike) when `teacher_model` is given, else None.
    objective: replicated Objective (its arrays: weights, temperature, label smoothing, ...);
      `objective.at_step(state.step)` is this step's (a schedule moves T and the weights step by step).
    rng: replicated base PRNG key of this training run.
    batch: this device's rows of the global batch.
    model, teacher_model: flax modules (static); teacher_model None unless the teacher runs in the step.
    input_noise_std: Gaussian noise on the inputs, seen by teacher and student alike.
    microbatches: k, dividing this device's rows.

  Returns:
    (new state, metrics averaged over devices).
  """
  objective = objective.at_step(state.step)
  if objective.on_policy is not None:
    batch = objective.on_policy.batch(peft.plain_params(model, state.params), rng, state.step, batch)
  step_rng = jax.random.fold_in(rng, state.step)
  loss = objective.logit_loss
  features = objective.feature_loss  # feature distillation needs both models' intermediates
  # Gradients of the trained parameters only (state.trainable); the frozen ones get zeros, which the optimizer drops.
  trained, frozen = peft.split(state.params, state.trainable)
  # Chunked losses (objective.logit_loss.chunk > 0): the models return their final hidden states, which the loss
  # projects to logits a chunk of positions at a time (kd_jax/training/chunked.py).
  chunks = loss.chunk > 0
  outputs = {"project": False} if chunks else {}

  def gradients(rows: Examples, weight_sums):
    """(gradients of the trained params, loss terms) of `rows`: this device's rows, or one micro-batch of them with
    `weight_sums` (the terms' weights over all of them) for the normalization."""
    example_rngs = jax.vmap(functools.partial(jax.random.fold_in, step_rng))(rows.index)
    dropout_rngs, noise_rngs = jnp.moveaxis(jax.vmap(lambda key: jax.random.split(key, 2))(example_rngs), 1, 0)
    inputs = rows.inputs
    if input_noise_std > 0:
      noise = jax.vmap(lambda key, x: jax.random.normal(key, x.shape, x.dtype))(noise_rngs, inputs)
      inputs = inputs + input_noise_std * noise
    teacher_logits, teacher_features = rows.teacher, None
    teacher_inputs = inputs if rows.teacher_inputs is None else rows.teacher_inputs
    if teacher_model is not None:
      teacher_apply = functools.partial(teacher_model.apply, {"params": teacher_params}, teacher_inputs, train=False,
                                        **outputs)
      if features is None:
        teacher_logits = teacher_apply()
      else:
        teacher_logits, teacher_state = teacher_apply(mutable=["intermediates"])
        teacher_features = feature_losses.collect(teacher_state["intermediates"])
      if chunks:
        teacher_logits = chunked.Projected(teacher_logits, teacher_model.output_head(teacher_params))
      teacher_logits, teacher_features = jax.lax.stop_gradient((teacher_logits, teacher_features))
      if loss.cross_tokenizer != "none":  # its own tokens: compared on the aligned chunks
        teacher_logits = cross_tokenizer.ChunkedTeacher(
            teacher_logits, labels=teacher_inputs["label"], chunk=teacher_inputs["chunk"],
            student_chunk=inputs["chunk"], kind=loss.cross_tokenizer, shared_ids=loss.shared_ids)
    if isinstance(teacher_logits, cross_tokenizer.CachedChunks):  # a cached teacher of another tokenizer
      teacher_logits = cross_tokenizer.CachedChunkedTeacher(teacher_logits, loss.cross_tokenizer)
    assert features is None or teacher_features is not None, "feature distillation needs the teacher in the step"
    example_weights = rows.example_weights()
    term_sums, feature_sum = weight_sums if weight_sums is not None else (None, None)

    def loss_fn(params):
      model_params, projections = feature_losses.split_params(params, features)

      def example_outputs(example_inputs, dropout_rng):
        apply = functools.partial(model.apply, {"params": model_params}, _add_batch_axis(example_inputs), train=True,
                                  rngs={"dropout": dropout_rng}, **outputs)
        if features is None:
          return apply()[0], None
        logits, model_state = apply(mutable=["intermediates"])
        return logits[0], jax.tree.map(lambda value: value[0], feature_losses.collect(model_state["intermediates"]))

      logits, student_features = jax.vmap(example_outputs)(inputs, dropout_rngs)
      if chunks:
        logits = chunked.Projected(logits, model.output_head(model_params))
      terms = loss(logits, teacher_logits, rows.label, example_weights, axis_name=sharding.data_axis(),
                   weight_sums=term_sums)
      if features is None:
        return terms.loss, (terms, {})
      feature_total, feature_terms = features(
          student_features, teacher_features, projections, student_mask=_attention_mask(inputs),
          teacher_mask=_attention_mask(teacher_inputs), example_weights=example_weights,
          axis_name=sharding.data_axis(), weight_sum=feature_sum)
      return terms.loss + feature_total, (terms, feature_terms)

    (total, (terms, feature_terms)), grads = jax.value_and_grad(
        lambda trained: loss_fn(peft.combine(trained, frozen)), has_aux=True)(trained)
    return grads, {"loss": total, "hard_loss": terms.hard, "soft_loss": terms.soft, **feature_terms}

  if microbatches == 1:
    grads, step_metrics = gradients(batch, None)
  else:
    grads, step_metrics = _accumulate(gradients, batch, microbatches, features)
  grads = sharding.mean_over_devices(grads)
  new_state = state.apply_gradients(grads=peft.combine(grads, jax.tree.map(jnp.zeros_like, frozen)))
  step_metrics = sharding.mean_over_devices(step_metrics)
  step_metrics["grad_norm"] = optax.tree.norm(grads)
  step_metrics["param_norm"] = optax.tree.norm(new_state.params)
  return new_state, step_metrics


def _accumulate(gradients, batch: Examples, microbatches: int, features):
  """`gradients(rows, weight_sums)` summed over `microbatches` micro-batches of consecutive rows of `batch`, run in
  a lax.scan, each normalized by the weight of all of `batch`'s rows; sums in at least float32."""
  example_weights = batch.example_weights()
  feature_sum = None
  if features is not None:
    feature_sum = jax.tree.map(jnp.sum, features.position_weights(example_weights, _attention_mask(batch.inputs)))
  weight_sums = (losses.term_weight_sums(batch.label, example_weights), feature_sum)
  parts = jax.tree.map(lambda rows: rows.reshape((microbatches, rows.shape[0] // microbatches) + rows.shape[1:]),
                       batch)
  part_gradients, shapes = trace_once(gradients, jax.tree.map(lambda rows: rows[0], parts), weight_sums)
  zeros = jax.tree.map(lambda shape: jnp.zeros(shape.shape, jnp.promote_types(shape.dtype, jnp.float32)), shapes)

  def add_part(sums, rows):
    return jax.tree.map(lambda total, value: total + value.astype(total.dtype), sums,
                        part_gradients(rows, weight_sums)), None

  sums, _ = jax.lax.scan(add_part, zeros, parts)
  return jax.tree.map(lambda total, shape: total.astype(shape.dtype), sums, shapes)


def trace_once(fn, *args):
  """(fn as a function of its jaxpr, fn's output shapes) for arguments shaped like `args`: `fn` is traced once,
  and the returned function replays the traced program (the same primitives, so the same compiled code) on new
  arguments of those shapes. For a loop that needs the shapes of a step's outputs before it traces the step: tracing
  a transformer's train step costs seconds of Python (flax modules, dropout hashes), and `jax.eval_shape` followed by
  the loop's own trace paid it twice."""
  closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
  out_tree = jax.tree.structure(out_shapes)
  replay = jax_core.jaxpr_as_fun(closed)
  return lambda *new_args: jax.tree.unflatten(out_tree, replay(*jax.tree.leaves(new_args))), out_shapes


def run_steps(step_fn, state, teacher_params, objective, rng, num_steps: jax.Array, *data):
  """`num_steps` applications of `step_fn` in one `lax.fori_loop` (none when max_steps is 1), step i on batch i of
  `data` (up to max_steps).

  Args:
    step_fn: step_fn(state, teacher_params, objective, rng, batch) -> (state, metrics).
    data: (stacked batches [max_steps, rows, ...],) or (examples [N, ...], rows [max_steps, rows] of them, gathered
      on the device step by step).

  Returns:
    (state after num_steps steps, metrics of each step stacked [max_steps, ...]; rows >= num_steps are 0).
  """
  if len(data) == 1:
    (batches,) = data
    max_steps = jax.tree.leaves(batches)[0].shape[0]
    batch_at = lambda i: jax.tree.map(lambda values: jax.lax.dynamic_index_in_dim(values, i, keepdims=False), batches)
  else:
    examples, rows = data
    max_steps = rows.shape[0]
    batch_at = lambda i: jax.tree.map(
        lambda values: jnp.take(values, jax.lax.dynamic_index_in_dim(rows, i, keepdims=False), axis=0), examples)
  if max_steps == 1:
    # No loop for one step per call: XLA:CPU runs convolutions inside a while loop several times slower
    # (jax-ml/jax#12868; 5x for the Fashion-MNIST CNN's step), so CNN configs dispatch every step.
    state, step_metrics = step_fn(state, teacher_params, objective, rng, batch_at(0))
    return state, jax.tree.map(lambda value: value[None], step_metrics)
  step_fn, (_, metric_shapes) = trace_once(step_fn, state, teacher_params, objective, rng, batch_at(0))
  stacked_metrics = jax.tree.map(lambda shape: jnp.zeros((max_steps,) + shape.shape, shape.dtype), metric_shapes)

  def body(i, carry):
    state, stacked_metrics = carry
    state, step_metrics = step_fn(state, teacher_params, objective, rng, batch_at(i))
    stacked_metrics = jax.tree.map(lambda stacked, value: jax.lax.dynamic_update_index_in_dim(stacked, value, i, 0),
                                   stacked_metrics, step_metrics)
    return state, stacked_metrics

  return jax.lax.fori_loop(0, num_steps, body, (state, stacked_metrics))


@functools.lru_cache(maxsize=16)
def compile_chunk(mesh, *, model, teacher_model, input_noise_std: float, device_resident: bool,
                  microbatches: int = 1):
  """chunk(state, teacher_params, objective, rng, num_steps, *feed.ChunkFeeder.next(num_steps)) -> (state, metrics
  stacked [max_steps, ...]): `train_step` run num_steps times per call, data-parallel over `mesh`; the state is
  donated.

  With `device_resident` data the examples are replicated and their rows [max_steps, global batch] split over
  devices along axis 1; otherwise the stacked batches [max_steps, global batch, ...] are. One compiled program per
  model and setting for the whole process: the runs of a sweep, which differ in the objective's numbers, seeds and
  data of the same shapes, reuse it (objectives with other static parts trace it anew).
  """
  step = functools.partial(train_step, model=model, teacher_model=teacher_model, input_noise_std=input_noise_std,
                           microbatches=microbatches)
  return sharding.data_parallel(functools.partial(run_steps, step), mesh,
                                num_replicated_args=6 if device_resident else 5, batch_axis=1)


def program(*, model, init_params, optim_config: ml_collections.ConfigDict, num_steps: int,
            objective: Objective, examples: Examples, batch_size: int, seed: int, mesh, train_config,
            teacher=None, input_noise_std: float = 0.0, trainable: peft.Trainable | None = None,
            param_rules=()) -> loop.Program:
  """The loop.Program of one run: `model` from `init_params` under AdamW and `objective`, on `examples` in the
  batches of `seed`.

  Args:
    teacher: (teacher model, its params placed on `mesh`) to run in the step (online distillation; needed by the
      objective's feature terms and on-policy sampling), or None.
    trainable: the parameters trained (None: all).
    param_rules: config.mesh.rules, placing the state's arrays before the model's own rules
      (models.partition_rules) and FSDP.
  """
  # From a host copy: the step donates the state's buffers, and `init_params` may serve another run (the baseline).
  state = sharding.place_params(create_train_state(model, jax.device_get(init_params), optim_config, num_steps,
                                                   trainable), mesh,
                                tuple(param_rules) + models.partition_rules(model, mesh))
  device_resident = feed.data_bytes(examples) <= int(train_config.device_data_max_mib * 2**20)
  teacher_model, teacher_params = teacher if teacher is not None else (None, None)
  compiled = compile_chunk(mesh, model=model, teacher_model=teacher_model, input_noise_std=input_noise_std,
                           device_resident=device_resident, microbatches=train_config.microbatches)
  replicated_objective = sharding.replicate(objective, mesh)
  rng = sharding.replicate(jax.random.PRNGKey(seed), mesh)
  return loop.Program(
      state=state,
      chunk=lambda state, num_steps, *data: compiled(state, teacher_params, replicated_objective, rng, num_steps,
                                                     *data),
      memory=lambda state, num_steps, *data: sharding.memory_stats(compiled, state, teacher_params,
                                                                   replicated_objective, rng, num_steps, *data),
      feed=lambda start_step: feed.ChunkFeeder(examples, batch_size=batch_size, seed=seed, start_step=start_step,
                                               max_steps=train_config.steps_per_dispatch, mesh=mesh,
                                               device_resident=device_resident),
      run_params=lambda params: [feature_losses.split_params(params, objective.feature_loss)[0]], stacked=False,
      examples_per_step=batch_size,
      stats={"data_feed": "device" if device_resident else "tf.data", "mesh": {"sweep": 1, **dict(mesh.shape)},
             "vectorized_runs": 1})


def compile_step(mesh, *, model, teacher_model, input_noise_std: float = 0.0, microbatches: int = 1):
  """step(state, teacher_params, objective, rng, batch) -> (state, metrics): one `train_step` per call, data-parallel
  over `mesh` (the chunk of `compile_chunk` runs exactly these steps; tests compare the two)."""
  step = functools.partial(train_step, model=model, teacher_model=teacher_model, input_noise_std=input_noise_std,
                           microbatches=microbatches)
  return sharding.data_parallel(step, mesh, num_replicated_args=4)
