"""The rules between config fields: what the value of one field asks of others (the loss's two forms and their
schedules, what feature distillation, packing, on-policy distillation and ensembles need, which models and sources a
task takes). Each field's own values are the schema's (validation.validate runs first); what the environment must
hold is checked by the modules it concerns (kd_jax/preflight.py runs all three).
"""

import ml_collections

from kd_jax.config import paths, schema, validation
from kd_jax.errors import require

SCHEDULE_ENDS = ("distill.temperature_end", "distill.alpha_end", "distill.ce_weight_end", "distill.kd_weight_end")


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first rule a schema-valid `config` breaks."""
  filled = [axis for axis in schema.MESH_AXES if config.mesh[axis] == -1]
  require(len(filled) <= 1, f"mesh.{filled[-1] if filled else 'data'}", -1,
          f"only one mesh axis may be -1 (here {', '.join(filled)})")
  _check_image_task(config)
  _check_teacher_source(config)
  check_teacher(config)
  _check_model(config, "student")
  _check_student_parameters(config)
  _check_loss_weights(config)
  _check_schedule(config)
  distill = config.distill
  require(distill.input_noise_std == 0 or distill.teacher_mode == "online", "distill.input_noise_std",
          distill.input_noise_std, "needs distill.teacher_mode='online' (cached teacher logits were computed on clean "
          "inputs)")
  _check_features(config)
  _check_generative_tasks(config)
  _check_topk_tail(config)
  _check_text_task(config)
  _check_ensemble(config)
  _check_assistant(config)
  train = config.train
  require(train.remat == "none" or config.student.name == "hf", "train.remat", train.remat,
          f"needs transformer blocks (student.name='hf'); the {config.student.name} student has none: use 'none'")
  require(train.attention_chunk == 0 or (config.student.name == "hf" and config.student.task == "causal_lm"),
          "train.attention_chunk", train.attention_chunk, "needs a decoder-only HF student (student.name='hf', "
          f"student.task='causal_lm'); the student is {config.student.name!r} with task {config.student.task!r}: use 0")
  require(not train.scan_layers or (config.student.name == "hf" and config.student.task == "causal_lm"
                                    and not schema.uses_features(config.distill)), "train.scan_layers",
          train.scan_layers, f"{schema.SCAN_LAYERS_NEEDS}; the student is {config.student.name!r} with task "
          f"{config.student.task!r}{', with feature distillation' if schema.uses_features(config.distill) else ''}: "
          "use False")
  require(train.select != "best_validation" or train.num_steps is None or train.eval_every_steps < train.num_steps,
          "train.select", train.select,
          f"needs evaluation during training: train.eval_every_steps={train.eval_every_steps} evaluates only at the "
          f"end of train.num_steps={train.num_steps}; lower eval_every_steps or use 'last'")


def check_teacher(config: ml_collections.ConfigDict) -> None:
  """config.teacher's model and init (also each member of an ensemble: kd_jax/teachers/ensemble.py); a teacher from a
  logprobs file or a server has no model here."""
  if config.teacher.source != "model":
    return
  _check_model(config, "teacher")
  require(config.teacher.init != "pretrained" or config.teacher.name == "hf", "teacher.init", config.teacher.init,
          "'pretrained' needs teacher.name='hf' (the weights of teacher.checkpoint)")


def _check_assistant(config: ml_collections.ConfigDict) -> None:
  """A teacher assistant (teacher.assistant.name set) is a model distilled from one model teacher on a
  classification task of digits, synthetic or image data, by logits alone."""
  name = config.teacher.assistant.name
  if name is None:
    return
  field = "teacher.assistant.name"
  require(name != "hf", field, name, "allowed: 'mlp', 'cnn' or a user's model (an assistant distills classifiers of "
          "digits, synthetic or image data)")
  require(config.data.name not in schema.TEXT_TASKS, field, name,
          f"needs a classification task of digits, synthetic or image data, not data.name={config.data.name!r}")
  require(config.teacher.source == "model", field, name,
          f"needs a teacher model (teacher.source='model'), not teacher.source={config.teacher.source!r}")
  require(config.ensemble.size == 1, field, name,
          f"needs a single teacher (ensemble.size=1), not ensemble.size={config.ensemble.size}")
  require(not schema.uses_features(config.distill), field, name,
          "distills logits only: leave distill.features and distill.decoder_features None")
  _check_model(config, "teacher.assistant")


# The fields of each teacher source but 'model' (teacher.source), with their defaults.
SOURCE_FIELDS = {"logprobs_file": {"teacher.logprobs_path": None},
                 "server": {"teacher.server_url": None, "teacher.server_model": None, "teacher.top_logprobs": 20,
                            "teacher.server_concurrency": 4}}


def _check_teacher_source(config: ml_collections.ConfigDict) -> None:
  """A teacher from a logprobs file or a server: its own fields set (and no other source's), and a run that reads
  its signal from the teacher cache: a causal LM, token-level, cached, one teacher without a model here."""
  source = config.teacher.source
  for other, fields in SOURCE_FIELDS.items():
    for field, default in fields.items():
      value = paths.get(config, field)
      if other == source:
        require(value is not None, field, value, f"required with teacher.source={source!r}")
      else:
        require(value == default, field, value, f"applies to teacher.source={other!r} only (teacher.source="
                f"{source!r}); leave it {default!r}")
  if source == "model":
    return
  distill = config.distill
  for field, allowed, why in (
      ("data.name", "causal_lm", "its logprobs are of prompt/response pairs"),
      ("distill.teacher_mode", "cached", "the teacher has no model to run in the step: its signal is cached"),
      ("distill.strategy", "token", "it distills the teacher's distributions, not its generations"),
      ("ensemble.size", 1, "one teacher"),
      ("data.packing", False, "its rows are joined to single examples"),
      ("train.microbatches", 1, "its loss is normalized over the positions the teacher scored"),
      ("student.init_from_teacher_layers", None, "the teacher has no layers here")):
    require(paths.get(config, field) == allowed, "teacher.source", source, f"needs {field}={allowed!r} ({why})")
  require(config.data.prompt_column is not None, "teacher.source", source,
          "needs prompts (data.prompt_column): each line of its logprobs names the prompt and response it scores")
  # No model here: no teacher to compare the students with, and no teacher-side metrics during training.
  metric = config.sweep.selection_metric
  require(metric not in ("agreement", "kl_to_teacher"), "sweep.selection_metric", metric,
          f"compares with the teacher's model, which teacher.source={source!r} has not: use perplexity, "
          "bits_per_byte, nll, token_accuracy or a ROUGE")
  require(config.train.select == "last" or metric in ("perplexity", "bits_per_byte", "nll", "token_accuracy"),
          "train.select", config.train.select, f"with teacher.source={source!r} selects by a teacher-forced metric "
          f"(sweep.selection_metric={metric!r} is not one): perplexity, bits_per_byte, nll or token_accuracy")
  any_temperature = distill.cross_tokenizer == "none" and distill.topk_tail == "flat"
  require(any_temperature or (distill.temperature == 1 and distill.temperature_end in (None, 1)),
          "distill.temperature", distill.temperature,
          f"teacher.source={source!r} gives the teacher's log-probabilities at T = 1 only (the tail's mass at T = 1, "
          "not its logits): use distill.temperature=1, or distill.topk_tail='flat' (cross_tokenizer='none')")


def _check_image_task(config: ml_collections.ConfigDict) -> None:
  """The image tasks' sources and models."""
  data_config = config.data
  if data_config.name not in schema.IMAGE_TASKS:
    return
  require(data_config.source in schema.IMAGE_SOURCES, "data.source", data_config.source,
          f"allowed for data.name={data_config.name!r}: files (its IDX files in data.data_dir), tfds")
  for section in ("teacher", "student"):
    require(config[section].name in ("mlp", "cnn") or schema.is_user_model(config[section].name), f"{section}.name",
            config[section].name, f"data.name={data_config.name!r} is images: it needs 'mlp', 'cnn' or a user's "
            "model")


def _check_model(config: ml_collections.ConfigDict, section: str) -> None:
  """A CNN reads images and normalizes groups that divide its widths; an HF model names its checkpoint."""
  model_config = config[section]
  if model_config.name == "cnn":
    require(config.data.name in schema.IMAGE_TASKS, f"{section}.name", model_config.name,
            f"needs an image data set ({', '.join(schema.IMAGE_TASKS)}), not data.name={config.data.name!r}")
    features, groups = tuple(model_config.conv_features), model_config.norm_groups
    require(groups >= 0 and all(f % groups == 0 for f in features if groups), f"{section}.norm_groups", groups,
            f"must be 0 (no normalization) or a number of groups dividing every conv width {features}")
  elif model_config.name == "hf" and (section == "teacher" or model_config.init_from_teacher_layers is None):
    require(bool(model_config.checkpoint), f"{section}.checkpoint", model_config.checkpoint,
            f"required for {section}.name={model_config.name!r}: a hub id or a local checkpoint directory")
  require(model_config.get("hf_dropout") is None or model_config.name == "hf", f"{section}.hf_dropout",
          model_config.get("hf_dropout"), f"must be None for {section}.name={model_config.name!r}: it replaces a Hugging "
          f"Face checkpoint's dropout (an MLP's or CNN's is {section}.dropout_rate)")


def _check_student_parameters(config: ml_collections.ConfigDict) -> None:
  """A student built from the teacher's layers (HF models, the teacher's task), the freezing it leaves trainable, and
  LoRA (HF students)."""
  student, teacher = config.student, config.teacher
  field = "student.init_from_teacher_layers"
  if student.init_from_teacher_layers is not None:
    require(student.checkpoint is None, "student.checkpoint", student.checkpoint,
            f"must be None when {field} is set (the student is built from the teacher's layers)")
    require(teacher.name == "hf" and student.name == "hf", field, tuple(student.init_from_teacher_layers),
            f"needs HF models (teacher.name='hf', student.name='hf'), not {teacher.name!r} and {student.name!r}")
    require(student.task == teacher.task, "student.task", student.task,
            f"must be the teacher's ({teacher.task!r}) when {field} is set (the student has its architecture)")
  if student.trainable is not None:
    require(len(student.trainable) > 0 or student.lora.rank > 0, "student.trainable", tuple(student.trainable),
            "freezes every parameter: give at least one pattern (or None to train all)")
  require(not student.lora.rank or student.name == "hf" or schema.is_user_model(student.name), "student.lora.rank",
          student.lora.rank, f"LoRA needs an HF student (student.name='hf') or a user's model, not {student.name!r}")


def _check_loss_weights(config: ml_collections.ConfigDict) -> None:
  """Either the Hinton form (alpha) or the explicit one (ce_weight and kd_weight, both >= 0)."""
  distill = config.distill
  if distill.alpha is not None:
    require((distill.ce_weight, distill.kd_weight) == (None, None), "distill.ce_weight", distill.ce_weight,
            "must be None when distill.alpha is set (use either alpha, or ce_weight and kd_weight with alpha=None)")
    return
  for field in ("distill.ce_weight", "distill.kd_weight"):
    value = paths.get(config, field)
    require(value is not None and value >= 0, field, value,
            "must be a number >= 0 when distill.alpha is None (the explicit form needs both weights)")


def _check_schedule(config: ml_collections.ConfigDict) -> None:
  """A schedule moves to at least one end; each end is in its start's range and of the loss's form."""
  distill = config.distill
  if distill.schedule == "constant":
    for field in SCHEDULE_ENDS:
      value = paths.get(config, field)
      require(value is None, field, value, "needs distill.schedule='linear' or 'cosine' (the schedule is constant)")
    return
  require(any(paths.get(config, field) is not None for field in SCHEDULE_ENDS), "distill.schedule", distill.schedule,
          f"needs an end to move to: set one of {', '.join(SCHEDULE_ENDS)}")
  validation.check_value("distill.temperature_end", distill.temperature_end, schema.FIELDS["distill.temperature"])
  if distill.alpha is not None:
    for field in ("distill.ce_weight_end", "distill.kd_weight_end"):
      value = paths.get(config, field)
      require(value is None, field, value, "must be None in the Hinton form (alpha set): schedule alpha_end instead")
    validation.check_value("distill.alpha_end", distill.alpha_end, schema.FIELDS["distill.alpha"])
    return
  require(distill.alpha_end is None, "distill.alpha_end", distill.alpha_end,
          "must be None in the explicit form (alpha=None): schedule ce_weight_end / kd_weight_end instead")
  for field in ("distill.ce_weight_end", "distill.kd_weight_end"):
    value = paths.get(config, field)
    require(value is None or value >= 0, field, value, "must be >= 0 or None")


def _check_features(config: ml_collections.ConfigDict) -> None:
  """Feature distillation (distill.features, and an encoder-decoder model's distill.decoder_features) needs the
  teacher in the step, one teacher, and models that return their hidden states (transformers for attention transfer):
  classifiers and T5, not decoder-only LMs yet. The layer maps against the models' depths are
  kd_jax/training/feature_losses.py's."""
  distill = config.distill
  if not schema.uses_features(distill):
    require(distill.attention_weight == 0, "distill.attention_weight", distill.attention_weight,
            "needs distill.features or distill.decoder_features (the mapped layers whose attention is matched)")
    return
  field = "distill.features" if distill.features is not None else "distill.decoder_features"
  value = paths.get(config, field)
  require(distill.decoder_features is None or config.data.name in schema.SEQ2SEQ_TASKS, "distill.decoder_features",
          distill.decoder_features, f"maps the layers of an encoder-decoder model's decoder: it needs a seq2seq data "
          f"set ({', '.join(schema.SEQ2SEQ_TASKS)}); data.name={config.data.name!r} (distill.features maps the only "
          "stack)")
  require(distill.teacher_mode == "online", field, value,
          "needs distill.teacher_mode='online' (the teacher's hidden states are computed in the step; a logit cache "
          "holds none)")
  require(distill.strategy == "token", field, value,
          "needs distill.strategy='token' (sequence-level KD has no teacher in the step)")
  require(config.data.name not in schema.CAUSAL_LM_TASKS, field, value,
          "is not supported for causal-LM data sets yet: the decoder-only models do not return their hidden states")
  require(config.ensemble.size == 1, field, value,
          f"needs a single teacher (ensemble.size={config.ensemble.size}): whose hidden states would it match?")
  for section in ("teacher", "student"):
    require(config[section].name in ("mlp", "hf") or schema.is_user_model(config[section].name), field, value,
            "needs MLP, HF or user's models (they return their hidden states); "
            f"{section}.name={config[section].name!r}")
    require(distill.attention_weight == 0 or config[section].name == "hf", "distill.attention_weight",
            distill.attention_weight, f"needs transformer models: {section}.name={config[section].name!r} has no "
            "attention")


def _check_generative_tasks(config: ml_collections.ConfigDict) -> None:
  """Sequence-level distillation and chunked losses need a seq2seq or causal-LM task; packing and on-policy
  distillation need causal_lm and what they use (on-policy with distill.strategy='sequence' mixes the student's
  samples with the teacher's generations, TRL's seq_kd with lmbda: kd_jax/training/on_policy.py)."""
  data_config, distill = config.data, config.distill
  generative = schema.SEQ2SEQ_TASKS + schema.CAUSAL_LM_TASKS
  require(distill.strategy == "token" or data_config.name in generative, "distill.strategy", distill.strategy,
          f"'sequence' needs a seq2seq or causal-LM data set ({', '.join(generative)})")
  require(distill.loss_chunk == 0 or data_config.name in generative, "distill.loss_chunk", distill.loss_chunk,
          f"needs a seq2seq or causal-LM data set ({', '.join(generative)}): the models' positions and LM heads; "
          f"data.name={data_config.name!r} has one prediction per example (use 0)")
  lora = config.student.lora
  require(distill.loss_chunk == 0 or not lora.rank or "lm_head" not in tuple(lora.target_modules or ()),
          "distill.loss_chunk", distill.loss_chunk,
          "projects with the student's plain LM head: LoRA on lm_head (student.lora.target_modules) needs 0")
  require(distill.loss_chunk == 0 or not schema.is_user_model(config.student.name), "distill.loss_chunk",
          distill.loss_chunk, f"needs an HF student: student.name={config.student.name!r} (a user's model) returns "
          "logits, not the final hidden states and LM head the chunks project (use 0)")
  if data_config.name not in schema.CAUSAL_LM_TASKS:
    for field, default in (("data.packing", False), ("distill.on_policy_fraction", 0.0),
                           ("distill.on_policy_start_step", 0), ("distill.cross_tokenizer", "none")):
      value = paths.get(config, field)
      require(value == default, field, value, f"needs data.name='causal_lm' (data.name={data_config.name!r})")
    return
  require(bool(data_config.response_column), "data.response_column", data_config.response_column,
          "must name the column of the responses (or of the plain text, with data.prompt_column=None)")
  if data_config.packing:
    require(data_config.validation_split is not None, "data.packing", data_config.packing,
            "needs data.validation_split (the validation examples are not packed rows)")
    require(distill.strategy == "token" and distill.on_policy_fraction == 0, "data.packing", data_config.packing,
            "is not supported with distill.strategy='sequence' or on-policy distillation (they generate from each "
            "example's prompt; a packed row has none)")
  if distill.cross_tokenizer != "none":
    _check_cross_tokenizer(config)
  require(distill.on_policy_start_step == 0 or distill.on_policy_fraction > 0, "distill.on_policy_start_step",
          distill.on_policy_start_step, "needs distill.on_policy_fraction > 0 (the step on-policy sampling starts at)")
  if distill.on_policy_fraction > 0:
    require(distill.teacher_mode == "online", "distill.on_policy_fraction", distill.on_policy_fraction,
            "needs distill.teacher_mode='online' (the teacher scores the student's sampled responses in the step)")
    require(data_config.prompt_column is not None, "distill.on_policy_fraction", distill.on_policy_fraction,
            "needs prompts to sample responses to (data.prompt_column; plain text has none)")


def _check_topk_tail(config: ml_collections.ConfigDict) -> None:
  """A top-k cache's exact tail is stored at fixed temperatures: a schedule that moves T needs the flat tail, chosen
  explicitly."""
  distill = config.distill
  if not uses_topk_cache(config) or distill.topk_tail == "flat" or distill.schedule == "constant":
    return
  require(distill.temperature_end in (None, distill.temperature), "distill.temperature_end", distill.temperature_end,
          f"moves the temperature ({distill.temperature} -> {distill.temperature_end}) over a top-k teacher cache, "
          "whose tail is exact only at the temperatures it stores: keep the temperature constant, use "
          "distill.teacher_mode='online', or choose the flat-tail approximation with distill.topk_tail='flat'")


def uses_topk_cache(config: ml_collections.ConfigDict) -> bool:
  """Whether the student distills from the teacher's top-k cache (seq2seq and causal-LM tasks, cached, token level;
  kd_jax/teachers/student_data.py)."""
  return (config.data.name in schema.SEQ2SEQ_TASKS + schema.CAUSAL_LM_TASKS and config.distill.teacher_mode == "cached"
          and config.distill.strategy == "token")


def _check_cross_tokenizer(config: ml_collections.ConfigDict) -> None:
  """The losses across tokenizers run in the train step on prompt/response pairs, against one online teacher, or
  cached logprobs: of a teacher from a file or a server (teacher.source), or a model teacher's own (written once)."""
  value = config.distill.cross_tokenizer
  if config.teacher.source == "model" and config.distill.teacher_mode == "cached" and value != "none":
    # The cache of a model teacher of another tokenizer is its own logprobs file (kd_jax/teachers/student_data.py):
    # log-probabilities at T = 1, as a served teacher's.
    require(config.distill.temperature == 1 and config.distill.temperature_end in (None, 1), "distill.temperature",
            config.distill.temperature, "must be 1 for a cached teacher of another tokenizer (its cache holds its "
            "top-k log-probabilities at T = 1, as a logprobs file does): use distill.temperature=1 or "
            "distill.teacher_mode='online'")
  for field, allowed, why in (
      ("distill.strategy", "token", "it compares distributions"),
      ("distill.on_policy_fraction", 0.0, "on-policy samples are not re-tokenized for the teacher yet"),
      ("data.packing", False, "a packed row has no single response to align"),
      ("distill.features", None, "hidden states of different tokenizations have no common positions"),
      ("distill.attention_weight", 0.0, "attention of different tokenizations has no common positions"),
      ("ensemble.size", 1, "one teacher"),
      ("train.microbatches", 1, "its normalization is over the batch's aligned chunks"),
      ("distill.loss_chunk", 0, "chunks of positions are not aligned chunks yet")):
    require(paths.get(config, field) == allowed, "distill.cross_tokenizer", value,
            f"needs {field}={allowed!r} ({why})")
  require(config.data.prompt_column is not None, "distill.cross_tokenizer", value,
          "needs prompts (data.prompt_column): plain text starts with each tokenizer's own special tokens")


def _check_text_task(config: ml_collections.ConfigDict) -> None:
  """The text tasks' sources, token inputs and HF models of the task's kind (a causal LM's student may be a user's
  model, which uses the teacher's tokenizer or student.checkpoint's)."""
  data_config = config.data
  if data_config.name not in schema.TEXT_TASKS:
    return
  seq2seq, causal_lm = data_config.name in schema.SEQ2SEQ_TASKS, data_config.name in schema.CAUSAL_LM_TASKS
  sources = schema.TEXT_SOURCES + ((schema.PYDOC_SOURCE,) if causal_lm else ())
  require(data_config.source in sources, "data.source", data_config.source, f"allowed: {', '.join(sources)}")
  require(bool(data_config.path) or data_config.source == schema.PYDOC_SOURCE, "data.path", data_config.path,
          f"required for data.name={data_config.name!r}: a hub dataset id, TFDS name or local directory "
          "(see data.source)")
  require(config.distill.input_noise_std == 0, "distill.input_noise_std", config.distill.input_noise_std,
          f"must be 0 for data.name={data_config.name!r}: its inputs are token ids")
  model_task = "seq2seq" if seq2seq else "causal_lm" if causal_lm else "sequence_classification"
  allowed_tasks = (model_task,) if seq2seq or causal_lm else (model_task, None)  # None means sequence_classification
  for section in ("teacher", "student") if config.teacher.source == "model" else ("student",):
    model_config = config[section]
    user_student = causal_lm and section == "student" and schema.is_user_model(model_config.name)
    require(model_config.name == "hf" or user_student, f"{section}.name", model_config.name,
            f"data.name={data_config.name!r} is text: it needs 'hf' models (their tokenizers tokenize it)"
            + ("; a user's model may be the student" if causal_lm else ""))
    require(model_config.task in allowed_tasks, f"{section}.task", model_config.task,
            f"must be {model_task!r} for data.name={data_config.name!r}")
  student = config.student
  if causal_lm and schema.is_user_model(student.name) and config.teacher.source != "model":
    require(bool(student.checkpoint), "student.checkpoint", student.checkpoint,
            f"required for a user's student with teacher.source={config.teacher.source!r}: the checkpoint whose "
            "tokenizer it uses (a teacher model's is used otherwise)")
  require(not (seq2seq or causal_lm) or data_config.labeled_fraction == 1.0, "data.labeled_fraction",
          data_config.labeled_fraction, "must be 1.0 for seq2seq and causal-LM data sets (an example without its "
          "target has nothing to teacher-force)")


def _check_ensemble(config: ml_collections.ConfigDict) -> None:
  """An ensemble averages probabilities over classes: classification tasks, not the 'mse' of logits. The members
  themselves are kd_jax/teachers/ensemble.py's."""
  size = config.ensemble.size
  if size == 1:
    return
  require(config.data.name not in schema.SEQ2SEQ_TASKS, "ensemble.size", size,
          f"needs a classification data set; data.name={config.data.name!r} is seq2seq (its teachers generate and "
          "are cached as top-k, one model at a time)")
  require(config.data.name not in schema.CAUSAL_LM_TASKS, "ensemble.size", size,
          f"needs a classification data set; data.name={config.data.name!r} is a causal LM (its teachers are cached "
          "as top-k, one model at a time)")
  require(config.distill.divergence != "mse", "distill.divergence", config.distill.divergence,
          f"ensemble.size={size} distills the members' averaged probabilities; 'mse' compares logits: use "
          f"{', '.join(kind for kind in schema.DIVERGENCES if kind != 'mse')}")
