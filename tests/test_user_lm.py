"""A user's causal LM through the model protocol (kd_jax/models/protocol.py): configs/custom_lm.py:smoke distils the
fixture Llama teacher into the NNX decoder of configs/models/nnx_lm.py and it learns; a resumed on-policy run is
bitwise the uninterrupted one; generation without a KV cache (kd_jax/models/generation.py) is the greedy loop over
the growing prefix, and the HF decoder's with its cache; what needs the HF models' internals is refused in one line."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from kd_jax import data, models, train
from kd_jax.data.examples import first_inputs
from kd_jax.models import export, generation
from tests.helpers import assert_resumed_after_step_2_is_bitwise, load_config, run_main

NNX_LM = "configs/models/nnx_lm.py:create"
LINEN_LM = "tests/user_models.py:linen_lm"


def response_nll(model, params, examples) -> float:
  """The mean NLL of the examples' response tokens, in NumPy from the model's logits."""
  inputs = {key: examples.inputs[key] for key in ("input_ids", "attention_mask")}
  logits = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x))(params, inputs), np.float64)
  log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  labels = np.asarray(examples.label)
  nll = -np.take_along_axis(log_probs, np.maximum(labels, 0)[..., None], axis=-1)[..., 0]
  return float(np.sum(nll * (labels >= 0)) / np.sum(labels >= 0))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, causal_lm_smoke_run):
  """configs/custom_lm.py:smoke run in-process without its hard-label student, its teacher the one the session's
  configs/causal_lm.py:smoke run trained (the same teacher and data sections; restored, not trained again):
  (config, workdir, results)."""
  config = load_config("configs/custom_lm.py")
  config.baseline = False
  config.teacher.workdir = str(causal_lm_smoke_run / "teacher")
  workdir = tmp_path_factory.mktemp("custom_lm")
  return config, workdir, train.train_and_evaluate(config, str(workdir))


@pytest.mark.slow
def test_the_nnx_lm_student_learns_from_the_smoke_teacher(smoke_run):
  """The NNX student's test NLL (what results.json reports, recomputed in NumPy from its saved parameters) is a
  fraction of its untrained start's; its greedy responses (generated without a cache) overlap the references."""
  config, workdir, results = smoke_run
  task = data.load_task(config)
  assert task.num_classes == 320  # the teacher's vocabulary, which the factory got as config.vocab_size
  model, start = models.create_student(config.student, num_classes=task.num_classes,
                                       example_inputs=first_inputs(task.train.inputs),
                                       rng=jax.random.PRNGKey(config.seed))
  trained = export.trained_model(str(workdir), "student").params
  student = results["metrics"]["student"]
  np.testing.assert_allclose(response_nll(model, trained, task.test), student["nll"], rtol=1e-5)
  untrained = response_nll(model, start, task.test)
  assert untrained > 5.0 and student["nll"] < untrained / 3, (untrained, student["nll"])
  assert student["rougeL"] > 0.1 and results["validation_metrics"]["student"]["nll"] < untrained / 3


@pytest.mark.slow
def test_the_exported_nnx_lm_student_loads_back_with_its_parameters(smoke_run, tmp_path):
  """scripts/export.py --format=params of the smoke student (token arrays as its example inputs): load_exported
  rebuilds the NNX LM from its factory with the trained parameters bit for bit, and its test NLL is the run's."""
  config, workdir, results = smoke_run
  written = export.export(str(workdir), model="student", export_format="params", out=str(tmp_path / "exported"))
  assert {export.MODEL_FILE, export.SAFETENSORS_FILE, "tokenizer.json"} <= set(written)  # the tokenizer: chat.py
  model, params = models.load_exported(str(tmp_path / "exported"))
  trained = export.trained_model(str(workdir), "student").params
  assert jax.tree.structure(params) == jax.tree.structure(trained)
  for expected, got in zip(jax.tree.leaves(trained), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, expected)
  nll = response_nll(model, params, data.load_task(config).test)
  np.testing.assert_allclose(nll, results["metrics"]["student"]["nll"], rtol=1e-5)


def on_policy_setup(task):
  """configs/custom_lm.py:smoke under GKD with lambda = 0.5, the fixture teacher's own weights (sharpened) in the
  step, the NNX student as its factory builds it."""
  config = load_config("configs/custom_lm.py")
  config.distill.divergence, config.distill.beta, config.distill.temperature = "generalized_js", 0.3, 1.0
  config.distill.alpha, config.distill.ce_weight, config.distill.kd_weight = None, 0.0, 1.0
  teacher_model, teacher_params = models.create(config.teacher, num_classes=task.num_classes, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  teacher_params = {**teacher_params, "model": {**teacher_params["model"], "embed_tokens": {
      "embedding": teacher_params["model"]["embed_tokens"]["embedding"] * 40.0}}}
  student = models.create(config.student, num_classes=task.num_classes, example_inputs=None,
                          rng=jax.random.PRNGKey(0))
  return config, (teacher_model, teacher_params), student


@pytest.mark.slow
def test_a_resumed_on_policy_run_of_the_nnx_student_is_bitwise_the_uninterrupted_one(tmp_path):
  """lambda = 0.5 over 6 steps (the seed's coins give both kinds of batch: tests/test_causal_lm.py), the samples drawn
  by the prefix-recomputing loop: stopped after step 2 and resumed, the run ends with the same parameters."""
  task = data.load_task(load_config("configs/custom_lm.py"))
  config, teacher, student = on_policy_setup(task)
  assert config.distill.on_policy_fraction == 0.5
  assert_resumed_after_step_2_is_bitwise(config, task, teacher, student, 6, tmp_path)


def greedy_reference(apply, prompts: list[list[int]], max_new_tokens: int) -> np.ndarray:
  """Greedy tokens of each prompt alone: the model called on the growing prefix, argmax of its last logits."""
  rows = []
  for prompt in prompts:
    sequence = list(prompt)
    for _ in range(max_new_tokens):
      sequence.append(int(np.argmax(np.asarray(apply(np.array([sequence], np.int32)))[0, -1])))
    rows.append(sequence[len(prompt):])
  return np.array(rows)


def ended_at(tokens: np.ndarray, eos: int, pad: int) -> np.ndarray:
  """Each row of `tokens` with pad after its first `eos` (greedy tokens up to EOS do not depend on it)."""
  after = np.cumsum(tokens == eos, axis=1) - (tokens == eos) > 0
  return np.where(after, pad, tokens)


def left_padded(prompts: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
  width = max(map(len, prompts))
  ids = np.array([[pad] * (width - len(p)) + p for p in prompts], np.int32)
  return ids, np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts], np.int32)


@pytest.mark.slow  # about 6 s of CPU each: the reference compiles the model for every prefix length
@pytest.mark.parametrize("name", [NNX_LM, LINEN_LM])
def test_generation_without_a_cache_is_the_greedy_loop_over_the_growing_prefix(name):
  """Left-padded prompts of three lengths through generation.generate (an NNX model that takes only input_ids, a
  Linen one that also takes the attention mask) give the tokens of calling the model on each growing prefix alone,
  also when a row meets EOS (pad after it) and the batch goes on."""
  config = load_config("configs/custom_lm.py")
  config.student.name = name
  prompts, pad, max_new_tokens = [[5, 9, 31], [12, 3], [22]], 0, 4
  input_ids, attention_mask = left_padded(prompts, pad)
  model, params = models.create(config.student, num_classes=40, rng=jax.random.PRNGKey(1),
                                example_inputs={"input_ids": input_ids[:1], "attention_mask": attention_mask[:1]},
                                field="student")
  params = jax.tree.map(lambda value: value * 3.0, params)  # sharper logits: no near-ties for argmax
  apply = jax.jit(lambda ids: model.apply({"params": params}, {"input_ids": ids}))
  free = greedy_reference(apply, prompts, max_new_tokens)
  eos = int(free[0, 1])  # row 0 ends at its second token
  expected = ended_at(free, eos, pad)
  got = generation.generate(model, params, input_ids, attention_mask, max_new_tokens=max_new_tokens,
                            eos_token_id=eos, pad_token_id=pad)
  np.testing.assert_array_equal(np.asarray(got), expected)
  assert list(expected[0, 2:]) == [pad] * 2


@dataclasses.dataclass(frozen=True)
class Uncached:
  """An HF model seen as any other kd_jax model: generation.generate recomputes its prefix."""
  model: object

  def apply(self, *args, **kwargs):
    return self.model.apply(*args, **kwargs)


def test_generation_without_a_cache_equals_the_kv_cache_decoder_of_the_fixture_llama():
  """The smoke teacher's fixture Llama (random weights, its blocks scaled up so that it does not repeat the last
  token) decoded greedily by the prefix-recomputing loop and by its own KV-cache decoder (tests/test_llm_models.py
  checks that one against transformers): the same tokens, a row ending at EOS included."""
  config = load_config("configs/custom_lm.py")
  model, params = models.create(config.teacher, num_classes=320, example_inputs=None, rng=jax.random.PRNGKey(0))
  params = {**params, "model": {name: jax.tree.map(lambda value: value * 6.0, tree) if name.startswith("layers.")
                                else tree for name, tree in params["model"].items()}}
  input_ids, attention_mask = left_padded([[1, 40, 41, 42, 43, 44], [1, 50, 51], [1, 60, 61, 62]], 0)
  decode = lambda eos, uncached=False: np.asarray(generation.generate(
      Uncached(model) if uncached else model, params, input_ids, attention_mask, max_new_tokens=8, eos_token_id=eos,
      pad_token_id=0))
  eos = int(decode(2)[1, 3])  # row 1 ends at its fourth token
  cached = decode(eos)
  np.testing.assert_array_equal(decode(eos, uncached=True), cached)
  assert len(np.unique(cached)) > 10 and list(cached[1, 4:]) == [0] * 4


@pytest.mark.parametrize("overrides, message", [
    (["--config.distill.loss_chunk=16"],
     f"config.distill.loss_chunk=16: needs an HF student: student.name={NNX_LM!r} (a user's model) returns logits, not "
     "the final hidden states and LM head the chunks project (use 0)"),
    (["--config.data.packing=True", "--config.distill.on_policy_fraction=0"],
     f"config.data.packing=True: needs a student whose call takes segment_ids and position_ids (packed rows: attention "
     f"within each example, positions restarting); {NNX_LM!r} does not take segment_ids or position_ids"),
    (["--config.student.init_from_teacher_layers=(0, 1)"],
     "config.student.init_from_teacher_layers=(0, 1): needs HF models (teacher.name='hf', student.name='hf'), not "
     f"'hf' and {NNX_LM!r}"),
    ([f"--config.teacher.name={NNX_LM}"],
     f"config.teacher.name={NNX_LM!r}: data.name='causal_lm' is text: it needs 'hf' models (their tokenizers tokenize "
     "it); a user's model may be the student"),
    (["--config.student.hidden_sizes=(32, 48)"],
     f"config.student.name={NNX_LM!r}: the factory raised ValueError: hidden_sizes (32, 48): one width, a multiple of "
     "16, per block"),
    (["--config.student.lora.rank=2", "--config.student.lora.target_modules=('query',)"],
     "config.student.lora.target_modules=('query',): matches no linear layer of the student (a layer named N is "
     "targeted when N is a target or ends with '.' + a target)"),
])
def test_what_a_user_lm_cannot_take_is_refused_before_anything_is_written(tmp_path, overrides, message):
  workdir = tmp_path / "run"
  result = run_main(f"--workdir={workdir}", "--config=configs/custom_lm.py:smoke", *overrides)
  assert (result.returncode, result.stderr) == (2, f"error: {message}\n")
  assert not os.path.exists(workdir)



def test_lora_finds_the_nnx_lms_projections_by_the_default_target_names():
  """LoRA with the default targets (the Llama family's q_proj and v_proj) fits the NNX student's attention (named
  alike): the preflight check passes, and a rank above the 32-wide projections is refused naming that width."""
  from kd_jax import preflight  # pylint: disable=import-outside-toplevel
  from kd_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  config = load_config("configs/custom_lm.py")
  config.student.lora.rank = 4
  preflight.check(config)
  config.student.lora.rank = 64
  with pytest.raises(ConfigError, match=r"^config\.student\.lora\.rank=64: must be <= 32, the smallest width"):
    preflight.check(config)
