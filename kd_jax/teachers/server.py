"""A teacher behind an OpenAI-compatible server (llama-cpp-python's, vLLM's): its top-k logprobs of each training
text, written as a logprobs file (JSON lines) that the teacher cache imports; and its generations.

Each line of the file is one example: {"prompt", "response", "text": the exact string scored (it ends with the
response), "logprobs": the completions form {"tokens", "token_logprobs", "top_logprobs", "text_offset"}}, where
`top_logprobs[i]` is the teacher's distribution (token string -> logprob, its k most likely tokens and possibly the
scored one) for token i itself, given the tokens before it; `None` where the server gives no distribution (the first
token). One request per example: POST /v1/completions with echo=true, logprobs=k, temperature=0 and max_tokens=1
(llama-cpp-python reads 0 as "until the context is full", older vLLM versions refuse it), the generated token
dropped, and a BOS token echoed before the text (vLLM) too.

Trust nothing a server says. `check_alignment` runs before anything is written: on a few of the texts it compares the
echoed distribution at a token with the distribution the server returns for the next token after the text before
that token (a second request, echo off, max_tokens=1). llama-cpp-python 0.3.36 (and its server), for a model that
adds no BOS token (SmolLM2), echoes at each token the distribution of the token after it (it lists the scores from
the first row on, which predict the second token unless a BOS token stands first); such a server is detected
and its answers are shifted back (`shifted_back`: token i gets entry i - 1's distribution, so the first two tokens have
none, and the scored token's own logprob only where it is among the k), or, with `shifted='refuse'`, refused in one
line naming the server's version. A server whose echo matches neither is refused.

Requests run `concurrency` at a time, each retried with exponential backoff on connection errors, timeouts, 429 and
5xx answers. Lines are appended to `<path>.partial` as the answers come (one write each), renamed to `<path>` when
every example is in; a killed build leaves only the partial file, and the next call with the same server model and k
continues it (with the same examples), skipping the examples it holds and dropping a torn last line.
"""

import bisect
import concurrent.futures
import dataclasses
import hashlib
import http.client
import itertools
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Iterable, Sequence

from kd_jax import files
from kd_jax.errors import UserError

logger = logging.getLogger(__name__)

# The answer's distributions at a token, asked twice (echoed, and as the next token), agree to this many nats; a
# shift by one position differs by several nats on the most likely tokens.
SAME_DISTRIBUTION_NATS = 0.05
# Logprobs above this are not log-probabilities (a server's float rounding gives at most ~1e-7).
MAX_LOGPROB = 1e-4
# Answers that are retried: a server starting up, overloaded or failing for the moment.
RETRIED_STATUS = (429, 500, 502, 503, 504)
PROGRESS_SECONDS = 30.0
# llama-cpp-python 0.3.36 echoes a token whose piece is longer than this many bytes as '' (recovered_long_tokens).
LONG_PIECE_BYTES = 32


class ServerError(UserError):
  """The teacher server cannot be used: unreachable, an answer without logprobs, or logprobs it cannot be trusted
  for. One line naming the URL (and the server's version where it matters) and what was missing."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
  """An OpenAI-compatible server: `url` with or without its trailing /v1 (http://127.0.0.1:8080 or .../v1)."""
  url: str
  timeout_s: float = 300.0  # one request, scoring included
  retries: int = 4  # more tries after the first, on connection errors, timeouts, 429 and 5xx
  backoff_s: float = 1.0  # wait before retry r (0-based): backoff_s * 2**r

  def __post_init__(self):
    parts = urllib.parse.urlparse(self.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
      raise ServerError(f"teacher server {self.url!r}: not an http:// or https:// URL")

  @property
  def root(self) -> str:
    """The server's address without /v1 (where /version, /props and /openapi.json are)."""
    return self.url.rstrip("/").removesuffix("/v1")

  def call(self, path: str, body: dict | None = None) -> dict:
    """GET (body None) or POST a JSON body to root + path and return the parsed JSON answer, with the retries;
    a ServerError naming the URL and what went wrong otherwise."""
    url = self.root + path
    data = None if body is None else json.dumps(body).encode()
    problem = ""
    for attempt in range(self.retries + 1):
      if attempt:
        time.sleep(self.backoff_s * 2 ** (attempt - 1))
      request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
      try:
        with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
          payload = answer.read()
      except urllib.error.HTTPError as error:
        detail = error.read()[:300].decode(errors="replace").replace("\n", " ")
        problem = f"HTTP {error.code} {detail}".strip()
        if error.code in RETRIED_STATUS:
          continue
        raise ServerError(f"teacher server {url}: answered {problem}") from None
      except (urllib.error.URLError, OSError, http.client.HTTPException) as error:  # refused, reset, timed out, cut
        problem = str(getattr(error, "reason", error)) or type(error).__name__
        continue
      try:
        return json.loads(payload)
      except ValueError:  # not JSON, or not UTF-8
        raise ServerError(f"teacher server {url}: answered something that is not JSON: {payload[:100]!r}") from None
    tries = self.retries + 1
    raise ServerError(f"teacher server {url}: no usable answer after {tries} tr{'y' if tries == 1 else 'ies'} "
                      f"({problem})")


def served_model(endpoint: Endpoint, model: str | None) -> str:
  """The model id to ask for: `model` when the server lists it (llama.cpp and vLLM list what they serve), the
  first listed when `model` is None."""
  listing = endpoint.call("/v1/models")
  entries = listing.get("data") if isinstance(listing, dict) else None
  ids = [entry.get("id") for entry in entries or [] if isinstance(entry, dict) and entry.get("id")]
  if not ids:
    raise ServerError(f"teacher server {endpoint.root}/v1/models: lists no model ({json.dumps(listing)[:200]})")
  if model is None:
    return ids[0]
  if model not in ids:
    raise ServerError(f"teacher server {endpoint.root}: model {model!r} is not served; it serves {', '.join(ids)}")
  return model


def server_version(endpoint: Endpoint) -> str:
  """What the server says it is: vLLM's /version, llama-cpp-python's (FastAPI's) /openapi.json title and version,
  llama.cpp's /props build_info; 'version unknown' when none answers."""
  quick = dataclasses.replace(endpoint, retries=0, timeout_s=min(endpoint.timeout_s, 10.0))
  for path, read in (("/version", lambda a: f"vLLM {a['version']}"),
                     ("/openapi.json", lambda a: f"{a['info']['title']} {a['info']['version']}"),
                     ("/props", lambda a: f"llama.cpp server {a['build_info']}")):
    try:
      return read(quick.call(path))
    except (ServerError, KeyError, TypeError):
      continue
  return "version unknown"


def _completion(endpoint: Endpoint, model: str, prompt: str, **fields) -> dict:
  """choices[0] of POST /v1/completions (deterministic: temperature 0)."""
  answer = endpoint.call("/v1/completions", dict(model=model, prompt=prompt, temperature=0.0, **fields))
  choices = answer.get("choices") if isinstance(answer, dict) else None
  if not choices:
    raise ServerError(f"teacher server {endpoint.root}/v1/completions: answer without choices "
                      f"({json.dumps(answer)[:200]})")
  return choices[0]


def echo_logprobs(endpoint: Endpoint, model: str, text: str, top_logprobs: int) -> dict:
  """The server's completions-form logprobs of `text` as it answers them (not yet checked for a shift): its tokens
  of the text, their offsets, and per token its logprob and top-k dict (None for the first token); the generated
  token beyond the text and a BOS token before it dropped."""
  choice = _completion(endpoint, model, text, echo=True, logprobs=top_logprobs, max_tokens=1)
  where = f"teacher server {endpoint.root}/v1/completions (model {model!r})"
  logprobs = choice.get("logprobs")
  keys = ("tokens", "token_logprobs", "top_logprobs", "text_offset")
  if not isinstance(logprobs, dict) or any(not isinstance(logprobs.get(key), list) for key in keys):
    present = sorted(logprobs) if isinstance(logprobs, dict) else logprobs
    raise ServerError(f"{where}: answered echo=true, logprobs={top_logprobs} without logprobs "
                      f"(choices[0].logprobs: {present}; needs {', '.join(keys)})")
  if len({len(logprobs[key]) for key in keys}) != 1:
    raise ServerError(f"{where}: logprobs lists of different lengths "
                      f"({', '.join(f'{key} {len(logprobs[key])}' for key in keys)})")
  if not _well_typed(logprobs):
    raise ServerError(f"{where}: logprobs not in the completions form (tokens strings, text_offset integers, "
                      "token_logprobs numbers or null, top_logprobs objects of numbers or null)")
  if not str(choice.get("text", "")).startswith(text):
    raise ServerError(f"{where}: echo=true did not echo the text (answer starts {str(choice.get('text'))[:60]!r})")
  scored = _without_leading_bos(logprobs, text)
  kept = [i for i, offset in enumerate(scored["text_offset"]) if offset < len(text)]
  scored = {key: [scored[key][i] for i in kept] for key in keys}
  try:
    _check_scored(scored, text, where)
  except ServerError:
    recovered = recovered_long_tokens(scored, text)
    if recovered is None:
      raise
    _check_scored(recovered, text, where)
    return recovered
  return scored


def _well_typed(logprobs: dict) -> bool:
  number = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)
  return (all(isinstance(token, str) for token in logprobs["tokens"])
          and all(isinstance(offset, int) for offset in logprobs["text_offset"])
          and all(value is None or number(value) for value in logprobs["token_logprobs"])
          and all(top is None or (isinstance(top, dict) and all(map(number, top.values())))
                  for top in logprobs["top_logprobs"]))


def _without_leading_bos(logprobs: dict, text: str) -> dict:
  """The logprobs without a first token that the server added before the text (vLLM echoes a model's BOS token,
  '<s>' or '<|begin_of_text|>', and counts its length into the offsets that follow); as they are otherwise."""
  tokens, offsets = logprobs["tokens"], logprobs["text_offset"]
  if len(tokens) < 2 or not tokens[0] or text.startswith(tokens[0]) or offsets[1] != offsets[0] + len(tokens[0]):
    return logprobs
  return {key: ([offset - offsets[1] for offset in values[1:]] if key == "text_offset" else values[1:])
          for key, values in logprobs.items()}


def _is_piece(token: str, text: str) -> bool:
  """Whether a server's token string is a piece of a multi-byte character ('' or with U+FFFD), not its text."""
  return not token or ("\ufffd" in token and "\ufffd" not in text)


def _check_scored(logprobs: dict, text: str, where: str) -> None:
  """The tokens tile the text: each is the text at its offset and the next starts where it ends (a piece of a
  multi-byte character, which servers show as '' or with U+FFFD, is not compared, and the token after such pieces
  starts after the character); every logprob is one."""
  offsets, tokens = logprobs["text_offset"], logprobs["tokens"]
  if not tokens:
    raise ServerError(f"{where}: answered echo=true with the logprobs of no token of the text (llama.cpp's own "
                      "llama-server gives those of generated tokens only)")
  if offsets[0] != 0 or any(b < a for a, b in zip(offsets, offsets[1:])):
    raise ServerError(f"{where}: token offsets {offsets[:8]} do not cover the text from its start in order")
  for i, (token, offset, end) in enumerate(zip(tokens, offsets, offsets[1:] + [len(text)])):
    piece = _is_piece(token, text)
    if not piece and (text[offset:offset + len(token)] != token or end != offset + len(token)):
      raise ServerError(f"{where}: token {i} {token!r} at offset {offset} is not the text there "
                        f"({text[offset:end]!r}); the server's tokens do not cover the text (special tokens in it, "
                        "such as a chat template's, which llama-cpp-python leaves out of its echo? or tokens echoed "
                        "as '' whose text the rest does not place)")
  values = [v for v in logprobs["token_logprobs"] if v is not None]
  values += [v for top in logprobs["top_logprobs"] if top for v in top.values()]
  if any(v is not None and v > MAX_LOGPROB for v in values):
    raise ServerError(f"{where}: a logprob above 0 ({max(values)}): not log-probabilities")


def recovered_long_tokens(logprobs: dict, text: str) -> dict | None:
  """The logprobs with the tokens that the server echoed as '' (a token longer than LONG_PIECE_BYTES bytes: a run of
  dashes or spaces in a table or code) given back their text, where the text determines it; None where it does not.

  llama-cpp-python 0.3.36 detokenizes each token into a 32-byte buffer and keeps nothing of a longer piece, so such a
  token is echoed as '' and the offsets after it count it as 0 characters. The other tokens are right, so the text
  says what the '' ones cover: every tiling of the text in which the non-empty tokens are the text at their place,
  a '' token covers nothing (a piece of a multi-byte character) or more than LONG_PIECE_BYTES bytes, and a token
  with U+FFFD (another server's piece) nothing or one character, is counted (up to 2); exactly one gives the
  tokens and offsets, else None (ambiguous, e.g. two long tokens in a row: the text does not say where one ends).
  Distributions and logprobs are kept as the server gave them (a '' key of a distribution stays unknown)."""
  tokens, end = logprobs["tokens"], len(text)
  byte_ends = list(itertools.accumulate((len(char.encode()) for char in text), initial=0))
  # reach[i]: position after the first i tokens -> (number of tilings, capped at 2; the position before token i-1)
  reach = [{0: (1, None)}]
  for i, token in enumerate(tokens):
    step: dict[int, tuple[int, int]] = {}
    following = tokens[i + 1] if i + 1 < len(tokens) else None
    for start, (count, _) in reach[-1].items():
      if not token:  # nothing, or a long piece; ending where the next token can start (the text's end after the last)
        first_long = bisect.bisect_right(byte_ends, byte_ends[start] + LONG_PIECE_BYTES)
        ends = [stop for stop in (start, *range(first_long, end + 1))
                if (stop == end if following is None
                    else _is_piece(following, text) or text.startswith(following, stop))]
      elif _is_piece(token, text):
        ends = [start, start + 1] if start < end else [start]
      else:
        ends = [start + len(token)] if text.startswith(token, start) else []
      for stop in ends:  # the first way in stays the predecessor (the only one where the count ends at 1)
        earlier, before = step.get(stop, (0, start))
        step[stop] = (min(earlier + count, 2), before)
    if not step:
      return None
    reach.append(step)
  if reach[-1].get(end, (0, None))[0] != 1:
    return None
  positions = [end]
  for i in range(len(tokens), 0, -1):
    positions.append(reach[i][positions[-1]][1])
  positions.reverse()
  spans = [text[a:b] for a, b in zip(positions, positions[1:])]
  return dict(logprobs, tokens=[span if not token else token for token, span in zip(tokens, spans)],
              text_offset=positions[:-1])


def next_token_logprobs(endpoint: Endpoint, model: str, prefix: str, top_logprobs: int) -> dict:
  """The server's top-k distribution (token string -> logprob) of the token after `prefix`."""
  choice = _completion(endpoint, model, prefix, echo=False, logprobs=top_logprobs, max_tokens=1)
  tops = (choice.get("logprobs") or {}).get("top_logprobs") or [None]
  if not tops[0]:
    raise ServerError(f"teacher server {endpoint.root}/v1/completions (model {model!r}): answered logprobs="
                      f"{top_logprobs}, max_tokens=1 without top_logprobs")
  return tops[0]


def _same(a: dict | None, b: dict | None, k: int) -> bool:
  """Two top-k dicts are the same distribution: the same most likely token, and their common tokens among the k
  most likely within SAME_DISTRIBUTION_NATS."""
  if not a or not b:
    return False
  top_a, top_b = _top(a, k), _top(b, k)
  common = set(top_a) & set(top_b)
  return (max(a, key=a.get) == max(b, key=b.get) and len(common) >= min(len(top_a), len(top_b)) // 2
          and all(abs(a[t] - b[t]) <= SAME_DISTRIBUTION_NATS for t in common))


def _top(distribution: dict, k: int) -> dict:
  """The k most likely entries of a token -> logprob dict."""
  return dict(sorted(distribution.items(), key=lambda item: -item[1])[:k])


def _probe_position(logprobs: dict) -> int | None:
  """A token to ask the next-token distribution before: one with distributions at it and the token before, starting
  with a space where one does (so the text before it tokenizes as in the whole text), nearest the middle."""
  tops, tokens = logprobs["top_logprobs"], logprobs["tokens"]
  candidates = [j for j in range(2, len(tokens)) if tops[j] and tops[j - 1] and tokens[j]]
  spaced = [j for j in candidates if tokens[j][:1].isspace()]
  pool = spaced or candidates
  return min(pool, key=lambda j: abs(j - len(tokens) // 2)) if pool else None


def check_alignment(endpoint: Endpoint, model: str, texts: Sequence[str], top_logprobs: int, *, wanted: int = 3,
                    echoed: dict | None = None) -> int:
  """0 when the server's echoed distribution at each token is that token's own, 1 when it is the next token's (the
  llama-cpp-python shift); a ServerError naming the server's version when the texts tell neither or disagree.

  For each text, until `wanted` texts have told: echo its logprobs, pick a token j, ask the distribution of the token
  after text[:offset of j], and compare it with the echoed entries j (aligned) and j - 1 (shifted); a text of fewer
  than 3 tokens, or whose two entries both match, tells nothing. `echoed`, when given, receives each text's
  echo_logprobs answer (what a build would ask again)."""
  k = min(top_logprobs, 5)
  verdicts = []
  for text in texts:
    if len(verdicts) == wanted:
      break
    logprobs = echo_logprobs(endpoint, model, text, top_logprobs)
    if echoed is not None:
      echoed[text] = logprobs
    j = _probe_position(logprobs)
    if j is None:
      continue
    prefix = text[:logprobs["text_offset"][j]]
    expected = next_token_logprobs(endpoint, model, prefix, top_logprobs)
    aligned, shifted = (_same(logprobs["top_logprobs"][i], expected, k) for i in (j, j - 1))
    if aligned != shifted:
      verdicts.append((int(shifted), text, j))
  if not verdicts or len({shift for shift, _, _ in verdicts}) > 1:
    version = server_version(endpoint)
    told = "disagree on" if verdicts else "match neither"
    raise ServerError(
        f"teacher server {endpoint.root} ({version}, model {model!r}): its echoed logprobs {told} the next-token "
        f"distributions at the same tokens or one token earlier on {len(verdicts) or len(texts)} texts; refusing to "
        "distill from them")
  return verdicts[0][0]


def shifted_back(logprobs: dict, top_logprobs: int) -> dict:
  """The logprobs of a server that echoes at each token the next token's distribution, put back: token i gets entry
  i - 1's distribution (its k most likely tokens: the scored token that the server adds to each entry is another
  position's), and its own logprob where it is among them (else None, as for tokens 0 and 1, which the server's
  answer has no distribution for)."""
  tops = [None] + [_top(top, top_logprobs) if top else None for top in logprobs["top_logprobs"][:-1]]
  token_logprobs = [top.get(token) if top else None for top, token in zip(tops, logprobs["tokens"])]
  return dict(tokens=logprobs["tokens"], token_logprobs=token_logprobs, top_logprobs=tops,
              text_offset=logprobs["text_offset"])


@dataclasses.dataclass(frozen=True)
class Example:
  """One training example: what the logprobs file line is keyed by (prompt, response) and the text scored."""
  prompt: str | None
  response: str
  text: str

  @property
  def key(self) -> str:
    return json.dumps([self.prompt, self.response, self.text])


def _line_key(line: dict) -> str:
  return json.dumps([line.get("prompt"), line.get("response"), line.get("text")])


def _resumed_keys(partial: str) -> set[str]:
  """The examples a partial file holds, after cutting a torn last line (a kill during its write) off the file."""
  with open(partial, "rb") as stream:
    content = stream.read()
  whole = content[:content.rfind(b"\n") + 1]
  if len(whole) != len(content):
    with open(partial, "r+b") as stream:
      stream.truncate(len(whole))
  return {_line_key(json.loads(line)) for line in whole.splitlines()}


def write_logprobs_file(path: str, examples: Iterable[Example], *, url: str, model: str | None = None,
                        top_logprobs: int = 20, concurrency: int = 4, shifted: str = "correct",
                        check_examples: int = 3, timeout_s: float = 300.0, retries: int = 4,
                        backoff_s: float = 1.0, log: Callable[[str], None] = logger.info) -> str:
  """Writes the logprobs file of `examples` (each scored once) as the server at `url` answers them, at `path`.

  Args:
    path: the file to write; an existing one is returned as it is when it holds every example (else refused).
      `<path>.partial` and `<path>.partial.json` (the server model, k, shift and a hash of the examples it was made
      with) hold a build in progress; a rerun with the same examples, model and k continues it.
    examples: the training examples; their `text` is what the server scores (prompt and response as the teacher
      reads them, e.g. rendered by its chat template).
    url: the OpenAI-compatible server (with or without /v1); model: the served model's id (None: the first listed).
    top_logprobs: k, the distribution's entries per token.
    concurrency: requests in flight at once.
    shifted: 'correct' (a server echoing the next token's distribution is shifted back) or 'refuse'.
    check_examples: how many of the examples `check_alignment` compares (before anything is written; the first
      ones that can tell, among 3 times as many).
    timeout_s, retries, backoff_s: per request (Endpoint).
    log: progress lines.

  Returns:
    path.
  """
  assert shifted in ("correct", "refuse") and top_logprobs >= 1 and concurrency >= 1, (shifted, top_logprobs,
                                                                                      concurrency)
  examples = list({example.key: example for example in examples}.values())
  if not examples:
    raise UserError(f"logprobs file {path}: no examples to score")
  endpoint = Endpoint(url, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
  if os.path.exists(path):
    missing = {example.key for example in examples} - _resumed_keys(path)
    if missing:
      raise UserError(f"logprobs file {path} exists but lacks {len(missing)} of the {len(examples)} examples; "
                      "remove it to rebuild it")
    return path
  model = served_model(endpoint, model)
  echoed: dict[str, dict] = {}
  shift = check_alignment(endpoint, model, [example.text for example in examples[:3 * check_examples]], top_logprobs,
                          wanted=check_examples, echoed=echoed)
  if shift:
    version = server_version(endpoint)
    if shifted == "refuse":
      raise ServerError(f"teacher server {endpoint.root} ({version}, model {model!r}): echoes at each token the "
                        "next token's distribution (shifted by one position); refused")
    log(f"teacher server {endpoint.root} ({version}): echoes each token's logprobs one position late; shifting "
        "them back (the first two tokens get no distribution)")
  examples_hash = hashlib.sha256("\n".join(sorted(example.key for example in examples)).encode()).hexdigest()
  partial = path + ".partial"
  identity = dict(model=model, top_logprobs=top_logprobs, shift=shift, examples_sha256=examples_hash)
  done: set[str] = set()
  if os.path.exists(partial) and os.path.exists(partial + ".json") and files.read_json(partial + ".json") == identity:
    done = _resumed_keys(partial)
    log(f"logprobs file {path}: continuing after {len(done)} of {len(examples)} examples")
  else:
    if os.path.exists(partial):
      log(f"logprobs file {path}: the partial file beside it was made for other examples or with another server "
          "model, k or shift; starting afresh")
    files.write_json(partial + ".json", identity)
    with open(partial, "wb"):
      pass
  todo = [example for example in examples if example.key not in done]

  def score(example: Example) -> bytes:
    logprobs = echoed.get(example.text) or echo_logprobs(endpoint, model, example.text, top_logprobs)
    if shift:
      logprobs = shifted_back(logprobs, top_logprobs)
    line = dict(prompt=example.prompt, response=example.response, text=example.text, logprobs=logprobs)
    return (json.dumps(line, ensure_ascii=False) + "\n").encode()

  handle = os.open(partial, os.O_WRONLY | os.O_APPEND)
  try:
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
      pending, queue, written, last_log = set(), iter(todo), len(done), time.monotonic()
      while True:
        while len(pending) < 2 * concurrency and (example := next(queue, None)) is not None:
          pending.add(pool.submit(score, example))
        if not pending:
          break
        finished, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in finished:
          if future.exception() is None:
            os.write(handle, future.result())  # one write per line: a kill leaves at most a torn last line
            written += 1
        failed = [future.exception() for future in finished if future.exception() is not None]
        if failed:
          for other in pending:
            other.cancel()
          raise failed[0]
        if time.monotonic() - last_log > PROGRESS_SECONDS:
          last_log = time.monotonic()
          log(f"logprobs file {path}: {written}/{len(examples)} examples scored")
    os.fsync(handle)
  finally:
    os.close(handle)
  os.replace(partial, path)
  os.remove(partial + ".json")
  log(f"logprobs file {path}: {len(examples)} examples scored by {model} at {endpoint.root}")
  return path


def generate(prompts: Sequence[str], *, url: str, model: str | None = None, max_tokens: int, concurrency: int = 4,
             stop: Sequence[str] = (), timeout_s: float = 300.0, retries: int = 4) -> list[str]:
  """The server's greedy completions (temperature 0) of `prompts`, at most `max_tokens` tokens each, in order: the
  teacher's responses for sequence-level distillation. repeat_penalty=1.0: llama-cpp-python's server penalizes
  repeats by 1.1 unless told (vLLM ignores the field; its repetition_penalty defaults to 1)."""
  endpoint = Endpoint(url, timeout_s=timeout_s, retries=retries)
  model = served_model(endpoint, model)

  def complete(prompt: str) -> str:
    text = _completion(endpoint, model, prompt, max_tokens=max_tokens, repeat_penalty=1.0,
                       **({"stop": list(stop)} if stop else {}))
    return str(text.get("text", ""))

  with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
    return list(pool.map(complete, prompts))
