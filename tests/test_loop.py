"""The training loop's chunks: many steps per call give the steps of one call per step, and chunks end where they
must."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from kd_jax import data, models
from kd_jax.data import feed, pipeline
from kd_jax.parallel import preemption, sharding
from kd_jax.training import loop, steps, vectorized
from kd_jax.training.objective import Objective
from tests.helpers import SigtermAt, digits_student, load_config


@pytest.mark.parametrize("step, boundary_every, expected", [
    (0, (50, 200, 200), 50),  # the first log step
    (190, (50, 200, 200), 10),  # eval and checkpoint at 200
    (370, (50, 200, 200), 20),  # the end (390)
    (0, (500, 500, 500), 100)])  # no boundary before max_steps
def test_chunks_end_at_log_eval_checkpoint_steps_and_the_end(step, boundary_every, expected):
  assert loop.chunk_length(step, 390, boundary_every, 100, None) == expected


def test_chunks_are_cut_to_about_a_second():
  assert loop.chunk_length(0, 1000, (500,), 100, seconds_per_step=0.25) == 4
  assert loop.chunk_length(0, 1000, (500,), 100, seconds_per_step=10.0) == 1
  assert loop.chunk_length(0, 1000, (500,), 100, seconds_per_step=1e-6) == 100


@pytest.mark.trains
@pytest.mark.parametrize("device_resident, max_steps", [(True, 10), (False, 10), (True, 1)])
def test_a_chunk_equals_single_steps(device_resident, max_steps):
  """Seven steps as one padded chunk (max 10) give the state and metrics of seven one-step calls (8 devices); so do
  seven chunks of max 1 (a program without the step loop)."""
  config = load_config()
  task = data.load_task(config)
  logits = np.random.default_rng(0).normal(size=(len(task.train), task.num_classes)).astype(np.float32)
  examples = task.train.replace(teacher=logits)
  mesh = sharding.make_mesh()
  model, params = models.create(config.student, num_classes=task.num_classes, example_inputs=task.train.inputs[:1],
                                rng=jax.random.PRNGKey(0))
  params = jax.device_get(params)
  objective = sharding.replicate(Objective.from_config(config), mesh)
  rng = sharding.replicate(jax.random.PRNGKey(3), mesh)

  single = steps.compile_step(mesh, model=model, teacher_model=None)
  state = sharding.replicate(steps.create_train_state(model, params, config.optim, 100), mesh)
  batches = pipeline.train_batches(examples, batch_size=32, seed=5, start_step=2)
  single_metrics = []
  for _ in range(7):
    state, step_metrics = single(state, None, objective, rng, sharding.shard_batch(next(batches), mesh))
    single_metrics.append(jax.device_get(step_metrics))

  # Single steps take tf.data's batches; the chunk takes the same batches' rows on the device or tf.data's again.
  feeder = feed.ChunkFeeder(examples, batch_size=32, seed=5, start_step=2, max_steps=max_steps, mesh=mesh,
                            device_resident=device_resident)
  chunk = steps.compile_chunk(mesh, model=model, teacher_model=None, input_noise_std=0.0,
                              device_resident=device_resident)
  chunk_state = sharding.replicate(steps.create_train_state(model, params, config.optim, 100), mesh)
  if max_steps == 1:
    stacked_chunks = []
    for _ in range(7):
      chunk_state, one = chunk(chunk_state, None, objective, rng, np.int32(1), *feeder.next(1))
      stacked_chunks.append(jax.device_get(one))
    stacked = jax.tree.map(lambda *values: np.concatenate(values), *stacked_chunks)
  else:
    chunk_state, stacked = chunk(chunk_state, None, objective, rng, np.int32(7), *feeder.next(7))

  assert int(chunk_state.step) == int(state.step) == 7
  for single_leaf, chunk_leaf in zip(jax.tree.leaves(jax.device_get(state)),
                                     jax.tree.leaves(jax.device_get(chunk_state))):
    np.testing.assert_allclose(chunk_leaf, single_leaf, rtol=1e-6, atol=1e-7)
  stacked = jax.device_get(stacked)
  for i, expected in enumerate(single_metrics):
    for name in expected:
      np.testing.assert_allclose(stacked[name][i], expected[name], rtol=1e-6, err_msg=name)
  assert np.all(stacked["loss"][7:] == 0)


def digits_programs(stacked: bool):
  """A factory of fresh programs: `digits_student`'s, one run (steps.program) or two stacked runs of two
  temperatures (vectorized.program)."""
  config, examples, model, params, objective = digits_student(50, 150, 100)

  def make():
    common = dict(model=model, optim_config=config.optim, num_steps=300, examples=examples,
                  batch_size=config.data.batch_size, train_config=config.train)
    if stacked:
      cooler = objective.replace(logit_loss=objective.logit_loss.replace(temperature=1.0))
      return vectorized.program(init_params={0: params}, objectives=[objective, cooler],
                                learning_rates=[3e-3, 3e-3], seeds=[0, 0], **common)
    return steps.program(init_params=params, objective=objective, seed=0, mesh=sharding.make_mesh(), **common)

  return make, config


@pytest.mark.trains
@pytest.mark.parametrize("stacked", [False, True])
def test_sigterm_stops_the_loop_with_a_checkpoint_and_the_rerun_ends_where_an_uninterrupted_run_does(tmp_path,
                                                                                                     stacked):
  make_program, config = digits_programs(stacked)
  num_runs = 2 if stacked else 1
  train = lambda writer, directory: loop.train(
      "student", make_program(), [loop.RunLog(f"run {i}", writer, np.zeros(300)) for i in range(num_runs)],
      num_steps=300, checkpoint_dir=str(directory), train_config=config.train, evaluate=lambda params: {"seen": 1.0})
  with preemption.sigterm_requests_stop():
    uninterrupted = train(SigtermAt(), tmp_path / "uninterrupted")
    stats = uninterrupted.stats
    assert stats["resumed_from_step"] is None and stats["trained_steps"] == 300
    assert stats["vectorized_runs"] == num_runs
    writer = SigtermAt(step=100)  # SIGTERM arrives while the loop writes step 100's history: it stops at the next
                                  # chunk's end (the next log step, 150), not a periodic checkpoint step
    with pytest.raises(preemption.Preempted, match=r"^student: stopped by SIGTERM at step 150 of 300; checkpoint"):
      train(writer, tmp_path / "interrupted")
    assert sorted(os.listdir(tmp_path / "interrupted")) == ["100", "150"]  # the periodic one and the stop step
  with preemption.sigterm_requests_stop():  # the rerun
    resumed = train(writer, tmp_path / "interrupted")
    stats = resumed.stats
  assert stats["resumed_from_step"] == 150 and stats["trained_steps"] == 150
  assert [step for step, _ in writer.records if "validation/seen" in _] == [150] * num_runs + [300] * num_runs
  assert resumed.selected_steps == [300] * num_runs  # train.select='last'
  for expected, got in zip(jax.tree.leaves(uninterrupted.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.trains
@pytest.mark.parametrize("stacked", [False, True])
def test_best_validation_keeps_each_runs_best_evaluated_step_across_a_rerun(tmp_path, stacked):
  """Evaluations at steps 150 and 300 score run 0 best at 150 and run 1 best at 300: each run ends with the
  parameters of its checkpoint at that step, and a rerun of the finished phase restores the same choice."""
  make_program, config = digits_programs(stacked)
  config.train.checkpoint_every_steps = 150
  num_runs = 2 if stacked else 1
  scores = {150: [0.8, 0.5], 300: [0.6, 0.7]}  # per evaluated step, per run (higher is better)
  calls = []

  def evaluate(params):
    del params
    calls.append(1)
    step = 150 if len(calls) <= num_runs else 300
    return {"accuracy": scores[step][(len(calls) - 1) % num_runs]}

  train = lambda: loop.train(
      "student", make_program(), [loop.RunLog(f"run {i}", SigtermAt(), np.zeros(300)) for i in range(num_runs)],
      num_steps=300, checkpoint_dir=str(tmp_path / "student"), train_config=config.train, evaluate=evaluate,
      selection=loop.Selection("accuracy", higher_is_better=True))
  outcome = train()
  expected_steps = [150, 300][:num_runs]
  assert outcome.selected_steps == expected_steps
  assert sorted(os.listdir(tmp_path / "student_best")) == ["best-300" if stacked else "best-150", "best.json"]
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, make_program().state)
  with ocp.CheckpointManager(str(tmp_path / "student")) as manager:
    saved = {step: jax.device_get(manager.restore(step, args=ocp.args.StandardRestore(abstract)).params)
             for step in (150, 300)}
  for run, step in enumerate(expected_steps):
    kept = saved[step] if not stacked else jax.tree.map(lambda values, run=run: values[run], saved[step])
    for got, expected in zip(jax.tree.leaves(jax.device_get(outcome.params[run])), jax.tree.leaves(kept)):
      np.testing.assert_array_equal(got, expected)
  calls.clear()
  again = train()  # restored at its last step: nothing trained or evaluated, the kept choice read back
  assert again.selected_steps == expected_steps and again.stats["trained_steps"] == 0 and not calls
  for got, expected in zip(jax.tree.leaves(jax.device_get(again.params)),
                           jax.tree.leaves(jax.device_get(outcome.params))):
    np.testing.assert_array_equal(got, expected)
