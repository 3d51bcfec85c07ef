"""Writes tests/fixtures/text: tiny SST-2 and e-SNLI data sets in the on-disk formats of the real ones.

    python scripts/make_text_fixtures.py

  sst2/   a `datasets.DatasetDict` written by save_to_disk with GLUE SST-2's schema (idx, sentence, label as
          ClassLabel negative/positive) and splits train (160), validation (48) and test (16, labels -1 as in GLUE)
  esnli/  one JSON-lines file per split (train 144, validation 36, test 36) with e-SNLI's columns premise, hypothesis,
          label (0 entailment, 1 neutral, 2 contradiction), explanation_1, explanation_2, explanation_3

The sentences are drawn from fixed seeds out of templates whose words the fixture tokenizers of tests/fixtures/hf
were trained on (scripts/make_hf_fixtures.py), and their labels follow from the words, so that the tiny fixture
models can learn them in a smoke run. Needs only `datasets` (no torch).
"""

import json
import pathlib

import datasets
import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "text"

POSITIVE = ("gripping", "funny", "warm", "witty", "lovely", "beautifully shot", "real heart", "the best")
NEGATIVE = ("dull", "lifeless", "wooden", "forgettable", "far too long", "going nowhere", "utterly dull", "the worst")
REVIEW_TEMPLATES = ("a {} film .", "the acting is {} .", "the story is {} , and the music is {} .",
                    "one of {} movies of the year .", "{} , {} and {} .", "the plot is {} but the actors are {} .")

# (premise, hypotheses and explanations per label: entailment, neutral, contradiction)
SCENES = (
    ("a man plays a guitar on a street corner .",
     (("a person makes music outside .", "playing a guitar is making music ."),
      ("the man is a student .", "not every man playing a guitar is a student ."),
      ("nobody is outside .", "the man cannot be outside and nobody outside at once ."))),
    ("a woman is reading a book in the park .",
     (("a woman reads outside .", "a park is outside ."),
      ("the woman is reading a funny book .", "not every book is funny ."),
      ("the woman sleeps on the couch .", "the woman cannot read and sleep at once ."))),
    ("two children are running on the beach .",
     (("children are outside .", "a beach is outside ."),
      ("the children are running to the sea .", "not every run on the beach is to the sea ."),
      ("the children sleep inside .", "the children cannot run on the beach and sleep inside ."))),
    ("a dog is running through the snow .",
     (("an animal is outside .", "a dog is an animal ."),
      ("the dog is running to a man .", "not every dog is running to a man ."),
      ("the dog sleeps on the couch .", "the dog cannot run and sleep at once ."))),
)
SUBJECT_SWAPS = (("a man", "a woman"), ("a woman", "a man"), ("the park", "the street"), ("snow", "park"))


def review(rng: np.random.Generator) -> tuple[str, int]:
  label = int(rng.integers(2))
  words = POSITIVE if label else NEGATIVE
  template = REVIEW_TEMPLATES[rng.integers(len(REVIEW_TEMPLATES))]
  if template.startswith("the plot is"):  # mixed review: the second clause decides
    return template.format(rng.choice(NEGATIVE if label else POSITIVE), rng.choice(words)), label
  return template.format(*rng.choice(words, size=template.count("{}"), replace=False)), label


def sst2_split(rng: np.random.Generator, size: int, labeled: bool) -> dict:
  rows = [review(rng) for _ in range(size)]
  return {"idx": list(range(size)), "sentence": [sentence for sentence, _ in rows],
          "label": [label if labeled else -1 for _, label in rows]}


def esnli_rows(rng: np.random.Generator, size: int) -> list[dict]:
  rows = []
  for _ in range(size):
    premise, hypotheses = SCENES[rng.integers(len(SCENES))]
    label = int(rng.integers(3))
    hypothesis, explanation = hypotheses[label]
    if rng.random() < 0.3:
      old, new = SUBJECT_SWAPS[rng.integers(len(SUBJECT_SWAPS))]
      premise, hypothesis, explanation = (text.replace(old, new) for text in (premise, hypothesis, explanation))
    rows.append({"premise": premise, "hypothesis": hypothesis, "label": label, "explanation_1": explanation,
                 "explanation_2": explanation, "explanation_3": explanation})
  return rows


def main() -> None:
  features = datasets.Features({"idx": datasets.Value("int32"), "sentence": datasets.Value("string"),
                                "label": datasets.ClassLabel(names=["negative", "positive"])})
  rng = np.random.default_rng(5)
  sst2 = datasets.DatasetDict({
      "train": datasets.Dataset.from_dict(sst2_split(rng, 160, True), features=features),
      "validation": datasets.Dataset.from_dict(sst2_split(rng, 48, True), features=features),
      "test": datasets.Dataset.from_dict(sst2_split(rng, 16, False), features=features),
  })
  sst2.save_to_disk(str(OUT / "sst2"))
  rng = np.random.default_rng(7)
  (OUT / "esnli").mkdir(parents=True, exist_ok=True)
  for split, size in (("train", 144), ("validation", 36), ("test", 36)):
    with open(OUT / "esnli" / f"{split}.jsonl", "w") as stream:
      for row in esnli_rows(rng, size):
        stream.write(json.dumps(row) + "\n")
  print(f"Wrote {OUT}")


if __name__ == "__main__":
  main()
