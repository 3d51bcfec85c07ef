"""Faithfulness of generated explanations to the model's own labels, measured with a simulator.

A simulator is a classifier trained on the training split's gold data (the input x, the reference explanation e,
the gold label y) to predict a label from
  the explanation alone   S_e(e)      (does the explanation say which label it supports?)
  the input alone         S_x(x)      (what the input gives away without any explanation)
  input and explanation   S_xe(x, e).
For a model whose output on example i is the label y^_i with the explanation e^_i (both parsed from its generated
text; an unparseable output is never simulated correctly):

  faithfulness = mean_i 1[S_e(e^_i) = y^_i]
      how often the model's own explanation, read without the input, leads the simulator to the model's own label:
      explanation-label association (Wiegreffe, Marasovic and Smith 2021, "Measuring Association Between Labels and
      Free-Text Rationales"). An explanation that argues for another label than the one the model gave scores 0.
  las_leaking    = mean_{i parseable: L_i=1} (1[S_xe(x_i, e^_i) = y^_i] - 1[S_x(x_i) = y^_i]),  L_i = 1[S_e(e^_i) = y^_i]
  las_nonleaking = mean_{i parseable: L_i=0} (the same gain)
  las = the mean of las_leaking and las_nonleaking over the groups that hold examples
      leakage-adjusted simulatability (Hase, Zhang, Xie and Bansal 2020, "Leakage-Adjusted Simulatability: Can
      Models Generate Non-Trivial Explanations of Their Behavior in Natural Language?"): how much the explanation
      helps predict the model's label beyond the input, averaged over explanations that leak the label and those
      that do not, so that an explanation restating a label is not rewarded for the restatement. In [-1, 1]. A
      group without examples has no effect (NaN), and the las is the other group's (Hase et al.'s reference code,
      compute_sim in their sim_experiments, averages the two group means with np.mean, so an empty group makes it
      NaN too; equal whenever both groups hold examples); NaN when no output is parseable. An output without a
      parseable label has no y^_i to simulate: it is left out of both groups and counted in las_unparseable (it
      still counts as unfaithful in `faithfulness`).
  faithfulness_ceiling = mean_i 1[S_e(e_i) = y_i] on the evaluated split's gold explanations: what faithfulness a
      model explaining like the references would score with this simulator.

Hase et al. use a T5 simulator; kd_jax's is TF-IDF features (words and word pairs) with multinomial logistic
regression (scikit-learn), trained on at most SIMULATOR_MAX_EXAMPLES training examples: fast and deterministic,
reproducible without a second neural model, and it reads explanations as a bag of words, so it rewards an explanation
whose words name (or imply) the label the model chose.
"""

import dataclasses

import numpy as np

# The simulator is trained on at most this many training examples (a random subset, seed 0, beyond it).
SIMULATOR_MAX_EXAMPLES = 100_000
METRICS = ("faithfulness", "las", "las_leaking", "las_nonleaking", "las_unparseable", "faithfulness_ceiling")


@dataclasses.dataclass
class Simulator:
  """Three label classifiers of one task: from explanations, from inputs, from both (see the module docstring)."""
  from_explanation: object
  from_input: object
  from_both: object

  @classmethod
  def train(cls, inputs: list[str], explanations: list[str], labels: np.ndarray) -> "Simulator":
    """Fits the three classifiers on gold (input, explanation, label) triples."""
    from sklearn import compose, feature_extraction, linear_model, pipeline  # pylint: disable=g-import-not-at-top
    if len(labels) > SIMULATOR_MAX_EXAMPLES:
      keep = np.sort(np.random.default_rng(0).choice(len(labels), SIMULATOR_MAX_EXAMPLES, replace=False))
      inputs, explanations, labels = [inputs[i] for i in keep], [explanations[i] for i in keep], labels[keep]

    def vectorizer():
      return feature_extraction.text.TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)

    def classifier(features):
      return pipeline.make_pipeline(features, linear_model.LogisticRegression(max_iter=2000, C=10.0))

    both = compose.ColumnTransformer([("input", vectorizer(), 0), ("explanation", vectorizer(), 1)])
    pairs = np.array(list(zip(inputs, explanations)), dtype=object)
    return cls(from_explanation=classifier(vectorizer()).fit(explanations, labels),
               from_input=classifier(vectorizer()).fit(inputs, labels),
               from_both=classifier(both).fit(pairs, labels))

  def predict(self, inputs: list[str], explanations: list[str]) -> dict:
    """{explanation, input, both}: the label each classifier predicts for every example [N]."""
    pairs = np.array(list(zip(inputs, explanations)), dtype=object)
    return {"explanation": np.asarray(self.from_explanation.predict(explanations)),
            "input": np.asarray(self.from_input.predict(inputs)),
            "both": np.asarray(self.from_both.predict(pairs))}


def scores(simulated: dict, model_labels: list, gold_simulated_from_explanation: np.ndarray,
           gold_labels: np.ndarray) -> dict:
  """faithfulness, las (with its two group effects and the outputs it leaves out) and faithfulness_ceiling (see the
  module docstring).

  Args:
    simulated: Simulator.predict of (the inputs, the model's explanations): labels [N] per classifier.
    model_labels: [N] the model's parsed labels (None where its output is unparseable).
    gold_simulated_from_explanation: [N] S_e of the gold explanations.
    gold_labels: [N] the gold labels.

  Returns:
    {faithfulness, las, las_leaking, las_nonleaking (NaN for a group without examples), las_unparseable (the number
    of outputs without a parseable label, left out of the las), faithfulness_ceiling}.
  """
  predicted = np.array([-1 if label is None else label for label in model_labels])
  parseable = predicted >= 0
  leaked = (simulated["explanation"] == predicted) & parseable
  gain = (simulated["both"] == predicted).astype(np.float64) - (simulated["input"] == predicted).astype(np.float64)
  effects = {name: float(gain[group].mean()) if group.any() else float("nan")
             for name, group in (("las_leaking", leaked), ("las_nonleaking", parseable & ~leaked))}
  measured = [effect for effect in effects.values() if not np.isnan(effect)]
  return {"faithfulness": float(leaked.mean()), "las": float(np.mean(measured)) if measured else float("nan"),
          **effects, "las_unparseable": int((~parseable).sum()),
          "faithfulness_ceiling": float(np.mean(gold_simulated_from_explanation == gold_labels))}
