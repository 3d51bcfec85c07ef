"""Faithfulness of explanations: the formulas against hand counts, and a simulator on the e-SNLI look-alike."""

import json

import numpy as np
import pytest

from kd_jax.data import esnli
from kd_jax.evaluation import faithfulness
from tests.helpers import REPO_ROOT

ESNLI = REPO_ROOT / "tests" / "fixtures" / "text" / "esnli"


def test_scores_against_a_hand_count():
  """6 examples; the simulator's labels from the explanation alone, from the input alone and from both are given."""
  model_labels = [0, 1, 2, 0, None, 1]
  simulated = {"explanation": np.array([0, 1, 0, 0, 2, 2]),  # leaks the model's label at examples 0, 1, 3
               "input": np.array([0, 0, 0, 1, 2, 1]),
               "both": np.array([0, 1, 2, 0, 2, 1])}
  gold_labels = np.array([0, 1, 2, 0, 2, 1])
  gold_from_explanation = np.array([0, 1, 2, 0, 2, 0])
  result = faithfulness.scores(simulated, model_labels, gold_from_explanation, gold_labels)
  assert result["faithfulness"] == pytest.approx(3 / 6)
  # Leaking (0, 1, 3): both - input = 0, 1, 1 -> 2/3. Not leaking (2, 4 unparseable, 5): 1 - 0, 0 - 0, 1 - 1 -> 1/3.
  assert result["las"] == pytest.approx((2 / 3 + 1 / 3) / 2)
  assert result["faithfulness_ceiling"] == pytest.approx(5 / 6)


def read(split):
  rows = [json.loads(line) for line in open(ESNLI / f"{split}.jsonl")]
  return ([esnli.format_source(row["premise"], row["hypothesis"]) for row in rows],
          [row["explanation_1"] for row in rows], np.array([row["label"] for row in rows]))


@pytest.fixture(scope="module")
def simulator():
  return faithfulness.Simulator.train(*read("train"))


def test_explanations_that_contradict_the_labels_score_low(simulator):
  """A model that gives the gold label with its gold explanation scores the simulator's ceiling; one that gives the
  gold label with the explanation of an example of another label scores near 0; with no explanation, 0."""
  sources, explanations, labels = read("validation")
  gold_from_explanation = simulator.predict(sources, explanations)["explanation"]

  def score(model_labels, model_explanations):
    return faithfulness.scores(simulator.predict(sources, model_explanations), model_labels, gold_from_explanation,
                               labels)

  other = [next(e for e, y in zip(explanations, labels) if y == (label + 1) % 3) for label in labels]
  faithful = score(list(labels), explanations)
  contradicting = score(list(labels), other)
  unparseable = score([None] * len(labels), explanations)
  assert faithful["faithfulness_ceiling"] > 0.9  # the look-alike's explanations name their label's pattern
  assert faithful["faithfulness"] == faithful["faithfulness_ceiling"]
  assert contradicting["faithfulness"] < 0.1 and unparseable["faithfulness"] == 0.0
  # The look-alike's hypotheses give the label away (the simulator reads it from the input alone), so a consistent
  # explanation adds nothing beyond the input (LAS 0), and a contradicting one misleads the simulator (LAS < 0).
  assert faithful["las"] == 0.0 and contradicting["las"] < -0.25
