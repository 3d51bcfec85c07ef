"""Faithfulness of generated explanations to the model's own labels, measured with simulators.

A simulator is a classifier trained on (input x, explanation e, label y) triples to predict a label from
  the explanation alone   S_e(e)      (does the explanation say which label it supports?)
  the input alone         S_x(x)      (what the input gives away without any explanation)
  input and explanation   S_xe(x, e).
Two are trained: the gold simulator, on the training split's gold data (the reference explanations and gold labels),
and, as in Hase et al. 2020, each model's own simulator, on the model's outputs for training examples (its parsed
labels and its explanations; `Simulator.of_model`), which learns to simulate that model. For a model whose output on
example i is the label y^_i with the explanation e^_i (both parsed from its generated text):

  faithfulness = mean_i 1[S_e(e^_i) = y^_i]   (gold simulator; an unparseable output counts 0)
      how often the model's own explanation, read without the input, leads the simulator to the model's own label:
      explanation-label association (Wiegreffe, Marasovic and Smith 2021, "Measuring Association Between Labels and
      Free-Text Rationales"). An explanation that argues for another label than the one the model gave scores 0.
  las_leaking    = mean_{i parseable: L_i=1} (1[S_xe(x_i, e^_i) = y^_i] - 1[S_x(x_i) = y^_i]),  L_i = 1[S_e(e^_i) = y^_i]
  las_nonleaking = mean_{i parseable: L_i=0} (the same gain)
  las = the mean of las_leaking and las_nonleaking over the groups that hold examples, with the model's own
      simulator (Hase et al.'s per-model LAS: the definition reported); las_gold: the same with the gold simulator
      (what kd_jax reported as `las` before; it asks how a reader trained on human explanations reads the model's).
      Leakage-adjusted simulatability (Hase, Zhang, Xie and Bansal 2020, "Leakage-Adjusted Simulatability: Can
      Models Generate Non-Trivial Explanations of Their Behavior in Natural Language?"): how much the explanation
      helps predict the model's label beyond the input, averaged over explanations that leak the label and those
      that do not, so that an explanation restating a label is not rewarded for the restatement. In [-1, 1]. A
      group without examples has no effect (NaN), and the las is the other group's (Hase et al.'s reference code,
      compute_sim in their sim_experiments, averages the two group means with np.mean, so an empty group makes it
      NaN too; equal whenever both groups hold examples); NaN when no output is parseable, or when the model's
      simulator cannot be trained (its parseable training outputs hold fewer than two labels). An output without a
      parseable label has no y^_i to simulate: it is left out of both groups and counted in las_unparseable (it
      still counts as unfaithful in `faithfulness`).
  faithfulness_ceiling = mean_i 1[S_e(e_i) = y_i] on the evaluated split's gold explanations: what faithfulness a
      model explaining like the references would score with the gold simulator.

Hase et al. use a T5 simulator; kd_jax's is TF-IDF features (words and word pairs) with multinomial logistic
regression (scikit-learn), trained on at most SIMULATOR_MAX_EXAMPLES examples: fast and deterministic,
reproducible without a second neural model, and it reads explanations as a bag of words, so it rewards an explanation
whose words name (or imply) the label the model chose.
"""

import dataclasses

import numpy as np

# The simulator is trained on at most this many training examples (a random subset, seed 0, beyond it).
SIMULATOR_MAX_EXAMPLES = 100_000
METRICS = ("faithfulness", "las", "las_leaking", "las_nonleaking", "las_unparseable", "las_gold",
           "faithfulness_ceiling")


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

  @classmethod
  def of_model(cls, inputs: list[str], explanations: list[str], model_labels: list) -> "Simulator | None":
    """The model's own simulator (Hase et al.'s): trained on its outputs for training examples, the parseable ones
    (model_labels None where unparseable); None when they hold fewer than two labels (nothing to classify)."""
    kept = [i for i, label in enumerate(model_labels) if label is not None]
    labels = np.array([model_labels[i] for i in kept])
    if len(set(labels.tolist())) < 2:
      return None
    return cls.train([inputs[i] for i in kept], [explanations[i] for i in kept], labels)

  def predict(self, inputs: list[str], explanations: list[str]) -> dict:
    """{explanation, input, both}: the label each classifier predicts for every example [N]."""
    pairs = np.array(list(zip(inputs, explanations)), dtype=object)
    return {"explanation": np.asarray(self.from_explanation.predict(explanations)),
            "input": np.asarray(self.from_input.predict(inputs)),
            "both": np.asarray(self.from_both.predict(pairs))}


def scores(simulated: dict, model_labels: list, gold_simulated_from_explanation: np.ndarray,
           gold_labels: np.ndarray, model_simulated: dict | None = None) -> dict:
  """faithfulness, las (with its two group effects and the outputs it leaves out), las_gold and faithfulness_ceiling
  (see the module docstring).

  Args:
    simulated: the gold Simulator's predict of (the inputs, the model's explanations): labels [N] per classifier.
    model_labels: [N] the model's parsed labels (None where its output is unparseable).
    gold_simulated_from_explanation: [N] S_e of the gold explanations.
    gold_labels: [N] the gold labels.
    model_simulated: the model's own Simulator's predict of the same; None: none could be trained (las NaN).

  Returns:
    {faithfulness, las, las_leaking, las_nonleaking (NaN for a group without examples), las_unparseable (the number
    of outputs without a parseable label, left out of the las), las_gold, faithfulness_ceiling}.
  """
  predicted = np.array([-1 if label is None else label for label in model_labels])
  own = (las(model_simulated, predicted) if model_simulated is not None
         else {"las": float("nan"), "las_leaking": float("nan"), "las_nonleaking": float("nan")})
  leaked = (simulated["explanation"] == predicted) & (predicted >= 0)
  return {"faithfulness": float(leaked.mean()), **own, "las_unparseable": int((predicted < 0).sum()),
          "las_gold": las(simulated, predicted)["las"],
          "faithfulness_ceiling": float(np.mean(gold_simulated_from_explanation == gold_labels))}


def las(simulated: dict, predicted: np.ndarray) -> dict:
  """{las, las_leaking, las_nonleaking} of a simulator's labels (`Simulator.predict`) against the model's labels
  `predicted` [N] (-1 where unparseable: left out); see the module docstring."""
  parseable = predicted >= 0
  leaked = (simulated["explanation"] == predicted) & parseable
  gain = (simulated["both"] == predicted).astype(np.float64) - (simulated["input"] == predicted).astype(np.float64)
  effects = {name: float(gain[group].mean()) if group.any() else float("nan")
             for name, group in (("las_leaking", leaked), ("las_nonleaking", parseable & ~leaked))}
  measured = [effect for effect in effects.values() if not np.isnan(effect)]
  return {"las": float(np.mean(measured)) if measured else float("nan"), **effects}
