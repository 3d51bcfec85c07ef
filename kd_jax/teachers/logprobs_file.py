"""A teacher from anywhere: a file of its top-k logprobs (teacher.source='logprobs_file', or the file a server's
client writes for teacher.source='server'), read once into a teacher cache and turned into the student's signal.

The file (docs/teachers.md): JSON lines, one per training example,

  {"prompt": <the data set's prompt>, "response": <its response>, "text": <optional: the exact string scored,
   default prompt + response; it ends with the response>, "logprobs": <the OpenAI completions form {"tokens",
   "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset": [character offsets into text]} or the chat
   form {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}>}

One line per distinct (prompt, response): it serves every training example of that pair. Only the tokens that
overlap the response's span of `text` are distillation targets; token i's top_logprobs is the
teacher's distribution for token i (given the text before it), its logprob that of token i itself. The chat form's
tokens carry no offsets: their bytes (or, without `bytes`, their UTF-8 strings) spell the end of the text.

Three steps, each in one place:
  `read`      parses and checks every line in memory (nothing is written): a bad line is a UserError naming the file
              and its line (a missing field, offsets or bytes that do not spell the text, a logprob > 0, no
              top_logprobs for a response token (k = 0), top-k probabilities summing over 1, a (prompt, response) that
              is not a training example, a duplicate, a training example without a line).
  `store`     writes what `read` found into the import cache, `<teacher dir>/logprobs_cache/<file sha256>-<data
              fingerprint>/`: per example the response tokens (their strings, as ids into `strings.json`), their byte
              spans in the response, the actual tokens' logprobs and the top-k entries (strings and logprobs, sorted);
              each array written atomically, metadata.json last, so a half-written import is never used (`load`
              returns None for it and it is written again).
  student signal  `topk_signal` (the student's tokenizer; distill.cross_tokenizer='none'): the existing top-k cache
              signal, losses.TopKLogits in the student's layout, k entries and the tail bin log(1 - sum of their
              probabilities) per scored position, `weights` 1 where the teacher scored the position. `chunk_signal`
              (cross_tokenizer uld, gold or alm): the teacher's byte spans aligned with the student's tokens
              (kd_jax/data/alignment.py) into cross_tokenizer.CachedChunks.
"""

import ast
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os

import numpy as np

from kd_jax import files
from kd_jax.data import alignment
from kd_jax.errors import UserError, require
from kd_jax.training import cross_tokenizer, losses

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
ARRAYS = ("index", "line", "num_tokens", "token", "token_start", "token_end", "token_logprob", "top_token",
          "top_logprob")
# The top-k probabilities of a token may sum to 1 by this much over (the server's rounding); the tail's probability
# is at least TAIL_FLOOR (a tail of probability 0 would make reverse divergences infinite).
SUM_TOLERANCE = 1e-3
TAIL_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class Imported:
  """A logprobs file's rows by example, R the most response tokens of a line, K the most top entries of a token.

  Attributes:
    path, sha256: the file and the hash its import cache is keyed by.
    arrays: 'index' [N] int32 example index, ascending; 'line' [N] its line number; 'num_tokens' [N]; 'token' [N, R]
      int32 id of the token's string in `strings` (-1: padding); 'token_start', 'token_end' [N, R] int32 its bytes
      [start, end) in the response (clipped to it); 'token_logprob' [N, R] float32; 'top_token' [N, R, K] int32
      (-1: padding) and 'top_logprob' [N, R, K] float32 (-inf: padding), largest first.
    strings: every token string of the file.
  """
  path: str
  sha256: str
  arrays: dict
  strings: list

  def row_of(self) -> dict:
    """example index -> row."""
    return {int(index): row for row, index in enumerate(self.arrays["index"])}


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as stream:
    for block in iter(lambda: stream.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()[:16]


def check_config(config) -> None:
  """Raises UserError unless teacher.logprobs_path (teacher.source='logprobs_file') is a readable file."""
  if config.teacher.source == "logprobs_file":
    path = config.teacher.logprobs_path
    require(os.path.isfile(path), "teacher.logprobs_path", path, "must be an existing file of JSON lines")


def read(path: str, pairs: dict, training_index) -> Imported:
  """Every line of the logprobs file `path`, checked (module docstring), by example.

  Args:
    pairs: example index -> (prompt, response) of the data set (causal_lm.CausalLMInfo.pairs).
    training_index: the training split's example indices: the examples each needing one line.

  Raises:
    UserError: the first bad line, naming the file and the line.
  """
  training = {int(index) for index in np.asarray(training_index)}
  examples_of = {}  # (prompt, response) -> the training examples of it (a data set may repeat a pair)
  for index, pair in pairs.items():
    if index in training:
      examples_of.setdefault(pair, []).append(index)
  rows, seen = {}, {}
  with open(path, encoding="utf-8", errors="replace") as stream:  # a line that is not UTF-8 fails as JSON or text
    for number, line in enumerate(stream, start=1):
      if not line.strip():
        continue
      where = f"teacher.logprobs_path={path!r}, line {number}"
      row = _json_object(line, where)
      for field in ("prompt", "response", "logprobs"):
        if field not in row:
          raise UserError(f"{where}: missing field {field!r} (each line has prompt, response, logprobs and "
                          "optionally text)")
      prompt, response = row["prompt"], row["response"]
      if not isinstance(prompt, str) or not isinstance(response, str):
        raise UserError(f"{where}: prompt and response must be strings")
      indices = examples_of.get((prompt, response))
      if indices is None:
        raise UserError(f"{where}: (prompt {prompt[:40]!r}, response {response[:40]!r}) is not an example of the "
                        "training split")
      if (prompt, response) in seen:
        raise UserError(f"{where}: the same (prompt, response) as line {seen[prompt, response]}")
      seen[prompt, response] = number
      text = row.get("text", prompt + response)
      if not isinstance(text, str) or not text.endswith(response):
        raise UserError(f"{where}: text must be a string that ends with the response")
      tokens = _response_tokens(row["logprobs"], text, response, where)
      rows.update((index, (number, tokens)) for index in indices)  # one line serves every example of its pair
  missing = sorted(training - set(rows))
  if missing:
    raise UserError(f"teacher.logprobs_path={path!r} has no line for {len(missing)} of {len(training)} training "
                    f"examples (first: prompt {pairs[missing[0]][0][:40]!r}); every training example needs one")
  return _as_arrays(path, rows)


def _json_object(line: str, where: str) -> dict:
  try:
    row = json.loads(line)
  except json.JSONDecodeError as error:
    raise UserError(f"{where}: not JSON ({error.msg} at column {error.colno})") from None
  if not isinstance(row, dict):
    raise UserError(f"{where}: not a JSON object")
  return row


def _logprob(value, where: str, what: str) -> float:
  """A logprob: a number <= 0 (-inf allowed)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value > 0:
    raise UserError(f"{where}: {what} has logprob {value!r}; a logprob is a number <= 0")
  return float(value)


def _token_bytes(token: str, listed) -> bytes:
  """A token's bytes: the chat form's `bytes`, OpenAI's 'bytes:\\xNN' strings, else its UTF-8 string."""
  if listed is not None:
    return bytes(listed)
  if token.startswith("bytes:"):
    try:
      return ast.literal_eval("b'" + token[len("bytes:"):].replace("'", "\\'") + "'")
    except (SyntaxError, ValueError):
      pass  # not OpenAI's escapes: the string itself
  return token.encode("utf-8")


def _response_tokens(logprobs, text: str, response: str, where: str) -> list:
  """[(token, start, end, logprob, [(top token, logprob), ...] largest first)] of the tokens that overlap the
  response, their byte spans relative to the response's first byte and clipped to it."""
  text_bytes = text.encode("utf-8")
  response_start = len(text_bytes) - len(response.encode("utf-8"))
  if isinstance(logprobs, dict) and "content" in logprobs:
    tokens = _chat_form(logprobs["content"], text_bytes, where)
  elif isinstance(logprobs, dict) and all(key in logprobs for key in ("tokens", "token_logprobs", "top_logprobs",
                                                                      "text_offset")):
    tokens = _completions_form(logprobs, text, where)
  else:
    raise UserError(f"{where}: logprobs is neither the completions form (tokens, token_logprobs, top_logprobs, "
                    "text_offset) nor the chat form (content)")
  found = []
  for i, (token, start, end, logprob, top) in enumerate(tokens):
    if end <= response_start:
      continue  # the prompt's
    what = f"token {i} ({token!r})"
    # A token's own logprob may be unknown (null: a server's shifted echo put back, where the token is not among the
    # k): NaN, and the chunks that need it are left out of the loss (chunk_rows).
    logprob = math.nan if logprob is None else _logprob(logprob, where, what)
    if not top:
      raise UserError(f"{where}: {what} has no top_logprobs (k = 0); each response token needs its top-k entries")
    top = sorted(((entry, _logprob(value, where, f"{what}'s top entry {entry!r}")) for entry, value in top),
                 key=lambda item: -item[1])
    total = sum(math.exp(value) for _, value in top)
    if total > 1 + SUM_TOLERANCE:
      raise UserError(f"{where}: {what}'s top_logprobs sum to probability {total:.4f} > 1")
    found.append((token, max(start - response_start, 0), end - response_start, logprob, top))
  if not found:
    raise UserError(f"{where}: no token of logprobs overlaps the response")
  ends = [0] + [end for _, _, end, _, _ in found]
  gaps = [(end, start) for end, (_, start, *_) in zip(ends, found) if start != end] + (
      [(ends[-1], len(text_bytes) - response_start)] if ends[-1] != len(text_bytes) - response_start else [])
  if gaps:
    raise UserError(f"{where}: the tokens do not spell the response one after another (at byte {gaps[0][0]} of the "
                    f"response the next token starts at byte {gaps[0][1]})")
  return found


def _completions_form(logprobs: dict, text: str, where: str) -> list:
  tokens, values, tops, offsets = (logprobs[key] for key in ("tokens", "token_logprobs", "top_logprobs",
                                                              "text_offset"))
  if not all(isinstance(value, list) for value in (tokens, values, tops, offsets)) or not (
      len(tokens) == len(values) == len(tops) == len(offsets)):
    raise UserError(f"{where}: tokens, token_logprobs, top_logprobs and text_offset must be lists of one length")
  byte_at = np.concatenate([[0], np.cumsum([len(char.encode("utf-8")) for char in text])]).astype(int)
  found, previous = [], 0
  for i, (token, offset) in enumerate(zip(tokens, offsets)):
    if not isinstance(token, str) or isinstance(offset, bool) or not isinstance(offset, int) or not (
        previous <= offset <= len(text)):
      raise UserError(f"{where}: token {i} has text_offset {offset!r}; offsets are non-decreasing character "
                      f"positions in the text (0 to {len(text)})")
    previous = offset
    token_bytes = _token_bytes(token, None)
    start = max(int(byte_at[offset]), found[-1][2] if found and found[-1][2] <= byte_at[min(offset + 1, len(text))]
                else 0)  # a piece of a character starts where the one before it ended
    if "\ufffd" in token:  # part of a character: it spans up to the next token
      end = max(start, int(byte_at[min(offsets[i + 1], len(text))]) if i + 1 < len(offsets) else int(byte_at[-1]))
    elif text.encode("utf-8")[start:start + len(token_bytes)] == token_bytes:
      end = start + len(token_bytes)
    else:
      raise UserError(f"{where}: token {i} ({token!r}) is not the text at its text_offset {offset} (the text there "
                      f"reads {text[offset:offset + len(token) + 8]!r})")
    top = tops[i]
    if top is not None and not isinstance(top, dict):
      raise UserError(f"{where}: top_logprobs[{i}] must be an object of token -> logprob (or null)")
    found.append((token, start, end, values[i], list((top or {}).items())))
  return found


def _chat_form(content, text_bytes: bytes, where: str) -> list:
  if not isinstance(content, list):
    raise UserError(f"{where}: logprobs.content must be a list of tokens")
  spelled, entries = [], []
  for i, item in enumerate(content):
    if not isinstance(item, dict) or not all(key in item for key in ("token", "logprob", "top_logprobs")) or (
        not isinstance(item["token"], str)):
      raise UserError(f"{where}: logprobs.content[{i}] needs token (a string), logprob and top_logprobs")
    try:
      token_bytes = _token_bytes(item["token"], item.get("bytes"))
    except (TypeError, ValueError):
      raise UserError(f"{where}: logprobs.content[{i}].bytes must be a list of byte values (0 to 255)") from None
    top = item["top_logprobs"] or []
    if not isinstance(top, list) or not all(isinstance(entry, dict) and isinstance(entry.get("token"), str)
                                            and "logprob" in entry for entry in top):
      raise UserError(f"{where}: logprobs.content[{i}].top_logprobs must be a list of {{token, logprob, bytes}}")
    spelled.append(token_bytes)
    entries.append((item["token"], item["logprob"], [(entry["token"], entry["logprob"]) for entry in top]))
  joined = b"".join(spelled)
  if not text_bytes.endswith(joined):
    raise UserError(f"{where}: the bytes of logprobs.content do not spell the end of the text (they read "
                    f"{joined[-40:]!r}, the text ends {text_bytes[-40:]!r})")
  start, found = len(text_bytes) - len(joined), []
  for token_bytes, (token, logprob, top) in zip(spelled, entries):
    found.append((token, start, start + len(token_bytes), logprob, top))
    start += len(token_bytes)
  return found


def _as_arrays(path: str, rows: dict) -> Imported:
  """The rows {example index: (line, tokens)} as padded arrays (Imported)."""
  strings: dict[str, int] = {}
  string_id = lambda string: strings.setdefault(string, len(strings))
  order = sorted(rows)
  num_rows = len(order)
  max_tokens = max(len(tokens) for _, tokens in rows.values())
  max_top = max(len(top) for _, tokens in rows.values() for *_, top in tokens)
  arrays = {"index": np.array(order, np.int32), "line": np.array([rows[i][0] for i in order], np.int32),
            "num_tokens": np.array([len(rows[i][1]) for i in order], np.int32)}
  for name, fill, dtype in (("token", -1, np.int32), ("token_start", 0, np.int32), ("token_end", 0, np.int32),
                            ("token_logprob", 0.0, np.float32)):
    arrays[name] = np.full((num_rows, max_tokens), fill, dtype)
  arrays["top_token"] = np.full((num_rows, max_tokens, max_top), -1, np.int32)
  arrays["top_logprob"] = np.full((num_rows, max_tokens, max_top), -np.inf, np.float32)
  for row, index in enumerate(order):
    for t, (token, start, end, logprob, top) in enumerate(rows[index][1]):
      arrays["token"][row, t] = string_id(token)
      arrays["token_start"][row, t], arrays["token_end"][row, t] = start, end
      arrays["token_logprob"][row, t] = logprob
      arrays["top_token"][row, t, :len(top)] = [string_id(entry) for entry, _ in top]
      arrays["top_logprob"][row, t, :len(top)] = [value for _, value in top]
  return Imported(path=path, sha256=file_sha256(path), arrays=arrays, strings=list(strings))


def cache_dir(teacher_dir: str, sha256: str, data_fingerprint: str) -> str:
  return os.path.join(teacher_dir, "logprobs_cache", f"{sha256}-{data_fingerprint}")


def _metadata(imported_sha256: str, data_fingerprint: str, size: int) -> dict:
  return {"format_version": FORMAT_VERSION, "format": "logprobs", "file_sha256": imported_sha256,
          "data_fingerprint": data_fingerprint, "size": int(size)}


def load(directory: str, path: str, data_fingerprint: str, size: int) -> Imported | None:
  """The import of the file `path` in `directory` when it is complete and of this file and data, else None."""
  metadata_path = os.path.join(directory, "metadata.json")
  if not os.path.exists(metadata_path):
    return None
  sha256 = file_sha256(path)
  if files.read_json(metadata_path) != _metadata(sha256, data_fingerprint, size):
    return None
  arrays = {name: np.load(os.path.join(directory, f"{name}.npy"), mmap_mode="r") for name in ARRAYS}
  return Imported(path=path, sha256=sha256, arrays=arrays,
                  strings=files.read_json(os.path.join(directory, "strings.json")))


def store(imported: Imported, directory: str, data_fingerprint: str) -> None:
  """Writes the import into `directory` (module docstring): its arrays and strings, then its metadata."""
  metadata_path = os.path.join(directory, "metadata.json")
  os.makedirs(directory, exist_ok=True)
  if os.path.exists(metadata_path):
    os.remove(metadata_path)  # never old metadata beside new arrays
  for name in ARRAYS:
    files.write_npy(os.path.join(directory, f"{name}.npy"), np.asarray(imported.arrays[name]))
  files.write_json(os.path.join(directory, "strings.json"), imported.strings)
  files.write_json(metadata_path, _metadata(imported.sha256, data_fingerprint, len(imported.arrays["index"])))


def write_from_teacher(model, params, task, out: str, *, top_logprobs: int, chat_template: bool, mesh,
                       batch_size: int) -> int:
  """Writes the logprobs file of a kd_jax teacher (`model`, `params`) for the training split of `task` (the
  completions form, text = the prompt as the teacher's layout renders it + the response): what a server asked to
  echo the same text would return, from the teacher's own forward pass. Returns the number of lines.

  Each response token of the teacher's layout that covers the response's content is a token of the line, its string
  the text it decodes to; its top_logprobs are the `top_logprobs` largest entries of log_softmax of the teacher's
  logits at the position that predicts it.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from kd_jax.parallel import inference  # pylint: disable=import-outside-toplevel
  info = task.causal_lm
  tokenizer = info.teacher_tokenizer or info.tokenizer
  examples = task.train.teacher_view()

  def top(params, inputs):
    log_probs = jax.nn.log_softmax(model.apply({"params": params}, inputs, train=False).astype("float32"))
    values, indices = jax.lax.top_k(log_probs, top_logprobs)
    return {"values": values, "indices": indices, "log_probs": log_probs}

  program = functools.partial(inference.sharded(top, mesh), params)
  bytes_of_ids = _bytes_of_ids(tokenizer)
  decoded = lambda token_id: token_string(bytes_of_ids.get(int(token_id), b""))
  prompt_lengths = np.asarray(examples.inputs["prompt_mask"]).sum(axis=1)
  kept = np.asarray(examples.token_weights).sum(axis=1).astype(int)
  row, written = 0, set()
  with files.atomic_open(out) as stream:
    for outputs, num_real in inference.map_batches(program, examples.inputs, batch_size=batch_size,
                                                   num_devices=mesh.size):
      for b in range(num_real):
        prompt, response = info.pairs[int(examples.index[row])]
        if (prompt, response) in written:  # one line per (prompt, response): a repeated pair has the same logprobs
          row += 1
          continue
        written.add((prompt, response))
        side = alignment.response_tokens(tokenizer, prompt, response, chat_template=chat_template)
        prompt_text = _rendered_prompt(tokenizer, prompt, chat_template)
        shift = 0 if side.content_bytes == len(response.encode("utf-8")) else len(
            response[:len(response) - len(response.lstrip())].encode("utf-8"))
        # Each byte of the response -> the character it belongs to (and its end -> the response's length).
        char_at = [i for i, char in enumerate(response) for _ in char.encode("utf-8")] + [len(response)]
        line = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for s in side.scored:
          if s >= kept[row]:
            break
          position = int(prompt_lengths[row]) - 1 + s
          token_id = side.tokens.ids[s]
          start = side.tokens.spans[s][0] + shift
          line["tokens"].append(decoded(token_id))
          line["token_logprobs"].append(float(outputs["log_probs"][b, position, token_id]))
          entries = {}
          for value, index in zip(outputs["values"][b, position].tolist(), outputs["indices"][b, position].tolist()):
            entries.setdefault(decoded(index), value)
          line["top_logprobs"].append(entries)
          line["text_offset"].append(len(prompt_text) + char_at[min(start, len(char_at) - 1)])
        stream.write((json.dumps({"prompt": prompt, "response": response, "text": prompt_text + response,
                                  "logprobs": line}) + "\n").encode("utf-8"))
        row += 1
  return len(written)


def read_for_run(config, task, teacher_dir: str) -> Imported | None:
  """The run's logprobs (None for a teacher with a model): the stored import of teacher.logprobs_path when there is
  one, else the file read and checked (`read`; nothing is written: `store_for_run` writes it once the run's workdir
  is claimed)."""
  if config.teacher.source == "model":
    return None
  path = config.teacher.logprobs_path
  if config.teacher.source == "server":
    path = server_file(config, task, teacher_dir)
    if not os.path.exists(path):  # asked after the workdir is claimed (`from_server`); reachable now, or one line
      from kd_jax.teachers import server  # pylint: disable=import-outside-toplevel
      server.served_model(server.Endpoint(config.teacher.server_url, retries=1), config.teacher.server_model)
      return SERVER_PENDING
  return stored_or_read(path, task, teacher_dir)


def stored_or_read(path: str, task, teacher_dir: str) -> Imported:
  """The logprobs file `path` for the training split of `task`: its import stored in `teacher_dir` when there is one
  of this file and data, else the file read and checked (`read`)."""
  stored = load(cache_dir(teacher_dir, file_sha256(path), task.fingerprint), path, task.fingerprint, len(task.train))
  if stored is not None:
    logger.info("Teacher logprobs %s: the import in %s.", path, teacher_dir)
    return stored
  return read(path, task.causal_lm.pairs, task.train.index)


# read_for_run's answer for a server teacher whose file is not written yet: `from_server` writes it once the run's
# workdir is claimed.
SERVER_PENDING = "server-pending"


def server_file(config, task, teacher_dir: str) -> str:
  """Where teacher.source='server' writes the server's logprobs file: in the teacher directory, named by the server,
  its model, k and the data (a rerun of the same run reads it, or continues its partial build)."""
  teacher_config = config.teacher
  key = hashlib.sha256(json.dumps([teacher_config.server_url, teacher_config.server_model,
                                   teacher_config.top_logprobs, config.data.chat_template,
                                   task.fingerprint]).encode()).hexdigest()[:16]
  return os.path.join(teacher_dir, f"server-logprobs-{key}.jsonl")


def from_server(config, task, teacher_dir: str) -> Imported:
  """teacher.source='server': the server's logprobs of each distinct (prompt, response) of the training split
  (kd_jax/teachers/server.py: checked for a shifted echo first, resumable), written into the teacher directory
  (`server_file`) and read like a logprobs_path. The text scored is the prompt as the teacher's layout renders it
  (data.chat_template: the teacher's tokenizer's template) followed by the response, as `write_from_teacher` writes."""
  from kd_jax.teachers import server  # pylint: disable=import-outside-toplevel
  info = task.causal_lm
  tokenizer = info.teacher_tokenizer or info.tokenizer
  examples = []
  for index in np.asarray(task.train.index):
    prompt, response = info.pairs[int(index)]
    examples.append(server.Example(prompt, response,
                                   _rendered_prompt(tokenizer, prompt, config.data.chat_template) + response))
  os.makedirs(teacher_dir, exist_ok=True)
  teacher_config = config.teacher
  path = server.write_logprobs_file(server_file(config, task, teacher_dir), examples, url=teacher_config.server_url,
                                    model=teacher_config.server_model, top_logprobs=teacher_config.top_logprobs,
                                    concurrency=teacher_config.server_concurrency)
  return stored_or_read(path, task, teacher_dir)


def _rendered_prompt(tokenizer, prompt: str, chat_template: bool) -> str:
  """The prompt as a teacher reads it before the response: its chat template's user turn and generation prompt."""
  if not chat_template:
    return prompt
  return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False)


def store_for_run(imported: Imported, task, teacher_dir: str) -> str:
  """Writes the import of a file just read (`read_for_run`) into the teacher directory unless it is there; its
  directory."""
  directory = cache_dir(teacher_dir, imported.sha256, task.fingerprint)
  if load(directory, imported.path, task.fingerprint, len(task.train)) is None:
    store(imported, directory, task.fingerprint)
    logger.info("Teacher logprobs %s: imported %d examples into %s.", imported.path,
                len(imported.arrays["index"]), directory)
  return directory


@functools.lru_cache(maxsize=4)
def _bytes_of_ids(tokenizer) -> dict[int, bytes]:
  """Each token id -> the bytes of text it stands for: what it decodes to after another token (alignment.ANCHOR),
  or, for a token that is part of a character, its byte (`<0xNN>`) or bytes (byte-level BPE's characters). Tokens
  of neither kind are left out."""
  table = alignment.unicode_to_byte()
  found = {}
  for token, token_id in tokenizer.get_vocab().items():
    string = tokenizer.convert_tokens_to_string([alignment.ANCHOR, token])
    byte_fallback = alignment.BYTE_FALLBACK.match(token)
    if string.startswith(alignment.ANCHOR) and len(string) > len(alignment.ANCHOR) and "\ufffd" not in string:
      found[token_id] = string[len(alignment.ANCHOR):].encode("utf-8")
    elif byte_fallback:
      found[token_id] = bytes([int(byte_fallback.group(1), 16)])
    elif token and all(char in table for char in token):
      found[token_id] = bytes(table[char] for char in token)
  return found


@functools.lru_cache(maxsize=4)
def _student_ids(tokenizer) -> dict[bytes, int]:
  """The bytes of a token -> the student's id of them (the lowest where several ids stand for the same bytes)."""
  return {token_bytes: token_id for token_id, token_bytes in sorted(_bytes_of_ids(tokenizer).items(), reverse=True)}


def token_string(token_bytes: bytes) -> str:
  """How a line names a token: its text, or (part of a character) OpenAI's 'bytes:\\xNN...'."""
  try:
    return token_bytes.decode("utf-8")
  except UnicodeDecodeError:
    return "bytes:" + "".join(f"\\x{byte:02x}" for byte in token_bytes)


def _student_id(student_ids: dict, string: str) -> int:
  return student_ids.get(_token_bytes(string, None), -1)


@dataclasses.dataclass(frozen=True)
class _Example:
  """One training example's student side and the teacher's tokens in the student's content (byte spans)."""
  row: int  # in the split
  first: int  # the student position predicting its first response token: len(prompt) - 1
  kept: int  # the student's response tokens kept (truncation)
  student: alignment.Response
  teacher_tokens: list  # [(file row token position t, start, end)] of the tokens inside the content


def _examples(imported: Imported, info, examples, chat_template: bool):
  """(row in imported, _Example) of each of `examples` (rows of the training split), in their order."""
  rows = imported.row_of()
  prompt_lengths = np.asarray(examples.inputs["prompt_mask"]).sum(axis=1)
  kept = np.asarray(examples.token_weights).sum(axis=1).astype(int)
  arrays = imported.arrays
  for row, index in enumerate(np.asarray(examples.index).tolist()):
    prompt, response = info.pairs[index]
    student = alignment.response_tokens(info.tokenizer, prompt, response, chat_template=chat_template,
                                        name="the student's tokenizer")
    # The content the student's tokens are located in: the response, or (a template that strips it) its stripped text.
    shift = 0 if student.content_bytes == len(response.encode("utf-8")) else len(
        response[:len(response) - len(response.lstrip())].encode("utf-8"))
    file_row = rows[index]
    teacher_tokens = []
    for t in range(int(arrays["num_tokens"][file_row])):
      start = int(arrays["token_start"][file_row, t]) - shift
      end = int(arrays["token_end"][file_row, t]) - shift
      if end > 0 and start < student.content_bytes:
        teacher_tokens.append((t, min(max(start, 0), student.content_bytes), min(end, student.content_bytes)))
    yield file_row, _Example(row, int(prompt_lengths[row]) - 1, int(kept[row]), student, teacher_tokens)


def common_k(imported: Imported, k: int) -> int:
  """min(k, the fewest top entries of a response token of the file): the k of the student's signal."""
  arrays = imported.arrays
  num_tokens, top_token = np.asarray(arrays["num_tokens"]), np.asarray(arrays["top_token"])
  real = np.arange(top_token.shape[1])[None, :] < num_tokens[:, None]
  return min(k, int(np.sum(top_token >= 0, axis=-1)[real].min()))


def _top_entries(imported: Imported, file_row: int, t: int, student_ids: dict, k: int):
  """(student ids [k] int32 (-1: not a student token), logprobs [k] float32) of token t's k largest top entries."""
  strings = imported.strings
  tokens = np.asarray(imported.arrays["top_token"][file_row, t])[:k]
  values = np.asarray(imported.arrays["top_logprob"][file_row, t])[:k]
  return np.array([_student_id(student_ids, strings[token]) for token in tokens], np.int32), values


def topk_rows(imported: Imported, info, examples, *, k: int, chat_template: bool, exact_tail: bool) -> dict:
  """The teacher's top-k signal in the student's layout, for `examples` (the teacher and the student share one
  tokenizer; `info` the task's causal_lm.CausalLMInfo): {values, indices [n, L, k], tail_logsumexp [n, L] (or
  [n, L, 1] with `exact_tail`: the exact tail at T = 1), weights [n, L]}, the fields of losses.TopKLogits.

  Per scored student position: the k largest top entries (k from `common_k`) as student ids with their logprobs,
  and tail_logsumexp = log(1 - the sum of their probabilities) (at least TAIL_FLOOR): the tail bin at T = 1.
  `weights` is 1 where the teacher scored the position's token (the response's content; not the chat template's
  end of turn or EOS, which no line's text holds); other positions hold k uniform bins.

  Raises:
    UserError: the teacher's tokens are not the student's tokenization of a response (then distill.cross_tokenizer
      is needed), or a top entry is not a student token.
  """
  student_ids = _student_ids(info.tokenizer)
  strings, arrays = imported.strings, imported.arrays
  num, length = examples.label.shape
  values = np.zeros((num, length, k), np.float32)
  indices = np.broadcast_to(np.arange(k, dtype=np.int32), (num, length, k)).copy()
  tail = np.zeros((num, length), np.float32)
  weights = np.zeros((num, length), np.float32)
  for file_row, example in _examples(imported, info, examples, chat_template):
    where = f"teacher.logprobs_path={imported.path!r}, line {int(arrays['line'][file_row])}"
    teacher_strings = [strings[int(arrays["token"][file_row, t])] for t, _, _ in example.teacher_tokens]
    student_tokens = [example.student.tokens.ids[s] for s in example.student.scored]
    student_spans = [example.student.tokens.spans[s] for s in example.student.scored]
    if ([_student_id(student_ids, string) for string in teacher_strings] != student_tokens
        or [(start, end) for _, start, end in example.teacher_tokens] != student_spans):
      raise UserError(f"{where}: the teacher's tokens {teacher_strings[:8]} are not the student's tokenization of "
                      f"the response ({student_tokens[:8]}); the teacher has another tokenizer: set "
                      "distill.cross_tokenizer (uld, gold or alm)")
    for j, (t, _, _) in enumerate(example.teacher_tokens):
      if example.student.scored.start + j >= example.kept:
        break  # truncated
      position = example.first + example.student.scored.start + j
      ids, logprobs = _top_entries(imported, file_row, t, student_ids, k)
      if (ids < 0).any():
        raise UserError(f"{where}: token {t}'s top entry {strings[int(arrays['top_token'][file_row, t, 0])]!r} "
                        "is not a token of the student's tokenizer; set distill.cross_tokenizer (uld, gold or alm)")
      values[example.row, position] = logprobs
      indices[example.row, position] = ids
      tail[example.row, position] = np.log(max(1.0 - float(np.exp(logprobs.astype(np.float64)).sum()), TAIL_FLOOR))
      weights[example.row, position] = 1.0
  return {"values": values, "indices": indices, "tail_logsumexp": tail[..., None] if exact_tail else tail,
          "weights": weights}


def chunk_rows(imported: Imported, info, examples, *, k: int, chat_template: bool) -> dict:
  """The teacher's logprobs on the chunks where its tokens and the student's cover the same bytes of each response
  (alignment.align of both sides' byte spans in the content), for `examples`: the fields of
  cross_tokenizer.CachedChunks [n, L(, k)], chunk c of an example in slot c (at most L chunks).

  Per chunk: the sum of the teacher's actual-token logprobs (ALM), the k largest top logprobs of its first token plus
  the later tokens' logprobs (the chunk distribution's known entries, log q_c), their student ids where a top token
  is one student token (-1 else; GOLD's exact matches). A chunk is kept when all of the student's tokens in it survive
  truncation.
  """
  student_ids = _student_ids(info.tokenizer)
  arrays = imported.arrays
  num, length = examples.label.shape
  student_chunk = np.full((num, length), -1, np.int32)
  log_likelihood = np.zeros((num, length), np.float32)
  top_log_q = np.full((num, length, k), -np.inf, np.float32)
  top_ids = np.full((num, length, k), -1, np.int32)
  for file_row, example in _examples(imported, info, examples, chat_template):
    scored = example.student.scored
    chunks = alignment.align([example.student.tokens.spans[s] for s in scored],
                             [(start, end) for _, start, end in example.teacher_tokens], example.student.content_bytes)
    kept = [chunk for chunk in chunks if scored.start + chunk.a.stop <= example.kept]
    student_row, teacher_row = alignment.chunk_indices(
        kept, a_first=example.first + scored.start, b_first=0, a_length=length,
        b_length=len(example.teacher_tokens), max_chunks=length)
    for c in range(int(teacher_row.max(initial=-1)) + 1):
      positions = [example.teacher_tokens[j][0] for j in np.nonzero(teacher_row == c)[0]]
      token_logprobs = np.asarray(arrays["token_logprob"][file_row, positions], np.float64)
      if np.isnan(token_logprobs).any():  # a token's own logprob unknown: the chunk is not scored
        student_row[student_row == c] = -1
        continue
      log_likelihood[example.row, c] = token_logprobs.sum()
      ids, logprobs = _top_entries(imported, file_row, positions[0], student_ids, k)
      top_log_q[example.row, c] = logprobs + token_logprobs[1:].sum()
      top_ids[example.row, c] = ids
    student_chunk[example.row] = student_row
  return {"student_chunk": student_chunk, "log_likelihood": log_likelihood, "top_log_q": top_log_q,
          "top_ids": top_ids}


def topk_signal(imported: Imported, task, *, k: int, chat_template: bool,
                tail_temperatures: tuple[float, ...] = ()) -> tuple[losses.TopKLogits, int]:
  """`topk_rows` of the whole training split as losses.TopKLogits, in memory, and its k (tests, scripts)."""
  assert tail_temperatures in ((), (1.0,)), tail_temperatures
  k = common_k(imported, k)
  rows = topk_rows(imported, task.causal_lm, task.train, k=k, chat_template=chat_template,
                   exact_tail=bool(tail_temperatures))
  return losses.TopKLogits(**rows), k


def chunk_signal(imported: Imported, task, *, k: int, chat_template: bool) -> tuple[cross_tokenizer.CachedChunks, int]:
  """`chunk_rows` of the whole training split as cross_tokenizer.CachedChunks, in memory, and its k."""
  k = common_k(imported, k)
  return cross_tokenizer.CachedChunks(**chunk_rows(imported, task.causal_lm, task.train, k=k,
                                                   chat_template=chat_template)), k
