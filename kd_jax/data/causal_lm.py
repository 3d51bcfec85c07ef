"""Causal-LM data: prompt/response pairs or plain text, tokenized for decoder-only models, loss on responses only.

Columns (`data.prompt_column`, `data.response_column`) of any text source of kd_jax/data/text.py (hub, tfds, local
jsonl/csv/parquet files, save_to_disk), or `data.source='pydoc_topics'`: English passages of Python's own
documentation (`pydoc_data/topics.py`, in every Python installation), see `pydoc_passages`. With
`data.prompt_column=None` every row is plain text and every token is a response token.

Each example is one sequence, right-padded:

  input_ids       [prompt tokens][response tokens][pad...]         at most data.max_length tokens in all
  label[t]        input_ids[t + 1] where position t + 1 holds a response token, else -1 (next-token targets)
  token_weights   1.0 where label >= 0: the loss (CE and distillation) counts response tokens only, normalized over
                  the global batch's count of them (losses.global_mean)
  prompt_ids, prompt_mask   the prompt alone, left-padded [N, P]: what generation (evaluation, sequence-level and
                  on-policy distillation) continues

With `data.chat_template` the prompt is the tokenizer's chat template of one user turn with the generation prompt
(`apply_chat_template([{'role': 'user', 'content': prompt}], add_generation_prompt=True)`), and the response is
the rest of the template's rendering of the (user, assistant) conversation (the assistant's text and its end of
turn); otherwise the prompt is the prompt text (with the tokenizer's special tokens, e.g. BOS) and the response its
text followed by EOS. A prompt longer than data.max_length is refused; the response is truncated to fit, and
examples left without a response token are dropped (with a warning; fewer than one training batch of them left
is refused). `data.packing` places whole training examples one after another in rows of data.max_length tokens
(`pack`: best fit), each token carrying its example's segment id and its position within the example:
attention stays within an example (causal and block-diagonal), positions restart, labels and loss weights are the
example's own, so a packed example trains exactly as it would alone (unlike HF run_clm's `group_texts`, whose rows
attend across examples).

Teacher and student share one tokenizer (compared by vocabulary) unless `distill.cross_tokenizer` names a loss across
tokenizers (kd_jax/training/cross_tokenizer.py): then every example also carries the teacher's own tokenization and
both sides' aligned chunks (`cross_tokenizer_arrays`, in `Examples.teacher_inputs` and `inputs['chunk']`).
"""

import bisect
import dataclasses
import importlib.util
import logging
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.config import schema
from kd_jax.data import alignment, text
from kd_jax.data.examples import Examples
from kd_jax.errors import UserError

logger = logging.getLogger(__name__)

EVALUATOR = "causal_lm"  # how it is evaluated: the name of its evaluator (kd_jax.evaluation.EVALUATORS)
PYDOC_SOURCE = schema.PYDOC_SOURCE
# pydoc_passages: a passage is a paragraph of at least this many words, cut after PASSAGE_WORDS; its first
# PROMPT_WORDS words are the prompt, the rest the response. Passage i (in sorted-topic order) is validation when
# i % 20 == 0, test when i % 20 == 10, training otherwise.
MIN_PASSAGE_WORDS, PASSAGE_WORDS, PROMPT_WORDS = 40, 40, 12
# Sequence and prompt lengths are rounded up to a multiple of this (within data.max_length), so that the splits
# mostly share shapes and reuse each other's compiled evaluation and generation.
LENGTH_MULTIPLE = 16


@dataclasses.dataclass(frozen=True)
class CausalLMInfo:
  """What causal-LM evaluation and generation need besides the token arrays of `TaskData`.

  Attributes:
    tokenizer: the (shared) tokenizer; decodes generated ids.
    references: example index -> the reference response text (every split).
    response_bytes: example index -> the UTF-8 bytes of the response text its response tokens stand for: the whole
      response, or, where the sequence fills data.max_length (its response may be truncated), the decoded text of
      the tokens kept (special tokens left out). What bits per byte divide by.
    has_prompts: False for plain text (nothing to generate from).
    max_new_tokens: generated responses have at most this many tokens (data.max_target_length).
    eos_token_ids: generation stops at any of them (`stop_token_ids`: the student's tokenizer's EOS and the
      checkpoints' stop tokens) and pads after it with pad_token_id.
    pairs: example index -> (prompt, response) as the data set has them (prompt None for plain text): what a
      teacher's logprobs file names its examples by (kd_jax/teachers/logprobs_file.py).
    teacher_tokenizer, teacher_response_bytes, teacher_eos_token_ids: a teacher with another tokenizer
      (distill.cross_tokenizer): its tokenizer, its response_bytes (the examples' teacher_inputs are its own
      tokenization) and the stop tokens of its own generation; else None.
  """
  tokenizer: Any
  references: dict
  response_bytes: dict
  has_prompts: bool
  max_new_tokens: int
  eos_token_ids: tuple[int, ...]
  pad_token_id: int
  pairs: dict = dataclasses.field(default_factory=dict)
  teacher_tokenizer: Any = None
  teacher_response_bytes: dict | None = None
  teacher_eos_token_ids: tuple[int, ...] | None = None


def pydoc_passages() -> dict[str, dict[str, list[str]]]:
  """{split: {'prompt': [...], 'response': [...]}} of Python's pydoc topics (see MIN_PASSAGE_WORDS for the rule)."""
  spec = importlib.util.find_spec("pydoc_data.topics")
  namespace = {}
  with open(spec.origin, encoding="utf-8") as f:
    exec(compile(f.read(), spec.origin, "exec"), namespace)  # pylint: disable=exec-used  (a dict literal)
  passages = []
  for name in sorted(namespace["topics"]):
    for paragraph in re.split(r"\n\s*\n", namespace["topics"][name]):
      words = paragraph.split()
      if len(words) >= MIN_PASSAGE_WORDS:
        passages.append(words[:PASSAGE_WORDS])
  splits = {split: {"prompt": [], "response": []} for split in ("train", "validation", "test")}
  for i, words in enumerate(passages):
    split = "validation" if i % 20 == 0 else "test" if i % 20 == 10 else "train"
    splits[split]["prompt"].append(" ".join(words[:PROMPT_WORDS]))
    splits[split]["response"].append(" " + " ".join(words[PROMPT_WORDS:]))
  return splits


def _columns(data_config, split: str) -> tuple[dict[str, list], str]:
  names = tuple(name for name in (data_config.prompt_column, data_config.response_column) if name is not None)
  if data_config.source == PYDOC_SOURCE:
    if split not in ("train", "validation", "test"):
      raise UserError(f"data set causal_lm: source {PYDOC_SOURCE!r} has splits train, validation, test, not {split!r}")
    return {name: pydoc_passages()[split][name] for name in names}, f"data set causal_lm ({PYDOC_SOURCE} {split})"
  return text.load_columns(data_config, split, names)


def tokenize_pairs(tokenizer, prompts: list[str] | None, responses: list[str], *, max_length: int,
                   chat_template: bool, where: str) -> tuple[list[list[int]], list[list[int]]]:
  """(prompt ids, response ids) of each row, the response truncated so that both fit in max_length tokens.

  Raises:
    UserError: a prompt longer than max_length, or no chat template when one is asked for.
  """
  if prompts is None:  # plain text: the whole text is the response
    ids = tokenizer(responses, add_special_tokens=True)["input_ids"]
    return [[] for _ in ids], [(list(row) + [tokenizer.eos_token_id])[:max_length] for row in ids]
  if chat_template:
    if not getattr(tokenizer, "chat_template", None):
      raise UserError(f"{where}: the tokenizer has no chat template; set config.data.chat_template=False (prompt "
                      "text, then the response and EOS)")
    prompt_texts, response_texts = [], []
    for prompt, response in zip(prompts, responses):
      user = [{"role": "user", "content": prompt}]
      prompt_text = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
      full_text = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
      assert full_text.startswith(prompt_text), "the chat template renders the prompt as a prefix of the conversation"
      prompt_texts.append(prompt_text)
      response_texts.append(full_text[len(prompt_text):])
    prompt_ids = tokenizer(prompt_texts, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response_texts, add_special_tokens=False)["input_ids"]
  else:
    prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    response_ids = [list(row) + [tokenizer.eos_token_id]
                    for row in tokenizer(responses, add_special_tokens=False)["input_ids"]]
  for row, ids in enumerate(prompt_ids):
    if len(ids) > max_length:
      raise UserError(f"{where}, row {row}: the prompt has {len(ids)} tokens, more than data.max_length="
                      f"{max_length}; raise data.max_length or shorten the prompts")
  return ([list(ids) for ids in prompt_ids],
          [list(response)[:max_length - len(prompt)] for prompt, response in zip(prompt_ids, response_ids)])


def sequence_arrays(prompt_ids: list[list[int]], response_ids: list[list[int]], *, pad_token_id: int,
                    length: int) -> dict[str, np.ndarray]:
  """The right-padded training layout of the module docstring [N, length] and the left-padded prompts [N, P].

  Returns:
    input_ids, attention_mask, label (-1 but before response tokens), token_weights, prompt_ids, prompt_mask.
  """
  num = len(prompt_ids)
  input_ids = np.full((num, length), pad_token_id, np.int32)
  attention_mask = np.zeros((num, length), np.int32)
  is_response = np.zeros((num, length), bool)
  prompt_length = _round_up(max([len(prompt) for prompt in prompt_ids] + [1]))
  prompts = np.full((num, prompt_length), pad_token_id, np.int32)
  prompt_mask = np.zeros((num, prompt_length), np.int32)
  for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
    sequence = (prompt + response)[:length]
    input_ids[row, :len(sequence)] = sequence
    attention_mask[row, :len(sequence)] = 1
    is_response[row, len(prompt):len(sequence)] = True
    if prompt:
      prompts[row, prompt_length - len(prompt):] = prompt
      prompt_mask[row, prompt_length - len(prompt):] = 1
  label = np.full((num, length), -1, np.int32)
  label[:, :-1] = np.where(is_response[:, 1:], input_ids[:, 1:], -1)
  return {"input_ids": input_ids, "attention_mask": attention_mask, "label": label,
          "token_weights": (label >= 0).astype(np.float32), "prompt_ids": prompts, "prompt_mask": prompt_mask}


def cross_tokenizer_arrays(student_tokenizer, teacher_tokenizer, prompts: list[str], responses: list[str],
                           student_arrays: dict[str, np.ndarray], student_prompt_ids: list[list[int]],
                           student_response_ids: list[list[int]], *, max_length: int, chat_template: bool,
                           where: str) -> dict[str, np.ndarray]:
  """The same examples in the teacher's own layout, and the aligned chunks of both (kd_jax/data/alignment.py): what
  the cross-tokenizer losses (kd_jax/training/cross_tokenizer.py) read.

  Only the responses' content is aligned (alignment.response_tokens; with a chat template each tokenizer renders the
  conversation with its own); a chunk is kept when all of its tokens survive truncation on both sides. Response
  token k of a side is predicted at position len(prompt) - 1 + k.

  Args:
    student_arrays: `sequence_arrays` of the student's tokens (their length L_s).
    student_prompt_ids, student_response_ids: the student's `tokenize_pairs` (responses truncated as in the arrays).

  Returns:
    teacher: the teacher's `sequence_arrays` (input_ids, attention_mask, label, token_weights [N, L_t], prompt_ids,
      prompt_mask [N, P_t]); student_chunk [N, L_s] and teacher_chunk [N, L_t] int32 (the chunk of each position's
      label, -1: none); teacher_response_bytes: `response_text_bytes` of the teacher's tokens.
  """
  teacher_prompt_ids, teacher_response_ids = tokenize_pairs(teacher_tokenizer, prompts, responses,
                                                            max_length=max_length, chat_template=chat_template,
                                                            where=f"{where} (the teacher's tokenizer)")
  longest = max(len(p) + len(r) for p, r in zip(teacher_prompt_ids, teacher_response_ids))
  longest = max(longest, student_arrays["input_ids"].shape[1])  # at least the student's: room to generate alike
  teacher = sequence_arrays(teacher_prompt_ids, teacher_response_ids, pad_token_id=_pad_token_id(teacher_tokenizer),
                            length=min(max_length, _round_up(longest)))
  student_length, teacher_length = student_arrays["input_ids"].shape[1], teacher["input_ids"].shape[1]
  student_chunk = np.full((len(prompts), student_length), -1, np.int32)
  teacher_chunk = np.full((len(prompts), teacher_length), -1, np.int32)
  for row, (prompt, response) in enumerate(zip(prompts, responses)):
    student_side = alignment.response_tokens(student_tokenizer, prompt, response, chat_template=chat_template,
                                             name="config.student.checkpoint's tokenizer")
    teacher_side = alignment.response_tokens(teacher_tokenizer, prompt, response, chat_template=chat_template,
                                             name="config.teacher.checkpoint's tokenizer")
    for side, ids in ((student_side, student_response_ids[row]), (teacher_side, teacher_response_ids[row])):
      shared = min(len(side.tokens.ids), len(ids))
      assert side.tokens.ids[:shared] == list(ids[:shared]), "alignment tokenizes the response as the data does"
    kept = [chunk for chunk in alignment.align_responses(student_side, teacher_side)
            if chunk.a.stop <= len(student_response_ids[row]) and chunk.b.stop <= len(teacher_response_ids[row])]
    student_chunk[row], teacher_chunk[row] = alignment.chunk_indices(
        kept, a_first=len(student_prompt_ids[row]) - 1, b_first=len(teacher_prompt_ids[row]) - 1,
        a_length=student_length, b_length=teacher_length, max_chunks=student_length)
  return {"teacher": teacher, "student_chunk": student_chunk, "teacher_chunk": teacher_chunk,
          "teacher_response_bytes": response_text_bytes(teacher_tokenizer, responses, teacher_prompt_ids,
                                                        teacher_response_ids, max_length=max_length)}


def response_text_bytes(tokenizer, responses: list[str], prompt_ids: list[list[int]], response_ids: list[list[int]],
                        *, max_length: int) -> list[int]:
  """The UTF-8 bytes of the text each row's response tokens stand for (CausalLMInfo.response_bytes): the response's,
  or, where the sequence fills max_length and may have lost the end of its response, its kept tokens' decoded text
  (special tokens left out)."""
  return [len((response if len(prompt) + len(tokens) < max_length
               else tokenizer.decode(tokens, skip_special_tokens=True)).encode("utf-8"))
          for response, prompt, tokens in zip(responses, prompt_ids, response_ids)]


def _pad_token_id(tokenizer) -> int:
  return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def pack(prompt_ids: list[list[int]], response_ids: list[list[int]], *, pad_token_id: int,
         length: int) -> dict[str, np.ndarray]:
  """Whole examples in rows of `length` tokens, one after another: each goes into the row with the least room left
  that still holds it (best fit, in the examples' order), or opens a new row; the rest of a row is padding.

  Returns the arrays of `sequence_arrays` but the prompts, and the inputs the models take for packed rows:
    segment_ids   [N, length] int32: the example's number within its row (1, 2, ...), 0 on padding; a token attends
                  to the earlier tokens of its own example only (causal and block-diagonal: llama.causal_bias)
    position_ids  [N, length] int32: the token's position within its example (restarting at 0), what RoPE and
                  GPT-2's position embedding read
  so each example computes the logits it computes alone, and its labels are its own (`sequence_arrays`'s: the next
  token where it is a response token of the same example; the last token of an example has none).
  """
  rows: list[list[tuple[list[int], list[int]]]] = []
  room: list[tuple[int, int]] = []  # (tokens left, row) of the rows not full, ascending
  for prompt, response in zip(prompt_ids, response_ids):
    size = len(prompt) + len(response)
    assert size <= length, f"an example of {size} tokens does not fit a row of {length} (tokenize_pairs truncates)"
    fitting = bisect.bisect_left(room, (size, -1))
    if fitting == len(room):
      rows.append([])
      left, row = length, len(rows) - 1
    else:
      left, row = room.pop(fitting)
    rows[row].append((prompt, response))
    if left > size:
      bisect.insort(room, (left - size, row))
  shape = (len(rows), length)
  input_ids = np.full(shape, pad_token_id, np.int32)
  attention_mask, segment_ids, position_ids = (np.zeros(shape, np.int32) for _ in range(3))
  is_response = np.zeros(shape, bool)
  for row, examples in enumerate(rows):
    start = 0
    for segment, (prompt, response) in enumerate(examples, start=1):
      end = start + len(prompt) + len(response)
      input_ids[row, start:end] = prompt + response
      attention_mask[row, start:end] = 1
      segment_ids[row, start:end] = segment
      position_ids[row, start:end] = np.arange(end - start)
      is_response[row, start + len(prompt):end] = True
      start = end
  label = np.full(shape, -1, np.int32)
  same_example = segment_ids[:, 1:] == segment_ids[:, :-1]
  label[:, :-1] = np.where(is_response[:, 1:] & same_example, input_ids[:, 1:], -1)
  return {"input_ids": input_ids, "attention_mask": attention_mask, "segment_ids": segment_ids,
          "position_ids": position_ids, "label": label, "token_weights": (label >= 0).astype(np.float32)}


def load_splits(config):
  """({role: Examples} of train, test and, when data.validation_split is set, validation; the vocabulary size;
  CausalLMInfo)."""
  data_config = config.data
  tokenizer = text.load_tokenizer(*text.student_checkpoint_field(config))
  # A teacher from a logprobs file or a server has no tokenizer here: its tokens come with its logprobs.
  teacher_model = config.teacher.source == "model"
  teacher_tokenizer = text.load_tokenizer(config.teacher.checkpoint, "teacher.checkpoint") if teacher_model else None
  # The teacher's own tokenizer where it differs: what evaluating the teacher decodes with (one shared tokenizer keeps
  # the evaluation's token-level comparisons).
  own_teacher_tokenizer = (teacher_tokenizer if teacher_model and _tokenizers_differ(config, tokenizer, teacher_tokenizer)
                           else None)
  pad_token_id = _pad_token_id(tokenizer)
  splits, references, response_bytes, teacher_response_bytes, pairs = {}, {}, {}, {}, {}
  first_index = 0
  for role, split, max_examples in text.source_splits(data_config):
    columns, where = _columns(data_config, split)
    columns = {name: values[:max_examples] for name, values in columns.items()}
    for values in columns.values():
      text.check_texts(values, where)
    prompts = columns[data_config.prompt_column] if data_config.prompt_column is not None else None
    responses = columns[data_config.response_column]
    prompt_ids, response_ids = tokenize_pairs(tokenizer, prompts, responses, max_length=data_config.max_length,
                                              chat_template=data_config.chat_template, where=where)
    kept = [row for row, response in enumerate(response_ids) if response]
    if len(kept) < len(response_ids):
      logger.warning("%s: %d of %d examples have no response token left after truncation at data.max_length=%d; "
                     "they are left out.", where, len(response_ids) - len(kept), len(response_ids),
                     data_config.max_length)
    minimum, fewer_than = ((data_config.batch_size, f"one batch (data.batch_size={data_config.batch_size})")
                           if role == "train" else (1, "one"))
    if len(kept) < minimum:
      raise UserError(f"{where}: only {len(kept)} of {len(response_ids)} examples keep a response token after "
                      f"truncation at data.max_length={data_config.max_length}, fewer than {fewer_than}: a whole "
                      "batch would have no response token to learn from; raise data.max_length or shorten the prompts")
    prompt_ids, response_ids = [prompt_ids[row] for row in kept], [response_ids[row] for row in kept]
    index = np.arange(first_index, first_index + len(kept), dtype=np.int32)
    references.update(zip(index.tolist(), (responses[row].strip() for row in kept)))
    pairs.update(zip(index.tolist(), ((None if prompts is None else prompts[row], responses[row]) for row in kept)))
    response_bytes.update(zip(index.tolist(), response_text_bytes(
        tokenizer, [responses[row] for row in kept], prompt_ids, response_ids, max_length=data_config.max_length)))
    first_index += len(response_ids)
    if role == "train" and data_config.packing:
      arrays = pack(prompt_ids, response_ids, pad_token_id=pad_token_id, length=data_config.max_length)
      index = np.arange(first_index, first_index + len(arrays["label"]), dtype=np.int32)
      first_index += len(index)
    else:
      # Room for a generated response after the longest prompt (on-policy distillation writes it there).
      longest = max(len(p) + max(len(r), data_config.max_target_length) for p, r in zip(prompt_ids, response_ids))
      arrays = sequence_arrays(prompt_ids, response_ids, pad_token_id=pad_token_id,
                               length=min(data_config.max_length, _round_up(longest)))
    teacher_inputs = None
    if config.distill.cross_tokenizer != "none" and teacher_model:
      cross = cross_tokenizer_arrays(tokenizer, teacher_tokenizer, [prompts[row] for row in kept],
                                     [responses[row] for row in kept], arrays, prompt_ids, response_ids,
                                     max_length=data_config.max_length, chat_template=data_config.chat_template,
                                     where=where)
      arrays["chunk"] = cross["student_chunk"]
      teacher_inputs = {**cross["teacher"], "chunk": cross["teacher_chunk"]}
      teacher_response_bytes.update(zip(index.tolist(), cross["teacher_response_bytes"]))
    label, token_weights = arrays.pop("label"), arrays.pop("token_weights")
    splits[role] = Examples(inputs=arrays, label=label, token_weights=token_weights,
                            class_label=np.zeros(len(index), np.int32), index=index, teacher_inputs=teacher_inputs)
  student_checkpoint = text.student_checkpoint_field(config)[0]
  # The teacher's stop tokens are the student's where they share one vocabulary, else its own.
  shared = (student_checkpoint,) + (() if own_teacher_tokenizer is not None or not teacher_model
                                    else (config.teacher.checkpoint,))
  info = CausalLMInfo(tokenizer=tokenizer, references=references, response_bytes=response_bytes, pairs=pairs,
                      has_prompts=data_config.prompt_column is not None, teacher_tokenizer=own_teacher_tokenizer,
                      teacher_response_bytes=None if own_teacher_tokenizer is None else teacher_response_bytes,
                      teacher_eos_token_ids=None if own_teacher_tokenizer is None else stop_token_ids(
                          own_teacher_tokenizer, (config.teacher.checkpoint,)),
                      max_new_tokens=data_config.max_target_length, eos_token_ids=stop_token_ids(tokenizer, shared),
                      pad_token_id=int(pad_token_id))
  return splits, num_classes(config) or len(tokenizer), info


def example_inputs(config) -> dict:
  """One example's inputs (one token, zeros; with packing its segment and position ids), known before the data
  loads."""
  inputs = {"input_ids": np.zeros((1, 1), np.int32), "attention_mask": np.ones((1, 1), np.int32)}
  if config.data.packing:
    inputs.update(segment_ids=np.ones((1, 1), np.int32), position_ids=np.zeros((1, 1), np.int32))
  return inputs


def num_classes(config) -> int | None:
  """The vocabulary size a user's student model is built with (kd_jax/models/protocol.py: its config.vocab_size):
  that of the checkpoint whose tokenizer it uses (text.student_checkpoint_field: the teacher's, the width of its
  logits, unless student.checkpoint names another). None for an HF student (its checkpoint has its own)."""
  if not schema.is_user_model(config.student.name):
    return None
  from kd_jax.models.hf import pretrained  # pylint: disable=g-import-not-at-top
  return pretrained.vocab_size(text.student_checkpoint_field(config)[0])


def stop_token_ids(tokenizer, checkpoints) -> tuple[int, ...]:
  """The tokens generation stops at: the tokenizer's EOS (what ends every training response), then every stop token
  of the models' generation configs (pretrained.stop_token_ids: Llama 3's <|eot_id|> and <|eom_id|>, Qwen2.5's
  <|im_end|> and <|endoftext|>), so that neither model's sampling runs past its own end of turn."""
  from kd_jax.models.hf import pretrained  # pylint: disable=g-import-not-at-top
  ids = [int(tokenizer.eos_token_id)]
  for checkpoint in dict.fromkeys(checkpoints):
    ids += pretrained.stop_token_ids(checkpoint)
  return tuple(dict.fromkeys(ids))


def _tokenizers_differ(config, tokenizer, teacher_tokenizer) -> bool:
  """Whether the teacher's tokenizer differs from the student's, which distill.cross_tokenizer must then allow; a
  cross-tokenizer loss asked for with one shared tokenizer is allowed and logged (its chunks are then the tokens).

  Raises:
    UserError: different tokenizers with distill.cross_tokenizer='none'.
  """
  cross_tokenizer = config.distill.cross_tokenizer
  if cross_tokenizer == "none":
    text.check_shared_vocabulary(config, tokenizer, teacher_tokenizer, "causal-LM distillation with "
                                 "config.distill.cross_tokenizer='none'", "set it to 'uld', 'gold' or 'alm' to "
                                 "distill across tokenizers")
    return False
  if text.shares_vocabulary(config, tokenizer, teacher_tokenizer):
    logger.info("config.distill.cross_tokenizer=%r: teacher and student share one tokenizer; the loss compares "
                "aligned chunks all the same, each of them one token", cross_tokenizer)
    return False
  return True


def _round_up(length: int) -> int:
  return -(-length // LENGTH_MULTIPLE) * LENGTH_MULTIPLE


def sequences_from_responses(prompt_ids: jax.Array, prompt_mask: jax.Array, responses: jax.Array, *, length: int,
                             eos_token_ids, pad_token_id: int) -> dict:
  """Left-padded prompts [B, P] and generated responses [B, R] (every token up to and including the first of
  `eos_token_ids`, an id or a sequence of ids, is real) in the training layout [B, length] (truncated at `length`).

  Returns:
    input_ids, attention_mask (int32), label (the next token where it is a response token, else -1) and
    response_mask (float32 [B, length]: 1 where label >= 0).
  """
  num_prompt = prompt_ids.shape[1]
  is_eos = jnp.isin(responses, jnp.asarray(eos_token_ids, jnp.int32).reshape(-1))
  real_response = (jnp.cumsum(is_eos, axis=1) - is_eos) == 0
  tokens = jnp.concatenate([prompt_ids, responses], axis=1)
  real = jnp.concatenate([prompt_mask > 0, real_response], axis=1)
  # Target slot t reads source slot t + (the prompt's left padding): the prompt moves to the front.
  source = jnp.arange(length)[None, :] + (num_prompt - jnp.sum(prompt_mask > 0, axis=1))[:, None]
  inside = source < tokens.shape[1]
  source = jnp.minimum(source, tokens.shape[1] - 1)
  real = jnp.take_along_axis(real, source, axis=1) & inside
  input_ids = jnp.where(real, jnp.take_along_axis(tokens, source, axis=1), pad_token_id).astype(jnp.int32)
  is_response = real & (source >= num_prompt)
  label = jnp.concatenate([jnp.where(is_response[:, 1:], input_ids[:, 1:], -1),
                           jnp.full_like(input_ids[:, :1], -1)], axis=1).astype(jnp.int32)
  return {"input_ids": input_ids, "attention_mask": real.astype(jnp.int32), "label": label,
          "response_mask": (label >= 0).astype(jnp.float32)}
