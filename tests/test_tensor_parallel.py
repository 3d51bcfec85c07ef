"""Tensor parallelism of the decoder-only families (Llama, Mistral, Qwen2, Qwen3, GPT-2) on 8 CPU devices, as each
family declares it (its `partition_rules`): the arrays split and their per-device bytes, one train step on tensor 2,
tensor 4 (with LoRA adapters) and fsdp x tensor (the teacher online) equal to the replicated step, and the refusal
of a model that declares no placement."""

import inspect
import logging

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from kd_jax import models, preflight
from kd_jax.data import Examples
from kd_jax.errors import ConfigError
from kd_jax.models import hf, peft
from kd_jax.models.hf import pretrained
from kd_jax.parallel import sharding
from kd_jax.training import steps
from kd_jax.training.objective import Objective
from tests.helpers import REPO_ROOT, load_config, run_main

pytestmark = pytest.mark.multidevice

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "hf"
REPLICATED = {"data": 8, "fsdp": 1, "tensor": 1}
TENSOR_2 = {"data": 4, "fsdp": 1, "tensor": 2}
# Where the Megatron split puts each family's layers on tensor 2: output units split (None, 'tensor'), input units
# ('tensor',); the fixtures' single key/value head (llama, mistral, qwen2, qwen3) does not split in 2.
LLAMA_SPLIT = {"self_attn/q_proj/kernel": P(None, "tensor"), "self_attn/o_proj/kernel": P("tensor"),
               "mlp.gate_proj/kernel": P(None, "tensor"), "mlp.up_proj/kernel": P(None, "tensor"),
               "mlp.down_proj/kernel": P("tensor"), "embed_tokens/embedding": P("tensor"),
               "self_attn/k_proj/kernel": P(), "self_attn/v_proj/kernel": P()}
EXPECTED_SPECS = {
    "llama": {**LLAMA_SPLIT, "lm_head/kernel": P(None, "tensor")},
    "mistral": {**LLAMA_SPLIT, "lm_head/kernel": P(None, "tensor")},
    "qwen2": {**LLAMA_SPLIT, "self_attn/q_proj/bias": P("tensor"), "self_attn/k_proj/bias": P()},  # tied LM head
    "qwen3": {**LLAMA_SPLIT, "lm_head/kernel": P(None, "tensor"), "self_attn/q_norm/weight": P()},
    "gpt2": {"attn.c_attn/weight": P(None, "tensor"), "attn.c_attn/bias": P("tensor"),
             "attn.c_proj/weight": P("tensor"), "attn.c_proj/bias": P(), "mlp.c_fc/weight": P(None, "tensor"),
             "mlp.c_proj/weight": P("tensor"), "wte/embedding": P("tensor"), "wpe/embedding": P()},
}


@pytest.fixture(scope="module")
def config():
  """The causal-LM smoke config, its optimizer without warmup (the first step moves the parameters)."""
  config = load_config("configs/causal_lm.py", "smoke")
  config.optim.warmup_ratio = 0.0
  config.distill.on_policy_fraction = 0.0
  return config


def causal_lm(name: str):
  """(registry model, params) of a fixture checkpoint."""
  module, params = hf.from_pretrained(str(FIXTURES / name), task="causal_lm")
  return pretrained.RegistryModel(module), params


def lm_batch(vocab_size: int, rows: int = 8, length: int = 12) -> Examples:
  """Random right-padded token rows; every real next token is a label."""
  rng = np.random.default_rng(0)
  ids = rng.integers(1, vocab_size, (rows, length)).astype(np.int32)
  mask = (np.arange(length) < rng.integers(length // 2, length + 1, (rows, 1))).astype(np.int32)
  label = np.where(mask[:, 1:] > 0, ids[:, 1:], -1)
  label = np.concatenate([label, np.full((rows, 1), -1)], axis=1).astype(np.int32)
  return Examples(inputs={"input_ids": ids, "attention_mask": mask}, label=label,
                  index=np.arange(rows, dtype=np.int32), token_weights=(label >= 0).astype(np.float32))


def one_step(mesh_sizes: dict, model, params, batch: Examples, objective: Objective, optim_config, *, teacher=None):
  """The state after one train step of `model` from `params` on a mesh of `mesh_sizes`, placed as the models declare,
  and the step's metrics (as NumPy)."""
  mesh = sharding.make_mesh(sizes=mesh_sizes)
  state = sharding.place_params(steps.create_train_state(model, jax.device_get(params), optim_config, 10), mesh,
                                models.partition_rules(model, mesh))
  teacher_model, teacher_params = teacher or (None, None)
  if teacher is not None:
    teacher_params = sharding.place_params(jax.device_get(teacher_params), mesh,
                                          models.partition_rules(teacher_model, mesh))
  step = steps.compile_step(mesh, model=model, teacher_model=teacher_model)
  state, metrics = step(state, teacher_params, sharding.replicate(objective, mesh),
                        sharding.replicate(jax.random.PRNGKey(1), mesh), sharding.shard_batch(batch, mesh))
  return state, jax.device_get(metrics)


def assert_same_step(expected, actual):
  """The step's metrics (losses, gradient and parameter norms) and gradients within 1e-5 of the replicated step's.

  The gradients are read from AdamW's moments after one step (mu = (1 - b1) g, nu = (1 - b2) g²). The updated
  parameters are not compared: Adam's first update is about lr * sign(g), and where g is 0 in exact arithmetic (the
  gradient of a key bias: softmax ignores a constant added to a query's scores) it is the sign of rounding noise,
  which differs between any two summation orders."""
  (expected_state, expected_metrics), (state, metrics) = expected, actual
  for name, value in expected_metrics.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
  expected_leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(expected_state.opt_state))[0]
  for (path, expected_leaf), leaf in zip(expected_leaves, jax.tree.leaves(jax.device_get(state.opt_state))):
    np.testing.assert_allclose(leaf, expected_leaf, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def assert_split_as_declared(tree, tensor: int, expected: dict, fsdp: int = 1):
  """The layers of `expected` (path suffixes, in every layer) placed as it says in `tree` (arrays, or
  jax.ShapeDtypeStructs with a sharding), and the arrays split over the tensor axis (and fsdp) holding 1/tensor
  (1/(tensor fsdp)) of their bytes per device."""
  specs = {jax.tree_util.keystr(path, simple=True, separator="/"): leaf.sharding.spec
           for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
  for suffix, spec in expected.items():
    matching = [name for name in specs if name.endswith(suffix)]
    assert matching and all(specs[name] == spec for name in matching), (suffix, {n: specs[n] for n in matching})
  split = [leaf for leaf in jax.tree.leaves(tree) if "tensor" in jax.tree.leaves(tuple(leaf.sharding.spec))]
  assert split
  for leaf in split:
    parts = tensor * (fsdp if "fsdp" in jax.tree.leaves(tuple(leaf.sharding.spec)) else 1)
    assert sharding.per_device_bytes([leaf]) * parts == int(np.prod(leaf.shape)) * leaf.dtype.itemsize, leaf.shape


@pytest.mark.parametrize("name", list(EXPECTED_SPECS))
def test_each_decoder_only_family_declares_the_megatron_split(name, caplog):
  """Llama, Mistral, Qwen2, Qwen3 and GPT-2 on data 4 x tensor 2, as placed from their declared rules (no step
  compiled): q/k/v, gate/up, the LM head split their outputs, o/down and the token embedding their inputs; the
  fixtures' single key/value head stays whole, said once in the log; each split array holds 1/2 of its bytes per
  device."""
  model, params = causal_lm(name)
  mesh = sharding.make_mesh(sizes=TENSOR_2)
  family = inspect.getmodule(type(model.module))
  family.partition_rules.cache_clear()  # the log says it once per model and mesh: here, the first time
  with caplog.at_level(logging.INFO, logger=family.__name__):
    rules = models.partition_rules(model, mesh)
    assert models.partition_rules(model, mesh) == rules
  placed = jax.tree.map(lambda leaf, placement: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=placement),
                        params, sharding.param_shardings(params, mesh, rules))
  assert_split_as_declared(placed, 2, EXPECTED_SPECS[name])
  said = [record.getMessage() for record in caplog.records if "key/value heads" in record.getMessage()]
  assert len(said) == (0 if name == "gpt2" else 1), said


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3", "gpt2"])
def test_a_tensor_2_step_equals_the_replicated_step(name, config):
  """Qwen3 (an untied LM head split over the vocabulary, q/k norms over split heads) and GPT-2 (the fused c_attn,
  heads first) on data 4 x tensor 2: one cross-entropy step within 1e-5 of data parallelism over 8 devices; the
  optimizer state is split as the parameters are."""
  model, params = causal_lm(name)
  batch = lm_batch(model.module.dims.vocab_size)
  run = lambda sizes: one_step(sizes, model, params, batch, Objective.cross_entropy(), config.optim)
  split = run(TENSOR_2)
  assert_same_step(run(REPLICATED), split)
  assert_split_as_declared(split[0].params, 2, EXPECTED_SPECS[name])
  assert_split_as_declared(split[0].opt_state, 2, EXPECTED_SPECS[name])  # its paths end in the parameter's


@pytest.fixture(scope="module")
def distillation(config):
  """The causal-LM smoke config's distillation step (alpha 0.5: CE and forward KL) with its 4-layer teacher online
  (4 heads, 2 key/value heads) and its 2-layer student (the same) with LoRA adapters on q_proj and o_proj, everything
  training: (run(mesh sizes) -> (state, metrics), the replicated step's)."""
  teacher = causal_lm("llama_chat")
  model, params = causal_lm("llama_chat_small")
  lora_config = config.student.lora.copy_and_resolve_references()
  lora_config.rank, lora_config.target_modules = 4, ("q_proj", "o_proj")
  model, params = peft.with_adapters(model, params, lora_config, jax.random.PRNGKey(0))
  # B starts at zero, which would leave A without gradient: random B exercises both adapters' split products.
  params = jax.tree_util.tree_map_with_path(
      lambda path, leaf: 0.1 * jax.random.normal(jax.random.PRNGKey(len(path)), leaf.shape)
      if peft.path_name(path).endswith("lora_b") else leaf, params)
  batch = lm_batch(model.base.module.dims.vocab_size)
  objective = Objective.from_config(config, num_steps=10)

  def run(sizes, scan_layers: bool = False):
    """train.scan_layers: the student's layers (under remat) and the teacher's as scans."""
    student, online = model, teacher
    if scan_layers:
      student = models.with_remat(model, "block", scan_layers=True)
      online = (models.with_attention_chunk(teacher[0], 0, scan_layers=True), teacher[1])
    return one_step(sizes, student, params, batch, objective, config.optim, teacher=online)
  return run, run(REPLICATED)


@pytest.mark.slow
def test_a_tensor_4_distillation_step_with_lora_equals_the_replicated_step(distillation):
  """On data 2 x tensor 4 (the 2 key/value heads stay whole): LoRA's B splits with a kernel that splits its outputs
  (q_proj) and A stays whole; A splits with a kernel that splits its inputs (o_proj) and B stays whole. One step
  within 1e-5 of the replicated one."""
  run, replicated = distillation
  split = run({"data": 2, "fsdp": 1, "tensor": 4})
  assert_same_step(replicated, split)
  assert split[1]["soft_loss"] > 0
  assert_split_as_declared(split[0].params, 4, {
      "q_proj/kernel": P(None, "tensor"), "q_proj/lora_b": P(None, "tensor"), "q_proj/lora_a": P(),
      "o_proj/kernel": P("tensor"), "o_proj/lora_a": P("tensor"), "o_proj/lora_b": P(),
      "k_proj/kernel": P(), "embed_tokens/embedding": P("tensor")})


@pytest.mark.slow
def test_an_fsdp_x_tensor_distillation_step_equals_the_replicated_step(distillation):
  """Teacher and student on fsdp 4 x tensor 2 (the 2 key/value heads split): one step within 1e-5 of the replicated
  one."""
  run, replicated = distillation
  split = run({"data": 1, "fsdp": 4, "tensor": 2})
  assert_same_step(replicated, split)
  assert_split_as_declared(split[0].params, 2, {"q_proj/kernel": P("fsdp", "tensor"),
                                                "k_proj/kernel": P("fsdp", "tensor")}, fsdp=4)


@pytest.mark.slow
def test_scanned_layers_on_fsdp_x_tensor_equal_the_replicated_unrolled_step(distillation):
  """train.scan_layers on fsdp 4 x tensor 2: the student's layers (LoRA adapters included) and the online teacher's
  stacked and scanned from parameters placed per layer as the family declares; one step within 1e-5 of the
  replicated step of the unrolled models, the parameters still split as declared."""
  run, replicated = distillation
  scanned = run({"data": 1, "fsdp": 4, "tensor": 2}, scan_layers=True)
  assert_same_step(replicated, scanned)
  assert_split_as_declared(scanned[0].params, 2, {"q_proj/kernel": P("fsdp", "tensor"),
                                                  "o_proj/lora_a": P("tensor", "fsdp")}, fsdp=4)


def test_a_model_without_placement_rules_is_refused_on_a_tensor_axis(tmp_path):
  """mesh.tensor > 1 with the MLP teacher and student (no partition_rules) is one line naming the field, exit 2,
  before anything is written; placing an MLP on such a mesh directly raises the same kind of error (never silently
  replicated); a tensor axis that does not divide the heads is refused likewise."""
  result = run_main("--config=configs/default.py:smoke", f"--workdir={tmp_path / 'w'}", "--config.mesh.data=4",
                    "--config.mesh.tensor=2")
  assert result.returncode == 2 and not (tmp_path / "w").exists()
  assert result.stderr.strip().splitlines()[-1].endswith(
      "config.mesh.tensor=2: must be 1: teacher.name='mlp' declares no tensor-parallel placement (the HF families do; "
      "mesh.fsdp splits any model's parameters)")
  config = load_config()
  model, _ = models.create(config.student, num_classes=10, example_inputs=np.zeros((1, 64), np.float32),
                           rng=jax.random.PRNGKey(0))
  with pytest.raises(ConfigError, match="MLP declares no tensor-parallel placement"):
    models.partition_rules(model, sharding.make_mesh(sizes={"data": 4, "fsdp": 1, "tensor": 2}))
  causal = load_config("configs/causal_lm.py", "smoke")
  causal.mesh.data, causal.mesh.tensor = 1, 8
  with pytest.raises(ConfigError) as error:
    preflight.check(causal)
  assert str(error.value).startswith("config.mesh.tensor=8: must divide the 4 attention heads of teacher.checkpoint=")
  gpt2 = str(FIXTURES / "gpt2")  # GPT-2's config.json names its heads n_head
  assert pretrained.tensor_parallel_problem(gpt2, 2, "student.checkpoint") is None
  assert pretrained.tensor_parallel_problem(gpt2, 4, "student.checkpoint") == (
      f"must divide the 2 attention heads of student.checkpoint={gpt2!r}")
