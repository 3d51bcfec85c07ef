"""Evaluation metrics on host NumPy arrays: logits [N, C], labels [N] (examples with label -1 are left out)."""

import numpy as np

ECE_NUM_BINS = 15
# The splits of a model's final metrics: the validation split selects (the final model, a sweep's best point), the test
# split only reports.
SPLITS = ("test", "validation")


def log_softmax(logits: np.ndarray) -> np.ndarray:
  """log softmax over the last axis, in float64."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, num_bins: int = ECE_NUM_BINS) -> dict:
  """Per-bin count, mean confidence and accuracy (the data of a reliability diagram); empty bins hold None.

  Equal-width bins of top-label confidence (Guo et al. 2017): bin b holds the examples whose top probability lies in
  ((b-1)/M, b/M]; the first bin also holds 0.
  """
  confidences = probs.max(axis=-1)
  correct = probs.argmax(axis=-1) == labels
  bin_ids = np.clip(np.ceil(confidences * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
  counts, mean_confidence, accuracy = [], [], []
  for b in range(num_bins):
    in_bin = bin_ids == b
    counts.append(int(in_bin.sum()))
    mean_confidence.append(float(confidences[in_bin].mean()) if in_bin.any() else None)
    accuracy.append(float(correct[in_bin].mean()) if in_bin.any() else None)
  return {"count": counts, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = ECE_NUM_BINS) -> float:
  """ECE = sum_b |B_b| / N * |accuracy(B_b) - confidence(B_b)| over the bins of `reliability_bins`."""
  return ece_from_bins(reliability_bins(probs, labels, num_bins))


def ece_from_bins(bins: dict) -> float:
  """ECE from the output of `reliability_bins`."""
  total = sum(bins["count"])
  return float(sum(count / total * abs(acc - conf)
                   for count, acc, conf in zip(bins["count"], bins["accuracy"], bins["confidence"]) if count))


def classification_metrics(logits: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray | None = None) -> dict:
  """accuracy, nll, ece, brier, confusion matrix and, given the teacher's logits, agreement and kl_to_teacher.

  Args:
    logits: [N, C] model logits.
    labels: [N] int; examples labeled -1 are left out of every metric.
    teacher_logits: [N, C] or None.

  Returns:
    accuracy: mean 1[argmax p = y];  nll: mean -log p_y;  ece: see `expected_calibration_error`;
    brier: mean sum_c (p_c - onehot(y)_c)^2;  agreement: mean 1[argmax p = argmax p_t];
    kl_to_teacher: mean KL(p_t || p) at temperature 1;  confusion_matrix: [C][C] counts, rows = true class;
    reliability: per-bin data of the reliability diagram;  num_examples.
  """
  keep = np.asarray(labels) >= 0
  logits, labels = np.asarray(logits)[keep], np.asarray(labels)[keep]
  num_classes = logits.shape[-1]
  log_probs = log_softmax(logits)
  probs = np.exp(log_probs)
  predictions = probs.argmax(axis=-1)
  onehot = np.eye(num_classes)[labels]
  reliability = reliability_bins(probs, labels)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, predictions), 1)
  result = {
      "accuracy": float((predictions == labels).mean()),
      "nll": float(-log_probs[np.arange(len(labels)), labels].mean()),
      "ece": ece_from_bins(reliability),
      "brier": float(np.square(probs - onehot).sum(axis=-1).mean()),
      "num_examples": int(len(labels)),
  }
  if teacher_logits is not None:
    teacher_log_probs = log_softmax(np.asarray(teacher_logits)[keep])
    result["agreement"] = float((predictions == teacher_log_probs.argmax(axis=-1)).mean())
    result["kl_to_teacher"] = float((np.exp(teacher_log_probs) * (teacher_log_probs - log_probs)).sum(-1).mean())
  result["confusion_matrix"] = confusion.tolist()
  result["reliability"] = reliability
  return result


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_scores(predictions: list[str], references: list[str]) -> dict:
  """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 of each prediction against its reference, in [0, 1].

  rouge-score (Lin 2004, Google's reimplementation) with Porter stemming and its default tokenizer (lowercased
  alphanumeric words): ROUGE-n F1 = 2 P R / (P + R) over overlapping n-grams, ROUGE-L over the longest common
  subsequence. An empty prediction scores 0.
  """
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top  (seq2seq evaluation only)
  scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
  scores = [scorer.score(reference, prediction) for prediction, reference in zip(predictions, references, strict=True)]
  return {name: float(np.mean([score[name].fmeasure for score in scores])) for name in ROUGE_TYPES}
