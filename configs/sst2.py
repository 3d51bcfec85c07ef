"""SST-2 (GLUE sentiment): distill a fine-tuned RoBERTa-large classifier into DistilBERT with cached teacher logits.

Launch (downloads the checkpoints and GLUE SST-2 through the Hugging Face caches on first use):

    python main.py --config=configs/sst2.py --workdir=runs/sst2

Teacher: philschmid/roberta-large-sst2, used as it is (teacher.init='pretrained'; any sequence-classification checkpoint
with labels 0 = negative, 1 = positive works, or fine-tune one in the run with --config.teacher.init=train). Student:
distilbert-base-uncased with a fresh 2-label head. Data: nyu-mll/glue, sst2: 67,349 training sentences, of which a
stratified 10% is held out as the validation split (evaluation during training, model and sweep selection:
data.validation_fraction); the reported test metrics are on GLUE's validation split (872 sentences:
data.test_split='validation'; GLUE's own test labels are hidden). Each model reads the sentences through its own
tokenizer (max 128 tokens); the teacher's logits are computed once on its tokens, cached, and joined to the student's
batches by example index. Loss 0.5 CE + 0.5 T^2 KL at T = 2; AdamW (5e-5, 10% linear warmup, then linear decay), batch
32, 3 epochs; the hard-label DistilBERT is trained beside it. results.json: accuracy, nll, ece, brier, agreement,
kl_to_teacher and the confusion matrix per model.

Offline, point the config at local copies:
    --config.data.source=tfds --config.data.path=glue/sst2 --config.data.data_dir=DIR   (a TFDS data_dir)
    --config.data.source=files --config.data.path=DIR   (DIR/train.csv and DIR/validation.csv, or .jsonl / .parquet,
                                                         with columns sentence and label)
    --config.data.source=disk --config.data.path=DIR    (a DatasetDict written by save_to_disk)
    --config.teacher.checkpoint=DIR --config.student.checkpoint=DIR   (HF checkpoint directories with tokenizers)

Arguments: `smoke` (`--config=configs/sst2.py:smoke`) runs offline in about 20 s on 2 CPU cores: the
tiny fixture RoBERTa (tests/fixtures/hf/roberta, fine-tuned in the run since its weights are random) and DistilBERT
(tests/fixtures/hf/distilbert), on a 160-sentence SST-2 look-alike saved in GLUE's format
(tests/fixtures/text/sst2, save_to_disk). The sweeps run on this task with their `sst2` argument, e.g.
`--config=configs/sweep_temp.py:sst2,smoke`. `from_teacher` (`--config=configs/sst2.py:smoke,from_teacher`) builds
the student from every other teacher layer instead of DistilBERT (student.init_from_teacher_layers, DistilBERT's
initialization): 12 of RoBERTa-large's 24 layers at its widths, or 1 of the fixture RoBERTa's 2 with `smoke`.
"""

import pathlib

import ml_collections

from kd_jax.config import schema

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
OPTIONS = ("smoke", "from_teacher")
# Layers of the teachers: philschmid/roberta-large-sst2 and the smoke run's fixture RoBERTa.
TEACHER_LAYERS = {"full": 24, "smoke": 2}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = schema.parse_options(arg, allowed=OPTIONS)
  config = schema.default_config()
  config.data.name = "sst2"
  config.data.source = "hub"
  config.data.path = "nyu-mll/glue"
  config.data.subset = "sst2"
  config.data.labeled_fraction = 1.0
  config.data.validation_fraction = 0.1  # of the training sentences: GLUE's validation split is the test split
  config.data.test_split = "validation"
  config.data.max_length = 128
  config.data.batch_size = 32
  config.data.eval_batch_size = 256

  config.teacher.name = "hf"
  config.teacher.checkpoint = "philschmid/roberta-large-sst2"
  config.teacher.task = "sequence_classification"
  config.teacher.init = "pretrained"
  # Used when the teacher is fine-tuned in the run (--config.teacher.init=train).
  config.teacher.num_epochs = 3
  config.teacher.optim = schema.optim_config(learning_rate=2e-5, weight_decay=0.01, warmup_ratio=0.1)

  config.student.name = "hf"
  config.student.checkpoint = "distilbert-base-uncased"
  config.student.task = "sequence_classification"

  config.distill.temperature = 2.0
  config.distill.alpha = 0.5
  config.optim = schema.optim_config(learning_rate=5e-5, weight_decay=0.01, warmup_ratio=0.1)
  config.optim.grad_clip_norm = 1.0
  config.train.num_epochs = 3
  config.train.eval_every_steps = 1000
  config.train.checkpoint_every_steps = 1000
  config.train.log_every_steps = 100

  if "smoke" in options:
    config.data.source = "disk"
    config.data.path = str(FIXTURES / "text" / "sst2")
    config.data.subset = None
    config.data.max_length = 64
    config.data.batch_size = 16
    config.data.eval_batch_size = 48
    config.teacher.checkpoint = str(FIXTURES / "hf" / "roberta")
    config.teacher.init = "train"
    config.teacher.num_epochs = 15
    config.teacher.optim = schema.optim_config(learning_rate=3e-3, weight_decay=0.01, warmup_ratio=0.1)
    # The teacher, trained in the run, without the fixture's dropout (its masks double the time XLA:CPU takes to
    # compile a train step); the student keeps DistilBERT's, so the smoke still distills into a student with dropout.
    config.teacher.hf_dropout = 0.0
    config.student.checkpoint = str(FIXTURES / "hf" / "distilbert")
    config.optim = schema.optim_config(learning_rate=3e-3, weight_decay=0.01, warmup_ratio=0.1)
    config.train.num_epochs = 10
    config.train.eval_every_steps = 50
    config.train.checkpoint_every_steps = 100
    config.train.log_every_steps = 25
  if "from_teacher" in options:
    config.student.checkpoint = None
    teacher_layers = TEACHER_LAYERS["smoke" if "smoke" in options else "full"]
    config.student.init_from_teacher_layers = tuple(range(0, teacher_layers, 2))
  return config
