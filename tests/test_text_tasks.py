"""Text tasks: SST-2 with two tokenizers, e-SNLI seq2seq, the top-k cache and loss, sources, errors, smoke runs."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import data, evaluation, fingerprints, models, train
from kd_jax.data import Examples, esnli, feed, pipeline, text
from kd_jax.data.examples import wide_dtype, widened
from kd_jax.config import rules
from kd_jax.errors import ConfigError, UserError
from kd_jax.evaluation import metrics, seq2seq
from kd_jax.parallel import sharding
from kd_jax.teachers import student_data, teacher, teacher_cache
from kd_jax.training import losses, steps
from kd_jax.training.objective import Objective
from tests import numpy_divergences
from tests.helpers import REPO_ROOT, load_config, run_main

SST2_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "text" / "sst2"


def squeezed(texts: list[str]) -> list[str]:
  """Texts compared across tokenizers: lowercased, without whitespace."""
  return ["".join(t.lower().split()) for t in texts]


def text_encoding_logits(texts: list[str]) -> np.ndarray:
  """A 'teacher' whose two logits spell out its input text, so a row joined to the wrong example is obvious."""
  return np.asarray([[len(t), sum(map(ord, t)) % 9973] for t in texts], np.float32)


@pytest.fixture(scope="module")
def sst2_task():
  return data.load_task(load_config("configs/sst2.py", "smoke"))


def test_two_tokenizers_and_the_index_join_canary(sst2_task, tmp_path):
  """Teacher logits computed on the teacher's tokens reach the student's batch of the same sentence, by index."""
  config = load_config("configs/sst2.py", "smoke")
  student_tokenizer = text.load_tokenizer(config.student.checkpoint, "student.checkpoint")
  teacher_tokenizer = text.load_tokenizer(config.teacher.checkpoint, "teacher.checkpoint")
  train_split = sst2_task.train
  assert not np.array_equal(train_split.inputs["input_ids"][:, :5], train_split.teacher_inputs["input_ids"][:, :5])
  decode = lambda tokenizer, ids: squeezed(tokenizer.batch_decode(ids, skip_special_tokens=True))
  teacher_texts = decode(teacher_tokenizer, train_split.teacher_inputs["input_ids"])
  assert teacher_texts == decode(student_tokenizer, train_split.inputs["input_ids"])
  metadata = teacher_cache.expected_metadata("dense", data_name="sst2", split="train",
                                             data_fingerprint=sst2_task.fingerprint, size=len(teacher_texts),
                                             num_classes=2, teacher_fingerprint="t", dtype="float32")

  def teacher_on_its_own_tokens(examples):  # the cache's order (by index), the teacher's tokens
    texts = decode(teacher_tokenizer, examples.teacher_view().inputs["input_ids"])
    yield {"logits": text_encoding_logits(texts)}, len(texts)

  cache, _ = teacher_cache.load_or_build(str(tmp_path), metadata, train_split, teacher_on_its_own_tokens)
  # Shuffled batches of student tokens join it.
  batches = pipeline.train_batches(teacher_cache.join(train_split, cache), batch_size=16, seed=3)
  for _ in range(12):
    batch = next(batches)
    np.testing.assert_array_equal(batch.teacher,
                                  text_encoding_logits(decode(student_tokenizer, batch.inputs["input_ids"])))


def test_sst2_task_from_the_saved_dataset(sst2_task):
  assert sst2_task.num_classes == 2 and sst2_task.seq2seq is None
  # GLUE's validation split (48 fixture sentences) is the test split; 10% of the 160 training sentences validate.
  assert len(sst2_task.train) == 144 and len(sst2_task.validation) == 16 and len(sst2_task.test) == 48
  held_out, kept = np.bincount(sst2_task.validation.label), np.bincount(sst2_task.train.label)
  np.testing.assert_array_equal(held_out, np.maximum(1, np.round(0.1 * (held_out + kept))))  # stratified
  assert not set(sst2_task.validation.index) & (set(sst2_task.train.index) | set(sst2_task.test.index))
  assert not set(sst2_task.train.index) & set(sst2_task.test.index)
  for split in (sst2_task.train, sst2_task.test):
    for inputs in (split.inputs, split.teacher_inputs):
      assert inputs["input_ids"].shape == inputs["attention_mask"].shape
      assert inputs["input_ids"].shape[1] <= 64


@pytest.mark.slow
def test_a_bfloat16_teachers_dense_cache_holds_its_logits_in_float32(sst2_task, tmp_path):
  """The cache of a classifier computing in bfloat16 (whose logits are bfloat16) stores float32 that read back as
  the teacher's logits on its own tokens, joined to the right examples."""
  config = load_config("configs/sst2.py", "smoke")
  config.teacher.dtype = config.teacher.param_dtype = "bfloat16"
  mesh = sharding.make_mesh()
  model, params = models.create(config.teacher, num_classes=2, example_inputs=None, rng=jax.random.PRNGKey(0))
  the_teacher = teacher.Teacher(model, sharding.replicate(params, mesh), str(tmp_path))
  prepared = student_data.prepare(config, sst2_task, the_teacher, mesh)
  assert prepared.examples.teacher.dtype == np.float32 and prepared.results["teacher_cache"]["bytes_per_example"] == 12
  rows = np.arange(0, len(sst2_task.train), 7)
  expected = model.apply({"params": params}, sst2_task.train.teacher_view().select(rows).inputs, train=False)
  assert expected.dtype == jnp.bfloat16
  np.testing.assert_allclose(prepared.examples.teacher[rows], np.asarray(expected, np.float32), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("extension", ["csv", "jsonl", "parquet"])
def test_local_files_give_the_saved_dataset(sst2_task, tmp_path, extension):
  import datasets  # pylint: disable=import-outside-toplevel
  for split, dataset in datasets.load_from_disk(str(SST2_FIXTURE)).items():
    frame = dataset.to_pandas()
    path = tmp_path / f"{split}.{extension}"
    {"csv": lambda: frame.to_csv(path, index=False), "jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     "parquet": lambda: frame.to_parquet(path)}[extension]()
  config = load_config("configs/sst2.py", "smoke")
  config.data.source, config.data.path = "files", str(tmp_path)
  task = data.load_task(config)
  assert task.fingerprint == sst2_task.fingerprint
  np.testing.assert_array_equal(task.train.inputs["input_ids"], sst2_task.train.inputs["input_ids"])


def test_tfds_source_with_mock_data():
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  config = load_config("configs/sst2.py", "smoke")
  config.data.source, config.data.path = "tfds", "glue/sst2"
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    columns, _ = text.load_columns(config.data, "validation", ("sentence", "label"))
  assert len(columns["sentence"]) == 6 and all(isinstance(s, str) for s in columns["sentence"])
  config = load_config("configs/esnli.py", "smoke")
  config.data.source, config.data.path = "tfds", "esnli"
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
    columns, _ = text.load_columns(config.data, "train", esnli.COLUMNS)
  assert sorted(columns) == sorted(esnli.COLUMNS) and len(columns["premise"]) == 4


def test_bad_files_are_one_line_errors(tmp_path):
  config = load_config("configs/sst2.py", "smoke")
  config.data.source, config.data.path = "files", str(tmp_path)
  with pytest.raises(UserError, match=r"no file for split 'train' .*offline, point the config at a local copy"):
    data.load_task(config)
  (tmp_path / "train.csv").write_text("sentence,label\nfine film .,1\nbad film .,7\n")
  with pytest.raises(UserError, match=r"train.csv.*row 1: label 7 is not an integer in \[0, 2\)"):
    data.load_task(config)
  (tmp_path / "train.csv").write_text("text,label\nfine film .,1\n")
  with pytest.raises(UserError, match=r"train.csv has no column 'sentence' \(columns: label, text\)"):
    data.load_task(config)


def test_offline_hub_data_and_checkpoint_errors(tmp_path, monkeypatch):
  """Without network or local copies: exit 2, one line naming what is missing and how to point at local copies."""
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  result = run_main("--config=configs/sst2.py", f"--workdir={tmp_path / 'w'}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: checkpoint distilbert-base-uncased is not a local directory and could not be fetched")
  fixtures = REPO_ROOT / "tests" / "fixtures" / "hf"
  result = run_main("--config=configs/sst2.py", f"--workdir={tmp_path / 'w'}",
                    f"--config.student.checkpoint={fixtures / 'distilbert'}",
                    f"--config.teacher.checkpoint={fixtures / 'roberta'}")
  assert result.returncode == 2
  line = result.stderr.strip().splitlines()[-1]
  assert "load_dataset('nyu-mll/glue', 'sst2')" in line and "config.data.source='files'" in line, line
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("checkpoint", ["t5", "bert"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_tokenizing_in_blocks_gives_the_arrays_of_one_call(checkpoint, padding_side):
  """Full-size sets are tokenized a block at a time (bounded memory); padded to the longest text of all blocks, on the
  tokenizer's side, the arrays are those of one padding='longest' call."""
  tokenizer = text.load_tokenizer(str(REPO_ROOT / "tests" / "fixtures" / "hf" / checkpoint), "student.checkpoint")
  tokenizer.padding_side = padding_side
  rng = np.random.default_rng(0)
  words = "a man is playing the guitar on stage while extraordinary dogs run".split()
  texts = [" ".join(rng.choice(words, rng.integers(1, 40))) for _ in range(300)]
  whole = tokenizer(texts, truncation=True, max_length=64, padding="longest", return_tensors="np")
  blocks = text.tokenize(tokenizer, texts, 64, block_size=37)
  assert set(blocks) == set(whole) & {"input_ids", "attention_mask", "token_type_ids"}
  for key, values in blocks.items():
    np.testing.assert_array_equal(values, whole[key])


def test_esnli_label_parsing():
  assert esnli.parse_output("entailment explanation: a park is outside .") == (0, "a park is outside .")
  assert esnli.parse_output("  Contradiction. explanation: no") == (2, "no")
  assert esnli.parse_output("neutral not every man is a student") == (1, "not every man is a student")
  assert esnli.parse_output("maybe explanation: a park is outside") == (None, "a park is outside")
  assert esnli.parse_output("") == (None, "")
  assert esnli.parse_output("entailmentexplanation: x")[0] is None
  result, parsed = seq2seq.label_metrics(["entailment explanation: a b", "garbage", "neutral explanation: c"],
                                         np.array([0, 0, 2]), ["a b", "x", "c"], esnli.parse_output,
                                         teacher_labels=[0, None, 1])
  assert parsed == [0, None, 1]
  assert result["label_accuracy"] == pytest.approx(1 / 3) and result["unparseable"] == pytest.approx(1 / 3)
  assert result["agreement"] == pytest.approx(2 / 3)  # an unparseable output never agrees, even with another


def test_rouge_on_known_strings():
  scores = metrics.rouge_scores(["the cat sat"], ["the cat sat on the mat"])
  # rouge1: P = 3/3, R = 3/6; rouge2: P = 2/2, R = 2/5; rougeL: LCS 3 as rouge1.
  assert scores["rouge1"] == pytest.approx(2 / 3)
  assert scores["rouge2"] == pytest.approx(2 * 0.4 / 1.4)
  assert scores["rougeL"] == pytest.approx(2 / 3)
  assert metrics.rouge_scores(["a dog runs", ""], ["a dog runs", "a dog"]) == {"rouge1": 0.5, "rouge2": 0.5,
                                                                               "rougeL": 0.5}
  assert metrics.rouge_scores(["Dogs running."], ["dog runs"])["rouge1"] == 1.0  # Porter stemming


def random_topk(logits: np.ndarray, k: int, tail_temperatures: tuple[float, ...] = ()) -> losses.TopKLogits:
  """The top-k cache of `logits` (NumPy: eager JAX ops would compile one by one) with its tail's log-sum-exp at T = 1
  (flat) or at each of `tail_temperatures` (exact)."""
  logits = np.asarray(logits, np.float32)
  indices = np.argsort(-logits, axis=-1, kind="stable")[..., :k].astype(np.int32)
  tail = logits.astype(np.float64)
  np.put_along_axis(tail, indices, -np.inf, axis=-1)

  def logsumexp(x):
    top = np.max(x, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
      return (np.log(np.exp(x - top).sum(-1)) + top[..., 0]).astype(np.float32)

  tail_logsumexp = (np.stack([logsumexp(tail / t) for t in tail_temperatures], axis=-1) if tail_temperatures
                    else logsumexp(tail))
  return losses.TopKLogits(np.take_along_axis(logits, indices, -1), indices, tail_logsumexp)


def numpy_topk_bins(student: np.ndarray, teacher: np.ndarray, k: int, temperature: float, exact_tail: bool = False):
  """The k + 1 bins of losses.topk_divergence in float64: (student's exact bin probabilities, teacher's: its k largest
  logits and a flat tail holding its exact tail mass at T = 1, or with `exact_tail` its exact tail mass at T)."""
  student, teacher = student.astype(np.float64), teacher.astype(np.float64)
  vocab = teacher.shape[-1]
  order = np.argsort(-teacher, axis=-1)[..., :k]
  top_t = np.take_along_axis(teacher, order, -1)
  if exact_tail:
    tail_logit = np.log(np.exp(teacher / temperature).sum(-1) - np.exp(top_t / temperature).sum(-1))
  else:
    tail_mass_t1 = np.exp(teacher).sum(-1) - np.exp(top_t).sum(-1)  # at T = 1
    tail_logit = np.log(vocab - k) + np.log(tail_mass_t1 / (vocab - k)) / temperature
  t_bins = np.concatenate([top_t / temperature, tail_logit[..., None]], -1)
  s_scaled = np.exp(student / temperature)
  s_top = np.take_along_axis(s_scaled, order, -1)
  s_bins = np.concatenate([s_top, (s_scaled.sum(-1) - s_top.sum(-1))[..., None]], -1)
  p_t = np.exp(t_bins - t_bins.max(-1, keepdims=True))
  return s_bins / s_bins.sum(-1, keepdims=True), p_t / p_t.sum(-1, keepdims=True)


def numpy_topk_divergence(student: np.ndarray, teacher: np.ndarray, k: int, temperature: float,
                          kind: str = "forward_kl", akl_weight_student: np.ndarray | None = None,
                          exact_tail: bool = False) -> np.ndarray:
  """The (k + 1)-bin divergence of losses.topk_divergence, computed independently in float64 (mse: the k logits).
  akl_weight_student: the student logits akl's head/tail weight is taken at (default: `student`); exact_tail: the
  teacher's tail bin exact at T (else flat)."""
  if kind == "mse":
    order = np.argsort(-teacher, axis=-1)[..., :k]
    top_s, top_t = (np.take_along_axis(z.astype(np.float64), order, -1) for z in (student, teacher))
    return temperature**2 * ((top_s / temperature - top_t / temperature) ** 2).mean(-1)
  p_s, p_t = numpy_topk_bins(student, teacher, k, temperature, exact_tail)
  weight_of = None
  if akl_weight_student is not None:
    weight_of = tuple(reversed(numpy_topk_bins(akl_weight_student, teacher, k, temperature, exact_tail)))
  return temperature**2 * numpy_divergences.divergence_of_probs(p_s, p_t, kind, akl_head_weight_of=weight_of)


@pytest.mark.slow
def test_topk_loss_vs_dense_and_numpy():
  rng = np.random.default_rng(0)
  vocab = 40
  student = rng.normal(size=(3, 5, vocab)).astype(np.float32) * 2
  teacher = rng.normal(size=(3, 5, vocab)).astype(np.float32) * 3
  for kind in losses.DIVERGENCES:
    for temperature in (1.0, 3.0):
      dense = losses.divergence(student, teacher, temperature, kind)
      np.testing.assert_allclose(losses.topk_divergence(student, random_topk(teacher, vocab), temperature, kind),
                                 dense, rtol=1e-5, atol=1e-5, err_msg=f"{kind} T={temperature}")
      for k in (1, 8, 32):
        np.testing.assert_allclose(losses.topk_divergence(student, random_topk(teacher, k), temperature, kind),
                                   numpy_topk_divergence(student, teacher, k, temperature, kind), rtol=1e-4,
                                   atol=1e-5, err_msg=f"{kind} k={k} T={temperature}")
  for k in (1, 8, 32):
    # Coarse-graining never increases the KL (exact teacher tail at T = 1).
    assert np.all(losses.topk_divergence(student, random_topk(teacher, k), 1.0) <=
                  losses.divergence(student, teacher, 1.0) + 1e-5)
  weights = np.ones((3, 5), np.float32)
  labels = rng.integers(0, vocab, size=(3, 5)).astype(np.int32)
  loss_weights = losses.LossWeights(1.0, 0.5)
  np.testing.assert_allclose(
      losses.distillation_loss(student, random_topk(teacher, vocab), labels, weights, weights=loss_weights,
                               temperature=2.0).loss,
      losses.distillation_loss(student, teacher, labels, weights, weights=loss_weights, temperature=2.0).loss,
      rtol=1e-5)


def test_topk_exact_tail_at_every_temperature_the_run_uses():
  """The outside review's case (V = 320, k = 32, heavy-tailed teacher logits): the flat tail's top-k / dense forward
  KL falls with T (0.99, 0.85, 0.59 at T = 1, 2, 4 here; the review measured 0.99, 0.82, 0.61); with the tail's
  log-sum-exp stored at each T the bins are exact (equal to the float64 reference) and the ratio is what coarse-
  graining alone loses, a lower bound at every T (0.99, 0.94, 0.79)."""
  rng = np.random.default_rng(0)
  vocab, k, temperatures = 320, 32, (1.0, 2.0, 4.0)
  teacher = (rng.standard_t(5, size=(32, vocab)) * 2).astype(np.float32)
  student = (rng.normal(size=(32, vocab)) * 0.5).astype(np.float32)
  caches = random_topk(teacher, k), random_topk(teacher, k, temperatures)

  @jax.jit
  @functools.partial(jax.vmap, in_axes=(0, None, None, None))  # over T, traced, as a vectorized sweep over T
  def losses_at(temperature, student, teacher, caches):  # dense, flat tail, exact tail: [3, rows] (arrays as
    flat_cache, exact_cache = caches                      # arguments: closed-over ones are constant-folded, slowly)
    return jnp.stack([losses.divergence(student, teacher, temperature),
                      losses.topk_divergence(student, flat_cache, temperature),
                      losses.topk_divergence(student, exact_cache, temperature, tail_temperatures=temperatures)])

  # T = 3: a T the cache does not hold gives NaN (which stops training), never a guess.
  by_temperature = np.asarray(losses_at(jnp.asarray(temperatures + (3.0,)), student, teacher, caches))
  assert np.isnan(by_temperature[3, 2]).all()
  ratios = {"flat": [], "exact": []}
  for temperature, (dense, flat, exact) in zip(temperatures, by_temperature):
    np.testing.assert_allclose(exact, numpy_topk_divergence(student, teacher, k, temperature, exact_tail=True),
                               rtol=1e-4, atol=1e-6)
    assert np.all(exact <= dense + 1e-5)
    ratios["flat"].append(flat.mean() / dense.mean())
    ratios["exact"].append(exact.mean() / dense.mean())
  np.testing.assert_allclose(ratios["flat"], [0.993, 0.845, 0.591], atol=0.005)
  np.testing.assert_allclose(ratios["exact"], [0.993, 0.941, 0.785], atol=0.005)
  with pytest.raises(AssertionError, match="T=3.0 is not among"):
    losses.topk_divergence(student, caches[1], 3.0, tail_temperatures=temperatures)


def test_topk_tail_temperatures_from_the_config():
  """The cache stores the exact tail at the run's temperature (a vectorized group's: all of them); 'flat' and runs
  without a top-k cache store none; a schedule moving T over an exact top-k cache is refused, accepted with 'flat'."""
  config = load_config("configs/esnli.py", "smoke")
  assert config.distill.topk_tail == "exact" and teacher_cache.topk_tail_temperatures([config]) == (2.0,)
  other = load_config("configs/esnli.py", "smoke")
  other.distill.temperature = 4.0
  assert teacher_cache.topk_tail_temperatures([config, other]) == (2.0, 4.0)
  assert Objective.from_config(config).logit_loss.tail_temperatures == (2.0,)
  assert Objective.from_config(config, distills=False).logit_loss.tail_temperatures == ()
  flat = load_config("configs/esnli.py", "smoke")
  flat.distill.topk_tail = "flat"
  assert teacher_cache.topk_tail_temperatures([flat]) == ()
  online = load_config("configs/esnli.py", "smoke")
  online.distill.teacher_mode = "online"
  assert teacher_cache.topk_tail_temperatures([online]) == ()
  assert teacher_cache.topk_tail_temperatures([load_config("configs/default.py", "smoke")]) == ()
  scheduled = load_config("configs/esnli.py", "smoke")
  scheduled.distill.schedule, scheduled.distill.temperature_end = "linear", 1.0
  with pytest.raises(ConfigError, match=r"config.distill.temperature_end=1.0: moves the temperature \(2.0 -> 1.0\) "
                     "over a top-k teacher cache"):
    rules.check(scheduled)
  scheduled.distill.topk_tail = "flat"
  rules.check(scheduled)


@pytest.mark.parametrize("kind", losses.DIVERGENCES)
def test_topk_loss_gradient_matches_numpy_finite_differences(kind):
  """d/dz_s of the top-k divergence (k < V, T = 2) against central differences of the float64 NumPy reference."""
  rng = np.random.default_rng(1)
  vocab, k, temperature = 12, 4, 2.0
  student = rng.normal(size=(2, vocab)) * 2
  teacher = rng.normal(size=(2, vocab)).astype(np.float32) * 3
  gradient = jax.grad(lambda z: losses.topk_divergence(z, random_topk(teacher, k), temperature, kind).sum())(
      jnp.asarray(student, jnp.float32))
  step = 1e-5
  expected = np.zeros_like(student)
  for index in np.ndindex(*student.shape):
    shift = np.zeros_like(student)
    shift[index] = step
    expected[index] = (numpy_topk_divergence(student + shift, teacher, k, temperature, kind, student).sum()
                       - numpy_topk_divergence(student - shift, teacher, k, temperature, kind, student).sum()
                       ) / (2 * step)
  np.testing.assert_allclose(gradient, expected, rtol=1e-3, atol=2e-5)
  if kind != "mse":  # the tail tokens get gradient too: the student's tail bin sums them
    tail = np.take_along_axis(np.asarray(gradient), np.argsort(-teacher, axis=-1)[:, k:], axis=-1)
    assert np.abs(tail).max() > 1e-4


@pytest.mark.parametrize("values_dtype", ["float16", "bfloat16"])
def test_topk_cache_round_trip(tmp_path, values_dtype):
  rng = np.random.default_rng(1)
  num_examples, length, vocab, k = 12, 4, 30, 5
  index = rng.permutation(np.arange(num_examples) * 3 + 1).astype(np.int32)
  logits_of = lambda idx: np.stack([np.random.default_rng(int(i)).normal(size=(length, vocab)) for i in idx]) * 4
  examples = Examples(index=index, inputs={"input_ids": index[:, None] * np.ones((1, 2), np.int32)},
                      label=np.zeros((num_examples, length), np.int32))
  calls = []

  def compute(sorted_examples):
    calls.append(1)
    for start in range(0, num_examples, 5):
      ids = sorted_examples.inputs["input_ids"][start:start + 5, 0]
      topk = random_topk(logits_of(ids).astype(np.float32), k)
      yield {"values": np.asarray(topk.values.astype(values_dtype)), "indices": np.asarray(topk.indices),
             "tail_logsumexp": np.asarray(topk.tail_logsumexp)}, len(ids)

  metadata = teacher_cache.expected_metadata("topk", data_name="esnli", split="train", data_fingerprint="f",
                                             size=num_examples, num_classes=vocab, teacher_fingerprint="t", k=k,
                                             dtype=values_dtype, target_length=length)
  cache, built = teacher_cache.load_or_build(str(tmp_path), metadata, examples, compute)
  again, built_again = teacher_cache.load_or_build(str(tmp_path), metadata, examples, compute)
  assert built and not built_again and len(calls) == 1
  assert str(again.arrays["values"].dtype) == values_dtype
  assert again.bytes_per_example == length * (k * (2 + 4) + 4) + 4
  wanted = index[::-2]
  rows = again.lookup(wanted)
  expected = random_topk(logits_of(wanted).astype(np.float32), k)
  np.testing.assert_array_equal(rows["indices"], expected.indices)
  np.testing.assert_allclose(rows["values"].astype(np.float32), expected.values, rtol=1e-2 if values_dtype ==
                             "bfloat16" else 1e-3)
  np.testing.assert_allclose(rows["tail_logsumexp"], expected.tail_logsumexp, rtol=1e-6)
  joined = teacher_cache.join(examples, again)
  batch = next(pipeline.train_batches(joined, batch_size=4, seed=0))
  np.testing.assert_array_equal(batch.teacher.indices,
                                random_topk(logits_of(batch.index).astype(np.float32), k).indices)
  with pytest.raises(KeyError, match="no row for example index 2"):
    again.lookup(np.array([1, 2]))
  _, rebuilt = teacher_cache.load_or_build(str(tmp_path), {**metadata, "teacher_fingerprint": "other"}, examples,
                                           compute)
  assert rebuilt and len(calls) == 2


@pytest.fixture(scope="module")
def esnli_task():
  return data.load_task(load_config("configs/esnli.py", "smoke"))


def test_esnli_task_format(esnli_task):
  info, train_split = esnli_task.seq2seq, esnli_task.train
  assert esnli_task.num_classes == 3
  labels, weights = train_split.label, train_split.token_weights
  np.testing.assert_array_equal(labels >= 0, weights > 0)
  decoded = info.tokenizer.batch_decode(np.where(labels >= 0, labels, 0), skip_special_tokens=True)
  assert decoded[0].startswith(esnli.LABEL_NAMES[train_split.class_label[0]] + " explanation:")
  assert [esnli.parse_output(t)[0] for t in decoded] == train_split.class_label.tolist()
  np.testing.assert_array_equal(train_split.inputs["decoder_input_ids"][:, 0], info.decoder_start_token_id)
  np.testing.assert_array_equal(train_split.inputs["decoder_input_ids"][:, 1:][weights[:, 1:] > 0],
                                labels[:, :-1][weights[:, 1:] > 0])
  sources = info.tokenizer.batch_decode(train_split.inputs["input_ids"][:2], skip_special_tokens=True)
  assert sources[0].startswith("premise: ") and " hypothesis: " in sources[0]
  # e-SNLI's own validation and test splits (36 fixture examples each), every example's texts kept by index.
  assert len(esnli_task.validation) == len(esnli_task.test) == 36 and len(esnli_task.train) == 144
  indices = {int(i) for split in (esnli_task.train, esnli_task.validation, esnli_task.test) for i in split.index}
  assert set(info.sources) == set(info.explanations) == indices and len(indices) == 216
  assert info.sources[int(esnli_task.test.index[0])].startswith("premise: ")


def test_token_arrays_are_stored_narrow_and_reach_the_models_as_the_int32_arrays(esnli_task, sst2_task):
  """Token arrays are held in uint16 / uint8 / int16 (a third of int32's bytes at e-SNLI's shape) and every path to
  the models (tf.data batches, inference batches, the device feed) gives the int32 arrays of before; the task's
  fingerprint is that of the int32 arrays (caches keyed by it stay valid) and changes with any value."""
  train_split = esnli_task.train
  narrow = {"input_ids": np.uint16, "attention_mask": np.uint8, "decoder_input_ids": np.uint16}
  assert {key: value.dtype for key, value in train_split.inputs.items()} == narrow
  assert train_split.label.dtype == np.int16 and train_split.token_weights.dtype == np.float32
  assert sst2_task.train.inputs["input_ids"].dtype == sst2_task.train.teacher_inputs["input_ids"].dtype == np.uint16
  as_int32 = lambda tree: jax.tree.map(lambda value: value.astype(np.int32), tree)
  reference = train_split.replace(inputs=as_int32(train_split.inputs), label=as_int32(train_split.label))
  extra = (train_split.class_label, train_split.token_weights)  # load_task hashes them in key order
  assert esnli_task.fingerprint == fingerprints.fingerprint_arrays(
      *[reference.inputs[key] for key in sorted(reference.inputs)], reference.label, reference.index,
      esnli_task.validation.index, esnli_task.test.index, *extra)
  changed = train_split.inputs["input_ids"].copy()
  changed[0, 0] += 1
  assert fingerprints.fingerprint_arrays(changed, as_dtype=wide_dtype) != fingerprints.fingerprint_arrays(
      train_split.inputs["input_ids"], as_dtype=wide_dtype)
  big = np.arange(5_000_000, dtype=np.uint16)  # converted in more than one block
  assert fingerprints.fingerprint_arrays(big, as_dtype=wide_dtype) == fingerprints.fingerprint_arrays(
      big.astype(np.int32))
  rows = pipeline.epoch_order(len(train_split), 3, 0)[:16]
  batches = {"tf.data": next(pipeline.train_batches(train_split, batch_size=16, seed=3)),
             "inference": next(pipeline.inference_batches(train_split.select(rows), 16))[0],
             "device feed": feed.in_memory(train_split).select(rows)}
  expected = reference.select(rows)
  model, params = models.create(load_config("configs/esnli.py", "smoke").student, num_classes=3,
                                example_inputs=None, rng=jax.random.PRNGKey(0))
  logits = jax.jit(lambda inputs: model.apply({"params": params}, inputs, train=False))
  expected_logits = np.asarray(logits(expected.inputs))
  for name, batch in batches.items():
    for key, value in {**batch.inputs, "label": batch.label}.items():
      assert value.dtype == np.int32, (name, key)
      np.testing.assert_array_equal(value, expected.inputs.get(key, expected.label), err_msg=f"{name} {key}")
    np.testing.assert_array_equal(logits(batch.inputs), expected_logits)
  texts = text.Texts(["premise: a", "é ü"]) + text.Texts(["", "z"])
  assert dict(texts) == {0: "premise: a", 1: "é ü", 2: "", 3: "z"} and 4 not in texts


@pytest.mark.slow
def test_online_and_cached_topk_give_the_same_loss_when_k_is_the_vocabulary(esnli_task, tmp_path):
  config = load_config("configs/esnli.py", "smoke")
  config.distill.topk, config.distill.topk_dtype = 10_000, "float32"
  config.student.checkpoint = str(REPO_ROOT / "tests" / "fixtures" / "hf" / "t5")  # not the teacher's init weights
  mesh = sharding.make_mesh()
  student_model, student_params = models.create(config.student, num_classes=3, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  teacher_model, teacher_params = models.create(config.teacher, num_classes=3, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  the_teacher = teacher.Teacher(teacher_model, sharding.replicate(teacher_params, mesh), str(tmp_path))
  cached = student_data.prepare(config, esnli_task, the_teacher, mesh)
  assert cached.results["teacher_cache"]["k"] == teacher_model.module.dims.vocab_size == 120
  assert cached.online_teacher is None and isinstance(cached.examples.teacher, losses.TopKLogits)
  objective = sharding.replicate(Objective.from_config(config), mesh)
  losses_by_mode = {}
  for mode, examples, step_teacher in (("online", esnli_task.train, teacher_model),
                                       ("cached", cached.examples, None)):
    step = steps.compile_step(mesh, model=student_model, teacher_model=step_teacher)
    # From a host copy: the step donates the state's buffers.
    state = sharding.replicate(steps.create_train_state(student_model, jax.device_get(student_params), config.optim,
                                                        10), mesh)
    _, step_metrics = step(state, the_teacher.params if step_teacher is not None else None, objective,
                           sharding.replicate(jax.random.PRNGKey(0), mesh),
                           sharding.shard_batch(widened(examples.select(np.arange(16))), mesh))
    losses_by_mode[mode] = jax.device_get(step_metrics)
  for name in ("loss", "soft_loss", "hard_loss"):
    np.testing.assert_allclose(losses_by_mode["cached"][name], losses_by_mode["online"][name], rtol=2e-5, err_msg=name)
  assert losses_by_mode["online"]["soft_loss"] > 0


def test_sequence_level_targets_from_generations():
  tokens = np.array([[5, 6, 1, 0, 0], [7, 8, 9, 4, 3]])  # EOS = 1; the second never stops
  targets = text.targets_from_generations(tokens, eos_token_id=1, pad_token_id=0, decoder_start_token_id=0)
  np.testing.assert_array_equal(targets["label"], [[5, 6, 1, -1, -1], [7, 8, 9, 4, 3]])
  np.testing.assert_array_equal(targets["token_weights"], [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(targets["decoder_input_ids"], [[0, 5, 6, 1, 0], [0, 7, 8, 9, 4]])


@pytest.mark.slow
def test_sst2_smoke_end_to_end(sst2_smoke_run):
  """configs/sst2.py:smoke without the hard-label student (the session's shared run, tests/artifacts.py)."""
  workdir, results = sst2_smoke_run
  for model in ("teacher", "student"):
    for name in ("accuracy", "ece", "nll", "agreement"):
      assert isinstance(results["metrics"][model][name], float), (model, name)
  assert results["metrics"]["teacher"]["accuracy"] > 0.7  # fine-tuned on 160 sentences; chance is 0.5
  assert results["metrics"]["student"]["agreement"] > 0.7
  assert results["teacher_cache"]["bytes_per_example"] == 2 * 4 + 4
  with open(workdir / "history.jsonl") as stream:  # the teacher is evaluated on its own tokens while it trains
    teacher_evaluations = [r for r in map(json.loads, stream)
                           if r["phase"] == "teacher" and "validation/accuracy" in r]
  assert teacher_evaluations[-1]["validation/accuracy"] == pytest.approx(
      results["validation_metrics"]["teacher"]["accuracy"])
  assert results["data"] == {"name": "sst2", "num_classes": 2, "num_train": 144, "num_labeled": 144,
                             "num_unlabeled": 0, "num_validation": 16, "num_test": 48}


@pytest.fixture(scope="module")
def esnli_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("esnli")
  config = load_config("configs/esnli.py", "smoke")
  config.baseline = False  # a hard-label seq2seq student is trained by test_esnli_sequence_level_strategy
  return workdir, train.train_and_evaluate(config, str(workdir))


@pytest.fixture(scope="module")
def untrained_esnli_student(esnli_run, esnli_task):
  """The metrics of the student before training (its checkpoint's weights: where distillation starts), against the
  smoke run's teacher."""
  workdir, _ = esnli_run
  config = load_config("configs/esnli.py", "smoke")
  mesh = sharding.make_mesh()
  evaluator = evaluation.for_task(config, esnli_task, mesh)
  teacher_model, teacher_params = models.create(config.teacher, num_classes=3, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  _, reference = evaluator.teacher(teacher_model,
                                   teacher.restore_params(str(workdir / "teacher"), teacher_params, mesh))
  student_model, student_params = models.create(config.student, num_classes=3, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  return evaluator.final(student_model, student_params, reference)["test"]


@pytest.mark.slow
def test_esnli_smoke_end_to_end(esnli_run, esnli_task, untrained_esnli_student):
  _, results = esnli_run
  teacher, student = results["metrics"]["teacher"], results["metrics"]["student"]
  for model in ("teacher", "student"):
    for name in ("label_accuracy", "rouge1", "rouge2", "rougeL", "nll", "token_accuracy"):
      assert 0 <= results["metrics"][model][name] < float("inf"), (model, name)
  assert teacher["label_accuracy"] > 0.6  # trained in the run on 144 examples; chance is 1/3
  assert student["kl_to_teacher"] > 0 and 0 <= student["agreement"] <= 1
  # What distillation taught: the untrained student's outputs are unparseable and far from the teacher's (measured:
  # agreement 0, KL 20.0); the distilled one writes labels and agrees with the teacher on about half of them.
  untrained = untrained_esnli_student
  assert untrained["unparseable"] > 0.9 and student["unparseable"] < 0.1
  assert student["agreement"] > untrained["agreement"] + 0.25
  assert student["kl_to_teacher"] < untrained["kl_to_teacher"] / 10
  assert sorted(student["by_generation_temperature"]) == ["0", "1"]
  assert student["by_generation_temperature"]["0"]["label_accuracy"] == student["label_accuracy"]
  # Faithfulness of every model's explanations, on both splits and at every temperature, under one simulator.
  for split in ("metrics", "validation_metrics"):
    by_model = results[split]
    assert by_model["teacher"]["faithfulness_ceiling"] == by_model["student"]["faithfulness_ceiling"] > 0.9
    for model in ("teacher", "student"):
      assert 0 <= by_model[model]["faithfulness"] <= 1 and -1 <= by_model[model]["las"] <= 1, (split, model)
      assert -1 <= by_model[model]["las_gold"] <= 1 and by_model[model]["las_unparseable"] >= 0, (split, model)
  assert student["by_generation_temperature"]["1"]["faithfulness"] >= 0
  # It moves: the untrained student's unparseable outputs are never faithful (measured 0.0), the distilled one's
  # explanations lead the simulator to its own labels on about 60% of the test split, the teacher's on all.
  assert student["faithfulness"] > untrained["faithfulness"] + 0.25
  cache = results["teacher_cache"]
  target_length = esnli_task.train.label.shape[1]
  assert cache["k"] == 32 and cache["dtype"] == "float16"
  assert cache["bytes_per_example"] == target_length * (32 * (2 + 4) + 4) + 4


@pytest.mark.slow
def test_esnli_sequence_level_strategy(esnli_run, esnli_task, untrained_esnli_student, tmp_path):
  workdir, _ = esnli_run
  config = load_config("configs/esnli.py", "smoke")
  config.teacher.workdir = str(workdir / "teacher")
  config.distill.strategy = "sequence"
  config.baseline = False
  config.generation.temperatures = (0.0,)
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results["teacher_generations"]["built"] and "teacher_cache" not in results
  assert results["train"]["phases"]["student"]["trained_steps"] == steps.num_train_steps(
      len(esnli_task.train), config.data.batch_size, config.train.num_epochs) > 0
  # Cross-entropy on the teacher's outputs moves the student towards them (untrained: unparseable, KL 20.0).
  student, untrained = results["metrics"]["student"], untrained_esnli_student
  assert student["unparseable"] < 0.1 and student["agreement"] > untrained["agreement"] + 0.25
  assert student["kl_to_teacher"] < untrained["kl_to_teacher"] / 2
  with open(os.path.join(results["teacher_generations"]["path"], "metadata.json")) as stream:
    assert json.load(stream)["format"] == "generation"


def test_sweep_configs_accept_the_text_tasks():
  from kd_jax import preflight  # pylint: disable=import-outside-toplevel
  from kd_jax.sweeps import expansion
  config = load_config("configs/sweep_temp.py", "sst2,smoke")
  preflight.check(config)
  assert config.data.name == "sst2" and config.sweep.grid[0][0] == "distill.temperature"
  points = expansion.expand(config, "/tmp/unused")
  assert len(points) == 4 and len({point.config.teacher.workdir for point in points}) == 1
  assert load_config("configs/default.py", "esnli,smoke").data.name == "esnli"
  with pytest.raises(ValueError, match="choose one task"):
    load_config("configs/default.py", "sst2,esnli")


def test_text_config_errors():
  from kd_jax import preflight  # pylint: disable=import-outside-toplevel
  from kd_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  cases = [
      (("sst2", "student.name", "mlp"), "student.name='mlp': data.name='sst2' is text"),
      (("sst2", "data.source", "s3"), "data.source='s3': allowed: hub, tfds, files, disk"),
      (("sst2", "distill.strategy", "sequence"), "'sequence' needs a seq2seq or causal-LM data set"),
      (("esnli", "data.labeled_fraction", 0.5), "must be 1.0 for seq2seq"),
      (("esnli", "distill.topk_dtype", "int8"), "allowed: float16, bfloat16, float32"),
      (("esnli", "generation.temperatures", ()), "non-empty tuple of temperatures"),
      (("default", "teacher.init", "pretrained"), "'pretrained' needs teacher.name='hf'"),
  ]
  for (task, field, value), message in cases:
    config = load_config(f"configs/{task}.py", "smoke")
    section, key = field.rsplit(".", 1)
    functools.reduce(getattr, section.split("."), config)[key] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
      preflight.check(config)
