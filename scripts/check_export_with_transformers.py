"""Checks kd_jax's Hugging Face export against transformers' PyTorch models: every exported directory loads in the
matching AutoModelFor... class (a LoRA adapter in peft's PeftModel over its base) with outputs within 1e-5 of
kd_jax's on the same inputs.

Needs a separate virtual environment with PyTorch (never a dependency of kd_jax or its tests):

    python3 -m venv .venv-torch && .venv-torch/bin/pip install -q -r requirements-torch.txt transformers safetensors \
        numpy peft gguf
    python scripts/check_export_with_transformers.py --torch_python=.venv-torch/bin/python
    python scripts/check_export_with_transformers.py --torch_python=.venv-torch/bin/python --workdir=runs/sst2
    python scripts/check_export_with_transformers.py --torch_python=.venv-torch/bin/python --workdir=runs/sst2 \
        --runs_only    # only the runs' students, not the fixture families

Run with kd_jax's environment, it exports the cases below into --out (a temporary directory unless given) with
kd_jax's outputs beside each (`<case>.npz`), then runs itself under --torch_python with --compare=<that directory>,
which loads each export in transformers (and peft) and prints one line per case with the largest absolute difference
and the relative difference ||kd_jax - transformers|| / ||transformers|| (the parity measure of
tests/test_hf_models.py) over the compared positions; exit status 1 when a relative difference exceeds --tolerance.

The cases: every fixture family of tests/fixtures/hf (bert, roberta, distilbert: sequence classification; t5,
t5_v1_1: seq2seq; llama, llama_tied, mistral, qwen2, qwen3, gpt2: causal LM) with its parameters moved off the
fixture's (seeded noise, so that nothing is read back from the source); a student built from one teacher layer per
family; LoRA adapters (peft) on the classifiers and a Llama; float32 GGUF files of a Llama and a one-layer Qwen2 student
(`<case>_gguf`, read by transformers' own GGUF loader: the torch environment needs the `gguf` package too); with
--workdir (repeatable), those finished runs' students (`run_<workdir name>`, on SENTENCES through the export's
tokenizer; a LoRA student also as a peft adapter), a classifier's export then labeled by transformers'
text-classification pipeline, whose scores (every label's, top_k=None) must equal the softmax of kd_jax's logits for
the same sentences within --tolerance (absolute; a `pipeline` line per sentence, FAIL beside one that does not).
--runs_only leaves the fixture cases out.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "hf"
TASKS = {"bert": "sequence_classification", "roberta": "sequence_classification",
         "distilbert": "sequence_classification", "t5": "seq2seq", "t5_v1_1": "seq2seq", "llama": "causal_lm",
         "llama_tied": "causal_lm", "mistral": "causal_lm", "qwen2": "causal_lm", "qwen3": "causal_lm",
         "gpt2": "causal_lm"}
FROM_TEACHER_LAYERS = {"bert": (1,), "roberta": (1,), "distilbert": (0,), "t5": (1,), "llama": (1,), "mistral": (1,),
                       "qwen2": (1,), "qwen3": (0,), "gpt2": (1,)}
# LoRA adapters (peft) on these fixtures: their target modules (None: peft's defaults, kd_jax's peft.DEFAULT_TARGETS).
LORA_FIXTURES = {"bert": None, "roberta": None, "distilbert": None, "llama": ("q_proj", "v_proj")}
# Causal LMs also exported as float32 GGUF (read by transformers' own GGUF loader): (fixture, teacher layers or None).
# Not qwen3: transformers' GGUF loader ignores qwen3.attention.key_length (its head_dim stays 128, the fixture's is 16).
GGUF_CASES = (("llama_chat_small", None), ("qwen2", (0,)))
SENTENCES = ("a gripping, beautifully acted film", "dull and far too long", "the plot never comes together",
             "one of the warmest comedies of the year")
NOISE = 0.02


def export_cases(out: pathlib.Path, workdirs: list[str], runs_only: bool = False) -> None:
  """kd_jax's side: the exports and kd_jax's outputs (`<case>.npz`: the inputs, `outputs`, `mask`, the task)."""
  sys.path.insert(0, str(ROOT))
  import jax  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from kd_jax.models import export, peft  # pylint: disable=import-outside-toplevel
  from kd_jax.models.hf import from_teacher, pretrained  # pylint: disable=import-outside-toplevel

  def moved(params, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: np.asarray(leaf) + NOISE * rng.standard_normal(np.shape(leaf), np.float32), params)

  cases = []
  for seed, (name, task) in enumerate({} if runs_only else TASKS.items()):
    _, params = pretrained.from_pretrained(str(FIXTURES / name), task)
    cases.append((name, export.Trained(str(FIXTURES / name), task, moved(params, seed)), "merge", name))
    if name in FROM_TEACHER_LAYERS:
      layers = FROM_TEACHER_LAYERS[name]
      selected = from_teacher.select_layers(params, layers, np.float32)
      cases.append((f"{name}_from_teacher_layers_{'_'.join(map(str, layers))}",
                    export.Trained(str(FIXTURES / name), task, moved(selected, seed + 100), layers=layers), "merge",
                    name))
    if name in LORA_FIXTURES:
      lora = ml_collections.ConfigDict({"rank": 2, "alpha": 8.0, "dropout": 0.0,
                                        "target_modules": LORA_FIXTURES[name]})
      adapted = peft.add_adapters(params, lora, jax.random.key(seed))
      # Adapters and head as if trained (lora_b starts at zero); the base stays the checkpoint's, as LoRA keeps it.
      labels = peft.Trainable((peft.ADAPTER_PATTERN, peft.HEAD_PATTERN)).labels(adapted)
      adapted = jax.tree.map(lambda leaf, moved_leaf, label: moved_leaf if label == "train" else np.asarray(leaf),
                             adapted, moved(adapted, seed + 200), labels)
      cases.append((f"{name}_lora_adapter", export.Trained(str(FIXTURES / name), task, adapted, lora=lora),
                    "adapter", name))
  for workdir in workdirs:
    trained = export.trained_model(workdir, "student")
    name = f"run_{os.path.basename(os.path.normpath(workdir))}"
    cases.append((name, trained, "merge", None))
    if trained.lora is not None and trained.layers is None and trained.trainable is None:
      cases.append((f"{name}_lora_adapter", trained, "adapter", None))

  for fixture, layers in () if runs_only else GGUF_CASES:
    _, params = pretrained.from_pretrained(str(FIXTURES / fixture), "causal_lm")
    if layers is not None:
      params = from_teacher.select_layers(params, layers, np.float32)
    cases.append((f"{fixture}_gguf", export.Trained(str(FIXTURES / fixture), "causal_lm", moved(params, 300),
                                                    layers=layers), "gguf", "qwen2" if fixture == "qwen2" else "llama"))

  for case, trained, lora, fixture in cases:
    directory = out / case
    if lora == "gguf":
      export.write(trained, "gguf", str(directory))
      module, _ = pretrained.from_pretrained(str(directory / export.GGUF_FILE), "causal_lm")
      inputs = _inputs(fixture, None, "causal_lm")
      outputs = module.apply({"params": trained.params}, inputs["input_ids"], inputs["attention_mask"])
      np.savez(out / f"{case}.npz", outputs=np.asarray(outputs, np.float32), task="causal_lm", adapter=False,
               gguf=True, base=str(trained.source), **inputs)
      print(f"exported {case}", flush=True)
      continue
    export.write(trained, "hf", str(directory), lora=lora)
    module, _ = pretrained.from_pretrained(str(directory if lora == "merge" else trained.source), trained.task)
    inputs = _inputs(fixture, directory if lora == "merge" else trained.source, trained.task)
    model_inputs = {key: value for key, value in inputs.items() if key != "mask"}
    outputs = pretrained.RegistryModel(module).apply({"params": trained.plain_params()}, model_inputs)
    np.savez(out / f"{case}.npz", outputs=np.asarray(outputs, np.float32), task=trained.task, adapter=lora == "adapter",
             base=str(trained.source), **inputs)
    print(f"exported {case}", flush=True)


def _inputs(fixture: str | None, directory, task: str) -> dict[str, np.ndarray]:
  """The fixture's reference inputs, or SENTENCES through the export's tokenizer; `mask`: the positions compared."""
  if fixture is None:
    import transformers  # pylint: disable=import-outside-toplevel
    encoded = transformers.AutoTokenizer.from_pretrained(directory)(list(SENTENCES), padding=True, return_tensors="np")
    inputs = {key: np.asarray(value, np.int32) for key, value in encoded.items()}
  else:
    reference = np.load(FIXTURES / fixture / "reference.npz")
    names = ["input_ids", "attention_mask", "token_type_ids", "decoder_input_ids", "decoder_attention_mask"]
    inputs = {key: np.asarray(reference[key], np.int32) for key in names if key in reference}
  if task == "seq2seq":
    inputs["mask"] = inputs.pop("decoder_attention_mask")
  elif task == "causal_lm":
    inputs["mask"] = inputs["attention_mask"]
  return inputs


def compare(directory: pathlib.Path, tolerance: float) -> int:
  """transformers' side: each export's outputs against kd_jax's; one line per case; 1 when any differs."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  classes = {"sequence_classification": transformers.AutoModelForSequenceClassification,
             "causal_lm": transformers.AutoModelForCausalLM, "seq2seq": transformers.AutoModelForSeq2SeqLM}
  worst, score_differences = 0.0, []
  print(f"transformers {transformers.__version__}, torch {torch.__version__}")
  print(f"{'case':34s} {'class':48s} {'outputs':>14s} {'max |diff|':>10s} {'relative':>9s}")
  for path in sorted(directory.glob("*.npz")):
    saved = dict(np.load(path))
    task, case = str(saved["task"]), path.stem
    model_class = classes[task]
    if "gguf" in saved:  # transformers' own GGUF reader (dequantizing in NumPy, as kd_jax's)
      model = model_class.from_pretrained(directory / case, gguf_file="model.gguf", dtype=torch.float32)
      class_name = f"{type(model).__name__} (GGUF)"
    elif bool(saved["adapter"]):
      import peft  # pylint: disable=import-outside-toplevel
      model = peft.PeftModel.from_pretrained(model_class.from_pretrained(str(saved["base"]), dtype=torch.float32),
                                             str(directory / case))
      class_name = f"PeftModel({type(model.base_model.model).__name__})"
    else:
      model = model_class.from_pretrained(directory / case, dtype=torch.float32)
      class_name = type(model).__name__
    model.eval()
    names = ["input_ids", "attention_mask", "token_type_ids", "decoder_input_ids"]
    with torch.no_grad():
      outputs = model(**{key: torch.from_numpy(saved[key].astype(np.int64)) for key in names if key in saved}).logits
    outputs = outputs.float().numpy()
    mask = saved["mask"].astype(bool) if "mask" in saved else np.ones(outputs.shape[:1], bool)
    difference = float(np.abs(outputs - saved["outputs"])[mask].max())
    # As tests/test_hf_models.py measures parity: ||ours - theirs|| / ||theirs|| over the compared positions.
    relative = float(np.linalg.norm((outputs.astype(np.float64) - saved["outputs"])[mask])
                     / np.linalg.norm(outputs.astype(np.float64)[mask]))
    worst = max(worst, relative)
    print(f"{case:34s} {class_name:48s} {str(list(outputs.shape)):>14s} {difference:10.2e} {relative:9.2e}"
          f"{'' if relative <= tolerance else '  FAIL'}")
    if case.startswith("run_") and task == "sequence_classification" and not bool(saved["adapter"]):
      score_differences.append(check_pipeline(
          transformers.pipeline("text-classification", model=str(directory / case), device="cpu"), saved["outputs"],
          tolerance))
  worst_score = max(score_differences, default=None)
  ok = max(worst, worst_score or 0.0) <= tolerance
  print(f"largest relative difference {worst:.2e}"
        + (f", largest pipeline score difference {worst_score:.2e}" if worst_score is not None else "")
        + f" (tolerance {tolerance:g}): {'ok' if ok else 'FAILED'}")
  return 0 if ok else 1


def check_pipeline(classify, logits: np.ndarray, tolerance: float) -> float:
  """Prints the pipeline's label and score for each of SENTENCES beside kd_jax's (the softmax of its logits
  [sentence, label]); returns the largest absolute difference over every label's score."""
  expected = np.exp(logits - logits.max(axis=1, keepdims=True))
  expected /= expected.sum(axis=1, keepdims=True)
  worst = 0.0
  for sentence, scores, probabilities in zip(SENTENCES, classify(list(SENTENCES), top_k=None), expected):
    ours = {classify.model.config.id2label[index]: float(p) for index, p in enumerate(probabilities)}
    difference = max(abs(score["score"] - ours[score["label"]]) for score in scores)
    worst = max(worst, difference)
    top, verdict = scores[0], "" if difference <= tolerance else "  FAIL"
    print(f"  pipeline: {sentence!r} -> {top['label']} ({top['score']:.6f}; kd_jax's softmax "
          f"{ours[top['label']]:.6f}, max |diff| over labels {difference:.1e}){verdict}")
  return worst


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--torch_python", help="the Python of an environment with torch, transformers and peft")
  parser.add_argument("--workdir", action="append", default=[],
                      help="also export this finished run's student (repeatable; a classifier is also labeled by "
                           "transformers' text-classification pipeline)")
  parser.add_argument("--out", help="where the exports go (default: a temporary directory, removed)")
  parser.add_argument("--compare", help="(the torch side) compare the exports in this directory")
  parser.add_argument("--tolerance", type=float, default=1e-5)
  parser.add_argument("--runs_only", action="store_true", help="export and compare only the --workdir runs' students")
  args = parser.parse_args()
  if args.compare:
    return compare(pathlib.Path(args.compare), args.tolerance)
  if not args.torch_python:
    parser.error("--torch_python is required (an environment with torch, transformers and peft)")
  with tempfile.TemporaryDirectory() as temporary:
    out = pathlib.Path(args.out or temporary)
    out.mkdir(parents=True, exist_ok=True)
    export_cases(out, args.workdir, args.runs_only)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([args.torch_python, __file__, f"--compare={out}", f"--tolerance={args.tolerance}"],
                          env=environment, check=False).returncode


if __name__ == "__main__":
  sys.exit(main())
