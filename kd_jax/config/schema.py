"""The config schema: every field a kd_jax config may hold, declared once with its default, type, allowed values and
doc.

A `Field` carries what is checked of its value alone (type, choices, interval, sign, or a `check` of its own, written
beside the section); kd_jax/config/validation.py applies them, kd_jax/config/rules.py holds the rules between
fields, and the modules a config meets check it against the environment (kd_jax/preflight.py runs all three).
`default_config()` builds the ConfigDict users see from the declarations (configs/*.py build on it and change a few
fields); docs/config.md is generated from them (`python -m kd_jax.config.reference > docs/config.md`).

The literal choices other modules use live here, so that the schema needs no module that imports jax; where a module
is the registry of a choice (data sets, models, remat policies), tests/test_config_schema.py checks the two agree.
"""

from __future__ import annotations  # Field.type is also the name of its annotation

import dataclasses
import re
from typing import Any, Callable

import ml_collections
from ml_collections import config_dict

from kd_jax.errors import ConfigError, require

# Data sets (the registry is kd_jax/data/__init__.py) and their kinds.
DATA_NAMES = ("digits", "synthetic_clusters", "synthetic_random_labels", "sst2", "esnli", "causal_lm", "fashion_mnist",
              "mnist")
# Text tasks: tokenized with the models' own tokenizers (HF models only); the seq2seq ones have token targets.
TEXT_TASKS = ("sst2", "esnli", "causal_lm")
SEQ2SEQ_TASKS = ("esnli",)
# Decoder-only language modeling (kd_jax/data/causal_lm.py): token targets on the response positions.
CAUSAL_LM_TASKS = ("causal_lm",)
# Image tasks: inputs [N, height, width, channels] (kd_jax/data/mnist.py), what the CNN reads.
IMAGE_TASKS = ("fashion_mnist", "mnist")
# data.source of the text tasks (kd_jax/data/text.py), of the image tasks (kd_jax/data/mnist.py), and causal_lm's own.
TEXT_SOURCES = ("hub", "tfds", "files", "disk")
IMAGE_SOURCES = ("files", "tfds")
PYDOC_SOURCE = "pydoc_topics"
MODEL_NAMES = ("mlp", "cnn", "hf")  # the registry is kd_jax/models/__init__.py
DTYPES = ("float32", "bfloat16")
# kd_jax/training/losses.py: divergence and schedule; kd_jax/training/feature_losses.py: the feature distances.
DIVERGENCES = ("forward_kl", "reverse_kl", "js", "generalized_js", "skew_forward_kl", "skew_reverse_kl", "tvd", "akl",
               "mse")
SCHEDULES = ("constant", "linear", "cosine")
# kd_jax/training/cross_tokenizer.py: the losses between a teacher and a student with different tokenizers.
CROSS_TOKENIZER_LOSSES = ("none", "uld", "gold", "alm")
# Where the teacher's signal comes from (kd_jax/teachers/logprobs_file.py for the file and the server's file).
TEACHER_SOURCES = ("model", "logprobs_file", "server")
FEATURE_LOSSES = ("mse", "cosine")
UNIFORM_FEATURES = "uniform"
# 'none', 'block', then the jax.checkpoint_policies that are policies (kd_jax/models/__init__.py: remat_options).
REMAT_OPTIONS = ("none", "block", "dots_saveable", "dots_with_no_batch_dims_saveable", "nothing_saveable",
                 "everything_saveable")
# What config.train.scan_layers needs (config rules check the fields; kd_jax.models.with_remat the loaded family).
SCAN_LAYERS_NEEDS = ("needs a Llama-family student (student.name='hf', student.task='causal_lm', model_type llama, "
                     "mistral, qwen2, qwen3 or phi3) without feature distillation")
MESH_AXES = ("data", "fsdp", "tensor")  # kd_jax/parallel/sharding.py, in mesh order
PARAM_AXES = ("fsdp", "tensor")  # the axes a sharding rule may name

# The config.teacher fields an ensemble's members may set (config.ensemble.members): what changes a teacher's
# weights, not its kind, label space or inputs (name, checkpoint and task stay config.teacher's).
ENSEMBLE_MEMBER_FIELDS = ("seed", "init", "hidden_sizes", "dropout_rate", "num_epochs", "dtype", "param_dtype",
                          "optim.learning_rate", "optim.weight_decay", "optim.warmup_ratio", "optim.grad_clip_norm")


@dataclasses.dataclass(frozen=True)
class Field:
  """A config field: its default, its doc, and the values it allows.

  A default of None declares a placeholder of `type`: None (unset) then passes every constraint, and the messages of
  `interval` and `positive` add "or None". `check(path, value)` raises ConfigError for a domain the other
  constraints cannot say.
  """
  default: Any
  doc: str
  type: type | None = None
  choices: tuple[str, ...] = ()
  interval: str = ""  # as it reads in messages: '[0.0, 1.0)' is 0.0 <= value < 1.0
  positive: bool = False
  non_negative: bool = False
  nullable: bool = False  # None is allowed though the default is set
  check: Callable[[str, Any], None] | None = None
  operational: bool = False  # a resumed run (or a sweep point's directory) may change it

  @property
  def value_type(self) -> type:
    return self.type or type(self.default)


@dataclasses.dataclass(frozen=True)
class Section:
  """A ConfigDict of fields and sections, with what it is for."""
  doc: str
  fields: dict


# The domains that choices, interval and sign cannot say: each check raises one ConfigError line, and its docstring
# says what it allows.

def _positive_integers(path: str, value) -> None:
  """Positive integers."""
  require(all(isinstance(w, int) and w > 0 for w in value), path, tuple(value), "must be positive integers")


def uses_features(distill) -> bool:
  """Whether config.distill asks for feature distillation: a layer map of the encoder (or only) stack or of an
  encoder-decoder model's decoder."""
  return distill.features is not None or distill.decoder_features is not None


def is_user_model(name: str) -> bool:
  """Whether a model name names a user's factory, 'package.module:factory' or 'path/to/file.py:factory'
  (kd_jax/models/protocol.py), rather than a registered model."""
  return ":" in name


def _model_name(path: str, value) -> None:
  """A registered model name, or a user's factory 'package.module:factory' / 'path/to/file.py:factory'."""
  target, _, factory = value.rpartition(":")
  require(value in MODEL_NAMES or (bool(target) and factory.isidentifier()), path, value,
          f"allowed: {', '.join(MODEL_NAMES)}, or a user's model 'package.module:factory' or "
          "'path/to/file.py:factory'")


def _conv_widths(path: str, value) -> None:
  """One or more positive integers."""
  require(len(value) > 0 and all(isinstance(f, int) and f > 0 for f in value), path, tuple(value),
          "must be one or more positive integers (the output channels of each conv block)")


def _odd_kernel(path: str, value) -> None:
  """A positive odd integer."""
  require(value > 0 and value % 2 == 1, path, value,
          "must be a positive odd integer (SAME padding centers an odd kernel)")


def _integer_at_least(minimum: int) -> Callable[[str, Any], None]:
  def check(path: str, value) -> None:
    require(isinstance(value, int) and value >= minimum, path, value, f"must be an integer >= {minimum}")
  check.__doc__ = f"An integer >= {minimum}."
  return check


def _ensemble_size(path: str, value) -> None:
  """>= 1."""
  require(value >= 1, path, value, "must be >= 1 (1: a single teacher)")


def _teacher_layers(path: str, value) -> None:
  """A non-empty, strictly increasing tuple of teacher layer indices >= 0, or None."""
  require(len(value) > 0 and all(isinstance(i, int) and i >= 0 for i in value)
          and all(a < b for a, b in zip(value, value[1:])), path, tuple(value),
          "must be a non-empty, strictly increasing tuple of teacher layer indices >= 0")


def _regular_expressions(path: str, value) -> None:
  """Regular expressions, or None."""
  for pattern in value:
    try:
      re.compile(pattern)
    except (re.error, TypeError) as error:
      raise ConfigError(path, tuple(value), f"{pattern!r} is not a regular expression ({error})") from None


def _layer_names(path: str, value) -> None:
  """A non-empty tuple of layer names, or None."""
  require(len(value) > 0 and all(isinstance(t, str) and t for t in value), path, value,
          "must be None or a non-empty tuple of layer names")


def layer_map(path: str, value) -> None:
  """None, 'uniform', or a non-empty tuple of distinct (teacher index, student index) pairs of integers >= 0.

  Raises ConfigError for any other value of distill.features (also where feature_losses.resolve_layer_map is called
  on one directly).
  """
  if value is None or value == UNIFORM_FEATURES:
    return
  pairs_ok = isinstance(value, (tuple, list)) and len(value) > 0 and all(
      isinstance(pair, (tuple, list)) and len(pair) == 2
      and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair) for pair in value)
  require(pairs_ok and len({tuple(pair) for pair in value}) == len(value), path, value,
          "allowed: None (off), 'uniform', or a tuple of distinct (teacher layer, student layer) pairs of "
          "hidden-state indices >= 0 (0 = embeddings), e.g. ((0, 0), (2, 1), (4, 2)); on the command line "
          "--config.distill.features='((0, 0), (2, 1))'")


def _mesh_axis_size(path: str, value) -> None:
  """An integer >= 1, or -1."""
  require(isinstance(value, int) and (value >= 1 or value == -1), path, value,
          "must be an integer >= 1, or -1 (the devices the other axes leave)")


def _mesh_rules(path: str, value) -> None:
  """(regular expression, tuple of 'fsdp', 'tensor' or None per dimension) pairs."""
  for rule in value:
    require(isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)
            and isinstance(rule[1], (tuple, list)), path, rule,
            "each rule is (regular expression, tuple of mesh axes per dimension)")
    try:
      re.compile(rule[0])
    except re.error as error:
      raise ConfigError(path, rule, f"{rule[0]!r} is not a regular expression ({error})") from None
    for axis in rule[1]:
      require(axis is None or axis in PARAM_AXES, path, rule,
              f"unknown mesh axis {axis!r}; a rule places dimensions on {', '.join(PARAM_AXES)} or None")


def _temperatures(path: str, value) -> None:
  """A non-empty tuple of temperatures >= 0."""
  require(len(value) > 0 and all(t >= 0 for t in value), path, tuple(value),
          "must be a non-empty tuple of temperatures >= 0 (0 = greedy)")


def optim_section(*, learning_rate: float, weight_decay: float, warmup_ratio: float) -> Section:
  """AdamW settings with these defaults: peak learning rate, decoupled weight decay, and the warmup's share."""
  return Section("AdamW with linear warmup then linear decay to 0.", {
      "learning_rate": Field(learning_rate, "Peak learning rate, reached after warmup.", positive=True),
      "weight_decay": Field(weight_decay, "Decoupled weight decay (AdamW).", non_negative=True),
      "warmup_ratio": Field(warmup_ratio, "Fraction of the steps spent warming the learning rate up linearly from 0.",
                            interval="[0.0, 1.0)"),
      "grad_clip_norm": Field(None, "Clip gradients to this global norm; None disables clipping.", type=float,
                              positive=True),
      "moment_dtype": Field(
          "float32", "dtype of AdamW's first moment (optax.adamw's mu_dtype); 'bfloat16' halves that moment's memory. "
          "The second moment keeps the parameters' dtype (float32 master parameters with param_dtype 'float32'): "
          "optax has no dtype option for it, and its average moves by (1 - b2) = 0.1% a step, below bfloat16's 0.4% "
          "resolution.", choices=DTYPES),
  })


def _model_fields(*, hidden_sizes: tuple, dropout_rate: float, conv_features: tuple) -> dict:
  """The fields config.teacher and config.student share: the model, its shape and dtypes."""
  return {
      "name": Field("mlp", "Registered model name: 'mlp', 'cnn' (image tasks) or 'hf' (a Hugging Face checkpoint, see "
                    "`checkpoint`); or a user's model (classification on digits, synthetic and image tasks; the "
                    "student of a causal LM, task='causal_lm', which maps token ids to logits), "
                    "'package.module:factory' or 'path/to/file.py:factory' (relative to the working directory or "
                    "absolute), whose factory takes this config block (a causal LM's with vocab_size added; and "
                    "num_classes, rngs where it names them) and returns a Flax NNX module, a Linen module or an "
                    "(init_fn, apply_fn) pair (docs/models.md, kd_jax/models/protocol.py).", check=_model_name),
      "hidden_sizes": Field(hidden_sizes, "MLP: hidden layer widths (depth = number of entries). CNN: the Dense layers "
                            "after the conv blocks.", check=_positive_integers),
      "dropout_rate": Field(dropout_rate, "MLP: dropout after every hidden layer. CNN: dropout after every block.",
                            interval="[0.0, 1.0)"),
      "conv_features": Field(conv_features, "CNN (name='cnn', image tasks; kd_jax/models/cnn.py): output channels of "
                             "each conv block (conv, GroupNorm, ReLU, 2x2 max-pool; depth = number of entries, at most "
                             "4 on 28x28 images).", check=_conv_widths),
      "kernel_size": Field(3, "CNN: the side of the square conv kernels (odd).", check=_odd_kernel),
      "norm_groups": Field(0, "CNN: the GroupNorm groups after every conv (0: no normalization; each width a multiple "
                           "of it)."),
      "checkpoint": Field(None, "Hugging Face models (name='hf'): hub id or local directory with config.json and "
                          "weights. A user's causal-LM student: the checkpoint whose tokenizer and vocab_size it "
                          "uses (None: the teacher's).", type=str),
      "task": Field(None, "Hugging Face models: 'sequence_classification' (None means it), 'seq2seq' or 'causal_lm' "
                    "(decoder-only LMs).", type=str),
      "hf_dropout": Field(None, "Hugging Face models: None keeps the checkpoint's dropout probabilities (config.json's "
                          "hidden, attention and classifier dropout); a number replaces every one of them in training "
                          "(0: no dropout). A student built from the teacher's layers takes its own. (An MLP's or "
                          "CNN's is dropout_rate.)", type=float, interval="[0.0, 1.0)"),
      "dtype": Field("float32", "dtype of the forward computation.", choices=DTYPES),
      "param_dtype": Field("float32", "dtype of the stored parameters.", choices=DTYPES),
  }


def _teacher_section() -> Section:
  model = _model_fields(hidden_sizes=(1200, 1200), dropout_rate=0.3, conv_features=(32, 64))
  return Section("The teacher: its model, where it comes from, and its training.", {
      "name": model.pop("name"),
      "init": Field("train", "'train': train the teacher in this run (saved under teacher.workdir and reused by later "
                    "runs); 'pretrained': the checkpoint's weights as they are (HF models, e.g. a fine-tuned "
                    "classifier); otherwise the path of a teacher directory written by an earlier run "
                    "(`<workdir>/teacher`)."),
      "workdir": Field(None, "Where the trained teacher and its logit cache live; None means `<workdir>/teacher`. "
                       "Sweeps point all their points here so that the teacher is trained and cached once.", type=str,
                       operational=True),
      "seed": Field(0, "Seed of the teacher's initialization, dropout and batch order when init='train'.",
                    non_negative=True),
      "source": Field(
          "model", "Where the teacher's signal comes from: 'model' (the model these fields describe, run here); "
          "'logprobs_file' (teacher.logprobs_path: JSON lines of OpenAI-style top-k logprobs of the training "
          "responses, as vLLM, llama.cpp's server or a hosted API return them; docs/teachers.md), imported once "
          "into a teacher cache; 'server' (an OpenAI-compatible endpoint, teacher.server_url, asked for the same "
          "logprobs, written as such a file into the teacher directory and imported alike). A file or server "
          "teacher is a causal_lm teacher of the cached kind (distill.teacher_mode='cached', strategy='token'): it "
          "has no model here, so the run reports no teacher metrics, and the model fields of this section are not "
          "used.", choices=TEACHER_SOURCES),
      "logprobs_path": Field(None, "source='logprobs_file': the JSON-lines file of the teacher's logprobs (one line "
                             "per distinct (prompt, response) of the training split: prompt, response, optional text, "
                             "logprobs; docs/teachers.md).", type=str),
      "server_url": Field(None, "source='server': the OpenAI-compatible endpoint's base URL, e.g. "
                          "'http://127.0.0.1:8000/v1'.", type=str),
      "server_model": Field(None, "source='server': the model name the endpoint serves (its `model` field).",
                            type=str),
      "top_logprobs": Field(20, "source='server': the top logprobs asked for per token (k of the teacher cache).",
                            check=_integer_at_least(1)),
      "server_concurrency": Field(4, "source='server': at most this many requests in flight at once.",
                                  check=_integer_at_least(1), operational=True),
      **model,
      "num_epochs": Field(150, "Training of the teacher (init='train'): epochs over the labeled examples.",
                          positive=True),
      "optim": optim_section(learning_rate=1e-3, weight_decay=1e-4, warmup_ratio=0.05),
      "assistant": _assistant_section(),
  })


def _assistant_section() -> Section:
  model = _model_fields(hidden_sizes=(64,), dropout_rate=0.0, conv_features=(8, 16))
  model["name"] = Field(
      None, "None: no assistant. A model name (as teacher.name allows): this model is distilled from the teacher "
      "first, then the students distill from it in the teacher's place (teacher -> assistant -> student).",
      type=str, check=_model_name)
  return Section(
      "A teacher assistant (Mirzadeh et al. 2020; kd_jax/teachers/assistant.py): a student of the teacher that "
      "becomes the students' teacher. It trains as the KD student does (config.distill, config.optim, "
      "train.num_epochs or num_steps, data.batch_size, train.select, on the students' training data: the labeled "
      "examples and the transfer set) from seed teacher.seed, once per teacher and assistant: in "
      "`<teacher directory>/assistants/<key>/` with its checkpoints, params/ and the logit cache the students read. "
      "The run reports it as the model 'assistant'. Classification tasks, one teacher of teacher.source='model'.",
      model)


def _student_section() -> Section:
  return Section("The student: the teacher's model fields, how it is built from the teacher, and which parameters "
                 "train.", {
      **_model_fields(hidden_sizes=(32,), dropout_rate=0.0, conv_features=(16, 32)),
      "init_from_teacher_layers": Field(
          None, "Build the student from the teacher instead of student.checkpoint (leave that None): the teacher's "
          "architecture and widths with only these teacher layers (strictly increasing indices; student layer j = "
          "teacher layer layers[j]), everything outside the layers (embeddings, pooler and head, T5's shared "
          "embedding, position bias and final norms) copied: DistilBERT's initialization. HF teacher and student; the "
          "student's task is the teacher's; T5 takes the same indices in its encoder and decoder. None: off. E.g. "
          "(0, 2, 4).", type=tuple, check=_teacher_layers),
      "trainable": Field(
          None, "Freezing: regular expressions (re.search) over '/'-joined parameter paths, e.g. "
          "'distilbert/transformer.layer.0/attention.q_lin/kernel'; only the parameters matching one of them train, "
          "the others keep their initial values. None: every parameter trains (with LoRA: the classification head, "
          "'classifier').", type=tuple, check=_regular_expressions),
      "lora": Section(
          "LoRA (Hu et al. 2021; kd_jax/models/peft.py) on HF students: each targeted linear layer's W [in, out] (a "
          "Dense kernel, GPT-2's Conv1D weight) gains "
          "A [in, r] and B [r, out]: h = x W + (alpha / r) dropout(x) A B. Only the adapters and the parameters "
          "matching student.trainable (None: the classification head, as peft's modules_to_save) train; the adapters "
          "are merged into W for evaluation and export.", {
              "rank": Field(0, "r: 0 is off; at most min(in, out) of every targeted layer.",
                            check=_integer_at_least(0)),
              "alpha": Field(8.0, "The update's scale is alpha / r (peft's default alpha 8).", positive=True),
              "dropout": Field(0.0, "Dropout on the adapters' input x (per example, like the model's dropout).",
                               interval="[0.0, 1.0)"),
              "target_modules": Field(
                  None, "Linear layers given adapters: a layer named N is targeted when N is one of these or ends "
                  "with '.' + one of them (peft's rule). None: every family's attention query and value projections, "
                  "peft's defaults (BERT, RoBERTa: query, value; DistilBERT: q_lin, v_lin; T5: q, v; Llama, Mistral, "
                  "Qwen2, Qwen3: q_proj, v_proj; GPT-2: its fused c_attn).", type=tuple, check=_layer_names),
          }),
  })


SCHEMA = Section("The default run: an MLP teacher distilled into a small MLP student on scikit-learn's digits, "
                 "offline.", {
    "seed": Field(0, "Seed of the student's initialization, dropout, and the order of training batches. Sweeping it "
                  "repeats a run on the same data split and the same teacher (see data.split_seed and teacher.seed "
                  "for those).", non_negative=True),
    "data": Section("The data set, its splits and batches.", {
        "name": Field("digits", "Data set: 'digits' (scikit-learn's 8x8 handwritten digits, bundled, offline), "
                      "'synthetic_clusters' (Gaussian class clusters), 'synthetic_random_labels' (random inputs, "
                      "random labels: pure memorization), the image tasks 'fashion_mnist' and 'mnist' (28x28 "
                      "grayscale, their official test split; kd_jax/data/mnist.py), the text tasks 'sst2' and "
                      "'esnli', or 'causal_lm' (decoder-only LMs on prompt/response pairs or plain text; "
                      "kd_jax/data/causal_lm.py).", choices=DATA_NAMES),
        "split_seed": Field(0, "Seed of the stratified train/test split and of the train_fraction / labeled_fraction "
                            "subsets.", non_negative=True),
        "test_fraction": Field(0.3, "Fraction of the whole data set held out as the test split (stratified).",
                               interval="(0.0, 1.0)"),
        "validation_fraction": Field(
            0.05, "Fraction of the training split held out (stratified, every example labeled) as the validation "
            "split: evaluation during training, the choice of the final model (train.select) and of a sweep's best "
            "point. The test split only reports. Text tasks whose source has a validation split "
            "(data.validation_split) use that instead. 5% of digits' 1,258 training images is 63, about 6 per "
            "class: the little data the default run has stays for training (the teacher learns from 10% of the "
            "rest).", interval="(0.0, 0.5]"),
        "train_fraction": Field(1.0, "Fraction of the training split kept at all (data-size ablation).",
                                interval="(0.0, 1.0]"),
        "labeled_fraction": Field(
            0.1, "Fraction of the kept training examples whose labels are kept; the rest form the unlabeled transfer "
            "set that only the distillation term sees. The teacher is trained on the labeled examples only.",
            interval="(0.0, 1.0]"),
        "batch_size": Field(32, "Global batch size (over all devices and processes) of every training phase; "
                            "divisible by the device count."),
        "eval_batch_size": Field(512, "Global batch size of inference (evaluation and the teacher-logit cache); "
                                 "divisible by the device count.", operational=True),
        "source": Field(
            "hub", "Where the data comes from. Text tasks ('sst2', 'esnli'; kd_jax/data/text.py): 'hub': HF "
            "datasets' load_dataset(path, subset) through the HF cache; 'tfds': tfds.load(path, data_dir=data_dir); "
            "'files': path is a directory of <split>.csv / <split>.jsonl / <split>.parquet; 'disk': path is a "
            "DatasetDict written by save_to_disk. Image tasks: 'files' (the four IDX files in data_dir) or 'tfds' "
            "(tfds.load(path or name, data_dir=data_dir)). causal_lm also: 'pydoc_topics', passages of Python's own "
            "documentation (pydoc_data/topics.py), offline everywhere."),
        "path": Field(None, "Hub dataset id, TFDS name, or local directory (see source); the task configs set the "
                      "real ones.", type=str),
        "subset": Field(None, "Hub dataset config name (e.g. 'sst2' of 'nyu-mll/glue'); None if it has none.",
                        type=str),
        "data_dir": Field(None, "HF datasets cache_dir or TFDS data_dir (a local copy); None for the libraries' "
                          "defaults. Image tasks with source 'files': the directory of the IDX files; None means "
                          "/usr/share/datasets/fashion-mnist for fashion_mnist (the Debian package "
                          "dataset-fashion-mnist; MNIST has no default).", type=str),
        "train_split": Field("train", "The text tasks' split of the source to train on (they replace "
                             "test_fraction)."),
        "validation_split": Field(None, "The text tasks' validation split of the source; None: a validation_fraction "
                                  "slice of the training split.", type=str),
        "test_split": Field("validation", "The text tasks' split of the source whose metrics are reported."),
        "max_eval_examples": Field(None, "Read only the first this many examples of the validation and test splits of "
                                   "the source; None for all of them.", type=int, positive=True),
        "max_length": Field(128, "Maximum tokens of a text input (the source, for seq2seq); longer ones are "
                            "truncated. causal_lm: it bounds prompt + response (a longer prompt is an error, the "
                            "response is truncated).", positive=True),
        "max_target_length": Field(64, "Maximum tokens of a seq2seq target; longer ones are truncated. causal_lm: "
                                   "the responses generated (evaluation, sequence-level and on-policy "
                                   "distillation).", positive=True),
        "prompt_column": Field(None, "causal_lm: the column of the prompt; None reads plain text from response_column "
                               "(every token a response token: the loss covers them all).", type=str),
        "response_column": Field("response", "causal_lm: the column of the response (or of the plain text)."),
        "chat_template": Field(True, "causal_lm with prompts: render them with the tokenizer's chat template (a user "
                               "turn, then the assistant's response); False: the prompt text (with the tokenizer's "
                               "special tokens) followed by the response and EOS."),
        "packing": Field(False, "causal_lm: place whole training examples one after another in rows of max_length "
                         "tokens (fewer padding tokens); each attends only within itself (segment ids, positions "
                         "restarting per example), so its logits, labels and loss are those it has alone. Needs "
                         "data.validation_split; not with on-policy or sequence-level distillation."),
        "synthetic": Section("Shape of the synthetic tasks (ignored by 'digits').", {
            "num_examples": Field(2000, "Examples in the data set.", positive=True),
            "num_features": Field(32, "Input features of an example.", positive=True),
            "num_classes": Field(10, "Classes.", positive=True),
            "cluster_std": Field(1.0, "Standard deviation of each class cluster around its center (centers are drawn "
                                 "from a unit normal).", positive=True),
        }),
    }),
    "teacher": _teacher_section(),
    "ensemble": Section(
        "Several teachers (kd_jax/teachers/ensemble.py): the distillation target is the average of their "
        "probabilities at the temperature T, mean_m softmax(z_m / T); the teacher's reported metrics are those of the "
        "average at T = 1. Each member is a teacher of its own, trained and cached once (member 0, when it is "
        "config.teacher itself, is the single-teacher run's teacher). Classification tasks; every divergence but "
        "'mse'.", {
            "size": Field(1, "Number of teachers; 1 is a single teacher. Without `members`, member m is "
                          "config.teacher with teacher.seed + m.", check=_ensemble_size),
            "members": Field((), "Members that differ in more than their seed: () or one entry per member "
                             "(ensemble.size entries), each a tuple of (config.teacher field, value) pairs applied to "
                             "config.teacher for that member, e.g. ((), (('seed', 1),), (('seed', 2), "
                             f"('hidden_sizes', (512,)))). Fields: {', '.join(ENSEMBLE_MEMBER_FIELDS)}."),
        }),
    "student": _student_section(),
    "distill": Section("The distillation loss, its schedules, and feature distillation.", {
        "teacher_mode": Field(
            "cached", "'cached': teacher logits computed once for the training set and stored on disk, joined to "
            "examples by index. 'online': the teacher runs inside the train step on exactly the student's (possibly "
            "augmented) batch.", choices=("cached", "online")),
        "temperature": Field(4.0, "Softmax temperature T of the distillation term.", positive=True),
        "alpha": Field(0.5, "Hinton form: (1 - alpha) * CE + alpha * T^2 * D; alpha = 0 is training on hard labels "
                       "only. Set it to None to use the explicit form (ce_weight, kd_weight) instead.",
                       interval="[0.0, 1.0]", nullable=True),
        "ce_weight": Field(None, "Explicit form: ce_weight * CE + kd_weight * T^2 * D (both >= 0). Use either alpha "
                           "or these two, not both.", type=float),
        "kd_weight": Field(None, "Explicit form: the weight of T^2 * D (>= 0; see ce_weight).", type=float),
        "label_smoothing": Field(0.0, "Label smoothing of the hard-label cross-entropy.", interval="[0.0, 1.0)"),
        "divergence": Field(
            "forward_kl", "D (formulas and references in kd_jax/training/losses.py: divergence): 'forward_kl' "
            "KL(p_t || p_s), 'reverse_kl' KL(p_s || p_t), 'js' (Jensen-Shannon), 'generalized_js' (GKD's JSD_beta), "
            "'skew_forward_kl' / 'skew_reverse_kl' (DistiLLM), 'tvd' (total variation), 'akl' (adaptive KL), 'mse' "
            "(on logits).", choices=DIVERGENCES),
        "beta": Field(0.5, "generalized_js: beta, the teacher's weight in the mixture m = beta p_t + (1 - beta) p_s; "
                      "0.5 is 'js', 0 is taken as forward KL and 1 as reverse KL (TRL's convention).",
                      interval="[0.0, 1.0]"),
        "skew": Field(0.1, "skew_forward_kl / skew_reverse_kl: lambda (0: plain forward / reverse KL; DistiLLM uses "
                      "0.1).", interval="[0.0, 1.0]"),
        "akl_mu": Field(0.5, "akl: the teacher mass of the head (its most probable classes).", interval="(0.0, 1.0]"),
        "schedule": Field(
            "constant", "Schedules over each student phase: 'constant', or 'linear' / 'cosine' from the start value "
            "(temperature, alpha, ce_weight, kd_weight) at the first step to its *_end at the last; an end left None "
            "keeps its start. The scheduled values are logged (temperature, hard_weight, soft_weight in "
            "history.jsonl).", choices=SCHEDULES),
        "temperature_end": Field(None, "The temperature at the last step of a linear or cosine schedule (> 0).",
                                 type=float),
        "alpha_end": Field(None, "Hinton form: alpha at the last step of a linear or cosine schedule (in [0, 1]).",
                           type=float),
        "ce_weight_end": Field(None, "Explicit form: ce_weight at the last step of a linear or cosine schedule "
                               "(>= 0).", type=float),
        "kd_weight_end": Field(None, "Explicit form: kd_weight at the last step of a linear or cosine schedule "
                               "(>= 0).", type=float),
        "t2_scaling": Field(True, "Multiply the distillation term by T^2 so its gradient scale does not shrink with T "
                            "(Hinton et al. 2015)."),
        "input_noise_std": Field(0.0, "Gaussian noise added to the inputs of teacher and student alike in each train "
                                 "step (online mode only).", non_negative=True),
        "strategy": Field(
            "token", "Seq2seq and causal_lm tasks: 'token' distills the teacher's distribution at every target "
            "(response) token (teacher_mode cached or online); 'sequence' trains the student with cross-entropy on the "
            "teacher's own greedy outputs (responses), generated once and cached as tokens (Kim & Rush 2016; the loss "
            "weights and teacher_mode then do not apply). causal_lm with on_policy_fraction > 0 (TRL GKD's seq_kd "
            "with lmbda): the teacher's responses replace the data's, a step samples the student's with probability "
            "on_policy_fraction, and the online teacher distills both with the run's loss.",
            choices=("token", "sequence")),
        "topk": Field(32, "Seq2seq cached mode: the teacher logits kept per target token (the k largest, with their "
                      "vocabulary ids and the log-sum-exp of the other logits; see losses.topk_divergence). "
                      "Full-vocabulary logits are never stored for seq2seq tasks.", positive=True),
        "topk_dtype": Field("float16", "The dtype the top-k values are stored in: 'float16' (default: 3 more mantissa "
                            "bits than bfloat16, and logits stay far below its 65504 limit), 'bfloat16' or "
                            "'float32'.", choices=("float16", "bfloat16", "float32")),
        "topk_tail": Field(
            "exact", "Seq2seq and causal-LM cached mode: the teacher's tail (its V - k logits outside the top k; "
            "see losses.topk_divergence). 'exact': the cache stores the tail's log-sum-exp at every distill.temperature "
            "the run (or a vectorized sweep group) uses, so every bin of the loss is exact at each; a schedule that "
            "moves the temperature is refused. 'flat': one log-sum-exp at T = 1 and a flat tail elsewhere, an "
            "approximation that underestimates the divergence at T > 1 (docs/text_tasks.md).",
            choices=("exact", "flat")),
        "loss_chunk": Field(
            0, "Seq2seq and causal_lm tasks: the logit terms computed this many positions at a time "
            "(kd_jax/training/chunked.py): the step takes the models' final hidden states and projects them to the "
            "vocabulary one chunk of positions after another (rematerialized in the backward pass), so neither the "
            "student's nor an online teacher's [batch, length, vocab] logits exist whole; the same loss and gradients "
            "up to float rounding. 0: the whole sequence at once.", non_negative=True, operational=True),
        "on_policy_fraction": Field(
            0.0, "causal_lm, on-policy distillation (GKD, Agarwal et al. 2024): lambda, the probability that a "
            "training batch's responses are sampled from the current student (at generation.train_temperature, at "
            "most data.max_target_length tokens) and scored by the teacher in the step (teacher_mode='online'); the "
            "loss is then the distillation term on the student's tokens. 0: supervised KD on the data's responses. With "
            "strategy='sequence' the responses not sampled are the teacher's (TRL's seq_kd).",
            interval="[0.0, 1.0]"),
        "on_policy_start_step": Field(
            0, "causal_lm with on_policy_fraction > 0: the first training step that may sample; the steps before it "
            "are supervised KD on the data's (or, with strategy='sequence', the teacher's) responses, as GKD starts "
            "from a student already fine-tuned (configs/causal_lm.py:smollm,gkd). The steps from it on draw the coin "
            "of an on-policy run from step 0, so a run resumed on either side of the boundary is the uninterrupted "
            "one. 0: on-policy from the first step.", non_negative=True),
        "cross_tokenizer": Field(
            "none", "causal_lm: the loss between a teacher and a student with different tokenizers, on the chunks of "
            "text where their tokenizations agree (kd_jax/data/alignment.py; formulas in "
            "kd_jax/training/cross_tokenizer.py): 'none' (a tokenizer mismatch is refused), 'uld' (Universal Logit "
            "Distillation: W1 between sorted probabilities), 'gold' (TRL GOLD's hybrid: distill.divergence over the "
            "tokens both vocabularies share, ULD over the rest), 'alm' (approximate likelihood matching of the chunks' "
            "likelihoods). Every example then also carries the teacher's own tokenization: the teacher trains and "
            "is evaluated on it, and the students have no token-level kl_to_teacher or agreement. Needs "
            "teacher_mode='online' (or a cached teacher from a logprobs file: teacher.source), prompts, one teacher, no packing, on-policy sampling, feature terms or "
            "micro-batches. With one shared tokenizer it is allowed (logged): each chunk is then one token.",
            choices=CROSS_TOKENIZER_LOSSES),
        "features": Field(
            None, "Feature distillation (kd_jax/training/feature_losses.py; needs teacher_mode='online'): the hidden "
            "states matched, as (teacher, student) pairs of hidden-state indices (0 = embeddings or the MLP's inputs, "
            "l = the output of layer l), e.g. ((0, 0), (2, 1), (4, 2)); 'uniform': student layer s = 1..L_s with "
            "teacher layer s * L_t // L_s; None: off. A placeholder of type object, so that the command line takes "
            "both: --config.distill.features=uniform and --config.distill.features='((0, 0), (2, 1))'. A learned "
            "linear projection maps the student's hidden state to the teacher's width where they differ (trained "
            "with the student, not part of it). Encoder-decoder models (T5, seq2seq data sets): the encoder's "
            "hidden states (h_L: its final norm's output); decoder_features maps the decoder's.", type=object,
            check=layer_map),
        "decoder_features": Field(
            None, "Feature distillation of encoder-decoder models (T5, seq2seq data sets): the decoder's hidden states "
            "matched, as distill.features maps the encoder's, with the same syntax (None, 'uniform' or pairs; 0 = the "
            "decoder's embeddings, l = the output of decoder layer l, the last after the final norm), on the target "
            "positions; both maps' terms add up under feature_weight and attention_weight (self-attention; "
            "cross-attention is not matched). --config.distill.decoder_features=uniform.", type=object,
            check=layer_map),
        "feature_loss": Field("mse", "Distance of matched hidden states: 'mse' (TinyBERT) or 'cosine' (1 - cosine "
                              "similarity, DistilBERT).", choices=FEATURE_LOSSES),
        "feature_weight": Field(1.0, "Weight of the feature term (summed over the mapped pairs) in the loss.",
                                non_negative=True),
        "attention_weight": Field(0.0, "Attention transfer: weight of the KL between teacher and student attention "
                                  "distributions of the mapped layers (pairs with both indices >= 1, of features and "
                                  "decoder_features; transformer models that tokenize alike); 0 = off.",
                                  non_negative=True),
    }),
    "optim": Section("Optimizer of the students: AdamW with linear warmup then linear decay to 0.",
                     optim_section(learning_rate=3e-3, weight_decay=1e-4, warmup_ratio=0.05).fields),
    "train": Section("Duration, evaluation, checkpoints and placement of every training phase.", {
        "num_epochs": Field(60, "Duration of each student's training in epochs over the training split (labeled + "
                            "transfer set).", positive=True),
        "num_steps": Field(None, "If set, overrides num_epochs with an exact number of steps.", type=int,
                           positive=True),
        "eval_every_steps": Field(500, "Evaluate on the validation split every this many steps (and at the end).",
                                  positive=True, operational=True),
        "select": Field("last", "Which step's parameters each student phase (KD and hard-label) ends with: 'last', or "
                        "'best_validation': the evaluated step with the best validation value of "
                        "sweep.selection_metric (kept as its own checkpoint, so a resumed run keeps it). The teacher, "
                        "trained in the run, always ends with its last step.", choices=("last", "best_validation")),
        "checkpoint_every_steps": Field(100, "Save a checkpoint every this many steps (and at the end); a rerun "
                                        "resumes from the latest one.", positive=True, operational=True),
        "log_every_steps": Field(100, "Log the training losses every this many steps.", positive=True,
                                 operational=True),
        "max_checkpoints_to_keep": Field(2, "Number of checkpoints kept per model.", positive=True, operational=True),
        "num_devices": Field(None, "Number of local devices the mesh (config.mesh) spans; None means every device of "
                             "every process.", type=int, operational=True),
        "steps_per_dispatch": Field(
            100, "Most optimizer steps run per compiled call (kd_jax/training/steps.py: a loop on the device over "
            "stacked batches, no host round trip per step). A call ends at every log, eval and checkpoint step and "
            "after about a second (SIGTERM is honored between calls); 1 dispatches every step from Python.",
            positive=True, operational=True),
        "device_data_max_mib": Field(
            256, "Training sets (inputs, labels and joined teacher logits) up to this many MiB are copied to every "
            "device once and batched there; larger ones stream through tf.data (gathered and prefetched in "
            "background threads). 0 sends every training set through tf.data. The batches are the same either way.",
            non_negative=True, operational=True),
        "microbatches": Field(
            1, "Gradient accumulation: each device's rows of a step's batch (data.batch_size / devices) run as this "
            "many micro-batches one after another inside the compiled step, their gradients summed before one "
            "optimizer step; the loss is normalized over the whole global batch, so any value gives the update of 1 "
            "(up to float rounding) with the activations of one micro-batch in memory. Must divide the per-device "
            "rows.", operational=True),
        "remat": Field(
            "none", "Rematerialization (activation checkpointing) of the transformer blocks of HF models (BERT, "
            "RoBERTa, DistilBERT and T5 blocks, the decoder layers of Llama, Mistral, Qwen2, Qwen3, Phi-3 and GPT-2) "
            "while they train (the student; the teacher in its own training): 'none'; 'block': each block keeps only its input "
            "for the backward pass and recomputes the rest (flax nn.remat per block); or a jax.checkpoint_policies "
            "name applied per block (e.g. 'dots_saveable': keep the matmul outputs, recompute the elementwise ops). "
            "Same results, more compute, less memory on accelerators (XLA:CPU merges the recomputation back: see "
            "docs/parallelism.md). An online teacher runs forward only (no gradient, nothing kept for a backward pass): remat "
            "does not apply to it.", choices=REMAT_OPTIONS, operational=True),
        "attention_chunk": Field(
            0, "Memory-efficient attention for decoder-only students (Llama, Mistral, Qwen2, Qwen3, Phi-3, GPT-2; "
            "student.task='causal_lm'): the student's self-attention runs this many queries at a time, each chunk "
            "rematerialized (kd_jax/models/hf/layers.query_chunked), so neither its forward nor its backward pass "
            "holds more than one chunk's [batch, heads, chunk, length] scores instead of [batch, heads, length, "
            "length] per layer; the same attention up to float rounding (masks, packing's segments and sliding "
            "windows as without). 0 (default): all queries at once. Sequences no longer than it, decoding with a KV "
            "cache, attention dropout in training and attention-map feature distillation attend whole. A decoder-only "
            "teacher attends in the same chunks where it runs (online in the step, or building its top-k cache).",
            non_negative=True, operational=True),
        "scan_layers": Field(
            False, "Run the student's decoder layers as one jax.lax.scan over their parameters stacked per step "
            "(Llama, Mistral, Qwen2, Qwen3, Phi-3 students; kd_jax/models/hf/llama.py `scanned_layers`), in training "
            "and evaluation forwards (initialization and decoding with a KV cache keep the unrolled layers). XLA "
            "compiles one layer instead of all of them, and with train.remat other than 'none' the loop enforces "
            "remat on every backend: only each layer's input hidden states are kept and the backward loop recomputes "
            "the layer (XLA:CPU otherwise merges the recomputation back over unrolled layers). The parameter tree, "
            "checkpoints, LoRA and sharding rules are unchanged; same results up to float rounding (dropout draws "
            "other masks). Costs a stacked copy of the layers' parameters in the step's memory. A Llama-family "
            "teacher that runs forward in the step or builds a top-k cache scans its layers too (others stay "
            "unrolled). Refused with feature distillation (the scanned layers sow no attention maps).",
            operational=True),
    }),
    "mesh": Section(
        "The device mesh (kd_jax/parallel/sharding.py): axis sizes whose product is the device count "
        "(train.num_devices local devices, or every device of every process); one may be -1, the devices the others "
        "leave. The batch rows are split over data x fsdp; the parameters and optimizer state of student and teacher "
        "are replicated over data, split over fsdp (each array along its largest dimension divisible by it: FSDP / "
        "ZeRO-3, gathered where the computation needs them) and over tensor (attention heads and MLP hidden units of "
        "the HF models: Megatron-style tensor parallelism). Results do not depend on the mesh (up to float rounding), "
        "so a run resumes on another. Pure FSDP on 8 devices: --config.mesh.data=1 --config.mesh.fsdp=8.", {
            "data": Field(-1, "Data parallelism: the batch rows are split over it, the parameters replicated.",
                          check=_mesh_axis_size, operational=True),
            "fsdp": Field(1, "FSDP: the batch rows and the parameters and optimizer state are split over it.",
                          check=_mesh_axis_size, operational=True),
            "tensor": Field(1, "Tensor parallelism: the layers split as each HF family declares (its partition_rules: "
                            "heads, MLP units, vocabulary); must divide the attention heads. > 1 is refused for a "
                            "model that declares none (MLP, CNN), and for a mesh whose three axes all exceed 1 (XLA in "
                            "jax 0.10 aborts compiling a transformer's step on it).",
                            check=_mesh_axis_size, operational=True),
            "rules": Field((), "Placement rules tried before the model's own (its family's partition_rules), then "
                           "FSDP: a tuple of (regular expression searched in the '/'-joined parameter path, the mesh "
                           "axis of each dimension: 'fsdp', 'tensor' or None) pairs, e.g. (('classifier/kernel', "
                           "(None, 'tensor')),); a rule applies to arrays of its rank whose named dimensions the axes "
                           "divide (the optimizer state's paths end in the parameter's, so it follows).",
                           check=_mesh_rules, operational=True),
        }),
    "baseline": Field(True, "Also train the hard-label student (the same run without the distillation term) as the "
                      "baseline."),
    "generation": Section(
        "Seq2seq evaluation: every model's outputs for the test split are generated (max data.max_target_length "
        "tokens) and scored (kd_jax/evaluation/seq2seq.py, causal_lm.py).", {
            "temperatures": Field((0.0,), "Decoding temperatures, 0 = greedy; the metrics at the first are the "
                                  "models' metrics, the students' metrics at every one are also reported (the "
                                  "generation-temperature ablation: one trained student, no retraining).",
                                  check=_temperatures),
            "top_k": Field(None, "Sampling filter for temperatures > 0: keep the top_k most likely tokens; None: off.",
                           type=int, positive=True),
            "top_p": Field(None, "Sampling filter for temperatures > 0: keep the top_p nucleus; None: off.", type=float,
                           interval="(0, 1]"),
            "train_temperature": Field(1.0, "causal_lm on-policy distillation: the temperature the student's "
                                       "responses are sampled at during training (GKD samples at 1).", positive=True),
            "simulator_examples": Field(
                1000, "e-SNLI: the training examples (a fixed random subset) each model explains at the first "
                "temperature to train its own simulator, which the reported las (Hase et al.'s per-model LAS) reads "
                "its explanations with (kd_jax/evaluation/faithfulness.py); 0: off (las NaN; las_gold, with the "
                "simulator of gold explanations, stays).", non_negative=True),
            "train_top_k": Field(None, "causal_lm on-policy distillation: the top_k filter of the student's training "
                                 "samples (their own; top_k filters evaluation only); None: off, as in TRL.",
                                 type=int, positive=True),
            "train_top_p": Field(None, "causal_lm on-policy distillation: the top_p filter of the student's training "
                                 "samples (their own; top_p filters evaluation only); None: off, as in TRL.",
                                 type=float, interval="(0, 1]"),
        }),
    "sweep": Section(
        "Sweeps (kd_jax/sweeps/): the config runs once per point, each in `<workdir>/<point name>/`, then the report "
        "(results.csv, summary.md, plots/) is written. A config is a sweep when grid or zipped is non-empty or seeds "
        "> 1.", {
            "grid": Field((), "Cartesian product: a tuple of (dotted field path, tuple of values) pairs. Any field can "
                          "be swept, e.g. (('distill.temperature', (1.0, 2.0)), ('distill.alpha', (0.5, 0.9))) gives 4 "
                          "points."),
            "zipped": Field((), "Values that advance together: a tuple of groups, each a tuple of (path, values) pairs "
                            "of equal length; a group is one factor, multiplied with the grid and the other groups. "
                            "E.g. one group of 2 values: ((('student.hidden_sizes', ((16,), (64,))), "
                            "('optim.learning_rate', (3e-3, 1e-3))),)"),
            "seeds": Field(1, "Repeats of every point, with config.seed = 0, 1, ..., seeds - 1 (the base config's seed "
                           "is not used).", check=_integer_at_least(1)),
            "selection_metric": Field(
                "accuracy", "The student metric that picks the best value in the report, one the task's evaluator "
                "computes (kd_jax.evaluation.metrics_of): e.g. accuracy or agreement (higher is better), or nll, "
                "ece, brier or kl_to_teacher (lower is better)."),
            "mode": Field(
                "sequential", "'sequential': the points run one after another, each a full run. 'vectorized' "
                "(kd_jax/training/vectorized.py): points whose configs differ only in seed, distill.temperature / "
                "alpha / ce_weight / kd_weight / label_smoothing and optim.learning_rate train together in one "
                "compiled program (vmap over points); other differences (widths, data, divergence...) split the "
                "points into groups trained in turn. Same results.json and report, up to float rounding. One process, "
                "classification tasks; --sweep_index runs its point sequentially.",
                choices=("sequential", "vectorized")),
        }),
})


def _flatten(section: Section, prefix: str = "") -> dict[str, Field]:
  fields = {}
  for name, entry in section.fields.items():
    if isinstance(entry, Section):
      fields.update(_flatten(entry, f"{prefix}{name}."))
    else:
      fields[prefix + name] = entry
  return fields


# Every field by its dotted path, in declaration order.
FIELDS = _flatten(SCHEMA)
# Fields a resumed run (or a sweep point's directory) may change: they affect logging, checkpoint cadence, placement
# and where the shared teacher is stored, not the result.
OPERATIONAL_FIELDS = frozenset(path for path, field in FIELDS.items() if field.operational)
# Fields whose default is set but which may be None (the Hinton weight gives way to the explicit form).
NULLABLE_FIELDS = frozenset(path for path, field in FIELDS.items() if field.nullable)


def _build(section: Section) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  for name, entry in section.fields.items():
    if isinstance(entry, Section):
      config[name] = _build(entry)
    elif entry.default is None:
      config[name] = config_dict.placeholder(entry.type)
    else:
      config[name] = entry.default
  return config


def default_config() -> ml_collections.ConfigDict:
  """The default run: an MLP teacher distilled into a small MLP student on scikit-learn's digits, offline."""
  return _build(SCHEMA)


def optim_config(*, learning_rate: float, weight_decay: float, warmup_ratio: float) -> ml_collections.ConfigDict:
  """AdamW settings: peak learning rate, decoupled weight decay, and the warmup's share of all steps."""
  return _build(optim_section(learning_rate=learning_rate, weight_decay=weight_decay, warmup_ratio=warmup_ratio))


def parse_options(arg: str | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
  """Splits a config argument such as 'smoke' or 'sst2,smoke' (`--config=file.py:arg`) and rejects unknown options."""
  options = tuple(option for option in (arg or "").split(",") if option)
  for option in options:
    if option not in allowed:
      raise ValueError(f"unknown config argument {option!r}; allowed: {', '.join(allowed)}")
  return options
