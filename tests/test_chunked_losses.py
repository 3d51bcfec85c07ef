"""Chunked losses (config.distill.loss_chunk, kd_jax/training/chunked.py) equal the unchunked ones: the loss and its
gradients (w.r.t. the student's hidden states and LM head) for every divergence, against dense, top-k, ensemble and
online (hidden-state) teachers, with a chunk that does not divide the length, padding and unlabeled positions; the
models' LM heads project their hidden states to their own logits; the chunked loss does not depend on how the
batch is split over devices; the train step with chunks equals the step without, and is a pure function of its
inputs (what exact resume rests on)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from jax.sharding import PartitionSpec as P

from kd_jax.data import Examples
from kd_jax.models.hf import gpt2, layers, llama, pretrained, t5
from kd_jax.parallel import sharding
from kd_jax.training import chunked, losses, steps
from kd_jax.training.objective import Objective
from tests.helpers import load_config

BATCH, LENGTH, HIDDEN, VOCAB, CHUNK = 2, 7, 6, 13, 3  # 3 does not divide 7: the last chunk is padded


def loss_inputs(seed: int = 0):
  """Student and teacher hidden states and heads, every teacher target kind, labels with unlabeled (-1) positions,
  weights with a padded tail."""
  rng = np.random.default_rng(seed)
  f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  student_hidden, student_kernel = f32(BATCH, LENGTH, HIDDEN), f32(HIDDEN, VOCAB)
  teacher_hidden, teacher_kernel = f32(BATCH, LENGTH, HIDDEN + 2), f32(HIDDEN + 2, VOCAB) * 2
  teacher_logits = teacher_hidden @ teacher_kernel
  top_values, top_indices = jax.lax.top_k(teacher_logits, 4)
  outside = jnp.put_along_axis(teacher_logits, top_indices, -jnp.inf, axis=-1, inplace=False)
  tail = jax.nn.logsumexp(outside, axis=-1)
  labels = jnp.asarray(rng.integers(-1, VOCAB, (BATCH, LENGTH)), jnp.int32)
  weights = jnp.ones((BATCH, LENGTH), jnp.float32).at[1, 5:].set(0.0)
  teachers = {
      "online": chunked.Projected(teacher_hidden, layers.OutputHead(teacher_kernel)),
      "dense": teacher_logits,
      "topk": losses.TopKLogits(top_values, top_indices, tail),
      # The exact tail at T = 2 (losses_and_gradients' T): [batch, length, 1].
      "topk_exact": losses.TopKLogits(top_values, top_indices, jax.nn.logsumexp(outside / 2.0, axis=-1)[..., None]),
      "ensemble": losses.EnsembleLogits(jnp.stack([teacher_logits, f32(BATCH, LENGTH, VOCAB)], axis=-2)),
  }
  return student_hidden, student_kernel, teachers, labels, weights


def unchunked(teacher):
  """The teacher as the unchunked loss takes it: an online teacher's logits formed whole."""
  if isinstance(teacher, chunked.Projected):
    return teacher.head(teacher.hidden)
  return teacher


@functools.partial(jax.jit, static_argnames=("cases", "chunk"))
def losses_and_gradients(student_hidden, student_kernel, teachers, labels, weights, *, cases, chunk):
  """{(teacher kind, divergence): (loss, d loss / d (hidden, kernel))} of 0.3 CE_0.1 + 0.7 T^2 D at T = 2 against
  teachers[teacher kind], one compiled program for all `cases`; chunk None: unchunked logits."""

  def loss(hidden, kernel, teacher, kind, tail_temperatures):
    head = layers.OutputHead(kernel)
    student = head(hidden) if chunk is None else chunked.Projected(hidden, head)
    target = unchunked(teacher) if chunk is None else teacher
    return losses.distillation_loss(
        student, target, labels, weights, weights=losses.LossWeights(0.3, 0.7), temperature=2.0,
        label_smoothing=0.1, divergence_kind=kind, divergence_params=losses.DivergenceParams(0.3, 0.2, 0.6),
        loss_chunk=chunk or 0, tail_temperatures=tail_temperatures).loss

  return {case: jax.value_and_grad(loss, argnums=(0, 1))(student_hidden, student_kernel, teachers[case[0]], case[1],
                                                         (2.0,) if case[0] == "topk_exact" else ())
          for case in cases}


def assert_chunked_equals_unchunked(cases, chunk=CHUNK):
  student_hidden, student_kernel, teachers, labels, weights = loss_inputs()
  arguments = (student_hidden, student_kernel, teachers, labels, weights)
  expected = losses_and_gradients(*arguments, cases=cases, chunk=None)
  got = losses_and_gradients(*arguments, cases=cases, chunk=chunk)
  for case in cases:
    for value, reference in zip(jax.tree.leaves(got[case]), jax.tree.leaves(expected[case])):
      assert np.all(np.isfinite(np.asarray(value))), case
      np.testing.assert_allclose(value, reference, rtol=2e-5, atol=2e-6, err_msg=str(case))
    # The padded tail of row 1 gets no gradient.
    np.testing.assert_array_equal(got[case][1][0][1, 5:], 0.0)


@pytest.mark.slow
def test_chunked_equals_unchunked_for_every_divergence_with_an_online_teacher():
  assert_chunked_equals_unchunked(tuple(("online", kind) for kind in losses.DIVERGENCES))


@pytest.mark.slow
def test_chunked_equals_unchunked_with_cached_dense_topk_and_ensemble_targets():
  assert_chunked_equals_unchunked((("dense", "forward_kl"), ("dense", "akl"), ("dense", "mse"),
                                   ("topk", "forward_kl"), ("topk", "generalized_js"), ("topk", "mse"),
                                   ("topk_exact", "forward_kl"), ("topk_exact", "js"),
                                   ("ensemble", "forward_kl"), ("ensemble", "skew_reverse_kl")))


@pytest.mark.parametrize("chunk", [1, 100])
def test_any_chunk_size_gives_the_same_loss(chunk):
  """One position per chunk, and more than the length (one chunk)."""
  assert_chunked_equals_unchunked((("online", "js"),), chunk)


def test_without_a_teacher_only_the_cross_entropy_is_chunked():
  student_hidden, student_kernel, _, labels, weights = loss_inputs()
  head = layers.OutputHead(student_kernel)
  kwargs = dict(weights=losses.LossWeights(1.0, 0.0), temperature=1.0)
  got = losses.distillation_loss(chunked.Projected(student_hidden, head), None, labels, weights, loss_chunk=2,
                                 **kwargs)
  expected = losses.distillation_loss(head(student_hidden), None, labels, weights, **kwargs)
  np.testing.assert_allclose(got.loss, expected.loss, rtol=1e-6)
  assert float(got.soft) == 0.0


def tiny_llama(tied: bool, num_layers: int = 1, hidden: int = 16):
  config = transformers.LlamaConfig(vocab_size=VOCAB * 3, hidden_size=hidden, intermediate_size=24,
                                    num_hidden_layers=num_layers, num_attention_heads=2, num_key_value_heads=1,
                                    max_position_embeddings=32, tie_word_embeddings=tied)
  return llama.build(config, checkpoint="tiny", task="causal_lm", num_labels=None, dtype=jnp.float32,
                     param_dtype=jnp.float32)


def tiny_models():
  """Architectures of every family with an LM head: Llama (tied; the step test's teacher is untied), GPT-2 (tied),
  T5 tied and untied."""
  gpt2_config = transformers.GPT2Config(vocab_size=VOCAB * 3, n_embd=16, n_layer=1, n_head=2, n_positions=32)
  t5_config = lambda tied: transformers.T5Config(vocab_size=VOCAB * 3, d_model=16, d_kv=8, d_ff=24, num_layers=1,
                                                 num_decoder_layers=1, num_heads=2, tie_word_embeddings=tied)
  build = lambda family, config, task: family.build(config, checkpoint="tiny", task=task, num_labels=None,
                                                    dtype=jnp.float32, param_dtype=jnp.float32)
  return {"llama_tied": tiny_llama(True), "gpt2": build(gpt2, gpt2_config, "causal_lm"),
          "t5_tied": build(t5, t5_config(True), "seq2seq"), "t5": build(t5, t5_config(False), "seq2seq")}


@pytest.mark.slow
def test_each_models_head_projects_its_hidden_states_to_its_logits():
  rng = np.random.default_rng(1)
  ids = jnp.asarray(rng.integers(0, VOCAB * 3, (BATCH, LENGTH)), jnp.int32)
  for name, architecture in tiny_models().items():
    inputs = {key: ids for key in architecture.example_inputs}
    model = pretrained.RegistryModel(architecture.module)
    shapes = jax.eval_shape(architecture.module.init, jax.random.PRNGKey(0), **inputs)["params"]
    params = jax.tree.map(lambda shape: jnp.asarray(rng.normal(size=shape.shape) * 0.3, jnp.float32), shapes)
    logits = model.apply({"params": params}, inputs)
    hidden = model.apply({"params": params}, inputs, project=False)
    assert hidden.shape == (BATCH, LENGTH, 16), name
    np.testing.assert_allclose(model.output_head(params)(hidden), logits, rtol=1e-5, atol=1e-5, err_msg=name)


def causal_lm_step_inputs():
  """A tiny Llama student (tied) and teacher (untied, wider), their state and params, and a batch of 2 rows x 7
  tokens, the second padded."""
  student, teacher = tiny_llama(True), tiny_llama(False, num_layers=2, hidden=24)
  rng = np.random.default_rng(2)
  ids = rng.integers(0, VOCAB * 3, (BATCH, LENGTH)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 5:] = 0
  label = np.where(mask[:, 1:] > 0, ids[:, 1:], -1)
  label = np.concatenate([label, np.full((BATCH, 1), -1, np.int32)], axis=1)
  label[:, :2] = -1  # a prompt
  batch = Examples(inputs={"input_ids": ids, "attention_mask": mask}, label=label,
                   index=np.arange(BATCH, dtype=np.int32), token_weights=(label >= 0).astype(np.float32))
  example = {"input_ids": jnp.asarray(ids[:1])}
  student_params = student.module.init(jax.random.PRNGKey(0), **example)["params"]
  teacher_params = teacher.module.init(jax.random.PRNGKey(1), **example)["params"]
  return (pretrained.RegistryModel(student.module), student_params, pretrained.RegistryModel(teacher.module),
          teacher_params, batch)


def objective_of(loss_chunk: int, divergence: str = "generalized_js"):
  config = load_config("configs/default.py")
  config.distill.loss_chunk, config.distill.divergence, config.distill.temperature = loss_chunk, divergence, 2.0
  return Objective.from_config(config)


@pytest.mark.slow
def test_the_train_step_with_chunks_equals_the_step_without_and_is_a_pure_function():
  """One step of a tiny Llama student with a tiny Llama teacher online: chunks of 3 over 7 tokens give the
  parameters and metrics of the unchunked step within float32 rounding; a second step from a host copy of the state
  (what a restored checkpoint is) equals the same step run on, bitwise (exact resume)."""
  model, params, teacher_model, teacher_params, batch = causal_lm_step_inputs()
  mesh = sharding.make_mesh(1)
  optim = load_config("configs/default.py").optim
  step = steps.compile_step(mesh, model=model, teacher_model=teacher_model)
  rng = jax.random.PRNGKey(3)
  fresh = lambda: sharding.place_params(steps.create_train_state(model, jax.device_get(params), optim, 10), mesh)
  results = {}
  for chunk in (0, CHUNK):
    objective = objective_of(chunk)
    results[chunk] = step(fresh(), teacher_params, objective, rng, batch)
  (plain_state, plain_metrics), (chunked_state, chunked_metrics) = results[0], results[CHUNK]
  for key in ("loss", "hard_loss", "soft_loss", "grad_norm"):
    np.testing.assert_allclose(chunked_metrics[key], plain_metrics[key], rtol=1e-5, err_msg=key)
  for got, expected in zip(jax.tree.leaves(chunked_state.params), jax.tree.leaves(plain_state.params)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  objective = objective_of(CHUNK)
  restored = sharding.place_params(jax.device_get(chunked_state), mesh)
  on, _ = step(chunked_state, teacher_params, objective, rng, batch)
  again, _ = step(restored, teacher_params, objective, rng, batch)
  for got, expected in zip(jax.tree.leaves(again.params), jax.tree.leaves(on.params)):
    np.testing.assert_array_equal(got, expected)


@pytest.mark.multidevice
def test_the_chunked_loss_does_not_depend_on_how_the_batch_is_split():
  """16 rows over 8 devices (unevenly padded: per-device means would differ), chunks of 3 over 7 positions, against
  an online teacher: the pmean of the devices' shares equals the unchunked loss of the whole batch on one."""
  rng = np.random.default_rng(4)
  batch = 16
  f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  hidden, kernel, teacher_hidden, teacher_kernel = (f32(batch, LENGTH, HIDDEN), f32(HIDDEN, VOCAB),
                                                    f32(batch, LENGTH, HIDDEN), f32(HIDDEN, VOCAB))
  labels = jnp.asarray(rng.integers(-1, VOCAB, (batch, LENGTH)), jnp.int32)
  weights = (jnp.arange(LENGTH)[None, :] < jnp.where(jnp.arange(batch) < 8, 1, LENGTH)[:, None]).astype(jnp.float32)
  settings = dict(weights=losses.LossWeights(0.4, 0.6), temperature=2.0, divergence_kind="js")

  def chunked_loss(hidden, kernel, teacher_hidden, teacher_kernel, labels, weights):
    student = chunked.Projected(hidden, layers.OutputHead(kernel))
    teacher = chunked.Projected(teacher_hidden, layers.OutputHead(teacher_kernel))
    loss = losses.distillation_loss(student, teacher, labels, weights, axis_name=sharding.DATA_AXIS, loss_chunk=CHUNK,
                                    **settings).loss
    return jax.lax.pmean(loss, sharding.DATA_AXIS)

  mesh = sharding.make_mesh()
  data, replicated = P(sharding.DATA_AXIS), P()
  sharded = jax.jit(jax.shard_map(chunked_loss, mesh=mesh, in_specs=(data, replicated, data, replicated, data, data),
                                  out_specs=replicated))(hidden, kernel, teacher_hidden, teacher_kernel, labels,
                                                         weights)
  whole = losses.distillation_loss(hidden @ kernel, teacher_hidden @ teacher_kernel, labels, weights, **settings).loss
  np.testing.assert_allclose(sharded, whole, rtol=1e-5)
