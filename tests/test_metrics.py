"""Metrics against independent, loop-based computations."""

import numpy as np

from kd_jax.evaluation import metrics


def softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def reference_ece(probs, labels, num_bins=15):
  """Guo et al. 2017, written out with explicit bin edges (lower, upper]."""
  ece = 0.0
  confidences, predictions = probs.max(1), probs.argmax(1)
  for b in range(num_bins):
    lower, upper = b / num_bins, (b + 1) / num_bins
    members = [i for i in range(len(labels)) if (lower < confidences[i] <= upper) or (b == 0 and confidences[i] == 0)]
    if members:
      accuracy = np.mean([predictions[i] == labels[i] for i in members])
      confidence = np.mean([confidences[i] for i in members])
      ece += len(members) / len(labels) * abs(accuracy - confidence)
  return ece


def test_classification_metrics_match_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(300, 5)) * 2
  teacher_logits = logits + rng.normal(size=(300, 5))
  labels = rng.integers(0, 5, size=300)
  labels[:10] = -1  # e.g. GLUE test rows: excluded from every metric
  result = metrics.classification_metrics(logits, labels, teacher_logits)
  keep = labels >= 0
  probs, teacher_probs, kept_labels = softmax(logits[keep]), softmax(teacher_logits[keep]), labels[keep]
  assert result["num_examples"] == 290
  np.testing.assert_allclose(result["accuracy"], np.mean(probs.argmax(1) == kept_labels))
  np.testing.assert_allclose(result["nll"], -np.mean(np.log(probs[np.arange(290), kept_labels])), rtol=1e-10)
  np.testing.assert_allclose(result["ece"], reference_ece(probs, kept_labels), rtol=1e-10)
  np.testing.assert_allclose(result["brier"], np.mean(((probs - np.eye(5)[kept_labels]) ** 2).sum(1)), rtol=1e-10)
  np.testing.assert_allclose(result["agreement"], np.mean(probs.argmax(1) == teacher_probs.argmax(1)))
  np.testing.assert_allclose(result["kl_to_teacher"],
                             np.mean((teacher_probs * np.log(teacher_probs / probs)).sum(1)), rtol=1e-8)
  confusion = np.zeros((5, 5), int)
  for label, prediction in zip(kept_labels, probs.argmax(1)):
    confusion[label, prediction] += 1
  assert result["confusion_matrix"] == confusion.tolist()
  assert sum(result["reliability"]["count"]) == 290


def test_perfectly_calibrated_confident_model_has_zero_ece():
  labels = np.arange(10) % 3
  logits = np.eye(3)[labels] * 50.0
  result = metrics.classification_metrics(logits, labels, logits)
  assert result["accuracy"] == 1.0 and result["ece"] < 1e-12 and result["agreement"] == 1.0
