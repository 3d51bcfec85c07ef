"""e-SNLI: natural language inference with human explanations, as text-to-text generation.

Columns `premise`, `hypothesis`, `label` (0 entailment, 1 neutral, 2 contradiction) and `explanation_1` (HF
`esnli/esnli`, TFDS `esnli`, or local files with those columns). Each example becomes

  source: "premise: <premise> hypothesis: <hypothesis>"        (at most data.max_length tokens)
  target: "<label name> explanation: <explanation_1>"           (at most data.max_target_length tokens, with EOS)

e.g. "entailment explanation: a man playing a guitar is making music." Evaluation parses the label from the first
word of the generated text (anything else is unparseable and counts as wrong) and the explanation from what
follows "explanation:". Teacher and student must share one vocabulary (FLAN-T5 sizes do): token-level
distillation compares their distributions token by token.
"""

import numpy as np

from kd_jax.data import text
from kd_jax.data.examples import Examples

EVALUATOR = "seq2seq"  # how it is evaluated: the name of its evaluator (kd_jax.evaluation.EVALUATORS)

LABEL_NAMES = ("entailment", "neutral", "contradiction")
COLUMNS = ("premise", "hypothesis", "label", "explanation_1")
EXPLANATION_MARKER = "explanation:"


def format_source(premise: str, hypothesis: str) -> str:
  return f"premise: {premise} hypothesis: {hypothesis}"


def format_target(label: int, explanation: str) -> str:
  return f"{LABEL_NAMES[label]} {EXPLANATION_MARKER} {explanation}"


def parse_output(generated: str) -> tuple[int | None, str]:
  """(label id, explanation) of a generated text; the label is None unless the first word names a class.

  "Entailment explanation: x" -> (0, "x"); "maybe. explanation: x" -> (None, "x"); "neutral x" -> (1, "x").
  """
  words = generated.strip().split(maxsplit=1)
  first = words[0].lower().rstrip(".,:;") if words else ""
  label = LABEL_NAMES.index(first) if first in LABEL_NAMES else None
  _, marker, after = generated.partition(EXPLANATION_MARKER)
  if marker:
    explanation = after
  elif label is not None:
    explanation = words[1] if len(words) > 1 else ""
  else:
    explanation = generated
  return label, explanation.strip()


def tokenize_targets(tokenizer, targets: list[str], max_length: int, decoder_start_token_id: int) -> dict:
  """Targets as teacher-forcing arrays [N, T].

  Returns:
    label: target ids, -1 on padding (int16 where the vocabulary fits, else int32); token_weights: 1.0 on real
    tokens (float32); decoder_input_ids: the targets shifted right behind the decoder start token (T5's
    shift_right), padded with the pad id (the dtype of text.tokenize's input_ids).
  """
  encoded = text.tokenize(tokenizer, targets, max_length)
  ids, mask = encoded["input_ids"], encoded["attention_mask"]
  decoder_input_ids = np.concatenate([np.full_like(ids[:, :1], decoder_start_token_id), ids[:, :-1]], axis=1)
  label = ids.astype(text.id_dtype(tokenizer, signed=True))
  label[mask == 0] = -1
  return {"label": label, "token_weights": mask.astype(np.float32), "decoder_input_ids": decoder_input_ids}


def load_splits(config):
  """({role: Examples} of train, test and, when data.validation_split is set, validation; num_classes;
  Seq2SeqInfo): sources, targets, classes and indices of every split."""
  data_config = config.data
  tokenizer = text.load_tokenizer(*text.student_checkpoint_field(config))
  teacher_tokenizer = text.load_tokenizer(config.teacher.checkpoint, "teacher.checkpoint")
  student_model_config = text.checkpoint_config(text.student_checkpoint_field(config)[0])
  text.check_shared_vocabulary(config, tokenizer, teacher_tokenizer,
                               "token-level distillation on e-SNLI (e.g. two FLAN-T5 sizes)")
  start = student_model_config.get("decoder_start_token_id")
  start = tokenizer.pad_token_id if start is None else start
  splits, sources_by_index, explanations_by_index = {}, text.Texts(), text.Texts()
  first_index = 0
  for role, split, max_examples in text.source_splits(data_config):
    columns, where = text.load_columns(data_config, split, COLUMNS)
    columns = {name: values[:max_examples] for name, values in columns.items()}
    for name in ("premise", "hypothesis", "explanation_1"):
      text.check_texts(columns[name], f"{where}, column {name}")
    labels = text.check_labels(columns["label"], len(LABEL_NAMES), where, allow_unlabeled=False)
    sources = [format_source(p, h) for p, h in zip(columns["premise"], columns["hypothesis"])]
    explanations = [explanation.strip() for explanation in columns["explanation_1"]]
    targets = [format_target(label, explanation) for label, explanation in zip(labels, explanations)]
    target_arrays = tokenize_targets(tokenizer, targets, data_config.max_target_length, start)
    inputs = text.tokenize(tokenizer, sources, data_config.max_length)
    inputs["decoder_input_ids"] = target_arrays.pop("decoder_input_ids")
    index = np.arange(first_index, first_index + len(labels), dtype=np.int32)
    splits[role] = Examples(inputs=inputs, label=target_arrays["label"], token_weights=target_arrays["token_weights"],
                            class_label=labels, index=index)
    sources_by_index += text.Texts(sources)  # by position: the indices count up from 0 over the splits
    explanations_by_index += text.Texts(explanations)
    first_index += len(labels)
  info = text.Seq2SeqInfo(tokenizer=tokenizer, label_names=LABEL_NAMES, sources=sources_by_index,
                          explanations=explanations_by_index, parse=parse_output,
                          max_target_length=data_config.max_target_length, decoder_start_token_id=int(start))
  return splits, len(LABEL_NAMES), info
