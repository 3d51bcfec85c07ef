"""Faithfulness of explanations: the formulas against hand counts, and a simulator on the e-SNLI look-alike."""

import json
import warnings

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
  result = faithfulness.scores(simulated, model_labels, gold_from_explanation, gold_labels, model_simulated=simulated)
  assert result["faithfulness"] == pytest.approx(3 / 6)
  # Leaking (0, 1, 3): both - input = 0, 1, 1 -> 2/3. Not leaking (2, 5; 4 is unparseable and left out): 1 - 0,
  # 1 - 1 -> 1/2.
  assert result["las_leaking"] == pytest.approx(2 / 3) and result["las_nonleaking"] == pytest.approx(1 / 2)
  assert result["las"] == result["las_gold"] == pytest.approx((2 / 3 + 1 / 2) / 2) and result["las_unparseable"] == 1
  assert result["faithfulness_ceiling"] == pytest.approx(5 / 6)
  # Without the model's own simulator (none could be trained) there is no per-model las; the gold one stays.
  alone = faithfulness.scores(simulated, model_labels, gold_from_explanation, gold_labels)
  assert np.isnan(alone["las"]) and alone["las_gold"] == result["las_gold"]


def hase_compute_sim(labels, xe, e, x) -> tuple[float, float, float]:
  """(unweighted mean, leaking diff, nonleaking diff) of Hase et al.'s reference (LAS-NL-Explanations,
  sim_experiments/compute_sim.py: `compute_sim`), restated in NumPy: the simulator's X, E and XE predictions
  against the model's labels."""
  xe_correct, x_correct, e_correct = (np.asarray(labels) == np.asarray(p) for p in (xe, x, e))
  leaked, nonleaked = np.flatnonzero(e_correct), np.flatnonzero(~e_correct)
  with np.errstate(invalid="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # the mean of an empty group
    diffs = [np.mean(xe_correct[group]) - np.mean(x_correct[group]) for group in (leaked, nonleaked)]
  return float(np.mean(diffs)), float(diffs[0]), float(diffs[1])


def test_las_of_an_empty_group_and_of_unparseable_outputs():
  """The outside review's case: every explanation leaks (S_e recovers the model's label), so the non-leaking group
  is empty: its effect is NaN and the las is the leaking group's 0.75 (it counted the empty group as 0: 0.375).
  Hase et al.'s code gives NaN for the average then; where both groups hold examples kd_jax's las equals it."""
  y = np.array([0, 1, 2, 0])
  scores = lambda simulated, labels: faithfulness.scores(simulated, labels, y, y, model_simulated=simulated)
  result = scores({"explanation": y, "input": np.array([1, 1, 1, 1]), "both": y}, list(y))
  reference_mean, reference_leaking, reference_nonleaking = hase_compute_sim(y, xe=y, e=y, x=[1, 1, 1, 1])
  assert result["las_leaking"] == reference_leaking == 0.75
  assert np.isnan(result["las_nonleaking"]) and np.isnan(reference_nonleaking) and np.isnan(reference_mean)
  assert result["las"] == 0.75 and result["las_unparseable"] == 0
  rng = np.random.default_rng(0)
  for _ in range(20):
    labels, xe, e, x = rng.integers(0, 3, size=(4, 12))
    if 0 < (labels == e).sum() < 12:  # both groups hold examples
      result = faithfulness.las({"explanation": e, "input": x, "both": xe}, labels)
      assert (result["las"], result["las_leaking"], result["las_nonleaking"]) == pytest.approx(
          hase_compute_sim(labels, xe, e, x))
  # Unparseable outputs are no one's label: left out of both groups, counted; none parseable: no las.
  result = scores({"explanation": y, "input": np.array([1, 1, 1, 1]), "both": y}, [0, None, None, 0])
  assert result["las_unparseable"] == 2 and result["las_leaking"] == 1.0 and np.isnan(result["las_nonleaking"])
  assert result["las"] == 1.0 and result["faithfulness"] == 0.5
  assert np.isnan(scores({"explanation": y, "input": y, "both": y}, [None] * 4)["las"])


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
  assert faithful["las_gold"] == 0.0 and contradicting["las_gold"] < -0.25
  assert unparseable["las_unparseable"] == len(labels) and np.isnan(unparseable["las_gold"])


def test_per_model_las_simulates_the_model_itself(simulator):
  """Hase et al.'s las: the simulator is trained on the model's own outputs for training examples. A model that
  explains like the references gets the gold simulator's numbers; a model that always gives the explanation of the
  next label is unfaithful to a reader of human explanations (faithfulness and las_gold low) but consistent, so its
  own simulator reads its labels from its explanations (every explanation leaks); a model with one label has no
  simulator (las NaN)."""
  sources, explanations, labels = read("validation")
  train_sources, train_explanations, train_labels = read("train")
  gold_from_explanation = simulator.predict(sources, explanations)["explanation"]
  shifted = lambda texts, ys: [next(e for e, y in zip(texts, ys) if y == (label + 1) % 3) for label in ys]

  def score(train_outputs, outputs):
    own = faithfulness.Simulator.of_model(train_sources, *train_outputs)
    model_explanations, model_labels = outputs
    return faithfulness.scores(simulator.predict(sources, model_explanations), model_labels, gold_from_explanation,
                               labels, None if own is None else own.predict(sources, model_explanations))

  like_references = score((train_explanations, list(train_labels)), (explanations, list(labels)))
  assert like_references["las"] == like_references["las_gold"]
  consistent = score((shifted(train_explanations, train_labels), list(train_labels)),
                     (shifted(explanations, labels), list(labels)))
  assert consistent["faithfulness"] < 0.1 and consistent["las_gold"] < -0.25
  assert np.isnan(consistent["las_nonleaking"]) and consistent["las"] == consistent["las_leaking"] >= 0
  assert faithfulness.Simulator.of_model(train_sources, train_explanations, [0] * len(train_labels)) is None
