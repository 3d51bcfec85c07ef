"""GLUE SST-2: binary sentiment of movie-review sentences (0 negative, 1 positive; GLUE's test split is -1).

Columns `sentence` and `label` (HF `nyu-mll/glue` / `sst2`, TFDS `glue/sst2`, or local files with those columns).
Training uses `data.train_split`; the reported test metrics `data.test_split` (GLUE's validation split: its test
labels are hidden); validation (model and sweep selection) a stratified `data.validation_fraction` slice of the
training split. Every example is tokenized twice, with the student's tokenizer (`inputs`) and the teacher's
(`teacher_inputs`): the teacher's logits are computed on its own tokens and reach the student's batch joined by
the example `index`.
"""

import numpy as np

from kd_jax.data import text
from kd_jax.data.examples import Examples

EVALUATOR = "classification"  # how it is evaluated: the name of its evaluator (kd_jax.evaluation.EVALUATORS)

LABEL_NAMES = ("negative", "positive")


def load_splits(config):
  """({role: Examples} of train, test and, when data.validation_split is set, validation; num_classes; None): token
  inputs of both models, labels and indices of every split."""
  data_config = config.data
  student_tokenizer = text.load_tokenizer(*text.student_checkpoint_field(config))
  teacher_tokenizer = text.load_tokenizer(config.teacher.checkpoint, "teacher.checkpoint")
  splits = {}
  first_index = 0
  for role, split, max_examples in text.source_splits(data_config):
    columns, where = text.load_columns(data_config, split, ("sentence", "label"))
    sentences, labels = columns["sentence"][:max_examples], columns["label"][:max_examples]
    text.check_texts(sentences, where)
    labels = text.check_labels(labels, len(LABEL_NAMES), where, allow_unlabeled=True)
    splits[role] = Examples(
        inputs=text.tokenize(student_tokenizer, sentences, data_config.max_length),
        teacher_inputs=text.tokenize(teacher_tokenizer, sentences, data_config.max_length),
        label=labels, index=np.arange(first_index, first_index + len(labels), dtype=np.int32))
    first_index += len(labels)
  return splits, len(LABEL_NAMES), None
