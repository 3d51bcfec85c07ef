"""kd_jax/teachers/server.py: the logprobs file written from an OpenAI-compatible server.

Unit tests talk to a fake server in this process (http.server in a thread) whose "model" is a character-level
bigram table, so every expected distribution is computed here independently of the client: retries, resume after a
killed build, the shift check (aligned, llama-cpp-python's one-position shift corrected or refused, a server that
matches neither), and the one-line errors. The slow tests start llama-cpp-python's real server on the SmolLM2 GGUF
(skipped, saying why, where it is not installed) and check its corrected logprobs against kd_jax's own forward pass.
"""

import contextlib
import http.server
import json
import math
import socket
import threading

import pytest

from kd_jax.teachers import server

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
  'neither' (each entry 1 nat below its character's distribution), 'no_logprobs'. `fail_first` answers 503 to that many completion requests; `fail_after`
  answers 400 to every completion request after that many."""

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
    # 3 texts checked (2 requests each), then one request per example, each with echo and max_tokens=1
    assert len(httpd.completions) == 3 * 2 + len(EXAMPLES)
    assert all(body["max_tokens"] == 1 and body["logprobs"] == K for body in httpd.completions)
  lines = read_lines(path)
  assert_true_distributions(lines, first_scored=1)
  # the server's own scored-token entries are kept as served (the OpenAI form: top k plus the token)
  assert all(all(v is not None for v in line["logprobs"]["token_logprobs"][1:]) for line in lines.values())


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
    assert len(httpd.completions) == 2 + 3 * 2 + len(EXAMPLES)
  assert_true_distributions(read_lines(path), first_scored=1)
  with fake_server(fail_first=100) as httpd:
    with pytest.raises(server.ServerError, match=r"^teacher server http://127\.0\.0\.1:\d+/v1/completions: no "
                                                 r"usable answer after 3 tries \(HTTP 503 .*loading model.*\)$"):
      write(tmp_path / "again", httpd.url)
    assert len(httpd.completions) == 3


def test_unreachable_server_and_answer_without_logprobs_one_line_nothing_written(tmp_path):
  with socket.socket() as probe:  # a port nothing listens on
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  with pytest.raises(server.ServerError, match=rf"^teacher server http://127\.0\.0\.1:{port}/v1/models: no usable "
                                               r"answer after 3 tries \(.*[Cc]onnection refused.*\)$"):
    write(tmp_path, f"http://127.0.0.1:{port}")
  with fake_server(mode="no_logprobs") as httpd:
    with pytest.raises(server.ServerError, match=r"/v1/completions \(model 'fake-bigram'\): answered echo=true, "
                                                 r"logprobs=4 without logprobs \(choices\[0\]\.logprobs: None; "
                                                 r"needs tokens, token_logprobs, top_logprobs, text_offset\)$"):
      write(tmp_path, httpd.url)
  assert not list(tmp_path.iterdir())


def test_killed_build_resumes_after_its_whole_lines(tmp_path):
  """A build whose server fails after 6 + 3 requests keeps 3 lines in the partial file; a kill during a write adds a
  torn line. The rerun drops the torn line, scores only the examples missing, and writes the same file content as
  an uninterrupted build."""
  with fake_server(fail_after=3 * 2 + 3) as httpd:
    with pytest.raises(server.ServerError, match="answered HTTP 400"):
      write(tmp_path, httpd.url, concurrency=1)
  partial = tmp_path / "teacher.jsonl.partial"
  assert not (tmp_path / "teacher.jsonl").exists() and len(partial.read_text().splitlines()) == 3
  with partial.open("a") as stream:
    stream.write('{"prompt": "q3 ", "response": "ji')
  with fake_server() as httpd:
    path = write(tmp_path, httpd.url)
    scored = [body["prompt"] for body in httpd.completions[3 * 2:]]
  assert sorted(scored) == sorted(example.text for example in EXAMPLES[3:])
  assert not partial.exists() and not (tmp_path / "teacher.jsonl.partial.json").exists()
  with fake_server() as httpd:
    uninterrupted = write(tmp_path / "whole", httpd.url)
  assert read_lines(path) == read_lines(uninterrupted)
  with fake_server() as httpd:  # a finished file is returned as it is
    assert write(tmp_path, httpd.url) == path and not httpd.completions


def test_generate_returns_greedy_completions_in_order():
  with fake_server() as httpd:
    prompts = ["ab", "c", "j."]
    answers = server.generate(prompts, url=httpd.url, max_tokens=1, concurrency=2, retries=0)
    assert [body["max_tokens"] for body in httpd.completions] == [1, 1, 1]
  assert answers == [max(distribution(p).items(), key=lambda item: item[1])[0] for p in prompts]
