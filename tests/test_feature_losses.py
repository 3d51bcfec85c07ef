"""Feature distillation: the distances and attention KL against NumPy (float64) values and gradients, the layer maps,
the models' sown intermediates, and the train step with a projection between different widths."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from kd_jax import preflight
from kd_jax.config import schema
from kd_jax.data import Examples
from kd_jax.errors import ConfigError
from kd_jax.models import hf, mlp
from kd_jax.models.hf import layers
from kd_jax.parallel import sharding
from kd_jax.sweeps import expansion
from kd_jax.training import feature_losses, steps
from kd_jax.training.objective import Objective
from tests.helpers import load_config, random_distilbert, run_main

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf"


def np_hidden_loss(s, t, kind):
  if kind == "mse":
    return ((s - t) ** 2).mean(-1)
  norms = ((s * s).sum(-1) + 1e-12) * ((t * t).sum(-1) + 1e-12)
  return 1.0 - (s * t).sum(-1) / np.sqrt(norms)


def np_softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def np_attention_kl(student_logits, teacher_logits):
  """mean_h KL(p_t,h || p_s,h) per query, or KL of the head means when the head counts differ; 0 log 0 = 0."""
  ps, pt = np_softmax(student_logits), np_softmax(teacher_logits)
  heads_differ = ps.shape[-3] != pt.shape[-3]
  if heads_differ:
    ps, pt = ps.mean(-3), pt.mean(-3)
  real = pt > 0
  kl = (pt * (np.log(np.where(real, pt, 1)) - np.log(np.where(real, ps, 1)))).sum(-1)
  return kl if heads_differ else kl.mean(-2)


@pytest.mark.parametrize("kind", feature_losses.FEATURE_LOSSES)
def test_hidden_state_loss_matches_numpy(kind):
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(5, 7, 16)) * 3, rng.normal(size=(5, 7, 16))
  s[0, 0] = 0.0  # cosine of a zero vector: 0 (torch's eps), not NaN
  got = feature_losses.hidden_state_loss(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), kind)
  np.testing.assert_allclose(got, np_hidden_loss(s, t, kind), rtol=1e-5, atol=1e-6)
  if kind == "cosine":
    assert float(got[0, 0]) == pytest.approx(1.0)
    np.testing.assert_allclose(feature_losses.hidden_state_loss(jnp.asarray(t), jnp.asarray(2 * t), kind), 0.0,
                               atol=1e-6)


@pytest.mark.parametrize("student_heads", [4, 2])
def test_attention_kl_matches_numpy_with_masked_keys(student_heads):
  rng = np.random.default_rng(1)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
  bias = np.asarray(layers.padding_bias(jnp.asarray(mask)))  # [2, 1, 1, 5]: the models' own masking
  student = rng.normal(size=(2, student_heads, 5, 5)) * 4 + bias
  teacher = rng.normal(size=(2, 4, 5, 5)) * 4 + bias
  got = feature_losses.attention_kl(jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32))
  assert got.shape == (2, 5) and np.all(np.isfinite(got))
  # The reference drops the masked keys altogether.
  expected = np.stack([np_attention_kl(student[b][..., mask[b] > 0], teacher[b][..., mask[b] > 0]) for b in range(2)])
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def _np_feature_terms(student_hidden, teacher_hidden, student_att, teacher_att, kernel, bias, mask, weights, kind):
  """The FeatureLoss terms for pairs ((1, 1), (2, 2)) with a projection on pair (2, 2), per real token."""
  token_weights = weights[:, None] * mask
  feature = 0.0
  for layer in (1, 2):
    s = student_hidden[layer] @ kernel + bias if layer == 2 else student_hidden[layer]
    feature += (np_hidden_loss(s, teacher_hidden[layer], kind) * token_weights).sum() / token_weights.sum()
  attention = sum((np_attention_kl(student_att[l], teacher_att[l]) * token_weights).sum() / token_weights.sum()
                  for l in (0, 1))
  return feature, attention


def _feature_inputs(seed=2):
  """Random intermediates of a 2-layer student and teacher on 4 examples of 6 tokens (3 real in the first two)."""
  rng = np.random.default_rng(seed)
  mask = np.ones((4, 6))
  mask[:2, 3:] = 0
  bias = np.asarray(layers.padding_bias(jnp.asarray(mask)))
  width = {0: 8, 1: 8, 2: 5}  # the student's last layer is narrower: projected
  student_hidden = [rng.normal(size=(4, 6, width[l])) for l in range(3)]
  teacher_hidden = [rng.normal(size=(4, 6, 8)) for _ in range(3)]
  student_att = [rng.normal(size=(4, 2, 6, 6)) * 2 + bias for _ in range(2)]
  teacher_att = [rng.normal(size=(4, 2, 6, 6)) * 2 + bias for _ in range(2)]
  kernel, proj_bias = rng.normal(size=(5, 8)) * 0.5, rng.normal(size=8) * 0.1
  weights = np.array([1.0, 1.0, 0.0, 1.0])  # the third example is not counted
  return student_hidden, teacher_hidden, student_att, teacher_att, kernel, proj_bias, mask, weights


def _feature_loss(kind, **fields):
  return feature_losses.FeatureLoss(feature_weight=jnp.float32(0.5), attention_weight=jnp.float32(2.0),
                                    pairs=((1, 1), (2, 2)), kind=kind, **fields)


def _jax_terms(loss, student_hidden, teacher_hidden, student_att, teacher_att, kernel, proj_bias, mask, weights,
               axis_name=None):
  f32 = lambda values: tuple(jnp.asarray(v, jnp.float32) for v in values)
  student = feature_losses.Intermediates(f32(student_hidden), f32(student_att))
  teacher = feature_losses.Intermediates(f32(teacher_hidden), f32(teacher_att))
  projections = {feature_losses.projection_name(2, 2): {"kernel": jnp.asarray(kernel, jnp.float32),
                                                       "bias": jnp.asarray(proj_bias, jnp.float32)}}
  return loss(student, teacher, projections, student_mask=jnp.asarray(mask), teacher_mask=jnp.asarray(mask),
              example_weights=jnp.asarray(weights, jnp.float32), axis_name=axis_name)


@pytest.mark.parametrize("kind", feature_losses.FEATURE_LOSSES)
def test_feature_loss_values_match_numpy_and_ignore_padding(kind):
  inputs = _feature_inputs()
  total, terms = _jax_terms(_feature_loss(kind), *inputs)
  feature, attention = _np_feature_terms(*inputs, kind)
  np.testing.assert_allclose(terms["feature_loss"], feature, rtol=1e-5)
  np.testing.assert_allclose(terms["attention_loss"], attention, rtol=1e-4)
  np.testing.assert_allclose(total, 0.5 * feature + 2.0 * attention, rtol=1e-4)
  # Padded tokens and uncounted examples may hold anything.
  student_hidden, teacher_hidden, *rest = inputs
  noisy = [h.copy() for h in student_hidden]
  for h in noisy:
    h[:2, 3:] += 100.0
    h[2] -= 50.0
  _, noisy_terms = _jax_terms(_feature_loss(kind), noisy, teacher_hidden, *rest)
  np.testing.assert_allclose(noisy_terms["feature_loss"], terms["feature_loss"], rtol=1e-6)


@pytest.mark.parametrize("kind", feature_losses.FEATURE_LOSSES)
def test_feature_loss_gradients_match_numpy_finite_differences(kind):
  """d total / d (student hidden state, projection kernel, student attention logits): JAX (float32) against central
  differences of the float64 NumPy reference."""
  inputs = _feature_inputs(seed=3)
  student_hidden, teacher_hidden, student_att, teacher_att, kernel, proj_bias, mask, weights = inputs

  def np_total(sh2, k, sa1):
    hidden = [student_hidden[0], student_hidden[1], sh2]
    att = [student_att[0], sa1]
    feature, attention = _np_feature_terms(hidden, teacher_hidden, att, teacher_att, k, proj_bias, mask, weights, kind)
    return 0.5 * feature + 2.0 * attention

  def jax_total(sh2, k, sa1):
    f32 = lambda values: tuple(jnp.asarray(v, jnp.float32) for v in values)
    student = feature_losses.Intermediates(f32(student_hidden[:2]) + (sh2,), f32(student_att[:1]) + (sa1,))
    teacher = feature_losses.Intermediates(f32(teacher_hidden), f32(teacher_att))
    projections = {"teacher2_student2": {"kernel": k, "bias": jnp.asarray(proj_bias, jnp.float32)}}
    return _feature_loss(kind)(student, teacher, projections, student_mask=jnp.asarray(mask),
                               teacher_mask=jnp.asarray(mask), example_weights=jnp.asarray(weights))[0]

  args = (student_hidden[2], kernel, student_att[1])
  grads = jax.grad(jax_total, argnums=(0, 1, 2))(*(jnp.asarray(a, jnp.float32) for a in args))
  rng = np.random.default_rng(4)
  for position, grad in enumerate(grads):
    for _ in range(6):  # random coordinates, some of them on real tokens
      index = tuple(rng.integers(0, n) for n in args[position].shape)
      if position == 0:
        index = (3,) + index[1:]  # a counted example: its gradient is not 0
      shifted = [np.array(a, np.float64) for a in args]
      eps = 1e-6
      shifted[position][index] += eps
      up = np_total(*shifted)
      shifted[position][index] -= 2 * eps
      down = np_total(*shifted)
      np.testing.assert_allclose(grad[index], (up - down) / (2 * eps), rtol=2e-3, atol=1e-6)
  # Uncounted example and padded positions get no gradient.
  assert float(jnp.abs(grads[0][2]).max()) == 0.0 and float(jnp.abs(grads[0][:2, 3:]).max()) == 0.0


@pytest.mark.multidevice
def test_feature_loss_is_a_global_mean_over_devices():
  """8 devices with 2 examples each (some holding no real tokens) give the single-device value."""
  rng = np.random.default_rng(5)
  mask = (rng.random((16, 6)) < 0.6).astype(np.float64)
  mask[:, 0] = 1
  mask[4:6] = 0  # a device with nothing to count
  inputs = [[rng.normal(size=(16, 6, 8)) for _ in range(3)], [rng.normal(size=(16, 6, 8)) for _ in range(3)],
            [rng.normal(size=(16, 2, 6, 6)) for _ in range(2)], [rng.normal(size=(16, 2, 6, 6)) for _ in range(2)]]
  loss = _feature_loss("mse")
  weights = np.ones(16)

  def total(student_hidden, teacher_hidden, student_att, teacher_att, mask, weights, axis_name=None):
    student = feature_losses.Intermediates(tuple(student_hidden), tuple(student_att))
    teacher = feature_losses.Intermediates(tuple(teacher_hidden), tuple(teacher_att))
    return loss(student, teacher, {}, student_mask=mask, teacher_mask=mask, example_weights=weights,
                axis_name=axis_name)[0]

  args = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), (*inputs, mask, weights))
  mesh = sharding.make_mesh()
  sharded = jax.jit(jax.shard_map(
      lambda *a: jax.lax.pmean(total(*a, axis_name=sharding.DATA_AXIS), sharding.DATA_AXIS), mesh=mesh,
      in_specs=P(sharding.DATA_AXIS), out_specs=P()))(*args)
  np.testing.assert_allclose(sharded, total(*args), rtol=1e-5)


def test_pooled_positions_compare_mean_hidden_states():
  """When tokenizations differ, each model's hidden state is averaged over its own real tokens."""
  rng = np.random.default_rng(6)
  student_mask, teacher_mask = np.array([[1, 1, 0], [1, 1, 1]]), np.array([[1, 1, 1, 1], [1, 0, 0, 0]])
  student = [rng.normal(size=(2, 3, 4)) for _ in range(2)]
  teacher = [rng.normal(size=(2, 4, 4)) for _ in range(2)]
  loss = feature_losses.FeatureLoss(feature_weight=jnp.float32(1.0), attention_weight=jnp.float32(0.0),
                                    pairs=((1, 1),), kind="cosine", pool_tokens=True)
  f32 = lambda values: tuple(jnp.asarray(v, jnp.float32) for v in values)
  _, terms = loss(feature_losses.Intermediates(f32(student), ()), feature_losses.Intermediates(f32(teacher), ()), {},
                  student_mask=jnp.asarray(student_mask), teacher_mask=jnp.asarray(teacher_mask),
                  example_weights=jnp.ones(2))
  pool = lambda h, m: (h * m[..., None]).sum(1) / m.sum(1, keepdims=True)
  expected = np_hidden_loss(pool(student[1], student_mask), pool(teacher[1], teacher_mask), "cosine").mean()
  np.testing.assert_allclose(terms["feature_loss"], expected, rtol=1e-5)
  assert "attention_loss" not in terms


def test_layer_maps():
  assert feature_losses.resolve_layer_map("uniform", 4, 2) == ((2, 1), (4, 2))
  assert feature_losses.resolve_layer_map("uniform", 6, 4) == ((1, 1), (3, 2), (4, 3), (6, 4))
  assert feature_losses.resolve_layer_map("uniform", 2, 1) == ((2, 1),)
  assert feature_losses.resolve_layer_map(((0, 0), (2, 1), (4, 2)), 4, 2) == ((0, 0), (2, 1), (4, 2))
  with pytest.raises(ConfigError, match=r"^config.distill.features=\(\(0, 0\), \(5, 1\)\): teacher layer 5 does not "
                                        r"exist: the teacher has hidden states 0..4"):
    feature_losses.resolve_layer_map(((0, 0), (5, 1)), 4, 2)
  with pytest.raises(ConfigError, match=r"student layer 3 does not exist"):
    feature_losses.resolve_layer_map(((4, 3),), 4, 2)
  with pytest.raises(ConfigError, match=r"has 4 pairs but the student has 3 hidden states"):
    feature_losses.resolve_layer_map(((0, 0), (1, 1), (2, 2), (3, 2)), 4, 2)
  for bad in ("all", (), ((1, -1),), ((1, 1), (1, 1)), ((1, 1, 1),), ((1.0, 1),)):
    with pytest.raises(ConfigError, match=r"allowed: None \(off\), 'uniform', or a tuple of distinct"):
      schema.layer_map("distill.features", bad)
  with pytest.raises(ConfigError, match=r"both need at least one"):
    feature_losses.resolve_layer_map("uniform", 2, 0)


def test_decoder_pairs_add_the_decoder_stacks_terms_over_its_target_positions():
  """An encoder-decoder model's maps (distill.features on the encoder, decoder_features on the decoder): the terms
  are the NumPy terms of each stack, the decoder's over the target positions (the task's target weights, which also
  weigh each example in the encoder's) with its own projection, summed; split
  into two micro-batches normalized by the whole batch's per-stack weights (steps._accumulate) they add up to it."""
  encoder, decoder = _feature_inputs(seed=2), list(_feature_inputs(seed=3))
  decoder[6] = (np.arange(6)[None, :] < np.array([[2], [6], [4], [5]])).astype(np.float64)  # the target positions
  f32 = lambda values: tuple(jnp.asarray(v, jnp.float32) for v in values)
  stacks = [feature_losses.Intermediates(f32(inputs[i]), f32(inputs[i + 2])) for inputs in (encoder, decoder)
            for i in (0, 1)]
  student = stacks[0]._replace(decoder=stacks[2])
  teacher = stacks[1]._replace(decoder=stacks[3])
  projections = {feature_losses.projection_name(2, 2, name): {"kernel": jnp.asarray(inputs[4], jnp.float32),
                                                               "bias": jnp.asarray(inputs[5], jnp.float32)}
                 for name, inputs in (("", encoder), (feature_losses.DECODER, decoder))}
  assert set(projections) == {"teacher2_student2", "decoder_teacher2_student2"}
  loss = _feature_loss("mse", decoder_pairs=((1, 1), (2, 2)))
  mask = jnp.asarray(encoder[6])
  weights = jnp.asarray(encoder[7][:, None] * decoder[6], jnp.float32)  # a seq2seq task's target weights
  call = lambda rows, weight_sum=None: loss(
      jax.tree.map(lambda v: v[rows], student), jax.tree.map(lambda v: v[rows], teacher), projections,
      student_mask=mask[rows], teacher_mask=mask[rows], example_weights=weights[rows], weight_sum=weight_sum)
  total, terms = call(slice(None))
  expected = [a + b for a, b in zip(_np_feature_terms(*encoder, "mse"), _np_feature_terms(*decoder, "mse"))]
  np.testing.assert_allclose(terms["feature_loss"], expected[0], rtol=1e-5)
  np.testing.assert_allclose(terms["attention_loss"], expected[1], rtol=1e-4)
  np.testing.assert_allclose(total, 0.5 * expected[0] + 2.0 * expected[1], rtol=1e-4)
  weight_sums = jax.tree.map(jnp.sum, loss.position_weights(weights, mask))
  halves = [call(rows, weight_sums)[0] for rows in (slice(0, 2), slice(2, 4))]
  np.testing.assert_allclose(sum(halves), total, rtol=1e-5)


@pytest.mark.parametrize("name, num_layers", [("distilbert", 2), ("bert", 2), ("roberta", 2)])
def test_hf_encoders_sow_hidden_states_and_attention(name, num_layers):
  """h_L is the encoder's output (checked against transformers by test_hf_models), softmax of the attention logits
  gives distributions with no weight on padded keys, and sowing changes nothing when not asked for."""
  reference = dict(np.load(FIXTURES / name / "reference.npz"))
  model, params = hf.from_pretrained(str(FIXTURES / name), task="encoder")
  inputs = {key: reference[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in reference}
  output, state = model.apply({"params": params}, **inputs, mutable=["intermediates"])
  found = feature_losses.collect(state["intermediates"])
  assert len(found.hidden_states) == num_layers + 1 and len(found.attention_logits) == num_layers
  real = reference["attention_mask"] > 0
  np.testing.assert_allclose(np.asarray(found.hidden_states[-1])[real], reference["last_hidden_state"][real],
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(output, model.apply({"params": params}, **inputs))
  for logits in found.attention_logits:
    probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    assert np.all(probabilities[np.broadcast_to(reference["attention_mask"][:, None, None, :] == 0,
                                                probabilities.shape)] == 0)


def test_mlp_sows_its_hidden_layers():
  model = mlp.MLP(hidden_sizes=(6, 5), num_classes=3)
  x = np.random.default_rng(7).normal(size=(4, 2, 4)).astype(np.float32)
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  _, state = model.apply({"params": params}, x, mutable=["intermediates"])
  found = feature_losses.collect(state["intermediates"])
  h0 = x.reshape(4, -1)
  h1 = np.maximum(h0 @ np.asarray(params["Dense_0"]["kernel"]) + np.asarray(params["Dense_0"]["bias"]), 0)
  h2 = np.maximum(h1 @ np.asarray(params["Dense_1"]["kernel"]) + np.asarray(params["Dense_1"]["bias"]), 0)
  for got, expected in zip(found.hidden_states, (h0, h1, h2)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert found.attention_logits == ()
  assert feature_losses.describe(model, params, x[:1]) == feature_losses.Layers((8, 6, 5), ())


@pytest.mark.slow
def test_train_step_trains_a_projection_outside_the_student():
  """A 16-wide, 2-head student and a 32-wide, 4-head teacher: the uniform map projects both layers (16 -> 32),
  attention compares head-averaged distributions, the projections train, and the program's run params are the
  student's alone."""
  teacher_model, teacher_params = random_distilbert(32, 4, seed=0)
  model, params = random_distilbert(16, 2, seed=1)
  rng = np.random.default_rng(8)
  mask = np.ones((16, 8), np.int32)
  mask[::3, 5:] = 0
  inputs = {"input_ids": rng.integers(1, 50, size=(16, 8)).astype(np.int32) * mask, "attention_mask": mask}
  batch = Examples(inputs=inputs, label=rng.integers(-1, 2, size=16).astype(np.int32),
                   index=np.arange(16, dtype=np.int32))
  example = jax.tree.map(lambda a: a[:1], inputs)
  teacher_layers = feature_losses.describe(teacher_model, teacher_params, example)
  student_layers = feature_losses.describe(model, params, example)
  assert teacher_layers == feature_losses.Layers((32, 32, 32), (4, 4))
  config = schema.default_config()
  config.distill.update({"features": "uniform", "feature_loss": "mse", "feature_weight": 1.0, "attention_weight": 0.5,
                         "alpha": 0.5, "temperature": 2.0})
  objective = Objective.from_config(config, layers=feature_losses.ModelLayers(teacher_layers, student_layers,
                                                                              pool_tokens=False))
  features = objective.feature_loss
  projections = feature_losses.init_projections(features.pairs, teacher_layers, student_layers, jax.random.PRNGKey(2))
  assert {name: p["kernel"].shape for name, p in projections.items()} == {
      "teacher1_student1": (16, 32), "teacher2_student2": (16, 32)}
  params, projections = jax.device_get((params, projections))  # host copies: the step donates the state's buffers
  optim = schema.optim_config(learning_rate=1e-2, weight_decay=0.0, warmup_ratio=0.0)
  mesh = sharding.make_mesh()
  state = sharding.replicate(steps.create_train_state(model, feature_losses.join_params(params, projections), optim,
                                                      10), mesh)
  step = steps.compile_step(mesh, model=model, teacher_model=teacher_model)
  new_state, metrics = step(state, sharding.replicate(teacher_params, mesh), sharding.replicate(objective, mesh),
                            sharding.replicate(jax.random.PRNGKey(3), mesh), sharding.shard_batch(batch, mesh))
  new_params, metrics = jax.device_get((new_state.params, metrics))
  assert metrics["feature_loss"] > 0 and metrics["attention_loss"] > 0
  np.testing.assert_allclose(metrics["loss"], metrics["hard_loss"] * 0.5 + metrics["soft_loss"] * 0.5
                             + metrics["feature_loss"] + 0.5 * metrics["attention_loss"], rtol=1e-5)
  for name in projections:
    assert not np.allclose(new_params[feature_losses.PROJECTIONS][name]["kernel"], projections[name]["kernel"])
  student_only, _ = feature_losses.split_params(new_params, features)
  assert jax.tree.structure(student_only) == jax.tree.structure(params)


def test_features_sweep_over_none_uniform_and_pairs(tmp_path):
  """Sweep points take any form of the layer map, whatever the base config holds."""
  config = load_config()
  config.distill.teacher_mode, config.distill.features = "online", "uniform"
  config.sweep.grid = (("distill.features", (None, "uniform", ((0, 0), (2, 1)))),)
  preflight.check(config)
  points = expansion.expand(config, str(tmp_path))
  assert [point.config.distill.features for point in points] == [None, "uniform", ((0, 0), (2, 1))]
  for point in points:
    preflight.check(point.config)


def _history(workdir, phase):
  lines = [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]
  return [line for line in lines if line["phase"] == phase]


@pytest.mark.slow
def test_digits_features_from_the_command_line_train_resume_and_export_the_student_alone(tmp_path):
  """`--config.distill.features=uniform` on the default MLPs (widths 256 -> 32: projected): the history logs the
  feature loss, the student's parameter count excludes the projection, and a rerun finds every phase finished."""
  args = ("--config=configs/default.py:smoke", f"--workdir={tmp_path}", "--config.distill.teacher_mode=online",
          "--config.distill.features=uniform")
  first = run_main(*args)
  assert first.returncode == 0, first.stderr[-3000:]
  student = _history(tmp_path, "student")
  assert all("train/feature_loss" in line for line in student if "train/loss" in line)
  assert not any("train/feature_loss" in line for line in _history(tmp_path, "student_hard"))
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["efficiency"]["student"]["params"] == 64 * 32 + 32 + 32 * 10 + 10
  (tmp_path / "results.json").unlink()
  second = run_main(*args)
  assert second.returncode == 0, second.stderr[-3000:]
  assert json.loads((tmp_path / "results.json").read_text())["metrics"] == results["metrics"]


@pytest.mark.slow
def test_sst2_smoke_with_uniform_features(tmp_path, sst2_smoke_run):
  """The acceptance run: RoBERTa fixture teacher (the shared SST-2 smoke run's), DistilBERT fixture student (both 32
  wide, 2 layers, different tokenizers: hidden states compared mean-pooled), the feature loss logged."""
  result = run_main("--config=configs/sst2.py:smoke", f"--workdir={tmp_path}", "--config.distill.teacher_mode=online",
                    "--config.distill.features=uniform", "--config.baseline=False",
                    f"--config.teacher.workdir={sst2_smoke_run[0] / 'teacher'}")
  assert result.returncode == 0, result.stderr[-3000:]
  losses_logged = [line["train/feature_loss"] for line in _history(tmp_path, "student") if "train/loss" in line]
  assert losses_logged and all(np.isfinite(losses_logged)) and losses_logged[-1] < losses_logged[0]
