"""Bad input: one ConfigError line naming field, value and what is allowed; via main.py, exit 2 and nothing written."""

import ml_collections
import pytest

from kd_jax import preflight
from kd_jax.config import paths
from kd_jax.errors import ConfigError
from tests.helpers import load_config, run_main

INVALID = [
    ("distill.temperature", 0.0, "config.distill.temperature=0.0: must be > 0"),
    ("distill.temperature", -1.0, "config.distill.temperature=-1.0: must be > 0"),
    ("train.device_data_max_mib", -1, "config.train.device_data_max_mib=-1: must be >= 0"),
    ("distill.alpha", 1.5, "config.distill.alpha=1.5: must be in [0.0, 1.0]"),
    ("distill.alpha", -0.1, "config.distill.alpha=-0.1: must be in [0.0, 1.0]"),
    ("distill.label_smoothing", 1.0, "config.distill.label_smoothing=1.0: must be in [0.0, 1.0)"),
    ("distill.divergence", "kl", "config.distill.divergence='kl': allowed: forward_kl, reverse_kl, js, generalized_js, "
     "skew_forward_kl, skew_reverse_kl, tvd, akl, mse"),
    ("distill.beta", 1.5, "config.distill.beta=1.5: must be in [0.0, 1.0]"),
    ("distill.skew", -0.1, "config.distill.skew=-0.1: must be in [0.0, 1.0]"),
    ("distill.akl_mu", 0.0, "config.distill.akl_mu=0.0: must be in (0.0, 1.0]"),
    ("distill.schedule", "step", "config.distill.schedule='step': allowed: constant, linear, cosine"),
    ("distill.schedule", "cosine", "config.distill.schedule='cosine': needs an end to move to: set one of "
     "distill.temperature_end, distill.alpha_end, distill.ce_weight_end, distill.kd_weight_end"),
    ("distill.temperature_end", 1.0, "config.distill.temperature_end=1.0: needs distill.schedule='linear' or "
     "'cosine'"),
    ("distill.teacher_mode", "live", "config.distill.teacher_mode='live': allowed: cached, online"),
    ("distill.on_policy_fraction", -0.5, "config.distill.on_policy_fraction=-0.5: must be in [0.0, 1.0]"),
    ("distill.on_policy_fraction", 0.5, "config.distill.on_policy_fraction=0.5: needs data.name='causal_lm'"),
    ("distill.on_policy_start_step", -1, "config.distill.on_policy_start_step=-1: must be >= 0"),
    ("distill.on_policy_start_step", 5, "config.distill.on_policy_start_step=5: needs data.name='causal_lm'"),
    ("distill.cross_tokenizer", "uld", "config.distill.cross_tokenizer='uld': needs data.name='causal_lm'"),
    ("distill.cross_tokenizer", "dskd", "config.distill.cross_tokenizer='dskd': allowed: none, uld, gold, alm"),
    ("data.packing", True, "config.data.packing=True: needs data.name='causal_lm'"),
    ("distill.loss_chunk", -1, "config.distill.loss_chunk=-1: must be >= 0"),
    ("distill.loss_chunk", 16, "config.distill.loss_chunk=16: needs a seq2seq or causal-LM data set"),
    ("generation.train_temperature", 0.0, "config.generation.train_temperature=0.0: must be > 0"),
    ("distill.ce_weight", 1.0, "config.distill.ce_weight=1.0: must be None when distill.alpha is set"),
    ("data.batch_size", 0, "config.data.batch_size=0: must be a positive multiple of the device count (8)"),
    ("data.batch_size", 12, "config.data.batch_size=12: must be a positive multiple of the device count (8)"),
    ("data.train_fraction", 0.0, "config.data.train_fraction=0.0: must be in (0.0, 1.0]"),
    ("data.labeled_fraction", 1.2, "config.data.labeled_fraction=1.2: must be in (0.0, 1.0]"),
    ("data.name", "cifar10", "config.data.name='cifar10': allowed: digits, synthetic_clusters, "
     "synthetic_random_labels"),
    ("data.name", "fashion_mnist", "config.data.source='hub': allowed for data.name='fashion_mnist': files (its IDX "
     "files in data.data_dir), tfds"),
    ("optim.learning_rate", 0.0, "config.optim.learning_rate=0.0: must be > 0"),
    ("teacher.optim.learning_rate", -1e-3, "config.teacher.optim.learning_rate=-0.001: must be > 0"),
    ("train.num_epochs", 0, "config.train.num_epochs=0: must be > 0"),
    ("seed", -1, "config.seed=-1: must be >= 0"),
    ("student.name", "resnet", "config.student.name='resnet': allowed: mlp, cnn, hf, or a user's model "
     "'package.module:factory' or 'path/to/file.py:factory'"),
    ("student.name", "cnn", "config.student.name='cnn': needs an image data set (fashion_mnist, mnist), not "
     "data.name='digits'"),
    ("teacher.init", "/no/such/teacher", "config.teacher.init='/no/such/teacher': must be 'train'"),
    ("student.dropout_rate", 1.0, "config.student.dropout_rate=1.0: must be in [0.0, 1.0)"),
    ("teacher.hf_dropout", 0.1, "config.teacher.hf_dropout=0.1: must be None for teacher.name='mlp': it replaces a "
     "Hugging Face checkpoint's dropout (an MLP's or CNN's is teacher.dropout_rate)"),
    ("distill.input_noise_std", 0.1, "config.distill.input_noise_std=0.1: needs distill.teacher_mode='online'"),
    ("train.num_devices", 9, "config.train.num_devices=9: must be None (all devices) or between 1 and the 8 local"),
    ("teacher.name", "hf", "config.teacher.checkpoint=None: required for teacher.name='hf'"),
    ("data.validation_fraction", 0.0, "config.data.validation_fraction=0.0: must be in (0.0, 0.5]"),
    ("data.validation_fraction", 0.6, "config.data.validation_fraction=0.6: must be in (0.0, 0.5]"),
    ("train.select", "best", "config.train.select='best': allowed: last, best_validation"),
    ("sweep.selection_metric", "label_accuracy", "config.sweep.selection_metric='label_accuracy': not computed for "
     "data.name='digits'; allowed: accuracy, nll, ece, brier, agreement, kl_to_teacher"),
    ("distill.features", "uniform", "config.distill.features='uniform': needs distill.teacher_mode='online'"),
    ("distill.attention_weight", 1.0, "config.distill.attention_weight=1.0: needs distill.features"),
    ("student.lora.rank", 4, "config.student.lora.rank=4: LoRA needs an HF student (student.name='hf') or a user's "
     "model, not 'mlp'"),
    ("student.trainable", (), "config.student.trainable=(): freezes every parameter"),
    ("student.trainable", ("(",), "config.student.trainable=('(',): '(' is not a regular expression"),
    ("student.init_from_teacher_layers", (0,), "config.student.init_from_teacher_layers=(0,): needs HF models"),
    ("train.microbatches", 3, "config.train.microbatches=3: must be >= 1 and divide each device's rows of a batch "
     "(data.batch_size 32 / 8 devices = 4)"),
    ("train.microbatches", 0, "config.train.microbatches=0: must be >= 1 and divide"),
    ("train.remat", "dots", "config.train.remat='dots': allowed: none, block, dots_saveable, "
     "dots_with_no_batch_dims_saveable, nothing_saveable, everything_saveable"),
    ("train.remat", "block", "config.train.remat='block': needs transformer blocks (student.name='hf'); the mlp "
     "student has none: use 'none'"),
    ("train.attention_chunk", 512, "config.train.attention_chunk=512: needs a decoder-only HF student "
     "(student.name='hf', student.task='causal_lm'); the student is 'mlp' with task None: use 0"),
    ("train.attention_chunk", -1, "config.train.attention_chunk=-1: must be >= 0"),
    ("train.scan_layers", True, "config.train.scan_layers=True: needs a Llama-family student (student.name='hf', "
     "student.task='causal_lm', model_type llama, mistral, qwen2, qwen3 or phi3) without feature distillation; the "
     "student is 'mlp' with task None: use False"),
    ("optim.moment_dtype", "float16", "config.optim.moment_dtype='float16': allowed: float32, bfloat16"),
    ("teacher.optim.moment_dtype", "int8", "config.teacher.optim.moment_dtype='int8': allowed: float32, bfloat16"),
    # The mesh on 8 devices (config.mesh).
    ("mesh.fsdp", 3, "config.mesh.data=-1: the mesh (data -1 x fsdp 3 x tensor 1) must multiply to the 8 devices "
     "of the run"),
    ("mesh.data", 2, "config.mesh.data=2: the mesh (data 2 x fsdp 1 x tensor 1) must multiply to the 8 devices"),
    ("mesh.fsdp", 0, "config.mesh.fsdp=0: must be an integer >= 1, or -1 (the devices the other axes leave)"),
    ("mesh.fsdp", -1, "config.mesh.fsdp=-1: only one mesh axis may be -1 (here data, fsdp)"),
    ("mesh.rules", (("Dense_0/kernel", ("fsdp", "model")),), "config.mesh.rules=('Dense_0/kernel', ('fsdp', "
     "'model')): unknown mesh axis 'model'; a rule places dimensions on fsdp, tensor or None"),
    ("mesh.rules", (("Dense_0/kernel",),), "config.mesh.rules=('Dense_0/kernel',): each rule is (regular expression, "
     "tuple of mesh axes per dimension)"),
]

# Feature distillation on the default (MLP teacher 256x256, student 32; online teacher) and the SST-2 smoke (2-layer
# RoBERTa and DistilBERT fixtures, whose depths validation reads from their config.json).
ONLINE = {"distill.teacher_mode": "online"}
INVALID_FEATURES = [
    ("default", {"distill.features": ((3, 1),)},
     "config.distill.features=((3, 1),): teacher layer 3 does not exist: the teacher has hidden states 0..2"),
    ("default", {"distill.features": ((0, 0), (1, 1), (2, 1))},
     "config.distill.features=((0, 0), (1, 1), (2, 1)): has 3 pairs but the student has 2 hidden states"),
    ("default", {"distill.features": "all"}, "config.distill.features='all': allowed: None (off), 'uniform', or a "
     "tuple of distinct (teacher layer, student layer) pairs"),
    ("default", {"distill.features": "uniform", "distill.feature_loss": "l1"},
     "config.distill.feature_loss='l1': allowed: mse, cosine"),
    ("default", {"distill.features": "uniform", "distill.feature_weight": -1.0},
     "config.distill.feature_weight=-1.0: must be >= 0"),
    ("default", {"distill.features": "uniform", "distill.attention_weight": 1.0},
     "config.distill.attention_weight=1.0: needs transformer models: teacher.name='mlp' has no attention"),
    ("sst2", {"distill.features": ((1, 3),)},
     "config.distill.features=((1, 3),): student layer 3 does not exist: the student has hidden states 0..2"),
    ("esnli", {"distill.decoder_features": ((4, 1),)}, "config.distill.decoder_features=((4, 1),): teacher layer 4 "
     "does not exist: the teacher has hidden states 0..3 (0 = embeddings)"),
    ("default", {"distill.decoder_features": "uniform"}, "config.distill.decoder_features='uniform': maps the layers "
     "of an encoder-decoder model's decoder: it needs a seq2seq data set"),
    ("esnli", {"distill.features": "uniform", "distill.strategy": "sequence"},
     "config.distill.features='uniform': needs distill.strategy='token'"),
    ("default", {"distill.features": "uniform", "ensemble.size": 2},
     "config.distill.features='uniform': needs a single teacher (ensemble.size=2)"),
    ("default", {"distill.features": "uniform", "student.name": "cnn", "data.name": "fashion_mnist",
                 "data.source": "tfds"}, "config.distill.features='uniform': needs MLP, HF or user's models"),
]


@pytest.mark.parametrize("task, overrides, message", INVALID_FEATURES,
                         ids=[f"{task}:{overrides}" for task, overrides, _ in INVALID_FEATURES])
def test_invalid_feature_distillation(task, overrides, message):
  config = load_config() if task == "default" else load_config(f"configs/{task}.py")
  for field, value in {**ONLINE, **overrides}.items():
    paths.set_value(config, field, value)
  with pytest.raises(ConfigError) as error:
    preflight.check(config)
  assert str(error.value).startswith(message)
  assert "\n" not in str(error.value)


def test_valid_memory_savers_on_a_transformer_student():
  config = load_config("configs/sst2.py")
  config.train.remat, config.train.microbatches, config.optim.moment_dtype = "dots_saveable", 2, "bfloat16"
  preflight.check(config)


@pytest.mark.parametrize("features", ["uniform", ((0, 0), (2, 1)), ((1, 1),)])
def test_valid_feature_maps(features):
  config = load_config()
  config.distill.teacher_mode, config.distill.features = "online", features
  preflight.check(config)


@pytest.mark.parametrize("features, decoder_features", [("uniform", "uniform"), (None, ((3, 3), (1, 0))),
                                                        (((2, 2),), None)])
def test_t5_feature_maps_of_either_stack_are_valid(features, decoder_features):
  """The e-SNLI smoke's T5s (2 encoder and 3 decoder layers): distill.features maps the encoder, decoder_features the
  decoder, with attention transfer (refused for seq2seq data sets before)."""
  config = load_config("configs/esnli.py")
  config.distill.teacher_mode, config.distill.attention_weight = "online", 1.0
  config.distill.features, config.distill.decoder_features = features, decoder_features
  preflight.check(config)


# Schedules whose end is out of range or of the other form of the loss weights (several fields at once).
INVALID_SCHEDULES = [
    ({"temperature_end": 0.0}, "config.distill.temperature_end=0.0: must be > 0"),
    ({"alpha_end": 1.5}, "config.distill.alpha_end=1.5: must be in [0.0, 1.0]"),
    ({"kd_weight_end": 0.5}, "config.distill.kd_weight_end=0.5: must be None in the Hinton form (alpha set)"),
    ({"alpha": None, "ce_weight": 1.0, "kd_weight": 0.5, "kd_weight_end": -1.0},
     "config.distill.kd_weight_end=-1.0: must be >= 0 or None"),
    ({"alpha": None, "ce_weight": 1.0, "kd_weight": 0.5, "alpha_end": 0.5},
     "config.distill.alpha_end=0.5: must be None in the explicit form (alpha=None)"),
]


@pytest.mark.parametrize("fields, message", INVALID_SCHEDULES)
def test_invalid_schedule_ends(fields, message):
  config = load_config()
  config.distill.schedule = "linear"
  config.distill.update(fields)
  with pytest.raises(ConfigError) as error:
    preflight.check(config)
  assert str(error.value).startswith(message)


def needs_eight_devices(message: str) -> bool:
  """Whether a case's message is about the multidevice session's 8 devices (the mesh, batch and micro-batch rules)."""
  return "(8)" in message or "8 devices" in message or "8 local" in message or "tensor=" in message or (
      "mesh.fsdp = mesh.tensor = 1" in message)


def with_device_marks(cases, message_of, ids):
  """pytest.params of `cases`, those about the 8 devices marked multidevice (they run in that session)."""
  return [pytest.param(*case, id=case_id, marks=[pytest.mark.multidevice] if needs_eight_devices(message_of(case))
                       else []) for case, case_id in zip(cases, ids)]


@pytest.mark.parametrize("field, value, message", with_device_marks(INVALID, lambda case: case[2],
                                                                    [f"{f}={v}" for f, v, _ in INVALID]))
def test_invalid_value_names_field_value_and_rule(field, value, message):
  config = load_config()
  section, key = (["", field] if "." not in field else field.rsplit(".", 1))
  target = config
  for part in filter(None, section.split(".")):
    target = target[part]
  target[key] = value
  with pytest.raises(ConfigError) as error:
    preflight.check(config)
  assert str(error.value).startswith(message)


# On configs/fashion_mnist.py:smoke read through TFDS (validation then needs no IDX files).
INVALID_IMAGES = [
    ("student.conv_features", (), "config.student.conv_features=(): must be one or more positive integers (the "
     "output channels of each conv block)"),
    ("student.conv_features", (8, 0), "config.student.conv_features=(8, 0): must be one or more positive integers"),
    ("teacher.conv_features", (8, 8, 8, 8, 8), "config.teacher.conv_features=(8, 8, 8, 8, 8): at most 4 conv blocks "
     "on 28x28 images (each block's 2x2 max-pool halves the side)"),
    ("student.kernel_size", 4, "config.student.kernel_size=4: must be a positive odd integer"),
    ("student.kernel_size", 0, "config.student.kernel_size=0: must be a positive odd integer"),
    ("student.norm_groups", 3, "config.student.norm_groups=3: must be 0 (no normalization) or a number of groups "
     "dividing every conv width (4, 8)"),
    ("student.norm_groups", -1, "config.student.norm_groups=-1: must be 0 (no normalization) or a number of groups"),
    ("student.dropout_rate", 1.0, "config.student.dropout_rate=1.0: must be in [0.0, 1.0)"),
    ("teacher.hidden_sizes", (0,), "config.teacher.hidden_sizes=(0,): must be positive integers"),
    ("teacher.name", "hf", "config.teacher.name='hf': data.name='fashion_mnist' is images: it needs 'mlp', 'cnn' or "
     "a user's model"),
    ("data.source", "disk", "config.data.source='disk': allowed for data.name='fashion_mnist': files (its IDX files "
     "in data.data_dir), tfds"),
]


@pytest.mark.parametrize("field, value, message", INVALID_IMAGES, ids=[f"{f}={v}" for f, v, _ in INVALID_IMAGES])
def test_invalid_image_task_value_names_field_value_and_rule(field, value, message):
  config = load_config("configs/fashion_mnist.py")
  config.data.source = "tfds"
  preflight.check(config)
  section, key = field.rsplit(".", 1)
  config[section][key] = value
  with pytest.raises(ConfigError) as error:
    preflight.check(config)
  assert str(error.value).startswith(message)


def test_explicit_form_needs_both_weights():
  config = load_config()
  config.distill.alpha = None
  config.distill.ce_weight = 1.0
  with pytest.raises(ConfigError, match=r"config.distill.kd_weight=None: must be a number >= 0"):
    preflight.check(config)
  config.distill.kd_weight = 0.5
  preflight.check(config)


def test_best_validation_needs_evaluation_during_training():
  config = load_config()
  config.train.select = "best_validation"
  config.train.num_steps, config.train.eval_every_steps = 100, 100
  with pytest.raises(ConfigError, match=r"^config.train.select='best_validation': needs evaluation during training: "
                                        r"train.eval_every_steps=100 evaluates only at the end of "
                                        r"train.num_steps=100; lower eval_every_steps or use 'last'$"):
    preflight.check(config)
  config.train.eval_every_steps = 50
  preflight.check(config)


def test_unknown_and_mistyped_fields():
  config = load_config()
  config.distill.temprature = 2.0
  with pytest.raises(ConfigError, match=r"config.distill.temprature=2.0: unknown field; known fields of "
                                        r"config.distill: akl_mu, alpha, alpha_end, attention_weight, beta, ce_weight"):
    preflight.check(config)
  config = load_config()
  # A config written from scratch (not from configs/default.py) has no type-safe fields to stop this.
  config.train = ml_collections.ConfigDict(config.train.to_dict() | {"num_epochs": "ten"})
  with pytest.raises(ConfigError, match=r"config.train.num_epochs='ten': must be of type int"):
    preflight.check(config)


@pytest.mark.parametrize("args, message", [
    (["--config.distill.temperature=-1"], "error: config.distill.temperature=-1.0: must be > 0"),
    (["--config=configs/sst2.py:smoke", "--config.student.lora.rank=64"],
     "error: config.student.lora.rank=64: must be <= 32, the smallest width"),
    (["--config=configs/sst2.py:smoke,from_teacher", "--config.student.init_from_teacher_layers=(0,5)"],
     "error: config.student.init_from_teacher_layers=(0, 5): teacher layer indices must be < 2"),
    (["--config.distill.temprature=2"],
     'error: --config.distill.temprature=2: unknown config field config.distill.temprature; did you mean '
     '"temperature"?'),
    (["--config=configs/nope.py"], "error: --config=configs/nope.py: no such config file"),
    (["--config.mesh.fsdp=2"], "error: config.mesh.data=-1: the mesh (data -1 x fsdp 2 x tensor 1) must multiply to "
     "the 1 devices of the run"),
    (["--config.data.batch_size=4096"], "error: config.data.batch_size=4096: larger than the 1198 training examples"),
    (["--config.teacher.assistant.name=mlp", "--config.ensemble.size=2"],
     "error: config.teacher.assistant.name='mlp': needs a single teacher (ensemble.size=1), not ensemble.size=2"),
    (["--config=configs/fashion_mnist.py:smoke", "--config.data.data_dir=/no/fashion-mnist"],
     "error: config.data.data_dir='/no/fashion-mnist': has no train-images-idx3-ubyte or train-images-idx3-ubyte.gz "
     "(the fashion_mnist IDX file of the train images); or set data.source='tfds'"),
    (["--config.data.name=synthetic_clusters", "--config.data.synthetic.num_examples=30"],
     "error: config.data.validation_fraction=0.05: leaves class 0 of data set 'synthetic_clusters' without training "
     "examples"),
])
def test_main_exits_2_with_one_line_and_writes_nothing(tmp_path, args, message):
  workdir = tmp_path / "run"
  result = run_main(f"--workdir={workdir}", *args)
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(message)
  assert "Traceback" not in result.stderr
  assert not workdir.exists()


INVALID_SST2 = [
    ({"student.init_from_teacher_layers": (0,)},
     "config.student.checkpoint='", "must be None when student.init_from_teacher_layers is set"),
    ({"student.checkpoint": None, "student.init_from_teacher_layers": (0, 2)},
     "config.student.init_from_teacher_layers=(0, 2): teacher layer indices must be < 2, the depth of "
     "teacher.checkpoint=", ""),
    ({"student.checkpoint": None, "student.init_from_teacher_layers": (1, 0)},
     "config.student.init_from_teacher_layers=(1, 0): must be a non-empty, strictly increasing tuple", ""),
    ({"student.checkpoint": None, "student.init_from_teacher_layers": (0, 0)},
     "config.student.init_from_teacher_layers=(0, 0): must be a non-empty, strictly increasing tuple", ""),
    ({"student.checkpoint": None, "student.init_from_teacher_layers": (0,), "student.task": "seq2seq"},
     "config.student.task='seq2seq': must be the teacher's ('sequence_classification')", ""),
    ({"student.lora.rank": 33},
     "config.student.lora.rank=33: must be <= 32, the smallest width (min of inputs and outputs) of the targeted "
     "layers", ""),
    ({"student.lora.rank": 4, "student.lora.target_modules": ("query",)},
     "config.student.lora.target_modules=('query',): matches no linear layer of the student", ""),
    ({"student.lora.rank": 4, "student.lora.dropout": 1.0},
     "config.student.lora.dropout=1.0: must be in [0.0, 1.0)", ""),
    ({"student.lora.rank": 4, "student.lora.alpha": 0.0}, "config.student.lora.alpha=0.0: must be > 0", ""),
    ({"student.hf_dropout": 1.0}, "config.student.hf_dropout=1.0: must be in [0.0, 1.0) or None", ""),
    ({"mesh.data": 1, "mesh.tensor": 8}, "config.mesh.tensor=8: must divide the 4 attention heads of "
     "teacher.checkpoint=", ""),
    ({"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}, "config.mesh.tensor=2: must be 1 when data and fsdp both "
     "exceed 1 (the mesh is data 2 x fsdp 2 x tensor 2)", ""),
    ({"mesh.data": 1, "mesh.fsdp": 8, "sweep.mode": "vectorized"}, "config.sweep.mode='vectorized': 'vectorized' "
     "keeps parameters replicated: it needs mesh.fsdp = mesh.tensor = 1", ""),
]


@pytest.mark.parametrize("overrides, message, rest", with_device_marks(INVALID_SST2, lambda case: case[1],
                                                                      [str(case[0]) for case in INVALID_SST2]))
def test_invalid_student_settings_on_sst2_are_one_line(overrides, message, rest):
  """On configs/sst2.py:smoke (fixture RoBERTa teacher: 2 layers, DistilBERT student: 32 wide)."""
  config = load_config("configs/sst2.py", "smoke")
  for path, value in overrides.items():
    section, key = path.rsplit(".", 1)
    target = config
    for part in section.split("."):
      target = target[part]
    target[key] = value
  with pytest.raises(ConfigError) as error:
    preflight.check(config)
  assert str(error.value).startswith(message) and rest in str(error.value)
  assert "\n" not in str(error.value)


def test_main_rejects_invalid_configs_with_exit_2_one_line_and_empty_workdir(tmp_path):
  """Every case of the validation table, through the command line (in-process, on the session's 1 device)."""
  # The rules about the multidevice session's 8 devices don't apply on 1 device; where they do, as "(1)".
  cases = [(field, value, message) for field, value, message in INVALID
           if field != "train.num_devices" and ("(8)" not in message or value == 0) and "8 devices" not in message]
  cases = [(field, value, message.replace("(8)", "(1)")) for field, value, message in cases]
  assert len(cases) >= 15
  failures = []
  for case_number, (field, value, message) in enumerate(cases):
    workdir = tmp_path / f"run{case_number}"
    result = run_main("--config=configs/default.py:smoke", f"--workdir={workdir}", f"--config.{field}={value}")
    lines = result.stderr.strip().splitlines()
    if result.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: " + message) or workdir.exists():
      failures.append(f"{field}={value}: exit {result.returncode}, workdir exists: {workdir.exists()}, stderr: "
                      f"{lines[-3:]}")
  assert not failures, "\n".join(failures)
