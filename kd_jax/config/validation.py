"""Checks a config before anything runs or is written: one `ConfigError` naming the field, the value and what is
allowed.

The schema (every field a config may hold, and its type) is kd_jax/config/schema.py; a field it lacks is unknown.
"""

import os
import re

import jax
import ml_collections

from kd_jax import data, evaluation, files, models
from kd_jax.config import paths, schema
from kd_jax.data import causal_lm as causal_lm_data
from kd_jax.data import mnist
from kd_jax.data import text as text_data
from kd_jax.errors import ConfigError
from kd_jax.teachers import ensemble, teacher
from kd_jax.training import feature_losses, losses

DTYPES = ("float32", "bfloat16")
TEACHER_MODES = ("cached", "online")
STRATEGIES = ("token", "sequence")
TOPK_DTYPES = ("float16", "bfloat16", "float32")
SWEEP_MODES = ("sequential", "vectorized")
SELECTS = ("last", "best_validation")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first invalid field of `config`."""
  reference = schema.default_config()
  check_fields(config, reference)
  check_values(config)
  check_sweep(config, reference)


def num_data_devices(config: ml_collections.ConfigDict) -> int:
  """Size of the data-parallel mesh: `train.num_devices` local devices, or every device of every process."""
  return config.train.num_devices or jax.device_count()


def _declared_type(section: ml_collections.ConfigDict, key: str):
  """The type a schema field holds (placeholders declare it without a value); None if it is untyped."""
  reference = section.get_ref(key)
  declared = reference.get_type() if reference is not None else None
  if declared is None:
    value = section[key]
    declared = None if value is None else type(value)
  return declared


def check_fields(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict, prefix: str = "") -> None:
  """Every field of `config` exists in `reference` with a compatible type, and none is missing."""
  for key in config.keys():
    field = prefix + key
    if key not in reference:
      known = ", ".join(sorted(reference.keys()))
      section = f" of config.{prefix[:-1]}" if prefix else ""
      raise ConfigError(field, config[key], f"unknown field; known fields{section}: {known}")
    value, expected = config[key], reference[key]
    if isinstance(expected, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(field, value, "must be a section (ConfigDict)")
      check_fields(value, expected, field + ".")
      continue
    check_type(field, value, reference, key)
  for key in reference.keys():
    if key not in config:
      raise ConfigError(prefix + key, None, "missing field (see kd_jax/config/schema.py)")


def check_type(field: str, value, reference: ml_collections.ConfigDict, key: str) -> None:
  """`value` fits the type of schema field `reference[key]` (named `field`): ints pass for floats, lists for tuples."""
  declared = _declared_type(reference, key)
  if value is None:
    if reference[key] is not None and field not in schema.NULLABLE_FIELDS:
      raise ConfigError(field, value, f"must be a {declared.__name__}, not None")
    return
  if declared is None or isinstance(value, declared):
    return
  if declared is float and isinstance(value, int) and not isinstance(value, bool):
    return
  if declared in (tuple, list) and isinstance(value, (tuple, list)):
    return
  raise ConfigError(field, value, f"must be of type {declared.__name__}")


def _require(condition: bool, field: str, value, allowed: str) -> None:
  if not condition:
    raise ConfigError(field, value, allowed)


def _check_in_range(config, field: str, low: float, high: float, *, low_open: bool, high_open: bool) -> None:
  value = paths.get(config, field)
  above = value > low if low_open else value >= low
  below = value < high if high_open else value <= high
  interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
  _require(above and below, field, value, f"must be in {interval}")


def _check_positive(config, field: str) -> None:
  _require(paths.get(config, field) > 0, field, paths.get(config, field), "must be > 0")


def _check_model(config, section: str) -> None:
  model_config = config[section]
  _require(model_config.name in models.names(), f"{section}.name", model_config.name,
           f"allowed: {', '.join(models.names())}")
  for dtype_field in ("dtype", "param_dtype"):
    _require(model_config[dtype_field] in DTYPES, f"{section}.{dtype_field}", model_config[dtype_field],
             f"allowed: {', '.join(DTYPES)}")
  if model_config.name in ("mlp", "cnn"):
    _require(all(isinstance(w, int) and w > 0 for w in model_config.hidden_sizes), f"{section}.hidden_sizes",
             tuple(model_config.hidden_sizes), "must be positive integers")
    _check_in_range(config, f"{section}.dropout_rate", 0.0, 1.0, low_open=False, high_open=True)
    if model_config.name == "cnn":
      _check_cnn(config, section)
  elif section == "teacher" or model_config.init_from_teacher_layers is None:
    _require(bool(model_config.checkpoint), f"{section}.checkpoint", model_config.checkpoint,
             f"required for {section}.name={model_config.name!r}: a hub id or a local checkpoint directory")


def _check_teacher(config) -> None:
  """config.teacher's model, init, epochs and optimizer."""
  _check_model(config, "teacher")
  init = config.teacher.init
  _require(init in ("train", "pretrained") or os.path.isdir(os.path.join(init, "checkpoints")), "teacher.init", init,
           "must be 'train' or an existing teacher directory with checkpoints/ (an earlier run's <workdir>/teacher), "
           "or 'pretrained' (an HF checkpoint's own weights)")
  _require(init != "pretrained" or config.teacher.name == "hf", "teacher.init", init,
           "'pretrained' needs teacher.name='hf' (the weights of teacher.checkpoint)")
  _check_positive(config, "teacher.num_epochs")
  _check_optim(config, "teacher.optim")


def _check_cnn(config, section: str) -> None:
  """A CNN reads images, and its blocks fit them: each 2x2 max-pool halves the side (rounded down) and needs it >= 2."""
  model_config = config[section]
  _require(config.data.name in data.IMAGE_TASKS, f"{section}.name", model_config.name,
           f"needs an image data set ({', '.join(data.IMAGE_TASKS)}), not data.name={config.data.name!r}")
  features = tuple(model_config.conv_features)
  _require(len(features) > 0 and all(isinstance(f, int) and f > 0 for f in features), f"{section}.conv_features",
           features, "must be one or more positive integers (the output channels of each conv block)")
  side, max_blocks = mnist.IMAGE_SHAPE[0], 0
  while side >= 2:
    side, max_blocks = side // 2, max_blocks + 1
  _require(len(features) <= max_blocks, f"{section}.conv_features", features,
           f"at most {max_blocks} conv blocks on {mnist.IMAGE_SHAPE[0]}x{mnist.IMAGE_SHAPE[1]} images (each block's "
           "2x2 max-pool halves the side)")
  kernel_size = model_config.kernel_size
  _require(kernel_size > 0 and kernel_size % 2 == 1, f"{section}.kernel_size", kernel_size,
           "must be a positive odd integer (SAME padding centers an odd kernel)")
  groups = model_config.norm_groups
  _require(groups >= 0 and all(f % groups == 0 for f in features if groups), f"{section}.norm_groups", groups,
           f"must be 0 (no normalization) or a number of groups dividing every conv width {features}")


def _check_image_task(config: ml_collections.ConfigDict) -> None:
  """The image tasks' source (their IDX files present) and models."""
  data_config = config.data
  if data_config.name not in data.IMAGE_TASKS:
    return
  _require(data_config.source in mnist.SOURCES, "data.source", data_config.source,
           f"allowed for data.name={data_config.name!r}: files (its IDX files in data.data_dir), tfds")
  if data_config.source == "files":
    mnist.idx_paths(data_config)
  for section in ("teacher", "student"):
    _require(config[section].name in ("mlp", "cnn"), f"{section}.name", config[section].name,
             f"data.name={data_config.name!r} is images: it needs 'mlp' or 'cnn' models")


def _check_student_parameters(config) -> None:
  """student.init_from_teacher_layers, student.trainable and student.lora; the layer indices and the LoRA rank
  against the shapes of the checkpoint they apply to (its config.json, read without loading weights)."""
  student, teacher = config.student, config.teacher
  layers = student.init_from_teacher_layers
  abstract = None
  if layers is not None:
    field = "student.init_from_teacher_layers"
    _require(student.checkpoint is None, "student.checkpoint", student.checkpoint,
             f"must be None when {field} is set (the student is built from the teacher's layers)")
    _require(teacher.name == "hf" and student.name == "hf", field, tuple(layers),
             f"needs HF models (teacher.name='hf', student.name='hf'), not {teacher.name!r} and {student.name!r}")
    _require(student.task == teacher.task, "student.task", student.task,
             f"must be the teacher's ({teacher.task!r}) when {field} is set (the student has its architecture)")
    _require(len(layers) > 0 and all(isinstance(i, int) and i >= 0 for i in layers)
             and all(a < b for a, b in zip(layers, layers[1:])), field, tuple(layers),
             "must be a non-empty, strictly increasing tuple of teacher layer indices >= 0")
    from kd_jax.models.hf import from_teacher, pretrained  # pylint: disable=g-import-not-at-top  (jax, transformers)
    abstract = pretrained.abstract_params(teacher.checkpoint, teacher.task or "sequence_classification")
    depth = min(from_teacher.stack_depths(abstract).values())
    _require(max(layers) < depth, field, tuple(layers),
             f"teacher layer indices must be < {depth}, the depth of teacher.checkpoint={teacher.checkpoint!r}")
  patterns = student.trainable
  if patterns is not None:
    for pattern in patterns:
      try:
        re.compile(pattern)
      except (re.error, TypeError) as error:
        raise ConfigError("student.trainable", tuple(patterns), f"{pattern!r} is not a regular expression ({error})")
    _require(len(patterns) > 0 or student.lora.rank > 0, "student.trainable", tuple(patterns),
             "freezes every parameter: give at least one pattern (or None to train all)")
  lora = student.lora
  _require(isinstance(lora.rank, int) and lora.rank >= 0, "student.lora.rank", lora.rank, "must be an integer >= 0")
  if not lora.rank:
    return
  _require(student.name == "hf", "student.lora.rank", lora.rank,
           f"LoRA needs an HF student (student.name='hf'), not {student.name!r}")
  _check_positive(config, "student.lora.alpha")
  _check_in_range(config, "student.lora.dropout", 0.0, 1.0, low_open=False, high_open=True)
  targets = lora.target_modules
  _require(targets is None or (len(targets) > 0 and all(isinstance(t, str) and t for t in targets)),
           "student.lora.target_modules", targets, "must be None or a non-empty tuple of layer names")
  from kd_jax.models import peft  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import pretrained  # pylint: disable=g-import-not-at-top
  if abstract is None:
    abstract = pretrained.abstract_params(student.checkpoint, student.task or "sequence_classification")
  peft.check_rank(lora, abstract)


def _check_optim(config, section: str) -> None:
  _check_positive(config, f"{section}.learning_rate")
  _require(paths.get(config, f"{section}.weight_decay") >= 0, f"{section}.weight_decay",
           paths.get(config, f"{section}.weight_decay"), "must be >= 0")
  _check_in_range(config, f"{section}.warmup_ratio", 0.0, 1.0, low_open=False, high_open=True)
  clip = paths.get(config, f"{section}.grad_clip_norm")
  _require(clip is None or clip > 0, f"{section}.grad_clip_norm", clip, "must be > 0 or None")
  moment_dtype = paths.get(config, f"{section}.moment_dtype")
  _require(moment_dtype in DTYPES, f"{section}.moment_dtype", moment_dtype, f"allowed: {', '.join(DTYPES)}")


def check_values(config: ml_collections.ConfigDict) -> None:
  """Value ranges, names and cross-field rules."""
  num_local = config.train.num_devices
  _require(num_local is None or 0 < num_local <= jax.local_device_count(), "train.num_devices", num_local,
           f"must be None (all devices) or between 1 and the {jax.local_device_count()} local devices")
  _require(num_local is None or jax.process_count() == 1, "train.num_devices", num_local,
           f"must be None in a run of {jax.process_count()} processes (the mesh spans every process's devices)")
  num_devices = num_data_devices(config)
  _check_mesh(config, num_devices)
  for field in ("seed", "data.split_seed", "teacher.seed"):
    _require(paths.get(config, field) >= 0, field, paths.get(config, field), "must be >= 0")

  _require(config.data.name in data.names(), "data.name", config.data.name, f"allowed: {', '.join(data.names())}")
  _check_image_task(config)
  _check_in_range(config, "data.test_fraction", 0.0, 1.0, low_open=True, high_open=True)
  _check_in_range(config, "data.validation_fraction", 0.0, 0.5, low_open=True, high_open=False)
  for field in ("data.train_fraction", "data.labeled_fraction"):
    _check_in_range(config, field, 0.0, 1.0, low_open=True, high_open=False)
  for field in ("data.batch_size", "data.eval_batch_size"):
    value = paths.get(config, field)
    _require(value > 0 and value % num_devices == 0, field, value,
             f"must be a positive multiple of the device count ({num_devices})")
  for field in ("data.synthetic.num_examples", "data.synthetic.num_features", "data.synthetic.num_classes",
                "data.synthetic.cluster_std"):
    _check_positive(config, field)

  _check_teacher(config)
  _check_model(config, "student")
  _check_student_parameters(config)

  distill = config.distill
  _require(distill.teacher_mode in TEACHER_MODES, "distill.teacher_mode", distill.teacher_mode,
           f"allowed: {', '.join(TEACHER_MODES)}")
  _check_positive(config, "distill.temperature")
  explicit = (distill.ce_weight, distill.kd_weight)
  if distill.alpha is not None:
    _require(explicit == (None, None), "distill.ce_weight", distill.ce_weight,
             "must be None when distill.alpha is set (use either alpha, or ce_weight and kd_weight with alpha=None)")
    _check_in_range(config, "distill.alpha", 0.0, 1.0, low_open=False, high_open=False)
  else:
    for field in ("distill.ce_weight", "distill.kd_weight"):
      value = paths.get(config, field)
      _require(value is not None and value >= 0, field, value,
               "must be a number >= 0 when distill.alpha is None (the explicit form needs both weights)")
  _check_in_range(config, "distill.label_smoothing", 0.0, 1.0, low_open=False, high_open=True)
  _require(distill.divergence in losses.DIVERGENCES, "distill.divergence", distill.divergence,
           f"allowed: {', '.join(losses.DIVERGENCES)}")
  for field in ("distill.beta", "distill.skew"):
    _check_in_range(config, field, 0.0, 1.0, low_open=False, high_open=False)
  _check_in_range(config, "distill.akl_mu", 0.0, 1.0, low_open=True, high_open=False)
  _check_schedule(config)
  _require(distill.input_noise_std >= 0, "distill.input_noise_std", distill.input_noise_std, "must be >= 0")
  _require(distill.input_noise_std == 0 or distill.teacher_mode == "online", "distill.input_noise_std",
           distill.input_noise_std,
           "needs distill.teacher_mode='online' (cached teacher logits were computed on clean inputs)")

  _check_features(config)
  _check_text_and_seq2seq(config)
  _check_ensemble(config)

  _check_optim(config, "optim")
  _check_positive(config, "train.num_epochs")
  _require(config.train.num_steps is None or config.train.num_steps > 0, "train.num_steps", config.train.num_steps,
           "must be > 0 or None")
  for field in ("train.eval_every_steps", "train.checkpoint_every_steps", "train.log_every_steps",
                "train.max_checkpoints_to_keep", "train.steps_per_dispatch"):
    _check_positive(config, field)
  _require(config.train.device_data_max_mib >= 0, "train.device_data_max_mib", config.train.device_data_max_mib,
           "must be >= 0")
  _check_memory_savers(config, num_devices)
  _check_selection(config)


def _check_memory_savers(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """train.microbatches divides each device's rows of a batch; train.remat is known, on a model with blocks."""
  microbatches, rows = config.train.microbatches, config.data.batch_size // num_devices
  _require(microbatches >= 1 and rows % microbatches == 0, "train.microbatches", microbatches,
           f"must be >= 1 and divide each device's rows of a batch (data.batch_size {config.data.batch_size} / "
           f"{num_devices} devices = {rows})")
  remat, options = config.train.remat, models.remat_options()
  _require(remat in options, "train.remat", remat, f"allowed: {', '.join(options)}")
  _require(remat == "none" or config.student.name == "hf", "train.remat", remat,
           f"needs transformer blocks (student.name='hf'); the {config.student.name} student has none: use 'none'")


def _check_mesh(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """config.mesh: axis sizes (one may be -1) whose product is the device count, a tensor size dividing the HF models'
  attention heads, rules naming known axes; vectorized sweeps keep their parameters replicated."""
  from kd_jax.parallel import sharding  # pylint: disable=g-import-not-at-top
  sizes = {axis: config.mesh[axis] for axis in sharding.MESH_AXES}
  for axis, size in sizes.items():
    _require(isinstance(size, int) and (size >= 1 or size == -1), f"mesh.{axis}", size,
             "must be an integer >= 1, or -1 (the devices the other axes leave)")
  filled = [axis for axis, size in sizes.items() if size == -1]
  _require(len(filled) <= 1, f"mesh.{filled[-1] if filled else 'data'}", -1,
           f"only one mesh axis may be -1 (here {', '.join(filled)})")
  fixed = 1
  for size in sizes.values():
    fixed *= size if size != -1 else 1
  shape = " x ".join(f"{axis} {size}" for axis, size in sizes.items())
  _require(num_devices % fixed == 0 if filled else fixed == num_devices, f"mesh.{filled[0] if filled else 'data'}",
           sizes[filled[0]] if filled else sizes["data"],
           f"the mesh ({shape}) must multiply to the {num_devices} devices of the run")
  resolved = sharding.mesh_shape(sizes, num_devices)
  tensor = resolved["tensor"]
  _require(min(resolved.values()) == 1, "mesh.tensor", config.mesh.tensor,
           f"must be 1 when data and fsdp both exceed 1 (the mesh is {shape}): XLA (jax 0.10) aborts compiling the "
           "step of a model with embeddings on a mesh whose three axes all exceed 1; use two of them")
  if tensor > 1:
    from kd_jax.models.hf import pretrained  # pylint: disable=g-import-not-at-top  (transformers)
    for section in ("teacher", "student"):
      checkpoint = config[section].checkpoint or (config.teacher.checkpoint if section == "student" else None)
      if config[section].name == "hf" and checkpoint:
        heads = pretrained.num_attention_heads(checkpoint)
        _require(heads % tensor == 0, "mesh.tensor", config.mesh.tensor,
                 f"must divide the {heads} attention heads of {section}.checkpoint={checkpoint!r}")
  for rule in config.mesh.rules:
    _require(_is_pairs((rule,)) and isinstance(rule[0], str) and isinstance(rule[1], (tuple, list)), "mesh.rules",
             rule, "each rule is (regular expression, tuple of mesh axes per dimension)")
    try:
      re.compile(rule[0])
    except re.error as error:
      raise ConfigError("mesh.rules", rule, f"{rule[0]!r} is not a regular expression ({error})") from None
    for axis in rule[1]:
      _require(axis is None or axis in sharding.PARAM_AXES, "mesh.rules", rule,
               f"unknown mesh axis {axis!r}; a rule places dimensions on {', '.join(sharding.PARAM_AXES)} or None")
  _require(config.sweep.mode != "vectorized" or resolved["fsdp"] * tensor == 1, "sweep.mode", config.sweep.mode,
           f"'vectorized' keeps parameters replicated: it needs mesh.fsdp = mesh.tensor = 1 (the mesh is {shape})")


def _check_schedule(config: ml_collections.ConfigDict) -> None:
  """distill.schedule and the ends it moves towards: each in its start's range and of the start's form."""
  distill = config.distill
  _require(distill.schedule in losses.SCHEDULES, "distill.schedule", distill.schedule,
           f"allowed: {', '.join(losses.SCHEDULES)}")
  ends = ("distill.temperature_end", "distill.alpha_end", "distill.ce_weight_end", "distill.kd_weight_end")
  if distill.schedule == "constant":
    for field in ends:
      value = paths.get(config, field)
      _require(value is None, field, value, "needs distill.schedule='linear' or 'cosine' (the schedule is constant)")
    return
  _require(any(paths.get(config, field) is not None for field in ends), "distill.schedule", distill.schedule,
           f"needs an end to move to: set one of {', '.join(ends)}")
  if distill.temperature_end is not None:
    _check_positive(config, "distill.temperature_end")
  if distill.alpha is not None:
    for field in ("distill.ce_weight_end", "distill.kd_weight_end"):
      value = paths.get(config, field)
      _require(value is None, field, value, "must be None in the Hinton form (alpha set): schedule alpha_end instead")
    if distill.alpha_end is not None:
      _check_in_range(config, "distill.alpha_end", 0.0, 1.0, low_open=False, high_open=False)
  else:
    _require(distill.alpha_end is None, "distill.alpha_end", distill.alpha_end,
             "must be None in the explicit form (alpha=None): schedule ce_weight_end / kd_weight_end instead")
    for field in ("distill.ce_weight_end", "distill.kd_weight_end"):
      value = paths.get(config, field)
      _require(value is None or value >= 0, field, value, "must be >= 0 or None")


def _check_ensemble(config: ml_collections.ConfigDict) -> None:
  """config.ensemble (kd_jax/teachers/ensemble.py): its size, each member's changes to config.teacher and the member
  they make (a valid teacher, distinct from the others, of this run's label space), and the tasks and divergences an
  ensemble supports."""
  size, members = config.ensemble.size, tuple(config.ensemble.members)
  _require(size >= 1, "ensemble.size", size, "must be >= 1 (1: a single teacher)")
  _require(len(members) in (0, size), "ensemble.members", members,
           f"must be () or hold one entry per member (ensemble.size={size}), not {len(members)}")
  teacher_reference = schema.default_config().teacher
  for m, changes in enumerate(members):
    _require(_is_pairs(changes), f"ensemble.members[{m}]", changes,
             "must be a tuple of (config.teacher field, value) pairs, e.g. (('seed', 1), ('hidden_sizes', (512,)))")
    for field, value in changes:
      _require(field in schema.ENSEMBLE_MEMBER_FIELDS, f"ensemble.members[{m}]", field,
               f"a member may set these config.teacher fields: {', '.join(schema.ENSEMBLE_MEMBER_FIELDS)}")
      *sections, key = field.split(".")
      section = teacher_reference
      for name in sections:
        section = section[name]
      check_type(f"ensemble.members[{m}].{field}", value, section, key)
  if size == 1:
    return
  _require(config.data.name not in data.SEQ2SEQ_TASKS, "ensemble.size", size,
           f"needs a classification data set; data.name={config.data.name!r} is seq2seq (its teachers generate and "
           "are cached as top-k, one model at a time)")
  _require(config.data.name not in data.CAUSAL_LM_TASKS, "ensemble.size", size,
           f"needs a classification data set; data.name={config.data.name!r} is a causal LM (its teachers are cached "
           "as top-k, one model at a time)")
  _require(config.distill.divergence != "mse", "distill.divergence", config.distill.divergence,
           f"ensemble.size={size} distills the members' averaged probabilities; 'mse' compares logits: use "
           f"{', '.join(kind for kind in losses.DIVERGENCES if kind != 'mse')}")
  identities = {}
  for m, member in enumerate(ensemble.member_configs(config)):
    try:
      _check_teacher(member)
    except ConfigError as error:
      raise ConfigError(f"ensemble.members[{m}].{error.field.removeprefix('teacher.')}", error.value,
                        error.allowed) from None
    key = teacher.identity_key(member)
    _require(key not in identities, "ensemble.members" if members else "ensemble.size", members or size,
             f"members {identities.get(key)} and {m} are the same teacher; vary their seed, init or widths")
    identities[key] = m
    _check_label_space(config, member, m)
  pretrained = [member for member in ensemble.member_configs(config) if member.teacher.init == "pretrained"]
  _require(len(pretrained) <= 1, "ensemble.members" if members else "ensemble.size", members or size,
           f"{len(pretrained)} members are teacher.checkpoint as it is (init='pretrained'), the same weights; give "
           "the others teacher directories (('init', <dir>),) in ensemble.members")


def _check_label_space(config, member, m: int) -> None:
  """A member restored from a teacher directory (init=<dir>) was trained on this run's label space: its recorded
  teacher.json names the same data set (and number of synthetic classes)."""
  record_path = os.path.join(member.teacher.init, "teacher.json")
  if member.teacher.init in ("train", "pretrained") or not os.path.exists(record_path):
    return
  recorded = files.read_json(record_path)
  space = lambda flat: (flat.get("data.name"), flat.get("data.synthetic.num_classes")
                        if str(flat.get("data.name")).startswith("synthetic") else None)
  ours = space(paths.flatten(files.as_json_value({"data": config.data.to_dict()})))
  _require(space(recorded) == ours, f"ensemble.members[{m}].init", member.teacher.init,
           f"a teacher of data.name={recorded.get('data.name')!r}, whose classes are not this run's "
           f"(data.name={config.data.name!r}); an ensemble averages probabilities over one label space")


def _check_selection(config: ml_collections.ConfigDict) -> None:
  """train.select and the selection metric: a metric the task's evaluator computes, evaluated during training."""
  train = config.train
  _require(train.select in SELECTS, "train.select", train.select, f"allowed: {', '.join(SELECTS)}")
  task_metrics = evaluation.metrics_of(config.data.name)
  metric = config.sweep.selection_metric
  _require(metric in task_metrics, "sweep.selection_metric", metric,
           f"not computed for data.name={config.data.name!r}; allowed: {', '.join(task_metrics)}")
  _require(train.select != "best_validation" or train.num_steps is None or train.eval_every_steps < train.num_steps,
           "train.select", train.select,
           f"needs evaluation during training: train.eval_every_steps={train.eval_every_steps} evaluates only at the "
           f"end of train.num_steps={train.num_steps}; lower eval_every_steps or use 'last'")


def _check_features(config: ml_collections.ConfigDict) -> None:
  """Feature distillation: the layer map, its distance and weights, and what it needs (the teacher in the step,
  classification models, attention for attention transfer). The map is checked against the models' depths where
  they are known without loading a model (MLPs, local HF checkpoints); otherwise when the student phase starts."""
  distill = config.distill
  _require(distill.feature_loss in feature_losses.FEATURE_LOSSES, "distill.feature_loss", distill.feature_loss,
           f"allowed: {', '.join(feature_losses.FEATURE_LOSSES)}")
  for field in ("distill.feature_weight", "distill.attention_weight"):
    _require(paths.get(config, field) >= 0, field, paths.get(config, field), "must be >= 0")
  if distill.features is None:
    _require(distill.attention_weight == 0, "distill.attention_weight", distill.attention_weight,
             "needs distill.features (the mapped layers whose attention is matched)")
    return
  feature_losses.check_layer_map(distill.features)
  _require(distill.teacher_mode == "online", "distill.features", distill.features,
           "needs distill.teacher_mode='online' (the teacher's hidden states are computed in the step; a logit cache "
           "holds none)")
  _require(config.data.name not in data.SEQ2SEQ_TASKS, "distill.features", distill.features,
           f"is not supported for seq2seq data sets ({', '.join(data.SEQ2SEQ_TASKS)}) yet: the T5 models do not "
           "return their hidden states")
  _require(config.data.name not in data.CAUSAL_LM_TASKS, "distill.features", distill.features,
           "is not supported for causal-LM data sets yet: the decoder-only models do not return their hidden states")
  _require(config.ensemble.size == 1, "distill.features", distill.features,
           f"needs a single teacher (ensemble.size={config.ensemble.size}): whose hidden states would it match?")
  for section in ("teacher", "student"):
    _require(config[section].name in ("mlp", "hf"), "distill.features", distill.features,
             f"needs MLP or HF models (they return their hidden states); {section}.name={config[section].name!r}")
    _require(distill.attention_weight == 0 or config[section].name == "hf", "distill.attention_weight",
             distill.attention_weight, f"needs transformer models: {section}.name={config[section].name!r} has no "
             "attention")
  depths = (_num_layers(config.teacher), _num_layers(config.student))
  if None not in depths:
    feature_losses.resolve_layer_map(distill.features, *depths)


def _num_layers(model_config) -> int | None:
  """The number of (hidden) layers of a teacher or student, where known from the config or a local checkpoint's
  config.json; None for hub ids (known once the model is loaded)."""
  if model_config.name == "mlp":
    return len(model_config.hidden_sizes)
  if model_config.get("init_from_teacher_layers") is not None:  # a student built from the teacher's layers
    return len(model_config.init_from_teacher_layers)
  path = os.path.join(model_config.checkpoint or "", "config.json")
  if not os.path.isfile(path):
    return None
  hf_config = files.read_json(path)
  return next((hf_config[key] for key in ("num_hidden_layers", "n_layers", "num_layers") if key in hf_config), None)


def _check_text_and_seq2seq(config: ml_collections.ConfigDict) -> None:
  """The text tasks' data source and models, and the seq2seq distillation and generation settings."""
  data_config, distill, generation = config.data, config.distill, config.generation
  seq2seq = data_config.name in data.SEQ2SEQ_TASKS
  causal_lm = data_config.name in data.CAUSAL_LM_TASKS
  generative = data.SEQ2SEQ_TASKS + data.CAUSAL_LM_TASKS
  _require(distill.strategy in STRATEGIES, "distill.strategy", distill.strategy, f"allowed: {', '.join(STRATEGIES)}")
  _require(distill.strategy == "token" or seq2seq or causal_lm, "distill.strategy", distill.strategy,
           f"'sequence' needs a seq2seq or causal-LM data set ({', '.join(generative)})")
  # The top-k and generation caches and the generation evaluation are computed on one process's devices.
  _require(not (seq2seq or causal_lm) or jax.process_count() == 1, "data.name", data_config.name,
           f"seq2seq and causal-LM tasks run in a single process (this job has {jax.process_count()}); use one "
           "host's devices")
  _check_causal_lm(config)
  _check_positive(config, "distill.topk")
  _require(distill.topk_dtype in TOPK_DTYPES, "distill.topk_dtype", distill.topk_dtype,
           f"allowed: {', '.join(TOPK_DTYPES)}")
  temperatures = tuple(generation.temperatures)
  _require(len(temperatures) > 0 and all(t >= 0 for t in temperatures), "generation.temperatures", temperatures,
           "must be a non-empty tuple of temperatures >= 0 (0 = greedy)")
  _require(generation.top_k is None or generation.top_k > 0, "generation.top_k", generation.top_k,
           "must be > 0 or None")
  _require(generation.top_p is None or 0 < generation.top_p <= 1, "generation.top_p", generation.top_p,
           "must be in (0, 1] or None")
  if data_config.name not in data.TEXT_TASKS:
    return
  sources = text_data.SOURCES + ((causal_lm_data.PYDOC_SOURCE,) if causal_lm else ())
  _require(data_config.source in sources, "data.source", data_config.source, f"allowed: {', '.join(sources)}")
  _require(bool(data_config.path) or data_config.source == causal_lm_data.PYDOC_SOURCE, "data.path", data_config.path,
           f"required for data.name={data_config.name!r}: a hub dataset id, TFDS name or local directory "
           "(see data.source)")
  for field in ("data.max_length", "data.max_target_length"):
    _check_positive(config, field)
  _require(data_config.max_eval_examples is None or data_config.max_eval_examples > 0, "data.max_eval_examples",
           data_config.max_eval_examples, "must be > 0 or None")
  _require(distill.input_noise_std == 0, "distill.input_noise_std", distill.input_noise_std,
           f"must be 0 for data.name={data_config.name!r}: its inputs are token ids")
  model_task = "seq2seq" if seq2seq else "causal_lm" if causal_lm else "sequence_classification"
  # None means sequence_classification
  allowed_tasks = (model_task,) if seq2seq or causal_lm else (model_task, None)
  for section in ("teacher", "student"):
    model_config = config[section]
    _require(model_config.name == "hf", f"{section}.name", model_config.name,
             f"data.name={data_config.name!r} is text: it needs 'hf' models (their tokenizers tokenize it)")
    _require(model_config.task in allowed_tasks, f"{section}.task", model_config.task,
             f"must be {model_task!r} for data.name={data_config.name!r}")
  if seq2seq or causal_lm:
    _require(data_config.labeled_fraction == 1.0, "data.labeled_fraction", data_config.labeled_fraction,
             "must be 1.0 for seq2seq and causal-LM data sets (an example without its target has nothing to "
             "teacher-force)")


def _check_causal_lm(config: ml_collections.ConfigDict) -> None:
  """The causal-LM data fields, packing, and on-policy distillation (GKD) and what it needs."""
  data_config, distill = config.data, config.distill
  causal_lm = data_config.name in data.CAUSAL_LM_TASKS
  _check_in_range(config, "distill.on_policy_fraction", 0.0, 1.0, low_open=False, high_open=False)
  _check_positive(config, "generation.train_temperature")
  if not causal_lm:
    for field, default in (("data.packing", False), ("distill.on_policy_fraction", 0.0)):
      value = paths.get(config, field)
      _require(value == default, field, value, f"needs data.name='causal_lm' (data.name={data_config.name!r})")
    return
  _require(bool(data_config.response_column), "data.response_column", data_config.response_column,
           "must name the column of the responses (or of the plain text, with data.prompt_column=None)")
  if data_config.packing:
    _require(data_config.validation_split is not None, "data.packing", data_config.packing,
             "needs data.validation_split (the validation examples are not packed rows)")
    _require(distill.strategy == "token" and distill.on_policy_fraction == 0, "data.packing", data_config.packing,
             "is not supported with distill.strategy='sequence' or on-policy distillation (they generate from each "
             "example's prompt; a packed row has none)")
  if distill.on_policy_fraction > 0:
    _require(distill.teacher_mode == "online", "distill.on_policy_fraction", distill.on_policy_fraction,
             "needs distill.teacher_mode='online' (the teacher scores the student's sampled responses in the step)")
    _require(distill.strategy == "token", "distill.on_policy_fraction", distill.on_policy_fraction,
             "needs distill.strategy='token'")
    _require(data_config.prompt_column is not None, "distill.on_policy_fraction", distill.on_policy_fraction,
             "needs prompts to sample responses to (data.prompt_column; plain text has none)")


def check_sweep(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict) -> None:
  """config.sweep: each swept path is a schema field with a non-empty tuple of values of its type, no field is swept
  twice, and the lists of a zipped group have equal lengths. The values' ranges are checked per point (sweep.py)."""
  sweep = config.sweep
  _require(isinstance(sweep.seeds, int) and sweep.seeds >= 1, "sweep.seeds", sweep.seeds, "must be an integer >= 1")
  _require(sweep.mode in SWEEP_MODES, "sweep.mode", sweep.mode, f"allowed: {', '.join(SWEEP_MODES)}")
  groups = [("sweep.grid", sweep.grid)] + [(f"sweep.zipped[{i}]", group) for i, group in enumerate(sweep.zipped)]
  swept = {}
  for where, pairs in groups:
    _require(_is_pairs(pairs) and (where == "sweep.grid" or len(pairs) > 0), where, pairs,
             "must be a tuple of (dotted field path, tuple of values) pairs" + (
                 "" if where == "sweep.grid" else ", at least one"))
    for path, values in pairs:
      _check_swept_field(path, values, reference, f"config.{where}")
      _require(path not in swept, path, values, f"is swept twice: in config.{swept.get(path)} and config.{where}")
      swept[path] = where
    if where != "sweep.grid":
      first_path, first_values = pairs[0]
      for path, values in pairs[1:]:
        _require(len(values) == len(first_values), path, values,
                 f"has {len(values)} values but {first_path} in the same group of config.{where} has "
                 f"{len(first_values)}; zipped lists advance together and need equal lengths")


def _is_pairs(pairs) -> bool:
  return isinstance(pairs, (tuple, list)) and all(isinstance(pair, (tuple, list)) and len(pair) == 2
                                                  for pair in pairs)


def _check_swept_field(path, values, reference: ml_collections.ConfigDict, where: str) -> None:
  """`path` names a field (not a section) of `reference`, and `values` is a non-empty tuple of values of its type."""
  _require(isinstance(path, str) and bool(path), where[len("config."):], path,
           "swept fields are given by dotted paths such as 'distill.temperature'")
  parts = path.split(".")
  parent, section = None, reference
  for depth, part in enumerate(parts):
    if not isinstance(section, ml_collections.ConfigDict) or part not in section:
      prefix = ".".join(parts[:depth])
      known = (f"known fields{' of config.' + prefix if prefix else ''}: {', '.join(sorted(section.keys()))}"
               if isinstance(section, ml_collections.ConfigDict) else f"config.{prefix} is a field, not a section")
      raise ConfigError(path, values, f"unknown field in {where}; {known}")
    parent, section = section, section[part]
  if isinstance(section, ml_collections.ConfigDict):
    raise ConfigError(path, values,
                      f"is a section, not a field; sweep one of its fields: {', '.join(sorted(section.keys()))}")
  _require(path != "seed", path, values, "is set by config.sweep.seeds (seeds 0, 1, ..., n-1): set that instead")
  _require(parts[0] != "sweep", path, values, "the sweep settings themselves cannot be swept")
  _require(isinstance(values, (tuple, list)) and len(values) > 0, path, values,
           f"needs a non-empty tuple of values in {where}")
  for position, value in enumerate(values):
    try:
      check_type(path, value, parent, parts[-1])
    except ConfigError as error:
      raise ConfigError(path, value, f"{error.allowed} (value {position} of its list in {where})") from None
