"""Alignment of two tokenizations of one text by bytes: what cross-tokenizer distillation compares.

Each tokenizer tokenizes the same text with offsets; every token gets a span of UTF-8 bytes [start, end). Where
several tokens share one character (byte-level BPE's `Ã` `©` for "é", byte-fallback's `<0xC3>` `<0xA9>`, an emoji
cut into byte pieces) the character's bytes are shared out among them in order when the tokens' own byte lengths
cover it (byte-level BPE through its byte <-> unicode table, `<0xXX>` one byte each, SentencePiece pieces with `▁`
as a space, at most one `<unk>` taking the rest; a `▁` left without bytes gets none: the space SentencePiece
prepends to a text); otherwise the tokens stay together (and no cut falls inside them: a tokenizer that drops a
byte it has no token for leaves such a run). Tokenizers that drop text (WordPiece drops whitespace and accents)
leave gaps between spans, which any boundary may cross.

A cut at byte c between token i and token i + 1 is valid for a tokenization when every token up to i ends at or
before c and every later one starts at or after c: c in [max(end_0..end_i), min(start_{i+1}..)]. The aligned
chunks are the finest common segmentation: the cuts valid for both tokenizations, matched greedily from the left
(both interval sequences are non-decreasing, so the greedy matching finds the most cuts), each at the leftmost
common byte. The chunks cover [0, len(text bytes)) exactly and in order; each holds at least one token of each side
(a text that one side leaves without tokens, e.g. whitespace for WordPiece, is one chunk with that side empty).
Identical tokenizers give one chunk per token (where every byte has its token).

Chat templates (`response_tokens`): each model renders the same (user, assistant) conversation with its own
template, exactly as kd_jax/data/causal_lm.py tokenizes it; the scored text is the assistant's content, found in
each rendering; template tokens around it (end of turn, newlines) belong to no chunk.
"""

import dataclasses
import functools
import re

import numpy as np

from kd_jax.errors import UserError

BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
ANCHOR = "a"  # shared_vocabulary decodes each token after this one, so that word-initial spaces show


@dataclasses.dataclass(frozen=True)
class Tokenized:
  """One tokenization of a text: token ids and each token's byte span [start, end) in the text's UTF-8 bytes."""
  ids: list[int]
  spans: list[tuple[int, int]]
  num_bytes: int


@dataclasses.dataclass(frozen=True)
class Chunk:
  """A span of bytes [start, end) and the tokens of each side inside it (`a`, `b`: ranges of token indices)."""
  start: int
  end: int
  a: range
  b: range


@functools.lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
  """The inverse of GPT-2's bytes_to_unicode table (byte-level BPE writes byte b as this printable character)."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
      range(ord("®"), ord("ÿ") + 1))
  codes, extra = list(printable), 0
  for byte in range(256):
    if byte not in printable:
      printable.append(byte)
      codes.append(256 + extra)
      extra += 1
  return {chr(code): byte for byte, code in zip(printable, codes)}


def _backend_description(tokenizer) -> str:
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is None:
    return ""
  return " ".join(repr(part) for part in (backend.normalizer, backend.pre_tokenizer, backend.decoder))


def _token_byte_lengths(tokenizer, ids: list[int]) -> list[int | None]:
  """How many bytes of the text each token stands for, where its string says so exactly: `<0xXX>` byte-fallback
  pieces are one byte; a byte-level BPE token one byte per character; a SentencePiece piece its text with `▁` as a
  space. None where unknown (special tokens, WordPiece)."""
  description = _backend_description(tokenizer)
  byte_level, metaspace = "ByteLevel" in description, "▁" in description or "Metaspace" in description
  table = unicode_to_byte()
  special = set(getattr(tokenizer, "all_special_tokens", ()))
  lengths = []
  for token in tokenizer.convert_ids_to_tokens(ids):
    if BYTE_FALLBACK.match(token):
      lengths.append(1)
    elif token in special or not token:
      lengths.append(None)
    elif byte_level and all(char in table for char in token):
      lengths.append(len(token))
    elif metaspace:
      lengths.append(len(token.replace("▁", " ").encode("utf-8")))
    else:
      lengths.append(None)
  return lengths


def _split_shared_characters(spans: list[tuple[int, int]], lengths: list[int | None]) -> list[tuple[int, int]]:
  """Spans where each run of overlapping tokens gets consecutive byte ranges when the tokens' byte lengths cover the
  run: at most one length may be unknown (a `<unk>`; it takes the bytes the others leave, at least one). They are
  laid out from the run's end backwards, so that tokens that stand for more bytes than the run has (SentencePiece's
  `▁` prepended to a text) are left at its start with no bytes of their own. Other runs keep their overlapping
  spans (no cut inside them)."""
  spans = list(spans)
  i = 0
  while i < len(spans):
    j, end = i + 1, spans[i][1]
    while j < len(spans) and spans[j][0] < end:
      end = max(end, spans[j][1])
      j += 1
    run = range(i, j)
    unknown = [k for k in run if lengths[k] is None]
    if j - i > 1 and len(unknown) <= 1:
      start = min(spans[k][0] for k in run)
      known = sum(lengths[k] for k in run if lengths[k] is not None)
      run_lengths = {k: max(end - start - known, 1) if lengths[k] is None else lengths[k] for k in run}
      if sum(run_lengths.values()) >= end - start:
        for k in reversed(run):
          spans[k] = (max(start, end - run_lengths[k]), end)
          end = spans[k][0]
    i = j
  return spans


def tokenize_with_byte_spans(tokenizer, text: str, *, name: str = "tokenizer") -> Tokenized:
  """`tokenizer(text, add_special_tokens=False)` with each token's byte span (see the module docstring).

  Raises:
    UserError: a tokenizer without offsets (a slow, Python tokenizer), naming it by `name`.
  """
  try:
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
  except NotImplementedError as error:
    raise UserError(f"{name} ({type(tokenizer).__name__}) gives no token offsets, which cross-tokenizer "
                    "alignment needs; use its fast (Rust) tokenizer (tokenizer.json)") from error
  ids = list(encoding["input_ids"])
  byte_end = np.concatenate([[0], np.cumsum([len(char.encode("utf-8")) for char in text], dtype=np.int64)])
  spans = [(int(byte_end[start]), int(byte_end[end])) for start, end in encoding["offset_mapping"]]
  spans = _split_shared_characters(spans, _token_byte_lengths(tokenizer, ids))
  return Tokenized(ids=ids, spans=spans, num_bytes=int(byte_end[-1]))


def _cut_intervals(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
  """For each i < n - 1, the bytes [lo, hi] at which a cut between token i and token i + 1 is valid (lo > hi: none)."""
  ends = np.maximum.accumulate([end for _, end in spans]) if spans else np.zeros(0, np.int64)
  starts = np.minimum.accumulate([start for start, _ in spans][::-1])[::-1] if spans else np.zeros(0, np.int64)
  return [(int(ends[i]), int(starts[i + 1])) for i in range(len(spans) - 1)]


def align(a: list[tuple[int, int]], b: list[tuple[int, int]], num_bytes: int) -> list[Chunk]:
  """The finest common segmentation of two tokenizations of one text of `num_bytes` bytes (module docstring).

  Args:
    a, b: each side's token byte spans, in token order.
    num_bytes: the text's length in UTF-8 bytes.

  Returns:
    The chunks, in order: chunk k spans [start, end), with start_0 = 0, end_last = num_bytes, start_{k+1} = end_k;
    `a` and `b` partition each side's token indices. No chunks for an empty text without tokens.
  """
  if not a or not b:
    return [Chunk(0, num_bytes, range(len(a)), range(len(b)))] if num_bytes or a or b else []
  cuts_a, cuts_b = _cut_intervals(a), _cut_intervals(b)
  boundaries, i, j = [(0, 0, 0)], 0, 0  # (byte, first token of a, first token of b) of each chunk
  while i < len(cuts_a) and j < len(cuts_b):
    (lo_a, hi_a), (lo_b, hi_b) = cuts_a[i], cuts_b[j]
    if lo_a > hi_a or hi_a < lo_b:
      i += 1
    elif lo_b > hi_b or hi_b < lo_a:
      j += 1
    else:
      i, j = i + 1, j + 1
      boundaries.append((max(lo_a, lo_b), i, j))
  boundaries.append((num_bytes, len(a), len(b)))
  return [Chunk(start, end, range(first_a, next_a), range(first_b, next_b))
          for (start, first_a, first_b), (end, next_a, next_b) in zip(boundaries, boundaries[1:])]


def align_texts(tokenizer_a, tokenizer_b, text: str) -> tuple[Tokenized, Tokenized, list[Chunk]]:
  """Both tokenizations of `text` with byte spans, and their aligned chunks."""
  a = tokenize_with_byte_spans(tokenizer_a, text, name="the first tokenizer")
  b = tokenize_with_byte_spans(tokenizer_b, text, name="the second tokenizer")
  return a, b, align(a.spans, b.spans, a.num_bytes)


@dataclasses.dataclass(frozen=True)
class Response:
  """A response as kd_jax/data/causal_lm.py tokenizes it, with what alignment scores.

  Attributes:
    tokens: the response text's tokenization (ids as the data pipeline has them) with byte spans relative to the
      content: a token's span is clipped to the content [0, content_bytes).
    scored: the tokens that overlap the content (the rest are template tokens around it).
    content_bytes: the content's length in UTF-8 bytes.
  """
  tokens: Tokenized
  scored: range
  content_bytes: int


def response_tokens(tokenizer, prompt: str, response: str, *, chat_template: bool,
                    name: str = "tokenizer") -> Response:
  """The response's tokens as `causal_lm.tokenize_pairs` makes them (without the EOS it appends when there is no
  chat template, which no text stands for), located in the assistant's content.

  Raises:
    UserError: no offsets (see tokenize_with_byte_spans), or a chat template that does not render the response.
  """
  text, content_start = response, 0
  if chat_template:
    user = [{"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
    text = full_text[len(prompt_text):]
    content = response.strip() if response not in text else response
    content_start = text.find(content)
    if content_start < 0:
      raise UserError(f"{name}: its chat template does not render the response {response[:40]!r} verbatim, so its "
                      "tokens cannot be aligned with another tokenizer's")
    response = content
  tokens = tokenize_with_byte_spans(tokenizer, text, name=name)
  start = len(text[:content_start].encode("utf-8"))
  content_bytes = len(response.encode("utf-8"))
  scored = [k for k, (s, e) in enumerate(tokens.spans) if s < start + content_bytes and e > start]
  spans = [(min(max(s - start, 0), content_bytes), min(max(e - start, 0), content_bytes)) for s, e in tokens.spans]
  return Response(tokens=Tokenized(tokens.ids, spans, content_bytes),
                  scored=range(scored[0], scored[-1] + 1) if scored else range(0), content_bytes=content_bytes)


def align_responses(a: Response, b: Response) -> list[Chunk]:
  """The chunks of two tokenizations of one response's content; token indices index each side's response tokens."""
  assert a.content_bytes == b.content_bytes, "both sides render the same content"
  chunks = align([a.tokens.spans[k] for k in a.scored], [b.tokens.spans[k] for k in b.scored], a.content_bytes)
  return [Chunk(chunk.start, chunk.end, range(chunk.a.start + a.scored.start, chunk.a.stop + a.scored.start),
                range(chunk.b.start + b.scored.start, chunk.b.stop + b.scored.start)) for chunk in chunks]


def chunk_indices(chunks: list[Chunk], *, a_first: int, b_first: int, a_length: int, b_length: int,
                  max_chunks: int) -> tuple[np.ndarray, np.ndarray]:
  """Each side's chunk index per position of its sequence arrays, for the losses of
  kd_jax/training/cross_tokenizer.py.

  Token k of a side is predicted at position `first + k` (a causal LM's logits at t predict token t + 1, so `first`
  is the prompt's length - 1). Chunks with no token on a side, or with a token past its side's length, and those
  after the first `max_chunks`, are left out.

  Returns:
    (a_chunk int32 [a_length], b_chunk int32 [b_length]): the chunk index, -1 where no chunk.
  """
  a_chunk, b_chunk = np.full(a_length, -1, np.int32), np.full(b_length, -1, np.int32)
  kept = 0
  for chunk in chunks:
    if kept == max_chunks:
      break
    if (not chunk.a or not chunk.b or a_first + chunk.a.stop > a_length or b_first + chunk.b.stop > b_length
        or a_first + chunk.a.start < 0 or b_first + chunk.b.start < 0):
      continue
    a_chunk[a_first + chunk.a.start:a_first + chunk.a.stop] = kept
    b_chunk[b_first + chunk.b.start:b_first + chunk.b.stop] = kept
    kept += 1
  return a_chunk, b_chunk


def shared_vocabulary(tokenizer_a, tokenizer_b) -> tuple[np.ndarray, np.ndarray]:
  """The tokens the two vocabularies share, one to one: (ids in a, ids in b) int32 [M], in order of a's ids.

  Equal vocabularies share every token. Otherwise tokens are matched by what they decode to, built once from each
  token's string as its tokenizer decodes it after another token ("a" + token, the "a" removed), so that byte-level
  BPE's `Ġthe`, SentencePiece's `▁the` and WordPiece's word-initial `the` all read " the" and WordPiece's `##s`
  reads "s"; a token that decodes to nothing or to a partial character (U+FFFD: a byte piece) is matched by its
  string instead. A key that several ids share is matched by its lowest id on each side.
  """
  vocab_a, vocab_b = tokenizer_a.get_vocab(), tokenizer_b.get_vocab()
  if vocab_a == vocab_b:
    ids = np.array(sorted(vocab_a.values()), np.int32)
    return ids, ids
  keys_a, keys_b = vocabulary_keys(tokenizer_a), vocabulary_keys(tokenizer_b)
  pairs = sorted((token_id, keys_b[key]) for key, token_id in keys_a.items() if key in keys_b)
  return np.array([a for a, _ in pairs], np.int32), np.array([b for _, b in pairs], np.int32)


def vocabulary_keys(tokenizer) -> dict[tuple[str, str], int]:
  """Each token's key -> its id (the lowest id where several share a key): ('decoded', the text it decodes to after
  another token, as `shared_vocabulary` describes), or ('token', its string) where it decodes to nothing or to a
  partial character. What a token string of a served teacher (its decoded text) is looked up by."""
  found = {}
  for token, token_id in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
    string = tokenizer.convert_tokens_to_string([ANCHOR, token])
    decodes = string.startswith(ANCHOR) and len(string) > len(ANCHOR) and "\ufffd" not in string
    found.setdefault(("decoded", string[len(ANCHOR):]) if decodes else ("token", token), token_id)
  return found
