"""Fused training chunks: many steps per call give the steps of one call per step, and chunks end where they must."""

import jax
import numpy as np
import pytest

from kd_jax import data, fused, models, sharding, teacher_cache, train
from kd_jax.data import pipeline
from tests.conftest import load_config


@pytest.mark.parametrize("step, boundary_every, expected", [
    (0, (50, 200, 200), 50),  # the first log step
    (190, (50, 200, 200), 10),  # eval and checkpoint at 200
    (370, (50, 200, 200), 20),  # the end (390)
    (0, (500, 500, 500), 100)])  # no boundary before max_steps
def test_chunks_end_at_log_eval_checkpoint_steps_and_the_end(step, boundary_every, expected):
  assert fused.chunk_length(step, 390, boundary_every, 100, None) == expected


def test_chunks_are_cut_to_about_a_second():
  assert fused.chunk_length(0, 1000, (500,), 100, seconds_per_step=0.25) == 4
  assert fused.chunk_length(0, 1000, (500,), 100, seconds_per_step=10.0) == 1
  assert fused.chunk_length(0, 1000, (500,), 100, seconds_per_step=1e-6) == 100


@pytest.mark.parametrize("device_resident", [True, False])
def test_a_chunk_equals_single_steps(device_resident):
  """Seven steps as one padded chunk (max 10) give the state and metrics of seven one-step calls (8 devices)."""
  config = load_config()
  task = data.load_task(config)
  logits = np.random.default_rng(0).normal(size=(len(task.train["index"]), task.num_classes)).astype(np.float32)
  cache = teacher_cache.TeacherLogitCache(index=task.train["index"], logits=logits, metadata={})
  examples = teacher_cache.join(task.train, cache)
  mesh = sharding.make_mesh()
  model, params = models.create(config.student, num_classes=task.num_classes, example_inputs=task.train["inputs"][:1],
                                rng=jax.random.PRNGKey(0))
  params = jax.device_get(params)
  hyperparams = sharding.replicate(train.loss_hyperparams(config.distill), mesh)
  rng = sharding.replicate(jax.random.PRNGKey(3), mesh)
  kwargs = dict(model=model, teacher_model=None, teacher_mode="cached", distill_config=config.distill)

  single = train.compile_train_step(mesh, **kwargs)
  state = sharding.replicate(train.create_train_state(model, params, config.optim, 100), mesh)
  batches = pipeline.train_batches(examples, batch_size=32, seed=5, start_step=2)
  single_metrics = []
  for _ in range(7):
    state, step_metrics = single(state, None, hyperparams, rng, sharding.shard_batch(next(batches), mesh))
    single_metrics.append(jax.device_get(step_metrics))

  # Single steps take tf.data's batches; the chunk takes the same batches' rows on the device or tf.data's again.
  feeder = fused.ChunkFeeder(examples, batch_size=32, seed=5, start_step=2, max_steps=10, mesh=mesh,
                             device_data_max_bytes=(1 << 40) if device_resident else 0)
  assert feeder.device_resident == device_resident
  chunk = train.compile_train_chunk(mesh, **kwargs, device_resident=device_resident)
  chunk_state = sharding.replicate(train.create_train_state(model, params, config.optim, 100), mesh)
  chunk_state, stacked = chunk(chunk_state, None, hyperparams, rng, np.int32(7), *feeder.next(7))

  assert int(chunk_state.step) == int(state.step) == 7
  for single_leaf, chunk_leaf in zip(jax.tree.leaves(jax.device_get(state)),
                                     jax.tree.leaves(jax.device_get(chunk_state))):
    np.testing.assert_allclose(chunk_leaf, single_leaf, rtol=1e-6, atol=1e-7)
  chunk_metrics = fused.unstack_metrics(jax.device_get(stacked), 7)
  for expected, got in zip(single_metrics, chunk_metrics):
    for name in expected:
      np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, err_msg=name)
  assert np.all(jax.device_get(stacked)["loss"][7:] == 0)
