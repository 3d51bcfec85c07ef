"""A teacher from a logprobs file (kd_jax/teachers/logprobs_file.py): every bad line refused with its line number,
both OpenAI forms read alike, the cached cross-tokenizer losses against NumPy, a file written from the smoke teacher's
own forward pass teaching what its online top-k cache teaches, the chunks of a teacher of another tokenizer, and a
bitwise resume."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import data, models, preflight
from kd_jax.config import paths
from kd_jax.data import alignment
from kd_jax.errors import ConfigError, UserError
from kd_jax.parallel import sharding
from kd_jax.teachers import logprobs_file, student_data, teacher
from kd_jax.training import cross_tokenizer, losses
from tests import numpy_divergences
from tests import helpers
from tests.helpers import assert_resumed_after_step_2_is_bitwise, load_config, run_main

PAIRS = {0: ("Hi?", " Yes, hello."), 1: ("Bye?", " No."), 7: ("Held out?", " Yes.")}  # 7: not a training example


def completions_line(prompt: str, response: str, tokens: list[str], **changes) -> dict:
  """A completions-form line scoring `response` as `tokens` after the prompt (each token's top entries: itself and
  ' x')."""
  offsets, at = [], len(prompt)
  for token in tokens:
    offsets.append(at)
    at += len(token)
  logprobs = {"tokens": tokens, "token_logprobs": [-0.5] * len(tokens),
              "top_logprobs": [{token: -0.5, " x": -1.5} for token in tokens], "text_offset": offsets}
  return {"prompt": prompt, "response": response, "logprobs": {**logprobs, **changes}}


def good_lines() -> list[dict]:
  return [completions_line("Hi?", " Yes, hello.", [" Yes", ",", " hello", "."]),
          completions_line("Bye?", " No.", [" No", "."])]


def write(path, lines) -> str:
  path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
  return str(path)


def read(path):
  return logprobs_file.read(path, PAIRS, np.array([0, 1]))


def test_a_good_file_reads_by_example(tmp_path):
  imported = read(write(tmp_path / "good.jsonl", good_lines()))
  arrays = imported.arrays
  np.testing.assert_array_equal(arrays["index"], [0, 1])
  np.testing.assert_array_equal(arrays["num_tokens"], [4, 2])
  assert [imported.strings[t] for t in arrays["token"][0]] == [" Yes", ",", " hello", "."]
  np.testing.assert_array_equal(arrays["token_start"][0], [0, 4, 5, 11])  # bytes of " Yes, hello."
  np.testing.assert_array_equal(arrays["token_end"][0], [4, 5, 11, 12])
  np.testing.assert_allclose(arrays["top_logprob"][1, :2], [[-0.5, -1.5], [-0.5, -1.5]])
  assert [imported.strings[t] for t in arrays["top_token"][1, 0]] == [" No", " x"]


def test_the_chat_form_reads_as_the_completions_form(tmp_path):
  """The chat form of the same tokens (no offsets: their bytes spell the end of the text; a prompt token before the
  response is skipped) gives the same arrays; a multi-byte character cut into two byte tokens gets its two bytes."""
  lines = good_lines()
  chat = []
  for line in lines:
    logprobs = line["logprobs"]
    content = [{"token": "?", "logprob": -0.1, "bytes": [63], "top_logprobs": []}]  # the prompt's last token
    content += [{"token": token, "logprob": value, "bytes": list(token.encode()),
                 "top_logprobs": [{"token": key, "logprob": entry, "bytes": None} for key, entry in top.items()]}
                for token, value, top in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"])]
    chat.append({**line, "logprobs": {"content": content}})
  completions, chats = read(write(tmp_path / "c.jsonl", lines)), read(write(tmp_path / "chat.jsonl", chat))
  for name in logprobs_file.ARRAYS:
    if name != "line":
      np.testing.assert_array_equal(chats.arrays[name], completions.arrays[name], err_msg=name)
  assert chats.strings == completions.strings
  pieces = completions_line("Bye?", " No.", [" No", "."])
  pieces["logprobs"] = {"content": [
      {"token": " No", "logprob": -0.1, "bytes": None, "top_logprobs": [{"token": " No", "logprob": -0.1}]},
      {"token": "bytes:\\x2e", "logprob": -0.2, "top_logprobs": [{"token": "bytes:\\x2e", "logprob": -0.2}]}]}
  imported = read(write(tmp_path / "pieces.jsonl", [good_lines()[0], pieces]))
  np.testing.assert_array_equal(imported.arrays["token_end"][1, :2], [3, 4])


def bad_line(change):
  lines = good_lines()
  change(lines)
  return lines


def set_in(line, **changes):
  line["logprobs"].update(changes)


@pytest.mark.parametrize("lines, message", [
    (bad_line(lambda lines: lines[1].pop("logprobs")), "line 2: missing field 'logprobs' (each line has prompt, "
     "response, logprobs and optionally text)"),
    (bad_line(lambda lines: set_in(lines[1], text_offset=[3, 7])), "line 2: token 0 (' No') is not the text at its "
     "text_offset 3 (the text there reads '? No.')"),
    (bad_line(lambda lines: set_in(lines[1], text_offset=[4, 3])), "line 2: token 1 has text_offset 3; offsets are "
     "non-decreasing character positions in the text (0 to 8)"),
    (bad_line(lambda lines: set_in(lines[0], token_logprobs=[-0.5, 0.25, -0.5, -0.5])), "line 1: token 1 (',') has "
     "logprob 0.25; a logprob is a number <= 0"),
    (bad_line(lambda lines: set_in(lines[1], top_logprobs=[{" No": -0.5}, {}])), "line 2: token 1 ('.') has no "
     "top_logprobs (k = 0); each response token needs its top-k entries"),
    (bad_line(lambda lines: set_in(lines[1], top_logprobs=[{" No": -0.1, "x": -0.2}, {".": -0.5}])),
     "line 2: token 0 (' No')'s top_logprobs sum to probability 1.7236 > 1"),
    (bad_line(lambda lines: set_in(lines[0], tokens=[" Yes", " hello", "."], token_logprobs=[-0.5] * 3,
                                   top_logprobs=[{"x": -1.0}] * 3, text_offset=[3, 8, 14])),
     "line 1: the tokens do not spell the response one after another (at byte 4 of the response the next token "
     "starts at byte 5)"),
    (bad_line(lambda lines: lines[1].update(prompt="Why?")), "line 2: (prompt 'Why?', response ' No.') is not an "
     "example of the training split"),
    (bad_line(lambda lines: lines[1].update(prompt="Held out?", response=" Yes.")), "line 2: (prompt 'Held out?', "
     "response ' Yes.') is not an example of the training split"),
    (bad_line(lambda lines: lines.append(lines[0])), "line 3: the same (prompt, response) as line 1"),
    (bad_line(lambda lines: lines.insert(1, "[1, 2]")), "line 2: not a JSON object"),
    (bad_line(lambda lines: lines[1].update(text="Bye? No!")), "line 2: text must be a string that ends with the "
     "response"),
    (bad_line(lambda lines: lines[1].update(logprobs={"tokens": []})), "line 2: logprobs is neither the completions "
     "form (tokens, token_logprobs, top_logprobs, text_offset) nor the chat form (content)"),
    (bad_line(lambda lines: lines[1].update(logprobs={"content": [
        {"token": " Na", "logprob": -0.1, "top_logprobs": [{"token": " Na", "logprob": -0.1}]}]})),
     "line 2: the bytes of logprobs.content do not spell the end of the text (they read b' Na', the text ends "
     "b'Bye? No.')"),
])
def test_a_bad_line_is_refused_with_its_line_number(tmp_path, lines, message):
  path = write(tmp_path / "bad.jsonl", lines)
  with pytest.raises(UserError) as error:
    read(path)
  assert str(error.value) == f"teacher.logprobs_path={path!r}, {message}"


def test_every_training_example_needs_a_line(tmp_path):
  path = write(tmp_path / "short.jsonl", good_lines()[:1])
  with pytest.raises(UserError, match=r"has no line for 1 of 2 training examples \(first: prompt 'Bye\?'\); every "
                                      r"training example needs one$"):
    read(path)


@pytest.mark.parametrize("changes, message", [
    ({"teacher.logprobs_path": None}, "config.teacher.logprobs_path=None: required with "
     "teacher.source='logprobs_file'"),
    ({"teacher.server_url": "http://127.0.0.1:8000/v1"}, "config.teacher.server_url='http://127.0.0.1:8000/v1': "
     "applies to teacher.source='server' only (teacher.source='logprobs_file'); leave it None"),
    ({"distill.teacher_mode": "online"}, "config.teacher.source='logprobs_file': needs "
     "distill.teacher_mode='cached' (the teacher has no model to run in the step: its signal is cached)"),
    ({"distill.strategy": "sequence"}, "config.teacher.source='logprobs_file': needs distill.strategy='token'"),
    ({"train.microbatches": 2}, "config.teacher.source='logprobs_file': needs train.microbatches=1"),
    ({"distill.temperature": 2.0}, "config.distill.temperature=2.0: teacher.source='logprobs_file' gives the "
     "teacher's log-probabilities at T = 1 only"),
    ({"teacher.logprobs_path": "/nonexistent.jsonl"}, "config.teacher.logprobs_path='/nonexistent.jsonl': must be "
     "an existing file of JSON lines"),
])
def test_a_file_teacher_needs_what_it_uses(tmp_path, changes, message):
  config = load_config("configs/causal_lm.py", "smoke,logprobs_file")
  config.teacher.logprobs_path = write(tmp_path / "good.jsonl", good_lines())
  for field, value in changes.items():
    paths.set_value(config, field, value)
  with pytest.raises(ConfigError) as error:
    preflight.check(config)
  assert str(error.value).startswith(message)


def test_a_model_teacher_refuses_the_fields_of_other_sources_and_distill_temperature_flat_is_free():
  config = load_config("configs/causal_lm.py", "smoke")
  config.teacher.top_logprobs = 5
  with pytest.raises(ConfigError, match=r"^config.teacher.top_logprobs=5: applies to teacher.source='server' only "
                                        r"\(teacher.source='model'\); leave it 20$"):
    preflight.check(config)
  config = load_config("configs/causal_lm.py", "smoke,logprobs_file")
  config.teacher.logprobs_path = __file__  # any existing file: the rules do not read it
  config.distill.temperature, config.distill.topk_tail = 2.0, "flat"
  preflight.check(config)


# Cached cross-tokenizer losses on fixed inputs: 2 examples, L_s = 5 student positions, V_s = 6, k = 3 known teacher
# entries per chunk; chunk 0 one student token, chunk 1 two (the observed merge), slot 2 absent in example 1.
STUDENT_CHUNK = np.array([[-1, 0, 1, 1, 2], [0, 1, 1, -1, -1]], np.int32)
TOP_IDS = np.array([[[2, -1, 4], [0, 1, -1], [5, 3, 1], [-1] * 3, [-1] * 3],
                    [[1, 2, 3], [-1, -1, -1], [-1] * 3, [-1] * 3, [-1] * 3]], np.int32)


def cached_inputs(seed: int = 3):
  rng = np.random.default_rng(seed)
  student_logits = rng.normal(size=(2, 5, 6)) * 2
  labels = np.where(STUDENT_CHUNK >= 0, rng.integers(0, 6, size=(2, 5)), -1).astype(np.int32)
  top = -np.sort(rng.uniform(0.3, 3.0, size=(2, 5, 3)), axis=-1)  # log q_t, largest first, summing below 1
  chunks = cross_tokenizer.CachedChunks(STUDENT_CHUNK, rng.uniform(-9, -0.5, size=(2, 5)).astype(np.float32),
                                        top.astype(np.float32), TOP_IDS)
  return student_logits, labels, chunks


def np_student_chunk(logits, labels, example, c, temperature=1.0):
  """log q_s of chunk c: log p^T at its first position + the log p^T of its later labels; and its log-likelihood."""
  log_probs = numpy_divergences.log_softmax(np.asarray(logits[example], np.float64) / temperature)
  positions = [l for l in range(STUDENT_CHUNK.shape[1]) if STUDENT_CHUNK[example, l] == c]
  log_q = log_probs[positions[0]] + sum(log_probs[l, labels[example, l]] for l in positions[1:])
  plain = numpy_divergences.log_softmax(np.asarray(logits[example], np.float64))
  return log_q, sum(plain[l, labels[example, l]] for l in positions)


def np_sorted_l1(p_s, p_t):
  size = max(len(p_s), len(p_t))
  s, t = np.zeros(size), np.zeros(size)
  s[:len(p_s)], t[:len(p_t)] = sorted(p_s, reverse=True), sorted(p_t, reverse=True)
  return np.abs(s - t).sum()


def np_alm(ll_s, ll_t, tau):
  log_t, log_s = min(ll_t, 0) / tau - 1e-6, min(ll_s, 0) / tau - 1e-6
  p_t, p_s = np.exp(log_t), np.exp(log_s)
  return p_t * (log_t - log_s) + (1 - p_t) * (np.log1p(-p_t) - np.log1p(-p_s))


def np_cached_loss(kind, log_q_s, ll_s, example, c, chunks, divergence="js"):
  q_t = np.exp(np.asarray(chunks.top_log_q[example, c], np.float64))
  q_s = np.exp(log_q_s)
  if kind == "alm":
    return np_alm(ll_s, float(chunks.log_likelihood[example, c]), 100.0)
  if kind == "uld":
    return np_sorted_l1(q_s, q_t)  # the teacher's tail: zeros
  ids = chunks.top_ids[example, c]
  matched = ids >= 0
  divergence_value = numpy_divergences.divergence_of_probs(q_s[ids[matched]], q_t[matched], divergence)
  rest_s = q_s.copy()
  rest_s[ids[matched]] = 0.0
  weight = matched.mean()
  return weight * divergence_value + (1 - weight) * np_sorted_l1(rest_s, q_t[~matched])


@pytest.mark.parametrize("kind", ["uld", "gold", "alm"])
def test_cached_cross_tokenizer_losses_match_numpy(kind):
  student_logits, labels, chunks = cached_inputs()
  values, weights = jax.jit(cross_tokenizer.cached_chunk_losses, static_argnames=("kind", "divergence"))(
      kind, jnp.asarray(student_logits, jnp.float32), labels, chunks, divergence="js")
  expected, expected_weights = np.zeros((2, 5)), np.zeros((2, 5))
  for example in range(2):
    for c in set(STUDENT_CHUNK[example].tolist()) - {-1}:
      log_q_s, ll_s = np_student_chunk(student_logits, labels, example, c)
      expected[example, c] = np_cached_loss(kind, log_q_s, ll_s, example, c, chunks)
      expected_weights[example, c] = 1.0
  np.testing.assert_array_equal(weights, expected_weights)
  np.testing.assert_allclose(np.asarray(values) * weights, expected, rtol=1e-4, atol=1e-6)
  gradient = jax.jit(jax.grad(lambda logits: losses.global_mean(*cross_tokenizer.cached_chunk_losses(
      kind, logits, labels, chunks, divergence="js"))))(jnp.asarray(student_logits, jnp.float32))
  assert bool(jnp.all(jnp.isfinite(gradient)))


def test_uld_against_the_top_k_is_within_the_tail_of_uld_against_the_whole_distribution():
  """The zero padding's bound: |ULD(q_s, top-k of q_t) - ULD(q_s, q_t)| <= the teacher's tail probability."""
  rng = np.random.default_rng(0)
  for _ in range(20):
    q_s, q_t = rng.dirichlet(np.ones(30)), rng.dirichlet(np.ones(40) * 0.3)
    top = np.sort(q_t)[::-1][:5]
    gap = abs(float(cross_tokenizer.sorted_l1(jnp.asarray(q_s), jnp.asarray(top)))
              - float(cross_tokenizer.sorted_l1(jnp.asarray(q_s), jnp.asarray(q_t))))
    assert gap <= 1 - top.sum() + 1e-6


@pytest.fixture(scope="module")
def smoke():
  """(config of smoke,logprobs_file, its task, the fixture teacher (model, params): the smoke teacher's
  architecture and tokenizer with the fixture's own weights)."""
  config = load_config("configs/causal_lm.py", "smoke,logprobs_file")
  task = data.load_task(config)
  model_config = load_config("configs/causal_lm.py", "smoke").teacher
  the_teacher = models.create(model_config, num_classes=task.num_classes, example_inputs=None,
                              rng=jax.random.PRNGKey(0))
  return config, task, the_teacher


@pytest.fixture(scope="module")
def teacher_file(smoke, tmp_path_factory):
  """The logprobs file of the fixture teacher's own forward pass (top 20 per response token) for the smoke data."""
  config, task, (model, params) = smoke
  path = str(tmp_path_factory.mktemp("logprobs") / "teacher.jsonl")
  mesh = sharding.make_mesh()
  lines = logprobs_file.write_from_teacher(model, sharding.replicate(params, mesh), task, path, top_logprobs=20,
                                           chat_template=True, mesh=mesh, batch_size=32)
  assert lines == len(set(task.causal_lm.pairs[i] for i in task.train.index.tolist()))
  return path


@pytest.mark.slow
def test_a_file_of_the_teachers_own_logprobs_teaches_what_its_online_topk_cache_does(smoke, teacher_file, tmp_path):
  """The smoke teacher's top-k cache (teacher_mode='cached', k = 8, exact tail at T = 1) and the file of its own
  top-20 logprobs imported with k = 8 hold the same bins at every response position the file scores (the content;
  not the template's end of turn), and give the student the same distillation loss over those positions."""
  config, task, (model, params) = smoke
  mesh = sharding.make_mesh()
  model_config = load_config("configs/causal_lm.py", "smoke")
  model_config.distill.teacher_mode, model_config.distill.on_policy_fraction = "cached", 0.0
  model_config.distill.topk, model_config.distill.topk_dtype, model_config.distill.temperature = 8, "float32", 1.0
  online = student_data.prepare(model_config, task, teacher.Teacher(model, sharding.replicate(params, mesh),
                                                                     str(tmp_path / "teacher")), mesh)
  imported = logprobs_file.read(teacher_file, task.causal_lm.pairs, task.train.index)
  from_file = student_data.prepare(config, task, teacher.Teacher(None, None, str(tmp_path / "file_teacher"),
                                                                 logprobs=imported), mesh)
  assert from_file.tail_temperatures == online.tail_temperatures == (1.0,)
  assert from_file.results["teacher_cache"]["k"] == 8 and from_file.results["teacher_cache"]["built"]
  again = student_data.prepare(config, task, teacher.Teacher(None, None, str(tmp_path / "file_teacher"),
                                                             logprobs=imported), mesh)
  assert not again.results["teacher_cache"]["built"]  # its signal's cache, keyed by the file and the data
  rows = np.arange(48)
  cached, signal = (jax.tree.map(lambda array: np.asarray(array[rows]), prepared.examples.teacher)
                    for prepared in (online, from_file))
  scored = signal.weights > 0
  weights = np.asarray(task.train.token_weights)[rows]
  assert scored.sum() > 300 and (weights[scored] == 1).all() and (scored.sum(axis=1) < weights.sum(axis=1)).all()
  np.testing.assert_array_equal(signal.indices[scored], cached.indices[scored])
  log_normalizer = np.logaddexp(np.logaddexp.reduce(cached.values, axis=-1), cached.tail_logsumexp[..., 0])
  np.testing.assert_allclose(signal.values[scored], (cached.values - log_normalizer[..., None])[scored], atol=2e-5)
  student, student_params = models.create(config.student, num_classes=task.num_classes, example_inputs=None,
                                          rng=jax.random.PRNGKey(1))
  batch = task.train.select(rows)
  logits = jax.jit(lambda p, x: student.apply({"params": p}, x, train=False))(student_params, batch.inputs)

  def soft(teacher_signal):
    return float(losses.distillation_loss(logits, teacher_signal, batch.label, batch.token_weights,
                                          weights=losses.LossWeights(0.5, 0.5), temperature=1.0,
                                          tail_temperatures=(1.0,)).soft)
  np.testing.assert_allclose(soft(signal), soft(cached._replace(weights=signal.weights)), rtol=1e-5)
  assert soft(signal) != soft(cached)  # the template's end of turn is not the file's


def test_a_teacher_of_another_tokenizer_is_aligned_on_the_chunks_of_its_own_tokens(smoke, teacher_file):
  """The same file read for the GPT-2 student of smoke,cross_tokenizer: every chunk holds the same text on both
  sides (the student's tokens decoded, the teacher's token strings joined), its log-likelihood is the sum of the
  teacher's logprobs in it, its known distribution the first token's top 8 plus the later tokens' logprobs, a top
  token's student id GPT-2's token of its bytes (else -1); the same-tokenizer path refuses this student,
  naming distill.cross_tokenizer."""
  config = load_config("configs/causal_lm.py", "smoke,cross_tokenizer,logprobs_file")
  config.teacher.logprobs_path = teacher_file
  task = data.load_task(config)
  imported = logprobs_file.read(teacher_file, task.causal_lm.pairs, task.train.index)
  chunks, k = logprobs_file.chunk_signal(imported, task, k=8, chat_template=True)
  assert k == 8
  tokenizer, rows = task.causal_lm.tokenizer, imported.row_of()
  strings, arrays = imported.strings, imported.arrays
  vocab, byte_to_unicode = tokenizer.get_vocab(), {byte: char for char, byte in alignment.unicode_to_byte().items()}
  num_chunks = matched = 0
  for row in range(24):
    file_row = rows[int(task.train.index[row])]
    teacher_texts = [strings[t] for t in arrays["token"][file_row, :arrays["num_tokens"][file_row]]]
    student_texts, t = [], 0
    for c in range(int(chunks.student_chunk[row].max()) + 1):
      student_texts.append(tokenizer.decode(task.train.label[row][chunks.student_chunk[row] == c]))
      first = t  # the teacher's tokens of the chunk: the next ones whose text is the chunk's
      while "".join(teacher_texts[first:t]) != student_texts[-1]:
        t += 1
      logprobs = arrays["token_logprob"][file_row, first:t].astype(np.float64)
      np.testing.assert_allclose(chunks.log_likelihood[row, c], logprobs.sum(), rtol=1e-5)
      np.testing.assert_allclose(chunks.top_log_q[row, c], arrays["top_logprob"][file_row, first, :8] +
                                 logprobs[1:].sum(), rtol=1e-5)
      for top, student_id in zip(arrays["top_token"][file_row, first, :8], chunks.top_ids[row, c]):
        string = strings[top]  # its bytes as GPT-2's byte-level BPE writes them: the token, if GPT-2 has it
        raw = bytes.fromhex(string[6:].replace("\\x", "")) if string.startswith("bytes:") else string.encode()
        assert student_id == vocab.get("".join(byte_to_unicode[byte] for byte in raw), -1), string
        matched += student_id >= 0
    assert "".join(student_texts) == "".join(teacher_texts) == task.causal_lm.pairs[int(task.train.index[row])][1]
    num_chunks += len(student_texts)
  assert num_chunks > 24 * 4 and 0 < matched < num_chunks * 8
  with pytest.raises(UserError, match=r"line \d+: the teacher's tokens .* are not the student's tokenization of the "
                                      r"response .*; the teacher has another tokenizer: set distill.cross_tokenizer "
                                      r"\(uld, gold or alm\)$"):
    logprobs_file.topk_signal(imported, task, k=8, chat_template=True)


def test_a_token_without_its_own_logprob_leaves_its_chunk_out_of_the_cross_tokenizer_signal(smoke, teacher_file,
                                                                                           tmp_path):
  """A null token_logprob (what a server's shifted echo, put back, gives a token outside its k): the file reads, and
  the aligned chunk holding that token is left out (no student position points at it); every other chunk is as
  before."""
  config = load_config("configs/causal_lm.py", "smoke,cross_tokenizer,logprobs_file")
  task = data.load_task(config)
  lines = [json.loads(line) for line in open(teacher_file)]
  lines[0]["logprobs"]["token_logprobs"][3] = None
  changed = write(tmp_path / "null.jsonl", lines)
  before, _ = logprobs_file.chunk_signal(logprobs_file.read(teacher_file, task.causal_lm.pairs, task.train.index),
                                         task, k=8, chat_template=True)
  after, _ = logprobs_file.chunk_signal(logprobs_file.read(changed, task.causal_lm.pairs, task.train.index),
                                        task, k=8, chat_template=True)
  pair = (lines[0]["prompt"], lines[0]["response"])
  affected = [row for row in range(len(task.train)) if task.causal_lm.pairs[int(task.train.index[row])] == pair]
  assert affected
  for row in range(len(task.train)):
    expected = np.asarray(before.student_chunk[row]).copy()
    if row in affected:
      dropped = set(expected.tolist()) - set(np.asarray(after.student_chunk[row]).tolist())
      assert len(dropped) == 1  # the one chunk holding token 3
      expected[expected == dropped.pop()] = -1
    np.testing.assert_array_equal(after.student_chunk[row], expected)
    kept = np.unique(expected[expected >= 0])
    np.testing.assert_array_equal(np.asarray(after.log_likelihood[row])[kept],
                                  np.asarray(before.log_likelihood[row])[kept])


@pytest.mark.slow
def test_a_resumed_run_from_a_logprobs_file_is_bitwise_the_uninterrupted_one(smoke, teacher_file, tmp_path):
  config, task, _ = smoke
  config = config.copy_and_resolve_references()
  imported = logprobs_file.read(teacher_file, task.causal_lm.pairs, task.train.index)
  signal, _ = logprobs_file.topk_signal(imported, task, k=8, chat_template=True, tail_temperatures=(1.0,))
  student = models.create(config.student, num_classes=task.num_classes, example_inputs=None,
                          rng=jax.random.PRNGKey(0))
  assert_resumed_after_step_2_is_bitwise(config, task, None, student, 4, tmp_path,
                                         examples=task.train.replace(teacher=signal))


def test_a_bad_file_stops_the_run_in_one_line_before_anything_is_written(tmp_path):
  lines = [json.loads(line) for line in open(load_config("configs/causal_lm.py", "smoke").data.path
                                              + "/train.jsonl")][:1]
  bad = write(tmp_path / "bad.jsonl", [{**lines[0], "logprobs": {"content": "?"}}])
  result = run_main("--config=configs/causal_lm.py:smoke,logprobs_file", f"--workdir={tmp_path / 'w'}",
                    f"--config.teacher.logprobs_path={bad}")
  assert result.returncode == 2 and not (tmp_path / "w").exists()
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: teacher.logprobs_path={bad!r}, line 1: logprobs.content must be a list of tokens")


def test_the_import_is_stored_once_keyed_by_the_files_hash_and_a_half_written_one_is_not_used(tmp_path):
  path = write(tmp_path / "good.jsonl", good_lines())
  imported = read(path)
  directory = logprobs_file.cache_dir(str(tmp_path / "teacher"), imported.sha256, "data0")
  logprobs_file.store(imported, directory, "data0")
  loaded = logprobs_file.load(directory, path, "data0", 2)
  for name in logprobs_file.ARRAYS:
    np.testing.assert_array_equal(loaded.arrays[name], imported.arrays[name])
  assert loaded.strings == imported.strings
  assert logprobs_file.load(directory, path, "data1", 2) is None  # other data
  (tmp_path / "teacher" / "logprobs_cache" / f"{imported.sha256}-data0" / "metadata.json").unlink()
  assert logprobs_file.load(directory, path, "data0", 2) is None  # killed before its metadata
  write(tmp_path / "good.jsonl", good_lines()[::-1])
  assert logprobs_file.file_sha256(path) != imported.sha256  # another file: another directory


def test_an_unreachable_server_teacher_is_one_line_and_nothing_is_written(tmp_path):
  """teacher.source='server' asks the server for its models before the workdir is claimed: a closed port is one line
  naming the URL, exit 2, and no workdir."""
  port = helpers.free_port()
  result = run_main("--config=configs/causal_lm.py:smoke,server", f"--workdir={tmp_path / 'w'}",
                    f"--config.teacher.server_url=http://127.0.0.1:{port}/v1")
  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and f"teacher server http://127.0.0.1:{port}/v1/models: no usable answer after 2 tries" in (
      errors[0]), result.stderr[-3000:]
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_the_smoke_run_from_a_logprobs_file(teacher_file, tmp_path):
  """configs/causal_lm.py:smoke,logprobs_file end to end (the fixture teacher's file, one epoch): no teacher row, the
  import stored in the teacher directory and recorded in results.json, the student's metrics finite."""
  result = run_main("--config=configs/causal_lm.py:smoke,logprobs_file", f"--workdir={tmp_path / 'w'}",
                    f"--config.teacher.logprobs_path={teacher_file}", "--config.train.num_epochs=1")
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / "w" / "results.json").read_text())
  assert set(results["metrics"]) == {"student", "student_hard"}
  stats = results["teacher_cache"]
  assert (stats["source"], stats["signal"], stats["k"], stats["tail"]) == ("logprobs_file", "logprobs_topk", 8, "exact")
  assert np.isfinite(results["metrics"]["student"]["bits_per_byte"])
  assert (tmp_path / "w" / "teacher" / "logprobs_cache").is_dir()
