"""Students built from the teacher's layers, LoRA adapters and freezing: exact copies, the LoRA term against NumPy,
merging, hand counts of trainable parameters, frozen parameters that stay put, exact resume."""

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kd_jax import models, preflight
from kd_jax.data import Examples
from kd_jax.errors import ConfigError
from kd_jax.models import peft
from kd_jax.models.hf import from_teacher
from kd_jax.parallel import sharding
from kd_jax.reporting import efficiency
from kd_jax.training import checkpointing, steps
from kd_jax.training.objective import Objective
from tests.helpers import REPO_ROOT, load_config, run_main

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "hf"


def hf_config(name: str, task: str = "sequence_classification", **lora) -> ml_collections.ConfigDict:
  """config.student of the schema for a fixture checkpoint, with config.student.lora fields set from `lora`."""
  config = load_config().student
  config.name, config.checkpoint, config.task = "hf", str(FIXTURES / name), task
  config.lora.update(lora)
  return config


def token_inputs(batch: int = 3, length: int = 7, vocab: int = 100, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, size=(batch, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[0, -2:] = 0
  return {"input_ids": ids, "attention_mask": mask}


def flat(params) -> dict:
  return {peft.path_name(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.mark.parametrize("name, stack", [("roberta", "roberta"), ("bert", "bert"), ("distilbert", "distilbert")])
def test_student_from_teacher_layers_copies_them_exactly(name, stack):
  """Student layer 0 is teacher layer 1 (array equality), everything outside the layers is the teacher's, and the
  student's config has one layer."""
  teacher_config = hf_config(name)
  teacher_model, teacher_params = models.create(teacher_config, num_classes=2, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  student_config = hf_config(name)
  student_config.checkpoint, student_config.init_from_teacher_layers = None, (1,)
  model, params = models.create_student(student_config, num_classes=2, example_inputs=None, rng=jax.random.PRNGKey(1),
                                        teacher_model=teacher_model, teacher_params=teacher_params)
  assert model.module.dims.num_layers == 1 and teacher_model.module.dims.num_layers == 2
  teacher_flat, student_flat = flat(teacher_params), flat(params)
  layer = "transformer.layer" if name == "distilbert" else "encoder.layer"
  expected = {}
  for path, value in teacher_flat.items():
    if f"/{layer}.0/" in path:
      continue
    expected[path.replace(f"/{layer}.1/", f"/{layer}.0/")] = value
  assert set(student_flat) == set(expected)
  assert any(f"{stack}/{layer}.0/" in path for path in student_flat)
  for path, value in expected.items():
    np.testing.assert_array_equal(student_flat[path], value, err_msg=path)
  assert model.apply({"params": params}, token_inputs()).shape == (3, 2)


def test_a_student_of_every_teacher_layer_is_the_teacher():
  teacher_model, teacher_params = models.create(hf_config("roberta"), num_classes=2, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  model, params = from_teacher.create(teacher_model, teacher_params, (0, 1), dtype="float32", param_dtype="float32")
  inputs = token_inputs()
  np.testing.assert_array_equal(model.apply({"params": params}, inputs),
                                teacher_model.apply({"params": teacher_params}, inputs))


@pytest.mark.slow
def test_t5_student_from_teacher_layers_selects_encoder_and_decoder_blocks():
  teacher_config = hf_config("t5", task="seq2seq")
  teacher_model, teacher_params = models.create(teacher_config, num_classes=0, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  assert from_teacher.stack_depths(teacher_params) == {"encoder": 2, "decoder": 3}  # the fixture's depths
  model, params = from_teacher.create(teacher_model, teacher_params, (1,), dtype="float32", param_dtype="float32")
  dims = model.module.dims
  assert (dims.num_layers, dims.num_decoder_layers) == (1, 1)
  assert from_teacher.stack_depths(params) == {"encoder": 1, "decoder": 1}
  for stack in ("encoder", "decoder"):
    for student_leaf, teacher_leaf in zip(jax.tree.leaves(params[stack]["block.0"]),
                                          jax.tree.leaves(teacher_params[stack]["block.1"])):
      np.testing.assert_array_equal(student_leaf, teacher_leaf)
    # The relative position bias belongs to the stack, not to block 0: it is kept.
    bias = "block.0.layer.0.SelfAttention.relative_attention_bias"
    np.testing.assert_array_equal(params[stack][bias]["embedding"], teacher_params[stack][bias]["embedding"])
  inputs = {"input_ids": np.array([[5, 6, 7, 1]]), "decoder_input_ids": np.array([[0, 5, 6]])}
  assert model.apply({"params": params}, inputs).shape == (1, 3, dims.vocab_size)


def test_lora_term_matches_numpy_and_merging_gives_the_same_model():
  """h = x W + b + (alpha / r) x A B on every query and value projection (float64 NumPy on one layer); the merged
  plain model computes the same logits; with B = 0 (the initialization) the model is the base model."""
  config = hf_config("bert", rank=4, alpha=8.0)
  base_model, base_params = models.create(config, num_classes=2, example_inputs=None, rng=jax.random.PRNGKey(0))
  model, params = models.create_student(config, num_classes=2, example_inputs=None, rng=jax.random.PRNGKey(0))
  inputs = token_inputs()
  np.testing.assert_array_equal(model.apply({"params": params}, inputs),
                                base_model.apply({"params": base_params}, inputs))
  query = params["bert"]["encoder.layer.0"]["attention.self.query"]
  assert query["lora_a"].shape == (32, 4) and query["lora_b"].shape == (4, 32)
  assert np.abs(query["lora_a"]).max() <= 1 / np.sqrt(32) and np.all(query["lora_b"] == 0)
  assert "lora_a" not in params["bert"]["encoder.layer.0"]["attention.self.key"]

  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map_with_path(
      lambda path, leaf: rng.normal(size=leaf.shape).astype(np.float32) * 0.2
      if peft.path_name(path).endswith("lora_b") else leaf, params)
  query = params["bert"]["encoder.layer.0"]["attention.self.query"]
  x = rng.normal(size=(5, 32))
  dense = peft.LoraModel(_DenseModel(), scale=2.0, dropout=0.0)
  ours = dense.apply({"params": {"query": query}}, x.astype(np.float32))
  expected = (x @ np.float64(query["kernel"]) + np.float64(query["bias"])
              + 2.0 * x @ np.float64(query["lora_a"]) @ np.float64(query["lora_b"]))
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)

  plain_model, plain_params = peft.plain_model(model), peft.plain_params(model, params)
  assert plain_model is base_model and "lora_a" not in flat(plain_params)
  np.testing.assert_allclose(plain_model.apply({"params": plain_params}, inputs),
                             model.apply({"params": params}, inputs), rtol=1e-5, atol=1e-6)


class _DenseModel:
  """The registry's calling convention over one Dense layer named 'query'."""

  def apply(self, variables, inputs, train=False, rngs=None):
    del train
    import flax.linen as nn  # pylint: disable=import-outside-toplevel
    return nn.Dense(32, name="query").apply({"params": variables["params"]["query"]}, inputs, rngs=rngs)


@pytest.mark.parametrize("name, targeted", [("llama", ("self_attn/q_proj", "self_attn/v_proj")),
                                            ("gpt2", ("attn.c_attn",))])
def test_lora_on_decoder_only_students_with_the_default_targets(name, targeted):
  """peft's default targets of the family (Llama: q_proj, v_proj; GPT-2: its fused Conv1D c_attn, adapted like a
  Linear with fan_in_fan_out) take adapters with the default settings: every layer's adapted model equals the base
  model with W + (alpha / r) A B merged in float64 NumPy, and one Conv1D computes x W + b + (alpha / r) x A B."""
  config = hf_config(name, task="causal_lm", rank=2, alpha=8.0)
  model, params = models.create_student(config, num_classes=0, example_inputs=None, rng=jax.random.PRNGKey(0))
  adapted = sorted(path.rsplit("/", 1)[0] for path in flat(params) if path.endswith("/lora_a"))
  layers = "model/layers" if name == "llama" else "transformer/h"
  assert adapted == sorted(f"{layers}.{i}/{target}" for i in range(2) for target in targeted)
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map_with_path(
      lambda path, leaf: rng.normal(size=leaf.shape).astype(np.float32) * 0.2
      if peft.path_name(path).endswith("lora_b") else leaf, params)
  named, merged_params = flat(params), {}
  for path, value in named.items():
    *parents, leaf = path.split("/")
    if leaf in ("lora_a", "lora_b"):
      continue
    layer = "/".join(parents)
    if f"{layer}/lora_a" in named and leaf in ("kernel", "weight"):
      a, b = np.float64(named[f"{layer}/lora_a"]), np.float64(named[f"{layer}/lora_b"])
      value = (np.float64(value) + 8.0 / 2 * a @ b).astype(np.float32)
    node = merged_params
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  inputs = token_inputs(vocab=int(model.base.module.dims.vocab_size))
  adapted_logits = jax.jit(lambda params: model.apply({"params": params}, inputs))(params)
  plain = jax.jit(lambda params: peft.plain_model(model).apply({"params": params}, inputs))
  np.testing.assert_allclose(adapted_logits, plain(merged_params), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(plain(peft.plain_params(model, params)), adapted_logits, rtol=1e-4, atol=1e-5)
  if name == "gpt2":
    c_attn = params["transformer"]["h.0"]["attn.c_attn"]
    x = rng.normal(size=(5, c_attn["weight"].shape[0]))
    ours = peft.LoraModel(_Conv1DModel(c_attn["weight"].shape[1]), scale=4.0, dropout=0.0).apply(
        {"params": {"c_attn": c_attn}}, x.astype(np.float32))
    expected = (x @ np.float64(c_attn["weight"]) + np.float64(c_attn["bias"])
                + 4.0 * x @ np.float64(c_attn["lora_a"]) @ np.float64(c_attn["lora_b"]))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


class _Conv1DModel:
  """The registry's calling convention over one GPT-2 Conv1D named 'c_attn'."""

  def __init__(self, features: int):
    self.features = features

  def apply(self, variables, inputs, train=False, rngs=None):
    del train
    from kd_jax.models.hf import gpt2  # pylint: disable=import-outside-toplevel
    return gpt2.Conv1D(self.features, name="c_attn").apply({"params": variables["params"]["c_attn"]}, inputs,
                                                           rngs=rngs)


def test_lora_dropout_drops_the_adapters_input_per_key():
  """Dropout applies to the adapters' input in training only: deterministic in eval, redrawn with the key."""
  config = hf_config("bert", rank=2, dropout=0.5)
  model, params = models.create_student(config, num_classes=2, example_inputs=None, rng=jax.random.PRNGKey(0))
  params = jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.ones_like(leaf) if peft.path_name(path).endswith("lora_b") else leaf, params)
  inputs = token_inputs()
  no_dropout = {"params": params}
  base = peft.LoraModel(model.base, scale=model.scale, dropout=0.0)
  key = lambda seed: {"dropout": jax.random.PRNGKey(seed)}
  np.testing.assert_array_equal(model.apply(no_dropout, inputs), base.apply(no_dropout, inputs))
  # The fixture's own dropout (hidden, attention) stays on in training; compare with it at the same key.
  first, again = model.apply(no_dropout, inputs, train=True, rngs=key(0)), model.apply(no_dropout, inputs, train=True,
                                                                                       rngs=key(0))
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, base.apply(no_dropout, inputs, train=True, rngs=key(0)))


@pytest.mark.parametrize("rank", [1, 4])
def test_trainable_parameters_of_lora_on_a_tiny_bert_match_a_hand_count(rank):
  """Rank r on query and value (32 x 32) of the 2-layer fixture BERT: 2 layers x 2 matrices x r (32 + 32), plus the
  classifier head (32 x 2 + 2; BERT's pooler stays frozen, as in peft)."""
  config = hf_config("bert", rank=rank)
  model, params = models.create_student(config, num_classes=2, example_inputs=None, rng=jax.random.PRNGKey(0))
  hand_count = 2 * 2 * rank * (32 + 32) + (32 * 2 + 2)
  trainable = peft.of_student(config)
  assert trainable.count(params) == hand_count
  counts = efficiency.parameter_counts(peft.plain_params(model, params), trainable.count(params))
  assert counts["trainable_params"] == hand_count
  assert counts["params"] == sum(leaf.size for leaf in jax.tree.leaves(models.create(
      config, num_classes=2, example_inputs=None, rng=jax.random.PRNGKey(0))[1]))


def test_default_lora_targets_are_every_familys_query_and_value():
  """BERT and RoBERTa query/value, DistilBERT q_lin/v_lin, T5 q/v in self- and cross-attention (the T5 fixture: 2
  encoder blocks, 3 decoder blocks); the decoder-only families: test_lora_on_decoder_only_students_with_the_default_targets."""
  from kd_jax.models.hf import pretrained  # pylint: disable=import-outside-toplevel
  for name, task, expected in (("bert", "sequence_classification", 4), ("roberta", "sequence_classification", 4),
                               ("distilbert", "sequence_classification", 4), ("t5", "seq2seq", 2 * 2 + 3 * 4)):
    widths = peft.target_widths(pretrained.abstract_params(str(FIXTURES / name), task), None)
    assert len(widths) == expected, (name, sorted(widths))
    layer_names = {path.rsplit("/", 1)[-1].rsplit(".", 1)[-1] for path in widths}
    assert layer_names <= {"query", "value", "q_lin", "v_lin", "q", "v"} and len(layer_names) == 2, layer_names


def test_trainable_patterns_matching_no_parameter_are_refused():
  config = load_config().student
  config.trainable = ("classifier",)
  with pytest.raises(ConfigError, match=r"^config.student.trainable=\('classifier',\): matches no "
                                       r"parameter of the student \(names are '/'-joined paths "
                                       r"such as 'Dense_0/bias'\)$"):
    models.create_student(config, num_classes=10, example_inputs=np.zeros((1, 64), np.float32),
                          rng=jax.random.PRNGKey(0))


def tiny_text_examples(num: int = 32) -> Examples:
  inputs = token_inputs(batch=num, length=6, seed=3)
  return Examples(inputs=inputs, label=(np.arange(num) % 2).astype(np.int32), index=np.arange(num, dtype=np.int32))


@functools.lru_cache(maxsize=4)
def compiled_step(model):
  return steps.compile_step(sharding.make_mesh(), model=model, teacher_model=None)


def train_steps(model, params, trainable, examples, num_steps, *, state=None):
  """num_steps single train steps on 8 devices (batch 16), from `state` or a fresh one."""
  mesh = sharding.make_mesh()
  optim = load_config().optim
  if state is None:
    state = sharding.replicate(steps.create_train_state(model, jax.device_get(params), optim, 10, trainable), mesh)
  step = compiled_step(model)
  objective = sharding.replicate(Objective.cross_entropy(), mesh)
  rng = sharding.replicate(jax.random.PRNGKey(0), mesh)
  for i in range(int(state.step), int(state.step) + num_steps):
    batch = examples.select(np.arange(16) + 16 * (i % 2))
    state, _ = step(state, None, objective, rng, sharding.shard_batch(batch, mesh))
  return state


def test_freezing_beside_feature_projections_applies_to_the_model_only():
  """With feature distillation the KD phase trains {'model': student, 'feature_projections': ...}: the patterns see
  the student's own names (an anchored pattern still matches), and the projections always train."""
  leaf = jnp.zeros(2)
  params = {"model": {"classifier": {"kernel": leaf}, "body": {"kernel": leaf}},
            "feature_projections": {"pair_2_1": {"kernel": leaf}}}
  trainable = peft.Trainable(("^classifier/",), within="model")
  assert trainable.labels(params) == {"model": {"classifier": {"kernel": "train"}, "body": {"kernel": "frozen"}},
                                      "feature_projections": {"pair_2_1": {"kernel": "train"}}}
  assert peft.Trainable(("^classifier/",)).count(params) == 0  # without `within` the prefix hides the head


@pytest.mark.slow
@pytest.mark.parametrize("lora_rank, patterns", [(2, None), (0, ("classifier", "encoder.layer.1/"))])
def test_frozen_parameters_stay_and_the_others_train(lora_rank, patterns):
  """Three optimizer steps: every frozen parameter is bitwise its initial value and holds no optimizer moments;
  every trained one moved."""
  config = hf_config("bert", rank=lora_rank)
  config.trainable = patterns
  model, params = models.create_student(config, num_classes=2, example_inputs=None, rng=jax.random.PRNGKey(0))
  trainable = peft.of_student(config)
  state = train_steps(model, params, trainable, tiny_text_examples(), 3)
  before, after = flat(params), flat(jax.device_get(state.params))
  trained = {path for path in before if trainable.is_trained(path)}
  assert trained and len(trained) < len(before)
  for path in before:
    if path in trained:
      assert not np.array_equal(after[path], before[path]), path
    else:
      np.testing.assert_array_equal(after[path], before[path], err_msg=path)
  moments = sum(leaf.size for leaf in jax.tree.leaves(state.opt_state) if np.ndim(leaf) > 0)
  assert moments == 2 * trainable.count(params)  # Adam's mu and nu, trained parameters only


@pytest.mark.slow
def test_a_resumed_lora_run_equals_an_uninterrupted_one(tmp_path):
  """Four steps in one go, and two steps, a checkpoint, a restore into a fresh state and two more: the same state."""
  config = hf_config("bert", rank=2)
  model, params = models.create_student(config, num_classes=2, example_inputs=None, rng=jax.random.PRNGKey(0))
  trainable = peft.of_student(config)
  examples = tiny_text_examples()
  straight = train_steps(model, params, trainable, examples, 4)
  halfway = train_steps(model, params, trainable, examples, 2)
  store = checkpointing.CheckpointStore(str(tmp_path / "checkpoints"), 2)
  store.save(2, halfway)
  store.close()
  fresh = sharding.replicate(steps.create_train_state(model, jax.device_get(params), load_config().optim, 10,
                                                      trainable), sharding.make_mesh())
  restored = checkpointing.CheckpointStore(str(tmp_path / "checkpoints"), 2).restore_latest(fresh)
  assert restored is not None and restored.trainable == trainable
  resumed = train_steps(model, params, trainable, examples, 2, state=restored)
  assert int(resumed.step) == 4
  for ours, expected in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(jax.device_get(straight))):
    np.testing.assert_array_equal(ours, expected)


def test_sst2_from_teacher_and_the_lora_sweep_configs():
  from kd_jax.sweeps import expansion  # pylint: disable=import-outside-toplevel
  config = load_config("configs/sst2.py", "smoke,from_teacher")
  preflight.check(config)
  assert config.student.checkpoint is None and config.student.init_from_teacher_layers == (0,)
  assert load_config("configs/sst2.py", "from_teacher").student.init_from_teacher_layers == tuple(range(0, 24, 2))
  config = load_config("configs/sweep_lora_rank.py", "smoke")
  preflight.check(config)
  points = expansion.expand(config, "/tmp/unused")
  assert [(p.config.student.lora.rank, p.config.student.trainable) for p in points] == [
      (0, ("classifier",)), (4, None), (16, None), (32, None), (0, None)]


@pytest.mark.slow
@pytest.mark.usefixtures("draft_plots")  # reads the report's tables, not its figures
def test_lora_rank_sweep_smoke_runs_and_counts_trainable_parameters(tmp_path, sst2_smoke_run):
  """`main.py --config=configs/sweep_lora_rank.py:smoke` (its teacher: the shared SST-2 smoke run's): five points,
  each results.json's trainable_params the hand count on the fixture DistilBERT (2 layers, 32 wide; head:
  pre_classifier 32 x 32 + 32, classifier 32 x 2 + 2). Without the hard-label twins (config.baseline=False): a twin
  is the same model and count (train.model_efficiency gives both students one entry), trained with the soft weight
  at 0; what is counted does not depend on it."""
  result = run_main("--config=configs/sweep_lora_rank.py:smoke", f"--workdir={tmp_path}", "--config.baseline=False",
                    f"--config.teacher.workdir={sst2_smoke_run[0] / 'teacher'}")
  assert result.returncode == 0, result.stderr[-3000:]
  head = 32 * 32 + 32 + 32 * 2 + 2
  expected = {"student.lora.rank=0,student.trainable=classifier": head,
              **{f"student.lora.rank={r},student.trainable=None": 2 * 2 * r * (32 + 32) + head for r in (4, 16, 32)},
              "student.lora.rank=0,student.trainable=None": None}
  params = set()
  for name, trainable_params in expected.items():
    with open(tmp_path / f"{name},seed=0" / "results.json") as stream:
      costs = json.load(stream)["efficiency"]
    params.add(costs["student"]["params"])
    assert costs["student"]["trainable_params"] == (trainable_params or costs["student"]["params"]), name
  assert len(params) == 1  # evaluated merged: the same plain DistilBERT at every rank
  assert "| trainable |" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_sst2_smoke_from_teacher_end_to_end(tmp_path, sst2_smoke_run):
  """configs/sst2.py:smoke,from_teacher: the student is the trained teacher's (the shared SST-2 smoke run's) layer 0
  with its embeddings and head."""
  result = run_main("--config=configs/sst2.py:smoke,from_teacher", f"--workdir={tmp_path}", "--config.baseline=False",
                    f"--config.teacher.workdir={sst2_smoke_run[0] / 'teacher'}")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "results.json") as stream:
    results = json.load(stream)
  costs = results["efficiency"]
  # One of the fixture RoBERTa's two layers: 32 x 32 x 4 + 32 x 37 x 2 weights, 5 x 32 + 37 biases, 2 LayerNorms.
  one_layer = 4 * 32 * 32 + 2 * 32 * 37 + 5 * 32 + 37 + 4 * 32
  assert costs["teacher"]["params"] - costs["student"]["params"] == one_layer
  assert isinstance(results["metrics"]["student"]["accuracy"], float)


@pytest.mark.slow
def test_a_vectorized_sweep_freezes_like_the_sequential_one(tmp_path):
  """Two temperatures with the default MLP student's hidden layer frozen (student.trainable: the output layer
  Dense_1 only, 32 x 10 + 10 parameters): trained together they give the metrics of the sequential sweep."""
  from kd_jax.sweeps import runner  # pylint: disable=import-outside-toplevel
  metrics = {}
  for mode in ("sequential", "vectorized"):
    config = load_config()
    config.sweep.grid, config.sweep.mode = (("distill.temperature", (1.0, 4.0)),), mode
    config.student.trainable = ("Dense_1/",)
    config.teacher.num_epochs, config.train.num_steps, config.baseline = 5, 20, False
    runner.run(config, str(tmp_path / mode))
    for temperature in ("1", "4"):
      with open(tmp_path / mode / f"distill.temperature={temperature},seed=0" / "results.json") as stream:
        results = json.load(stream)
      assert results["efficiency"]["student"]["trainable_params"] == 32 * 10 + 10
      metrics[mode, temperature] = results["metrics"]["student"]
  for temperature in ("1", "4"):
    for name in ("accuracy", "nll"):
      assert metrics["vectorized", temperature][name] == pytest.approx(metrics["sequential", temperature][name],
                                                                      rel=1e-4, abs=1e-6)
