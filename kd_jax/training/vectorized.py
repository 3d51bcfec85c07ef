"""Vectorized sweeps (`config.sweep.mode = "vectorized"`): points that differ only in FIELDS train together.

The points of a sweep whose configs are equal but for FIELDS (the objective's numbers, the learning rate, the seed)
have the same array shapes: one compiled program trains them all, `jax.vmap` of `steps.train_step` over stacked
student states [P, ...], stacked objectives [P], PRNG keys [P] and, when the seeds differ, per-point batches [P, B, ...] (with
one seed, one batch and its cached teacher logits serve every point). `program` builds it as a `loop.Program`, so
the training loop, its checkpoints, history, evaluation and SIGTERM handling are those of every run; with several
devices the points spread over a ('sweep', 'data') mesh (`sharding.make_sweep_mesh`). Points that differ in anything
else (the student's width, the data, the divergence...) form separate groups, each trained this way in turn
(`groups`). The hard-label baseline depends on BASELINE_FIELDS only: each distinct combination is trained once and
shared by the points that have it.

Per-point learning rates: the optimizer runs at peak learning rate 1 and a per-point `optax.scale` (its step size held
in the optimizer state) multiplies its updates, so that lr(t) = peak * shape(t) exactly as in a sequential run, up to
rounding. Restrictions (checked before anything runs, `check`): one process, classification tasks (not seq2seq).
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from kd_jax import data, files, fingerprints
from kd_jax.config import paths
from kd_jax.data import feed
from kd_jax.errors import ConfigError
from kd_jax.parallel import sharding
from kd_jax.training import feature_losses, loop, steps
from kd_jax.training.objective import Objective

# The fields the points of one group may differ in: they reach the compiled step as arrays.
FIELDS = ("seed", "optim.learning_rate") + Objective.ARRAY_FIELDS
# Those the hard-label baseline depends on (its loss is the cross-entropy with the point's label smoothing).
BASELINE_FIELDS = ("seed", "distill.label_smoothing", "optim.learning_rate")


def groups(points: list) -> list[list]:
  """The points (sweep.Point) in groups of configs equal but for FIELDS (but for the seed where a teacher assistant
  is set), in order of first appearance."""
  by_key = {}
  for point in points:
    # A teacher assistant is distilled under the points' objective and learning rate (kd_jax/teachers/assistant.py):
    # points with one share a group only where they differ in the seed alone.
    shared = FIELDS if point.config.teacher.assistant.name is None else ("seed",)
    key = fingerprints.fingerprint_json(paths.without(files.as_json_value(point.config.to_dict()), shared))
    by_key.setdefault(key, []).append(point)
  return list(by_key.values())


def group_directory(workdirs: list[str]) -> str:
  """Where a group's stacked checkpoints live: `<sweep workdir>/vectorized/<hash of its points>/` (the points'
  workdirs are `<sweep workdir>/<point name>`)."""
  sweep_workdir = os.path.dirname(os.path.normpath(workdirs[0]))
  names = [os.path.basename(os.path.normpath(workdir)) for workdir in workdirs]
  return os.path.join(sweep_workdir, "vectorized", fingerprints.fingerprint_json(names))


def baseline_shares(configs: list) -> list[list[int]]:
  """The indices of the configs that share one hard-label baseline (equal BASELINE_FIELDS), in order."""
  by_values = {}
  for i, config in enumerate(configs):
    by_values.setdefault(tuple(paths.get(config, path) for path in BASELINE_FIELDS), []).append(i)
  return list(by_values.values())


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError where vectorized mode cannot run this sweep."""
  if jax.process_count() > 1:
    raise ConfigError("sweep.mode", config.sweep.mode,
                      f"needs a single process (this job has {jax.process_count()}); use mode 'sequential', or "
                      "--sweep_index to run points as separate jobs")
  if config.data.name in data.SEQ2SEQ_TASKS:
    raise ConfigError("sweep.mode", config.sweep.mode,
                      f"supports classification tasks; data.name={config.data.name!r} is seq2seq: use 'sequential'")
  if config.data.name in data.CAUSAL_LM_TASKS:
    raise ConfigError("sweep.mode", config.sweep.mode,
                      f"supports classification tasks; data.name={config.data.name!r} is a causal LM: use 'sequential'")


@functools.lru_cache(maxsize=8)
def points_optimizer(optim_config: ml_collections.FrozenConfigDict, num_steps: int,
                     trainable=None) -> optax.GradientTransformation:
  """AdamW at peak learning rate 1 (steps.make_optimizer, over the `trainable` parameters), then a per-point scale
  (the peak) held in the state."""
  unit = ml_collections.ConfigDict(optim_config.as_configdict())
  unit.learning_rate = 1.0
  return optax.chain(steps.make_optimizer(unit, num_steps, trainable),
                     optax.inject_hyperparams(optax.scale)(step_size=1.0))


def point_state(model, params, tx: optax.GradientTransformation, learning_rate: float,
                trainable=None) -> steps.TrainState:
  """A point's fresh state under `points_optimizer`'s `tx`, its update scale set to the point's peak learning rate."""
  state = steps.TrainState.create(apply_fn=model.apply, params=params, tx=tx, trainable=trainable)
  *inner, scale = state.opt_state
  return state.replace(opt_state=(*inner, scale._replace(hyperparams={"step_size": jnp.float32(learning_rate)})))


@functools.lru_cache(maxsize=8)
def compile_points_chunk(mesh, model, teacher_model, shared_batches: bool, input_noise_std: float = 0.0,
                         microbatches: int = 1):
  """chunk(states, teacher_params, objectives, rngs, num_steps, examples, rows) -> (states, metrics [max_steps, P]).

  states, objectives, rngs: stacked over points [P, ...], split over the mesh's sweep axis. examples: the training
  examples, on every device. rows: the example rows of each step's batch (feed.StackedRowsFeeder), split over the data
  axis. The states are donated.
  """
  step_fn = functools.partial(steps.train_step, model=model, teacher_model=teacher_model,
                              input_noise_std=input_noise_std, microbatches=microbatches)
  points_step = jax.vmap(step_fn, in_axes=(0, None, 0, 0, None if shared_batches else 0))
  points = P(sharding.SWEEP_AXIS)
  return sharding.sweep_parallel(functools.partial(steps.run_steps, points_step), mesh,
                                 in_specs=(points, P(), points, points, P(), P(), feed.rows_spec(shared_batches)),
                                 out_specs=(points, P(None, sharding.SWEEP_AXIS)))


def program(*, model, init_params: dict, optim_config: ml_collections.ConfigDict, num_steps: int,
            objectives: list[Objective], learning_rates: list[float], seeds: list[int], examples, batch_size: int,
            train_config, teacher=None, input_noise_std: float = 0.0, trainable=None) -> loop.Program:
  """The loop.Program of R runs trained together: run r from init_params[seeds[r]] with objectives[r] at peak
  learning rate learning_rates[r], on `examples` in the batches of seeds[r] (the objectives differ in their numbers
  only).

  Args:
    teacher: (teacher model, its params) to run in the step (online distillation), or None.
    trainable: the parameters trained (peft.Trainable; None: all).
  """
  num_runs = len(seeds)
  mesh = sharding.make_sweep_mesh(num_runs, train_config.num_devices)
  points_sharding = NamedSharding(mesh, P(sharding.SWEEP_AXIS))
  stack = lambda trees: jax.device_put(jax.tree.map(lambda *values: np.stack(values), *trees), points_sharding)
  tx = points_optimizer(ml_collections.FrozenConfigDict(optim_config), num_steps, trainable)
  state = stack([point_state(model, jax.device_get(init_params[seed]), tx, rate, trainable)
                 for seed, rate in zip(seeds, learning_rates)])
  stacked_objectives = stack([jax.device_get(objective) for objective in objectives])
  rngs = stack([jax.device_get(jax.random.PRNGKey(seed)) for seed in seeds])
  teacher_model, teacher_params = teacher if teacher is not None else (None, None)
  if teacher_params is not None:
    teacher_params = jax.device_put(jax.device_get(teacher_params), NamedSharding(mesh, P()))
  shared_batches = len(set(seeds)) == 1
  compiled = compile_points_chunk(mesh, model, teacher_model, shared_batches, input_noise_std,
                                  train_config.microbatches)

  def run_params(params):
    host = feature_losses.split_params(jax.device_get(params), objectives[0].feature_loss)[0]
    return [jax.tree.map(lambda values, r=r: values[r], host) for r in range(num_runs)]

  return loop.Program(
      state=state,
      chunk=lambda state, length, *data: compiled(state, teacher_params, stacked_objectives, rngs, length, *data),
      memory=lambda state, length, *data: sharding.memory_stats(compiled, state, teacher_params, stacked_objectives,
                                                                rngs, length, *data),
      feed=lambda start_step: feed.StackedRowsFeeder(examples, batch_size=batch_size, seeds=seeds,
                                                     start_step=start_step, max_steps=train_config.steps_per_dispatch,
                                                     mesh=mesh),
      run_params=run_params, stacked=True, examples_per_step=batch_size * num_runs,
      stats={"data_feed": "device", "mesh": {**dict(mesh.shape), sharding.FSDP_AXIS: 1, sharding.TENSOR_AXIS: 1},
             "vectorized_runs": num_runs})
