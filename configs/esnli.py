"""e-SNLI explanation generation: token-level distillation of FLAN-T5-XL into FLAN-T5-small, top-k cached teacher.

Launch (downloads the checkpoints and esnli/esnli through the Hugging Face caches on first use):

    python main.py --config=configs/esnli.py --workdir=runs/esnli

Each premise/hypothesis pair becomes the source "premise: <premise> hypothesis: <hypothesis>" (max 128 tokens) and
the target "<label> explanation: <explanation_1>" (max 64 tokens), e.g. "contradiction explanation: the man cannot be
inside and outside at once." (kd_jax/data/esnli.py). The teacher google/flan-t5-xl is used as it is
(teacher.init='pretrained', bf16); its top-32 logits per target token of the 549,367 training examples are computed
once and cached (float16 values, int32 ids, and the log-sum-exp of the other logits at T = 2, which makes the tail
bin exact: see losses.topk_divergence and distill.topk_tail); google/flan-t5-small learns from CE + 0.5 T^2 KL at T = 2 over real target tokens (explicit
form: ce_weight 1, kd_weight = beta 0.5), AdamW 3e-4, batch 32, 1 epoch. The hard-label FLAN-T5-small is trained
beside it. Evaluation during training and every selection use e-SNLI's validation split (9,842 examples); the
reported metrics its test split (9,824). results.json per model and split: label_accuracy (label parsed from the
generated text; unparseable = wrong), rouge1/rouge2/rougeL of the generated explanation, agreement with the
teacher's labels, kl_to_teacher (average token-level KL), nll and token_accuracy (teacher-forced), and the
explanations' faithfulness to the model's own labels (faithfulness; las, Hase et al.'s per-model LAS, and las_gold;
kd_jax/evaluation/faithfulness.py).

Variants (all fields of kd_jax/config/schema.py apply):
    --config.distill.teacher_mode=online        the teacher (bf16, no gradients) runs inside the train step instead
    --config.distill.strategy=sequence          sequence-level KD (Kim & Rush 2016): CE on the teacher's greedy
                                                outputs, generated once and cached as tokens
    --config.distill.topk=64                    a larger top-k cache
    --config.generation.temperatures='(0.0, 0.5, 1.0)'   decode the trained students at several temperatures
    --config.distill.kd_weight=0.3 / --config.distill.temperature=4 / --config.distill.label_smoothing=0.1 /
    --config.data.train_fraction=0.1            the beta, T, label-smoothing and data-size ablations (or sweep them)
Offline, point the config at local copies: --config.data.source=files --config.data.path=DIR (DIR/train.jsonl and
DIR/validation.jsonl and DIR/test.jsonl, or .csv / .parquet, with columns premise, hypothesis, label,
explanation_1), or source=disk
(save_to_disk) or source=tfds with --config.data.path=esnli --config.data.data_dir=DIR; and
--config.teacher.checkpoint=DIR --config.student.checkpoint=DIR.

Arguments: `smoke` (`--config=configs/esnli.py:smoke`) runs offline on the tiny fixture T5 v1.1
(tests/fixtures/hf/t5_v1_1, FLAN-T5's architecture) as both models: the teacher is trained in the run for 25 epochs (its
weights are random), the student starts from the fixture's weights and gets 10, on a 144-example e-SNLI look-alike in
JSON lines (tests/fixtures/text/esnli; 36 validation and 36 test examples); the students are decoded at temperatures 0
and 1; both models without the fixture's dropout (hf_dropout=0: its masks doubled the steps' XLA compile time). 61
CPU-s (user + sys) measured on 2 shared CPU cores, most of it XLA compiling the T5 train and generation steps.
"""

import pathlib

import ml_collections

from kd_jax.config import schema

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = schema.parse_options(arg, allowed=("smoke",))
  config = schema.default_config()
  config.data.name = "esnli"
  config.data.source = "hub"
  config.data.path = "esnli/esnli"
  config.data.labeled_fraction = 1.0
  config.data.validation_split = "validation"
  config.data.test_split = "test"
  config.data.max_length = 128
  config.data.max_target_length = 64
  config.data.batch_size = 32
  config.data.eval_batch_size = 64

  config.teacher.name = "hf"
  config.teacher.checkpoint = "google/flan-t5-xl"
  config.teacher.task = "seq2seq"
  config.teacher.init = "pretrained"
  config.teacher.dtype = "bfloat16"
  config.teacher.param_dtype = "bfloat16"
  # Used when the teacher is fine-tuned in the run (--config.teacher.init=train).
  config.teacher.num_epochs = 1
  config.teacher.optim = schema.optim_config(learning_rate=1e-4, weight_decay=0.01, warmup_ratio=0.05)

  config.student.name = "hf"
  config.student.checkpoint = "google/flan-t5-small"
  config.student.task = "seq2seq"

  config.distill.teacher_mode = "cached"
  config.distill.strategy = "token"
  config.distill.temperature = 2.0
  config.distill.alpha = None
  config.distill.ce_weight = 1.0
  config.distill.kd_weight = 0.5
  config.distill.topk = 32
  config.distill.topk_dtype = "float16"
  config.optim = schema.optim_config(learning_rate=3e-4, weight_decay=0.01, warmup_ratio=0.05)
  config.optim.grad_clip_norm = 1.0
  config.train.num_epochs = 1
  # Sweeps on this task pick their best value by the label accuracy of the generated text.
  config.sweep.selection_metric = "label_accuracy"
  config.train.eval_every_steps = 2000
  config.train.checkpoint_every_steps = 2000
  config.train.log_every_steps = 100

  if "smoke" in options:
    config.data.source = "files"
    config.data.path = str(FIXTURES / "text" / "esnli")
    config.data.max_length = 64
    config.data.batch_size = 16
    config.data.eval_batch_size = 32
    config.teacher.checkpoint = str(FIXTURES / "hf" / "t5_v1_1")
    config.teacher.init = "train"
    config.teacher.dtype = "float32"
    config.teacher.param_dtype = "float32"
    config.teacher.num_epochs = 25
    config.teacher.optim = schema.optim_config(learning_rate=1e-2, weight_decay=0.01, warmup_ratio=0.1)
    config.student.checkpoint = str(FIXTURES / "hf" / "t5_v1_1")
    # Without the fixture's dropout (0.1): its masks double the time XLA:CPU takes to compile a T5 train step, and
    # what the smoke checks (learning, generation, faithfulness, the top-k cache) does not depend on them.
    config.teacher.hf_dropout = config.student.hf_dropout = 0.0
    config.optim = schema.optim_config(learning_rate=1e-2, weight_decay=0.01, warmup_ratio=0.1)
    config.train.num_epochs = 10
    config.train.eval_every_steps = 50
    config.train.checkpoint_every_steps = 100
    config.train.log_every_steps = 25
    config.generation.temperatures = (0.0, 1.0)
  return config
