"""Causal-LM distillation: the response-only layout, packing, bad input, on-policy (GKD) against NumPy, exact resume,
and the smoke run."""

import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import data, evaluation, models
from kd_jax.data import causal_lm as causal_lm_data
from kd_jax.data import text
from kd_jax.errors import ConfigError, UserError
from kd_jax.models import hf
from kd_jax.parallel import sharding
from kd_jax.teachers import student_data, teacher
from kd_jax.training import losses, on_policy, steps
from kd_jax.training.objective import Objective
from tests.helpers import REPO_ROOT, assert_resumed_after_step_2_is_bitwise, load_config, run_main

FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def task():
  return data.load_task(load_config("configs/causal_lm.py", "smoke"))


def test_bits_per_byte_is_the_responses_nll_in_bits_per_byte_of_their_text(task):
  """The evaluator's bits_per_byte on the validation split against NumPy: the summed NLL of every response token in
  bits over the UTF-8 bytes of the reference responses (read from the data file)."""
  config = load_config("configs/causal_lm.py", "smoke")
  responses = [json.loads(line)["response"] for line in
               (FIXTURES / "text" / "causal_lm" / "validation.jsonl").read_text().splitlines()]
  examples = task.validation
  assert len(examples) == len(responses)  # none truncated: every response counts whole
  assert [task.causal_lm.response_bytes[i] for i in examples.index.tolist()] == [
      len(response.encode("utf-8")) for response in responses]
  model, params = models.create(config.student, num_classes=task.num_classes, example_inputs=None,
                                rng=jax.random.PRNGKey(0))
  metrics = evaluation.for_task(config, task, sharding.make_mesh()).during_training(model, params)
  inputs = {key: examples.inputs[key] for key in ("input_ids", "attention_mask")}
  logits = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(params, inputs), np.float64)
  log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  labels = np.asarray(examples.label)
  nll = -np.take_along_axis(log_probs, np.maximum(labels, 0)[..., None], axis=-1)[..., 0]
  expected = np.sum(nll * (labels >= 0)) / np.log(2) / sum(len(response.encode("utf-8")) for response in responses)
  np.testing.assert_allclose(metrics["bits_per_byte"], expected, rtol=1e-5)


def test_a_cross_tokenizer_loss_with_one_shared_tokenizer_is_allowed_and_logged(caplog):
  config = load_config("configs/causal_lm.py", "smoke")
  config.distill.cross_tokenizer = "uld"
  with caplog.at_level("INFO", logger="kd_jax.data.causal_lm"):
    causal_lm_data.load_splits(config)
  assert "config.distill.cross_tokenizer='uld': teacher and student share one tokenizer; the loss compares aligned " \
         "chunks all the same, each of them one token" in caplog.text


def test_prompts_are_chat_templated_and_only_response_tokens_are_labeled(task):
  tokenizer = task.causal_lm.tokenizer
  assert (len(task.train), len(task.validation), len(task.test)) == (192, 32, 32) and task.num_classes == 320
  rows = json.loads("[" + ",".join((FIXTURES / "text" / "causal_lm" / "train.jsonl").read_text().splitlines()) + "]")
  for row in (0, 1, 100):
    conversation = [{"role": "user", "content": rows[row]["prompt"]},
                    {"role": "assistant", "content": rows[row]["response"]}]
    full = tokenizer.apply_chat_template(conversation, tokenize=False)
    prompt = tokenizer.apply_chat_template(conversation[:1], add_generation_prompt=True, tokenize=False)
    inputs, label = {k: v[row] for k, v in task.train.inputs.items()}, task.train.label[row]
    real = inputs["attention_mask"] > 0
    np.testing.assert_array_equal(real, np.arange(len(real)) < real.sum())  # right-padded
    assert tokenizer.decode(inputs["input_ids"][real]) == full
    assert tokenizer.decode(inputs["prompt_ids"][inputs["prompt_mask"] > 0]) == prompt
    prompt_mask = inputs["prompt_mask"] > 0
    np.testing.assert_array_equal(prompt_mask, np.arange(len(prompt_mask)) >= len(prompt_mask) - prompt_mask.sum())
    # label[t] is token t + 1 exactly where that token belongs to the response (after the prompt).
    num_prompt = int(inputs["prompt_mask"].sum())
    expected = np.full_like(label, -1)
    expected[num_prompt - 1:real.sum() - 1] = inputs["input_ids"][num_prompt:real.sum()]
    np.testing.assert_array_equal(label, expected)
    assert tokenizer.decode(label[label >= 0]) == full[len(prompt):]
    np.testing.assert_array_equal(task.train.token_weights[row], label >= 0)
  assert task.causal_lm.references[int(task.test.index[0])] == json.loads(
      (FIXTURES / "text" / "causal_lm" / "test.jsonl").read_text().splitlines()[0])["response"]


def test_plain_text_and_packing():
  tokenizer = text.load_tokenizer(str(FIXTURES / "hf" / "llama_chat"), "teacher.checkpoint")
  texts = ["The apple is red.", "The dog sleeps in the kennel.", "seven eight."]
  prompts, responses = causal_lm_data.tokenize_pairs(tokenizer, None, texts, max_length=64, chat_template=False,
                                                     where="w")
  assert prompts == [[], [], []]
  assert [tokenizer.decode(ids) for ids in responses] == [t + "<|im_end|>" for t in texts]
  arrays = causal_lm_data.sequence_arrays(prompts, responses, pad_token_id=0, length=12)
  np.testing.assert_array_equal(arrays["label"][0][:len(responses[0]) - 1], responses[0][1:])  # every next token
  packed = causal_lm_data.pack(prompts, responses, pad_token_id=0, length=24)
  first, second, third = (len(response) for response in responses)
  assert first + second <= 24 < first + second + third  # two examples fill the first row, the third opens another
  np.testing.assert_array_equal(packed["input_ids"][0], responses[0] + responses[1] + [0] * (24 - first - second))
  np.testing.assert_array_equal(packed["segment_ids"], [[1] * first + [2] * second + [0] * (24 - first - second),
                                                        [1] * third + [0] * (24 - third)])
  np.testing.assert_array_equal(packed["position_ids"][0][:first + second], list(range(first)) + list(range(second)))
  # Within an example every next token is a target; its last token has none (the next token opens another example).
  np.testing.assert_array_equal(packed["label"][0][:first + second], responses[0][1:] + [-1] + responses[1][1:] + [-1])
  # Prompt tokens of a packed pair are not targets; an example that does not fit opens a row.
  pairs = causal_lm_data.pack([[7, 8], [5], [4]], [[9, 10], [6], [3]], pad_token_id=0, length=4)
  np.testing.assert_array_equal(pairs["input_ids"], [[7, 8, 9, 10], [5, 6, 4, 3]])
  np.testing.assert_array_equal(pairs["label"], [[-1, 9, 10, -1], [6, -1, 3, -1]])
  np.testing.assert_array_equal(pairs["segment_ids"], [[1, 1, 1, 1], [1, 1, 2, 2]])
  np.testing.assert_array_equal(pairs["position_ids"], [[0, 1, 2, 3], [0, 1, 0, 1]])
  # Best fit: a later example fills the room an earlier row left.
  best_fit = causal_lm_data.pack([[1], [1], [1], [1]], [[5, 6], [7, 8], [9], []], pad_token_id=0, length=4)
  np.testing.assert_array_equal(best_fit["input_ids"], [[1, 5, 6, 1], [1, 7, 8, 0], [1, 9, 0, 0]])
  np.testing.assert_array_equal(best_fit["segment_ids"], [[1, 1, 1, 2], [1, 1, 1, 0], [1, 1, 0, 0]])


def test_generated_responses_join_their_prompts_in_the_training_layout():
  """Left-padded prompts and responses (EOS = 2, pad = 0 after it) -> [prompt][response up to EOS][pad]."""
  sequences = jax.device_get(causal_lm_data.sequences_from_responses(
      np.array([[0, 0, 5, 6], [3, 4, 5, 6]]), np.array([[0, 0, 1, 1], [1, 1, 1, 1]]),
      np.array([[7, 2, 0], [8, 9, 9]]), length=6, eos_token_ids=2, pad_token_id=0))
  np.testing.assert_array_equal(sequences["input_ids"], [[5, 6, 7, 2, 0, 0], [3, 4, 5, 6, 8, 9]])
  np.testing.assert_array_equal(sequences["attention_mask"], [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(sequences["label"], [[-1, 7, 2, -1, -1, -1], [-1, -1, -1, 8, 9, -1]])
  np.testing.assert_array_equal(sequences["response_mask"], np.asarray(sequences["label"]) >= 0)


def test_generated_responses_end_at_any_stop_token():
  """Stop tokens 2 and 3 (a generation config's list): each row's response ends at the first of either."""
  sequences = jax.device_get(causal_lm_data.sequences_from_responses(
      np.array([[5, 6], [5, 6]]), np.ones((2, 2), np.int32), np.array([[7, 3, 9], [2, 9, 9]]), length=5,
      eos_token_ids=(2, 3), pad_token_id=0))
  np.testing.assert_array_equal(sequences["input_ids"], [[5, 6, 7, 3, 0], [5, 6, 2, 0, 0]])
  np.testing.assert_array_equal(sequences["label"], [[-1, 7, 3, -1, -1], [-1, 2, -1, -1, -1]])


def test_on_policy_samples_use_their_own_filters():
  """The student's training samples take generation.train_top_k / train_top_p (default off, as TRL), not the
  evaluation's generation.top_k / top_p."""
  config = load_config("configs/causal_lm.py", "smoke")
  config.distill.teacher_mode, config.distill.on_policy_fraction = "online", 0.5
  config.generation.top_k, config.generation.top_p = 5, 0.9
  task = types.SimpleNamespace(causal_lm=types.SimpleNamespace(max_new_tokens=4, eos_token_ids=(2, 3),
                                                                 pad_token_id=0))
  model = types.SimpleNamespace(module="the student's module")
  sampling = Objective.from_config(config, task=task, model=model).on_policy
  assert (sampling.top_k, sampling.top_p, sampling.eos_token_ids) == (None, None, (2, 3))
  config.generation.train_top_k, config.generation.train_top_p = 8, 0.95
  sampling = Objective.from_config(config, task=task, model=model).on_policy
  assert (sampling.top_k, sampling.top_p) == (8, 0.95)


def test_bad_input_is_one_line(tmp_path):
  config = load_config("configs/causal_lm.py", "smoke")
  config.data.max_length = 8
  with pytest.raises(UserError, match=r"train.jsonl\), row 0: the prompt has 1\d tokens, more than data.max_length=8"):
    data.load_task(config)
  # Prompts of at most max_length tokens that leave no response token in any example: nothing to learn from.
  (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "What color is the apple?", "response": "red"}) + "\n")
  config = load_config("configs/causal_lm.py", "smoke")
  config.data.path, config.data.max_length, config.data.chat_template = str(tmp_path), 9, False
  with pytest.raises(UserError, match=r"only 0 of 1 examples keep a response token after truncation at "
                                      r"data.max_length=9, fewer than one batch \(data.batch_size=16\)"):
    data.load_task(config)
  config = load_config("configs/causal_lm.py", "smoke")
  config.student.checkpoint = str(FIXTURES / "hf" / "t5")
  with pytest.raises(UserError, match=r"^config.teacher.checkpoint='.*llama_chat' and config.student.checkpoint="
                                      r"'.*t5' do not share one vocabulary .*with config.distill.cross_tokenizer="
                                      r"'none' needs them to \(set it to 'uld', 'gold' or 'alm' to distill across "
                                      r"tokenizers\)$"):
    data.load_task(config)
  result = run_main("--config=configs/causal_lm.py:smoke", f"--workdir={tmp_path / 'w'}",
                    "--config.distill.on_policy_fraction=1.5")
  assert result.returncode == 2 and not (tmp_path / "w").exists()
  assert result.stderr.strip().splitlines()[-1].endswith(
      "config.distill.on_policy_fraction=1.5: must be in [0.0, 1.0]")


@pytest.mark.parametrize("changes, message", [
    ({"distill.teacher_mode": "cached"}, "config.distill.on_policy_fraction=0.5: needs distill.teacher_mode='online'"),
    ({"data.prompt_column": None}, "config.distill.on_policy_fraction=0.5: needs prompts"),
    ({"distill.on_policy_fraction": 0.0, "distill.on_policy_start_step": 50},
     "config.distill.on_policy_start_step=50: needs distill.on_policy_fraction > 0"),
    ({"data.packing": True}, "config.data.packing=True: needs data.validation_split"),
    ({"distill.loss_chunk": 8, "student.lora.rank": 2, "student.lora.target_modules": ("q_proj", "lm_head")},
     "config.distill.loss_chunk=8: projects with the student's plain LM head: LoRA on lm_head"),
])
def test_on_policy_and_packing_need_what_they_use(changes, message):
  from kd_jax import preflight  # pylint: disable=import-outside-toplevel
  from kd_jax.config import paths  # pylint: disable=import-outside-toplevel
  config = load_config("configs/causal_lm.py", "smoke")
  if "data.packing" in changes:
    config.data.validation_split = None
  for field, value in changes.items():
    paths.set_value(config, field, value)
  with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
    preflight.check(config)


@pytest.mark.parametrize("changes, message", [
    ({"distill.on_policy_fraction": 0.5}, "needs distill.on_policy_fraction=0.0"),
    ({"data.packing": True}, "needs data.packing=False"),
    ({"train.microbatches": 2}, "needs train.microbatches=1"),
    ({"distill.loss_chunk": 4}, "needs distill.loss_chunk=0"),
    ({"data.prompt_column": None}, "needs prompts (data.prompt_column)"),
])
def test_cross_tokenizer_distillation_needs_what_it_uses(changes, message):
  from kd_jax import preflight  # pylint: disable=import-outside-toplevel
  from kd_jax.config import paths  # pylint: disable=import-outside-toplevel
  config = load_config("configs/causal_lm.py", "smoke,cross_tokenizer")
  for field, value in changes.items():
    paths.set_value(config, field, value)
  with pytest.raises(ConfigError, match="^" + ("config.distill.cross_tokenizer='gold': " + message).replace(
      "(", r"\(").replace(")", r"\)").replace(".", r"\.")):
    preflight.check(config)


@pytest.fixture(scope="module")
def cross_task():
  return data.load_task(load_config("configs/causal_lm.py", "smoke,cross_tokenizer"))


@pytest.mark.slow
def test_a_cached_teacher_of_another_tokenizer_gives_alm_the_online_teachers_chunk_likelihoods(cross_task, tmp_path):
  """distill.teacher_mode='cached' with a model teacher of another tokenizer: its own logprobs file (written once into
  the teacher directory, keyed by its weights and the data) is the cache; ALM needs only the chunks' log-likelihoods,
  which the file holds exactly, so the cached ALM loss equals the online teacher's on the same batch and student
  (the train step's use of cached chunks: tests/test_logprobs_file.py)."""
  import copy  # pylint: disable=import-outside-toplevel
  from kd_jax import preflight  # pylint: disable=import-outside-toplevel
  from kd_jax.teachers import student_data, teacher  # pylint: disable=import-outside-toplevel
  online_config = load_config("configs/causal_lm.py", "smoke,cross_tokenizer")
  online_config.distill.cross_tokenizer = "alm"
  cached_config = copy.deepcopy(online_config)
  cached_config.distill.teacher_mode = "cached"
  preflight.check(cached_config)
  cached_config.distill.temperature = 2.0
  with pytest.raises(ConfigError, match=r"^config\.distill\.temperature=2\.0: must be 1 for a cached teacher of "
                                        r"another tokenizer \(its cache holds its top-k log-probabilities at T = 1"):
    preflight.check(cached_config)
  cached_config.distill.temperature = 1.0
  task = cross_task
  teacher_model, teacher_params = models.create(online_config.teacher, num_classes=task.num_classes,
                                                example_inputs=None, rng=jax.random.PRNGKey(0))
  model, params = models.create(online_config.student, num_classes=task.num_classes, example_inputs=None,
                                rng=jax.random.PRNGKey(0))
  mesh = sharding.make_mesh()
  placed_teacher = sharding.replicate(teacher_params, mesh)
  prepared = student_data.prepare(cached_config, task, teacher.Teacher(teacher_model, placed_teacher,
                                                                       str(tmp_path / "teacher")), mesh)
  assert prepared.results["teacher_cache"]["signal"] == "logprobs_chunks"
  assert len(list((tmp_path / "teacher").glob(f"own-logprobs-k{online_config.distill.topk}-chat1-*.jsonl"))) == 1
  from kd_jax.training import cross_tokenizer  # pylint: disable=import-outside-toplevel
  batch = prepared.examples.select(np.arange(32))  # the training examples with the cached signal joined

  @jax.jit
  def soft_losses(params, teacher_params, batch):
    logits = model.apply({"params": params}, batch.inputs, train=False)
    teacher_logits = teacher_model.apply({"params": teacher_params}, batch.teacher_inputs, train=False)
    online = cross_tokenizer.chunk_losses("alm", logits, batch.label, batch.inputs["chunk"], teacher_logits,
                                          batch.teacher_inputs["label"], batch.teacher_inputs["chunk"],
                                          num_chunks=batch.label.shape[1])
    cached = cross_tokenizer.cached_chunk_losses("alm", logits, batch.label, batch.teacher)
    return [losses.global_mean(values, weights) for values, weights in (online, cached)] + [
        jnp.sum(weights) for _, weights in (online, cached)]
  online, cached, online_chunks, cached_chunks = soft_losses(params, teacher_params, batch)
  assert float(online_chunks) == float(cached_chunks) > 32 * 4 and float(online) > 0
  np.testing.assert_allclose(float(cached), float(online), rtol=1e-5)


@pytest.mark.slow
def test_the_train_step_distills_across_tokenizers_on_the_aligned_chunks(cross_task):
  """One compiled step of the gold student under the fixture teacher of another tokenizer: its soft loss is the mean
  over the batch's aligned chunks of cross_tokenizer.chunk_losses (on both models' own tokens), its hard loss the
  student's CE on its own labels; the teacher's view of the examples is its own tokenization."""
  from kd_jax.training import cross_tokenizer  # pylint: disable=import-outside-toplevel
  config = load_config("configs/causal_lm.py", "smoke,cross_tokenizer")
  task = cross_task
  teacher_view = task.train.teacher_view()
  assert not np.array_equal(teacher_view.inputs["input_ids"], task.train.inputs["input_ids"])
  np.testing.assert_array_equal(teacher_view.label, task.train.teacher_inputs["label"])
  teacher_model, teacher_params = models.create(config.teacher, num_classes=task.num_classes, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  model, params = models.create(config.student, num_classes=task.num_classes, example_inputs=None,
                                rng=jax.random.PRNGKey(0))
  mesh = sharding.make_mesh()
  objective = Objective.from_config(config, num_steps=10, task=task, model=model)
  assert objective.logit_loss.cross_tokenizer == "gold" and objective.logit_loss.shared_ids[0].shape[0] > 250
  batch = task.train.select(np.arange(16))
  step = steps.compile_step(mesh, model=model, teacher_model=teacher_model)
  state = sharding.replicate(steps.create_train_state(model, jax.device_get(params), config.optim, 10), mesh)
  _, metrics = step(state, sharding.replicate(teacher_params, mesh), sharding.replicate(objective, mesh),
                    sharding.replicate(jax.random.PRNGKey(0), mesh), sharding.shard_batch(batch, mesh))

  @jax.jit
  def expected(params, teacher_params, batch, shared_ids):
    # Dropout is on in the step (GPT-2's 0.1): the step's keys, per example.
    step_rng = jax.random.fold_in(jax.random.PRNGKey(0), 0)
    dropout = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(step_rng, i), 2)[0])(batch.index)
    logits = jax.vmap(lambda inputs, key: model.apply(
        {"params": params}, jax.tree.map(lambda value: value[None], inputs), train=True,
        rngs={"dropout": key})[0])(batch.inputs, dropout)
    teacher_logits = teacher_model.apply({"params": teacher_params}, batch.teacher_inputs, train=False)
    values, weights = cross_tokenizer.chunk_losses(
        "gold", logits, batch.label, batch.inputs["chunk"], teacher_logits, batch.teacher_inputs["label"],
        batch.teacher_inputs["chunk"], num_chunks=batch.label.shape[1], temperature=1.0, divergence="forward_kl",
        shared_ids=shared_ids)
    hard = losses.global_mean(losses.cross_entropy(logits, batch.label), batch.token_weights)
    return losses.global_mean(values, weights), hard, jnp.sum(weights)
  soft, hard, num_chunks = expected(params, teacher_params, batch, objective.logit_loss.shared_ids)
  assert float(num_chunks) > 16
  np.testing.assert_allclose(float(metrics["soft_loss"]), float(soft), rtol=1e-4)
  np.testing.assert_allclose(float(metrics["hard_loss"]), float(hard), rtol=1e-4)


@pytest.mark.slow
def test_the_cached_teacher_is_its_topk_per_position_and_sequence_level_targets_are_its_responses(task, tmp_path):
  config = load_config("configs/causal_lm.py", "smoke")
  config.distill.teacher_mode, config.distill.on_policy_fraction, config.distill.topk = "cached", 0.0, 8
  mesh = sharding.make_mesh()
  model, params = models.create(config.teacher, num_classes=task.num_classes, example_inputs=None,
                                rng=jax.random.PRNGKey(0))
  the_teacher = teacher.Teacher(model, sharding.replicate(params, mesh), str(tmp_path))
  prepared = student_data.prepare(config, task, the_teacher, mesh)
  cached = prepared.examples.teacher
  assert isinstance(cached, losses.TopKLogits) and cached.values.shape == task.train.label.shape + (8,)
  rows = np.array([5, 77])
  logits = np.asarray(model.apply({"params": params}, task.train.select(rows).inputs, train=False), np.float32)
  np.testing.assert_allclose(np.asarray(cached.values[rows], np.float32), -np.sort(-logits, axis=-1)[..., :8],
                             rtol=1e-3, atol=1e-3)
  config.distill.strategy = "sequence"
  targets = student_data.prepare(config, task, the_teacher, mesh).examples
  generated = hf.generate(model.module, params, task.train.inputs["prompt_ids"][rows],
                          task.train.inputs["prompt_mask"][rows], max_new_tokens=config.data.max_target_length,
                          eos_token_id=task.causal_lm.eos_token_ids, pad_token_id=task.causal_lm.pad_token_id)
  for row, tokens in zip(rows, np.asarray(generated)):
    response = targets.label[row][targets.label[row] >= 0]
    np.testing.assert_array_equal(response, tokens[:len(response)])
    assert targets.token_weights[row].sum() == len(response) > 0
    np.testing.assert_array_equal(targets.inputs["prompt_ids"][row], task.train.inputs["prompt_ids"][row])


@dataclasses.dataclass(frozen=True)
class NextTokenCounter:
  """A causal LM (the registry's apply convention) whose next token is the last one + 1 (mod V), with probability 1
  at any sampling temperature: what the student samples is known without JAX."""
  vocab_size: int

  def apply(self, variables, inputs, train=False):
    del variables, train
    return 1e4 * jax.nn.one_hot((inputs["input_ids"] + 1) % self.vocab_size, self.vocab_size)


def test_sequence_level_targets_mix_with_on_policy_samples_as_trl_seq_kd(task, tmp_path, monkeypatch):
  """distill.strategy='sequence' with lambda = 0.5 (TRL GKD's seq_kd=True with lmbda; refused before): the teacher's
  responses replace the data's, the teacher runs in the step with the distillation loss, and over 6 steps a batch
  holds the student's samples exactly in the steps a Python reference of the rule (from distill.on_policy_start_step
  = 2 on, the coin of (seed, step) with probability lambda; the student's continuation computed token by token)
  says, the teacher's responses (labeled) in the others: step 1's coin says sample, and the start step overrules
  it."""
  from kd_jax import preflight  # pylint: disable=import-outside-toplevel
  config = load_config("configs/causal_lm.py", "smoke")
  config.distill.strategy = "sequence"
  config.distill.on_policy_start_step = 2
  assert (config.distill.on_policy_fraction, config.distill.teacher_mode) == (0.5, "online")
  preflight.check(config)
  info = task.causal_lm
  vocab, eos = task.num_classes, set(info.eos_token_ids)
  # The teacher's cached greedy generations (built from a real teacher in the test above): row i answers
  # [20 + i % 7, 30, EOS] then pads.
  tokens = np.full((len(task.train), info.max_new_tokens), info.pad_token_id, np.int32)
  tokens[:, 0], tokens[:, 1], tokens[:, 2] = 20 + np.arange(len(task.train)) % 7, 30, info.eos_token_ids[0]
  cache = types.SimpleNamespace(lookup=lambda index: {"tokens": tokens[np.asarray(index)]})
  monkeypatch.setattr(student_data, "_build", lambda *args, **kwargs: (cache, {"built": True}))
  the_teacher = teacher.Teacher("the teacher's model", "its params", str(tmp_path))
  prepared = student_data.prepare(config, task, the_teacher, sharding.make_mesh())
  assert prepared.online_teacher is the_teacher and prepared.distills
  batch = prepared.examples.select(np.arange(8))
  teacher_ids = np.asarray(batch.inputs["input_ids"])
  for row in range(8):
    np.testing.assert_array_equal(np.asarray(batch.label[row])[np.asarray(batch.label[row]) >= 0], tokens[row, :3])
  objective = Objective.from_config(config, num_steps=6, task=task, model=NextTokenCounter(vocab),
                                    distills=prepared.distills)
  assert float(objective.logit_loss.soft_weight) > 0 and objective.on_policy.fraction == 0.5
  assert objective.on_policy.start_step == 2
  rng = jax.random.PRNGKey(config.seed)
  step_batch = jax.jit(lambda step: objective.on_policy.batch(None, rng, step, batch))
  length = teacher_ids.shape[1]
  coins = []
  for step in range(6):
    coin = bool(jax.random.bernoulli(jax.random.split(jax.random.fold_in(
        jax.random.fold_in(rng, on_policy.ON_POLICY_STREAM), step))[0], 0.5))
    coins.append(coin)
    coin = coin and step >= 2
    got = jax.device_get(step_batch(step))
    for row in range(8):
      if not coin:
        np.testing.assert_array_equal(got.inputs["input_ids"][row], teacher_ids[row])
        np.testing.assert_array_equal(got.label[row], batch.label[row])
        continue
      prompt = [int(t) for t, m in zip(batch.inputs["prompt_ids"][row], batch.inputs["prompt_mask"][row]) if m]
      response = []
      while len(response) < info.max_new_tokens and not (response and response[-1] in eos):
        response.append(((response or prompt)[-1] + 1) % vocab)
      sequence = (prompt + response)[:length]
      expected = np.array(sequence + [info.pad_token_id] * (length - len(sequence)))
      np.testing.assert_array_equal(got.inputs["input_ids"][row], expected)
      assert (got.label[row] == -1).all()
      positions = np.arange(length)
      np.testing.assert_array_equal(got.token_weights[row] > 0,
                                    (positions >= len(prompt) - 1) & (positions < len(sequence) - 1))
  assert coins[1] and set(coins[2:]) == {True, False}


def numpy_generalized_jsd(student_logits, teacher_logits, mask, beta):
  """TRL's GKDTrainer.generalized_jsd_loss (T = 1, reduction batchmean over the masked tokens), float64."""
  log_s = student_logits - np.logaddexp.reduce(student_logits, axis=-1, keepdims=True)
  log_t = teacher_logits - np.logaddexp.reduce(teacher_logits, axis=-1, keepdims=True)
  log_m = np.logaddexp(np.log(beta) + log_t, np.log(1 - beta) + log_s)
  kl = lambda log_p, log_q: np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
  jsd = beta * kl(log_t, log_m) + (1 - beta) * kl(log_s, log_m)
  return np.sum(jsd * mask) / np.sum(mask)


def gkd_setup(task, fraction: float):
  config = load_config("configs/causal_lm.py", "smoke")
  config.distill.divergence, config.distill.beta, config.distill.temperature = "generalized_js", 0.3, 1.0
  config.distill.alpha, config.distill.ce_weight, config.distill.kd_weight = None, 0.0, 1.0
  config.distill.on_policy_fraction = fraction
  teacher_model, teacher_params = models.create(config.teacher, num_classes=task.num_classes, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  model, params = models.create(config.student, num_classes=task.num_classes, example_inputs=None,
                                rng=jax.random.PRNGKey(0))
  # Scaled (tied) embeddings sharpen the random models' next-token distributions, so that they differ clearly.
  sharpen = lambda params, scale: {**params, "model": {**params["model"], "embed_tokens": {
      "embedding": params["model"]["embed_tokens"]["embedding"] * scale}}}
  return config, (teacher_model, sharpen(teacher_params, 40.0)), (model, sharpen(params, 20.0))


@pytest.mark.slow
def test_on_policy_loss_is_numpy_gkd_on_the_students_samples(task):
  """lambda = 1: the step samples the batch's responses from the student and its loss is TRL's generalized JSD of
  student and teacher on exactly those tokens; each example's tokens depend on (seed, step, index) only."""
  config, (teacher_model, teacher_params), (model, params) = gkd_setup(task, 1.0)
  mesh = sharding.make_mesh()
  objective = Objective.from_config(config, num_steps=10, task=task, model=model)
  sampling = objective.on_policy
  rng, step_number = jax.random.PRNGKey(7), 0
  batch = task.train.select(np.arange(16))
  step = steps.compile_step(mesh, model=model, teacher_model=teacher_model)
  state = sharding.replicate(steps.create_train_state(model, jax.device_get(params), config.optim, 10), mesh)
  _, metrics = step(state, sharding.replicate(teacher_params, mesh), sharding.replicate(objective, mesh),
                    sharding.replicate(rng, mesh), sharding.shard_batch(batch, mesh))
  sampled = jax.jit(lambda params, batch: sampling.batch(params, rng, step_number, batch))(params, batch)
  # The same rows in another order and company sample the same responses.
  other = jax.jit(lambda params, batch: sampling.batch(params, rng, step_number, batch))(
      params, task.train.select(np.array([15, 3, 40, 41])))
  np.testing.assert_array_equal(np.asarray(other.inputs["input_ids"])[[1, 0]],
                                np.asarray(sampled.inputs["input_ids"])[[3, 15]])
  mask = np.asarray(sampled.token_weights)
  assert (np.asarray(sampled.label) == -1).all() and mask.sum() > 16
  inputs = {key: sampled.inputs[key] for key in ("input_ids", "attention_mask")}
  student_logits = np.asarray(model.apply({"params": params}, inputs, train=False), np.float64)
  teacher_logits = np.asarray(teacher_model.apply({"params": teacher_params}, inputs, train=False), np.float64)
  expected = numpy_generalized_jsd(student_logits, teacher_logits, mask, beta=0.3)
  np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=2e-5)
  np.testing.assert_allclose(float(metrics["soft_loss"]), expected, rtol=2e-5)
  assert float(metrics["hard_loss"]) == 0.0
  # The responses are the student's: each sampled token has non-negligible student probability at T = 1.
  tokens = np.asarray(inputs["input_ids"])[:, 1:]
  log_probs = student_logits[:, :-1] - np.logaddexp.reduce(student_logits[:, :-1], axis=-1, keepdims=True)
  chosen = np.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
  assert np.all(chosen[mask[:, :-1] > 0] > -25)


@pytest.mark.slow
def test_a_resumed_on_policy_run_is_bitwise_the_uninterrupted_one(task, tmp_path):
  """lambda = 0.5 over 6 steps (both kinds of batch occur): stopped after step 2 and resumed from its checkpoint, the
  run ends with exactly the parameters of the uninterrupted run (CPU)."""
  config, teacher, student = gkd_setup(task, 0.5)
  coin = lambda step: bool(jax.random.bernoulli(jax.random.split(jax.random.fold_in(
      jax.random.fold_in(jax.random.PRNGKey(config.seed), on_policy.ON_POLICY_STREAM), step))[0], 0.5))
  assert len({coin(step) for step in range(6)}) == 2
  assert_resumed_after_step_2_is_bitwise(config, task, teacher, student, 6, tmp_path)


@pytest.mark.slow
def test_a_resumed_cross_tokenizer_run_is_bitwise_the_uninterrupted_one(cross_task, tmp_path):
  """The gold student under the teacher of another tokenizer, 4 steps: stopped after step 2 and resumed from its
  checkpoint, the run ends with exactly the parameters of the uninterrupted run (CPU)."""
  config = load_config("configs/causal_lm.py", "smoke,cross_tokenizer")
  create = lambda section: models.create(section, num_classes=cross_task.num_classes, example_inputs=None,
                                         rng=jax.random.PRNGKey(0))
  assert_resumed_after_step_2_is_bitwise(config, cross_task, create(config.teacher), create(config.student), 4,
                                         tmp_path)


@pytest.mark.slow
def test_causal_lm_smoke_end_to_end(causal_lm_smoke_run):
  """configs/causal_lm.py:smoke through the command line (the session's shared run, tests/artifacts.py) without its
  hard-label student (nothing here reads it; a causal LM's hard-label student runs end to end in
  tests/test_logprobs_file.py's smoke run)."""
  results = json.loads((causal_lm_smoke_run / "results.json").read_text())
  assert "teacher" in results["train"]["phases"]  # trained in this run
  for section in ("metrics", "validation_metrics"):  # the test and validation splits
    teacher, student = results[section]["teacher"], results[section]["student"]
    assert teacher["perplexity"] < 1.5 and teacher["rougeL"] > 0.9  # the teacher learned the fixture world
    for name in ("perplexity", "nll", "token_accuracy", "agreement", "kl_to_teacher", "rougeL"):
      assert np.isfinite(student[name]), name
    np.testing.assert_allclose(student["perplexity"], np.exp(student["nll"]), rtol=1e-6)

