"""Mixed precision, gradient accumulation and rematerialization: the train step computes what it computed without
them (8 forced CPU devices; the HF fixtures of tests/fixtures/hf and the tiny DistilBERTs of test_feature_losses)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax import models
from kd_jax.config import schema
from kd_jax.data import Examples
from kd_jax.models import hf
from kd_jax.models.hf.pretrained import RegistryModel
from kd_jax.parallel import sharding
from kd_jax.training import feature_losses, losses, steps
from kd_jax.training.objective import Objective
from tests.helpers import random_distilbert

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf"


@pytest.mark.parametrize("name, task", [("bert", "sequence_classification"),
                                        pytest.param("t5_v1_1", "seq2seq", marks=pytest.mark.slow)])
def test_bfloat16_compute_keeps_the_loss_within_1e_2_of_float32(name, task):
  """dtype='bfloat16' with float32 master parameters: the distillation loss (CE + T^2 KL at T = 2) of the fixture's
  logits is within 1e-2 relative of the float32 model's. Why 1e-2: bfloat16 keeps 8 significant bits (unit
  roundoff u = 2^-9 ~ 2e-3); the logits pass through some ten roundings in series (embeddings, per layer the
  projections, attention and feed-forward outputs, the norms' outputs, the head) with float32 accumulation inside
  each matmul, norm statistics and softmax, so they carry a few u (measured: 0.5% for BERT, 2.4% for T5 v1.1's
  logits), and the loss, computed from them in float32, moves by about as much: bound 5u. Measured: 5e-4 (BERT) and
  1e-3 (T5 v1.1); a loss computed in bfloat16 itself would add its own rounding on top (5e-3, test_losses)."""
  ref = dict(np.load(FIXTURES / name / "reference.npz"))
  keys = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")
  inputs = {key: ref[key] for key in keys if key in ref}
  model32, params32 = hf.from_pretrained(str(FIXTURES / name), task=task)
  model16, params16 = hf.from_pretrained(str(FIXTURES / name), task=task, dtype="bfloat16", param_dtype="float32")
  assert {leaf.dtype for leaf in jax.tree.leaves(params16)} == {jnp.dtype(jnp.float32)}
  logits32 = jax.jit(model32.apply)({"params": params32}, **inputs)
  logits16 = jax.jit(model16.apply)({"params": params16}, **inputs)
  assert logits16.dtype == jnp.bfloat16
  rng = np.random.default_rng(0)
  teacher = jnp.asarray(rng.normal(size=logits32.shape) * 2, jnp.float32)
  labels = jnp.asarray(rng.integers(0, logits32.shape[-1], size=logits32.shape[:-1]))
  weights = jnp.asarray(ref.get("decoder_attention_mask", np.ones(logits32.shape[:-1])), jnp.float32)
  loss = lambda logits: losses.distillation_loss(logits, teacher, labels, weights, temperature=2.0,
                                                 weights=losses.LossWeights(hard=0.5, soft=0.5))
  exact, mixed = loss(logits32), loss(logits16)
  for term in ("loss", "hard", "soft"):
    assert getattr(mixed, term).dtype == jnp.float32
    relative = abs(float(getattr(mixed, term)) - float(getattr(exact, term))) / float(getattr(exact, term))
    assert relative <= 1e-2, (term, relative)


def test_bfloat16_first_moments():
  """optim.moment_dtype='bfloat16' keeps AdamW's first moment in bfloat16 and its second moment in float32."""
  optim = schema.optim_config(learning_rate=1e-3, weight_decay=0.0, warmup_ratio=0.0)
  optim.moment_dtype = "bfloat16"
  adam = steps.make_optimizer(optim, 10).init({"kernel": jnp.ones((3, 4), jnp.float32)})[0]
  assert adam.mu["kernel"].dtype == jnp.bfloat16 and adam.nu["kernel"].dtype == jnp.float32


def _step_outputs(model, teacher_model, params, teacher_params, objective, batch, microbatches):
  """(gradients, metrics) of one compiled step over the 8 devices: the step of SGD at learning rate 1 moves the
  parameters by minus the gradients (AdamW's first step, g / (|g| + eps), would blow up the rounding noise of
  gradients that are 0 in exact arithmetic, such as those of the attention key biases)."""
  mesh = sharding.make_mesh()
  state = sharding.replicate(steps.TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(1.0)), mesh)
  step = steps.compile_step(mesh, model=model, teacher_model=teacher_model, microbatches=microbatches)
  new_state, metrics = step(state, sharding.replicate(teacher_params, mesh), sharding.replicate(objective, mesh),
                            sharding.replicate(jax.random.PRNGKey(3), mesh), sharding.shard_batch(batch, mesh))
  return jax.tree.map(lambda old, new: old - new, params, jax.device_get(new_state.params)), jax.device_get(metrics)


@pytest.mark.slow
@pytest.mark.multidevice
def test_remat_and_microbatches_keep_the_train_step():
  """A DistilBERT student (16 wide, 2 heads, dropout 0.1) distilled online from a 32-wide teacher with feature and
  attention terms, on 32 rows (4 per device) of uneven lengths, 30% unlabeled: remat per block with 4 micro-batches
  per device (one row each) gives the gradients and every logged term of the plain step. Each term has its own
  weights (labeled rows, every row, real tokens), each normalized over the global batch; dropout keys follow the
  example, so the masks are those of the plain step."""
  teacher_model, teacher_params = random_distilbert(32, 4, seed=0)
  model, params = random_distilbert(16, 2, seed=1)
  rng = np.random.default_rng(8)
  lengths = rng.integers(2, 9, size=32)
  mask = (np.arange(8)[None, :] < lengths[:, None]).astype(np.int32)
  inputs = {"input_ids": rng.integers(1, 50, size=(32, 8)).astype(np.int32) * mask, "attention_mask": mask}
  labels = np.where(rng.random(32) < 0.3, -1, rng.integers(0, 2, size=32)).astype(np.int32)
  batch = Examples(inputs=inputs, label=labels, index=np.arange(32, dtype=np.int32))
  example = jax.tree.map(lambda a: a[:1], inputs)
  teacher_layers = feature_losses.describe(teacher_model, teacher_params, example)
  student_layers = feature_losses.describe(model, params, example)
  config = schema.default_config()
  config.distill.update({"features": "uniform", "feature_weight": 1.0, "attention_weight": 0.5, "temperature": 2.0})
  objective = Objective.from_config(config, layers=feature_losses.ModelLayers(teacher_layers, student_layers,
                                                                              pool_tokens=False))
  projections = feature_losses.init_projections(objective.feature_loss.pairs, teacher_layers, student_layers,
                                                jax.random.PRNGKey(2))
  trained = jax.device_get(feature_losses.join_params(params, projections))
  run = lambda student, microbatches: _step_outputs(student, teacher_model, trained, teacher_params, objective, batch,
                                                    microbatches)
  plain_grads, plain_metrics = run(model, 1)
  assert set(plain_metrics) >= {"loss", "hard_loss", "soft_loss", "feature_loss", "attention_loss", "grad_norm"}
  grads, metrics = run(models.with_remat(model, "block"), 4)
  for name, value in plain_metrics.items():
    # soft_loss is ~1e-5 (a 16-wide random student distilled at T=2 from a 32-wide random one): float32 rounding of
    # the loss's O(1) sums shows up there as ~1e-8 absolute (7.4e-9 seen on an Intel Xeon), so an absolute floor.
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), grads, plain_grads)


@pytest.mark.slow
def test_remat_of_t5_blocks_keeps_the_gradients():
  """with_remat clones an HF module with a jax.checkpoint policy (T5 here: its blocks take keyword arguments and a
  static train flag; the encoder layers are covered by the train step above): the same parameters give the same loss and
  gradients, dropout on (the recomputed blocks redraw the same masks)."""
  ref = dict(np.load(FIXTURES / "t5" / "reference.npz"))
  inputs = {key: jnp.asarray(ref[key]) for key in ("input_ids", "attention_mask", "decoder_input_ids")}
  module, params = hf.from_pretrained(str(FIXTURES / "t5"), task="seq2seq")
  model = RegistryModel(module)
  rematerialized = models.with_remat(model, "dots_saveable")
  assert rematerialized.module.remat == "dots_saveable" and model.module.remat == "none"
  loss = lambda model, params: jnp.sum(jnp.square(model.apply(
      {"params": params}, inputs, train=True, rngs={"dropout": jax.random.key(0)})))
  value, grads = jax.jit(jax.value_and_grad(lambda p: loss(model, p)))(params)
  remat_value, remat_grads = jax.jit(jax.value_and_grad(lambda p: loss(rematerialized, p)))(params)
  np.testing.assert_allclose(remat_value, value, rtol=1e-6)
  # Per parameter, relative to its gradient's norm (elements near 0 differ by the rounding of large terms).
  jax.tree.map(lambda a, b: np.testing.assert_array_less(np.linalg.norm(a - b), 1e-5 * np.linalg.norm(b) + 1e-9),
               remat_grads, grads)


def test_micro_batch_shares_add_up_to_the_whole_batch_loss():
  """losses.distillation_loss per micro-batch with the whole batch's term weights (weight_sums): the 4 shares add up
  to the loss of the whole batch, per token with padding and micro-batches without a labeled token; the mean of
  per-micro-batch means (TRL PR #6006's bug) does not."""
  rng = np.random.default_rng(0)
  logits, teacher = (jnp.asarray(rng.normal(size=(8, 6, 5)) * 3, jnp.float32) for _ in range(2))
  labels = np.where(rng.random((8, 6)) < 0.5, -1, rng.integers(0, 5, size=(8, 6)))
  labels[:2] = -1  # the first micro-batch has no labeled token
  weights = (np.arange(6)[None, :] < rng.integers(1, 7, size=8)[:, None]).astype(np.float32)
  loss = lambda rows, sums=None: losses.distillation_loss(
      logits[rows], teacher[rows], labels[rows], weights[rows], weights=losses.LossWeights(hard=0.3, soft=0.7),
      temperature=2.0, weight_sums=sums)
  whole = loss(slice(0, 8))
  sums = losses.term_weight_sums(labels, weights)
  parts = [loss(slice(2 * m, 2 * m + 2), sums) for m in range(4)]
  for term in ("loss", "hard", "soft"):
    np.testing.assert_allclose(sum(getattr(part, term) for part in parts), getattr(whole, term), rtol=1e-6)
  mean_of_means = np.mean([loss(slice(2 * m, 2 * m + 2)).loss for m in range(4)])
  assert abs(mean_of_means - whole.loss) > 1e-2
