"""Export of a finished run's model (the KD student, the hard-label student or the teacher of a workdir: a single
run's or a sweep point's) in the formats other tools read:

- "hf": a Hugging Face directory (config.json, model.safetensors, generation_config.json for generative tasks, the
  tokenizer's files) that transformers' AutoModelFor... classes and kd_jax's own `from_pretrained` load; for every
  family kd_jax reads (BERT, RoBERTa, DistilBERT, T5, Llama, Mistral, Qwen2, Qwen3, GPT-2), students built from the
  teacher's layers included. With LoRA, the adapters are merged into their kernels (lora="merge"), or written as a
  peft adapter directory (lora="adapter": adapter_config.json, adapter_model.safetensors) over the student's base
  checkpoint.
- "gguf": a llama.cpp file (model.gguf) in float32, float16 or Q8_0 with the tokenizer and chat template, for the
  Llama, Mistral, Qwen2 and Qwen3 models GGUF expresses (gguf.writable).
- "params": for the models that are not Hugging Face ones (a user's NNX, Linen or function model named in the
  config, kd_jax/models/protocol.py; the MLP and CNN): model.safetensors, the plain parameters as named arrays
  ('/'-joined paths, LoRA adapters merged), and kd_model.json, the model's name, config block, class count and input
  shape, from which `load_exported(directory)` rebuilds the model and reads the parameters back bitwise; a causal
  LM's also its tokenizer's files and stop tokens (scripts/chat.py answers with it).

Where a run keeps its finished parameters: the students', the last checkpoint of `checkpoints/<phase>/`
(train.select='last') or the best-validation parameters kept in `checkpoints/<phase>_best/`
(train.select='best_validation'), once results.json says the run finished (a vectorized sweep point's: its slice of
its group's stacked checkpoints); the teacher's, `<teacher dir>/params/`,
or its checkpoint as it is (teacher.init='pretrained'). What trained beside the model (feature projections) is left
out. Tensor names and layouts are the inverse of loading's (weights.to_tensors, gguf.gguf_tensor_name), so
from_pretrained reads an export back bitwise. The output is written to a temporary directory beside `out` and renamed
into place: a failed export leaves nothing.
"""

import dataclasses
import os
import shutil
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kd_jax import files
from kd_jax.errors import UserError
from kd_jax.models import peft
from kd_jax.reporting import results

MODELS = ("student", "student_hard", "teacher")
FORMATS = ("hf", "gguf", "params")
LORA_MODES = ("merge", "adapter")
GGUF_TYPES = ("f32", "f16", "q8_0")
CONFIG_FILE = "config.json"  # the run's resolved config in its workdir (train.CONFIG_FILE, which imports every stage)
SAFETENSORS_FILE = "model.safetensors"
GGUF_FILE = "model.gguf"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_FILE = "adapter_model.safetensors"
MODEL_FILE = "kd_model.json"  # format "params": what rebuilds the model (load_exported)
# peft's task types by kd_jax task.
_PEFT_TASK_TYPES = {"sequence_classification": "SEQ_CLS", "causal_lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM",
                    "encoder": "FEATURE_EXTRACTION"}


@dataclasses.dataclass(frozen=True)
class Trained:
  """A finished model of a run.

  Attributes:
    source: the HF checkpoint (directory, hub id or .gguf file) whose architecture, config and tokenizer it has: the
      student's checkpoint, or the teacher's for a student built from the teacher's layers.
    task: "encoder", "sequence_classification", "seq2seq" or "causal_lm".
    params: its parameters as trained (host arrays; LoRA adapters beside their kernels, not merged).
    layers: the teacher layers a student was built from (student.init_from_teacher_layers); None otherwise.
    lora: config.student.lora when the student trained LoRA adapters; None otherwise.
    trainable: config.student.trainable (which base parameters trained beside the adapters; None: the head).
    run_config, section: the run's config and the model's section of it ('teacher' or 'student'): what format
      "params" records of a model that is not a Hugging Face one (source None).
  """
  source: str | None
  task: str
  params: Any
  layers: tuple[int, ...] | None = None
  lora: ml_collections.ConfigDict | None = None
  trainable: tuple[str, ...] | None = None
  run_config: ml_collections.ConfigDict | None = None
  section: str = "student"

  def plain_params(self):
    """The parameters with LoRA adapters merged into their kernels (peft.merge): the plain model's."""
    return peft.merge(self.params, self.lora.alpha / self.lora.rank) if self.lora is not None else self.params


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run stored in its workdir (config.json)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UserError(f"--workdir={workdir}: no {CONFIG_FILE}, so no run of kd_jax is there")
  return ml_collections.ConfigDict(files.read_json(path))


def trained_model(workdir: str, model: str) -> Trained:
  """The finished `model` ('student', 'student_hard' or 'teacher') of the run in `workdir`; a UserError naming what is
  missing when the run has not finished it, or when it is not a Hugging Face model."""
  if model not in MODELS:
    raise UserError(f"--model={model}: not one of {', '.join(MODELS)}")
  config = run_config(workdir)
  section = "teacher" if model == "teacher" else "student"
  if model == "teacher":
    return _trained_teacher(config, workdir)
  if model == "student_hard" and not config.baseline:
    raise UserError(f"--model=student_hard: the run in {workdir} trained no hard-label student (config.baseline "
                    "is False)")
  if not os.path.isfile(os.path.join(workdir, results.RESULTS_FILE)):
    raise UserError(f"--workdir={workdir}: the run has not finished (no {results.RESULTS_FILE}); rerun its command to "
                    "finish it, then export")
  student = config.student
  layers = student.init_from_teacher_layers
  source = config.teacher.checkpoint if layers is not None else student.checkpoint
  return Trained(source=source if student.name == "hf" else None,
                 task=student.task or "sequence_classification", params=_student_params(config, workdir, model),
                 layers=None if layers is None else tuple(layers), lora=student.lora if student.lora.rank else None,
                 trainable=None if student.trainable is None else tuple(student.trainable), run_config=config,
                 section=section)


def _student_params(config, workdir: str, phase: str):
  """A finished student phase's parameters: the best-validation ones kept by the loop (train.select), else its last
  checkpoint's; the model's own only (feature projections left out). A point of a vectorized sweep group takes its
  slice of the group's stacked checkpoint."""
  from kd_jax.training import checkpointing, feature_losses  # pylint: disable=g-import-not-at-top
  directory, index = os.path.join(workdir, "checkpoints", phase), None
  if not os.path.isdir(directory):
    directory, index = _vectorized_group(workdir, phase) or (directory, None)
  if config.train.select == "best_validation":
    record_path = os.path.join(f"{directory}_best", "best.json")  # (a vectorized group's too: <group>/<phase>_best)
    if not os.path.isfile(record_path):
      raise UserError(f"--model={phase}: {record_path} is missing (train.select='best_validation' keeps the best "
                      "parameters there)")
    params = checkpointing.restore_saved_params(os.path.join(f"{directory}_best",
                                                             files.read_json(record_path)["directory"]))
  else:
    latest = checkpointing.restore_latest_state(directory)
    if latest is None:
      raise UserError(f"--model={phase}: no checkpoint in {directory}")
    params = latest[1]["params"]
  if isinstance(params, dict) and set(params) == {feature_losses.MODEL, feature_losses.PROJECTIONS}:
    params = params[feature_losses.MODEL]
  params = jax.device_get(params)
  return params if index is None else jax.tree.map(lambda stacked: stacked[index], params)


def _vectorized_group(workdir: str, phase: str) -> tuple[str, int] | None:
  """(the phase's stacked checkpoint directory, this point's index in it) when `workdir` is a point of a sweep whose
  group trained vectorized (sweep.mode='vectorized'; kd_jax/training/vectorized.py), else None.

  The group is the sweep's points (sweep.json's order) whose configs are equal but for vectorized.FIELDS, as
  vectorized.groups forms it when the group trains from the start; the hard-label students are stacked one per
  vectorized.baseline_shares share.
  """
  from kd_jax import fingerprints  # pylint: disable=g-import-not-at-top
  from kd_jax.config import paths  # pylint: disable=g-import-not-at-top
  from kd_jax.training import vectorized  # pylint: disable=g-import-not-at-top
  sweep_workdir, name = os.path.split(os.path.normpath(workdir))
  sweep_file = os.path.join(sweep_workdir, results.SWEEP_FILE)
  if not os.path.isdir(os.path.join(sweep_workdir, "vectorized")) or not os.path.isfile(sweep_file):
    return None
  configs = {}
  for point in files.read_json(sweep_file)["points"]:
    path = os.path.join(sweep_workdir, point["name"], CONFIG_FILE)
    if os.path.isfile(path):
      configs[point["name"]] = files.read_json(path)
  if name not in configs:
    return None
  group_key = lambda config: fingerprints.fingerprint_json(paths.without(config, vectorized.FIELDS))
  group = [other for other in configs if group_key(configs[other]) == group_key(configs[name])]
  directory = os.path.join(vectorized.group_directory([os.path.join(sweep_workdir, other) for other in group]), phase)
  if not os.path.isdir(directory):
    raise UserError(f"--model={phase}: sweep point {name} trained vectorized, but its group's checkpoints are not in "
                    f"{directory} (the group was resumed with fewer points); export reads groups trained whole")
  index = group.index(name)
  if phase == "student_hard":
    shares = vectorized.baseline_shares([ml_collections.ConfigDict(configs[other]) for other in group])
    index = next(i for i, share in enumerate(shares) if index in share)
  return directory, index


def _trained_teacher(config, workdir: str) -> Trained:
  """The run's teacher: its checkpoint as it is (teacher.init='pretrained') or its trained parameters."""
  from kd_jax.models.hf import pretrained  # pylint: disable=g-import-not-at-top
  from kd_jax.teachers import teacher  # pylint: disable=g-import-not-at-top
  from kd_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  if config.ensemble.size > 1:
    raise UserError(f"--model=teacher: the run in {workdir} has an ensemble of {config.ensemble.size} teachers; "
                    "export one member's run, or its checkpoint directly")
  task = config.teacher.task or "sequence_classification"
  init = config.teacher.init
  if init == "pretrained":
    _, params = pretrained.from_pretrained(config.teacher.checkpoint, task, param_dtype=config.teacher.param_dtype)
  else:
    home = teacher.directory(config, workdir) if init == "train" else init
    params_dir = os.path.join(home, "params")
    if not os.path.isdir(params_dir):
      raise UserError(f"--model=teacher: {params_dir} is missing (the teacher's training did not finish); rerun "
                      "the run's command to finish it")
    params = checkpointing.restore_saved_params(params_dir)
  return Trained(source=config.teacher.checkpoint if config.teacher.name == "hf" else None, task=task,
                 params=jax.device_get(params), run_config=config, section="teacher")


def check_format(trained: Trained, export_format: str, lora: str = "merge"):
  """(family module, transformers config of the exported model) when `trained` can be written as `export_format`
  with `lora`; else a UserError naming the supported pairs."""
  from kd_jax.models.hf import from_teacher, gguf, pretrained  # pylint: disable=g-import-not-at-top
  if export_format not in FORMATS:
    raise UserError(f"--format={export_format}: not one of {', '.join(FORMATS)}")
  if lora not in LORA_MODES:
    raise UserError(f"--lora={lora}: not one of {', '.join(LORA_MODES)}")
  if trained.source is None or export_format == "params":
    name = trained.run_config[trained.section].name
    if trained.source is not None or export_format != "params":
      raise UserError(f"--format={export_format}: not supported for config.{trained.section}.name={name!r}; "
                      "supported pairs: params for the models that are not Hugging Face ones (a user's model, mlp, "
                      f"cnn); hf for {', '.join(sorted(pretrained.FAMILIES))}; gguf for the Llama family")
    if lora == "adapter":
      raise UserError("--lora=adapter: needs --format=hf; --format=params writes the adapters merged")
    return None, None
  family, config = pretrained.family_and_config(trained.source, trained.task)
  if trained.layers is not None:
    config = from_teacher.student_hf_config(config, trained.layers)
  if export_format == "gguf":
    reason = gguf.writable(config)
    if reason is not None:
      raise UserError(f"--format=gguf: not supported for {trained.source}: {reason}; supported pairs: hf for "
                      f"{', '.join(sorted(pretrained.FAMILIES))}; gguf for {', '.join(gguf.WRITE_ARCHITECTURES)} "
                      "without sliding windows, attention_bias or mlp_bias, with default, linear or (llama) llama3 rope")
  if lora == "adapter":
    if trained.lora is None:
      raise UserError("--lora=adapter: the model trained no LoRA adapters (config.student.lora.rank is 0); export "
                      "it whole (--lora=merge)")
    if export_format != "hf" or trained.layers is not None or trained.trainable is not None:
      what = (f"--format={export_format}" if export_format != "hf" else
              "a student built from the teacher's layers has no published base checkpoint"
              if trained.layers is not None else
              f"config.student.trainable={list(trained.trainable)} trains base parameters an adapter does not hold")
      raise UserError(f"--lora=adapter: {what}; supported: --format=hf for a student loaded from a checkpoint with "
                      "the default trainable parameters (adapters and classification head); else --lora=merge")
  return family, config


def export(workdir: str, *, model: str, export_format: str, out: str, lora: str = "merge", gguf_type: str = "f32",
           overwrite: bool = False) -> list[str]:
  """Writes the finished `model` ('student', 'student_hard' or 'teacher') of the run in `workdir` to the directory
  `out` (`write`); returns the names of the files written."""
  _check_out(out, overwrite)
  return write(trained_model(workdir, model), export_format, out, lora=lora, gguf_type=gguf_type, overwrite=overwrite)


def write(trained: Trained, export_format: str, out: str, *, lora: str = "merge", gguf_type: str = "f32",
          overwrite: bool = False) -> list[str]:
  """Writes `trained` to the directory `out` as `export_format` ("hf" or "gguf"); returns the names of its files.

  Args:
    lora: "merge" (adapters folded into the kernels) or "adapter" (a peft adapter over the base checkpoint).
    gguf_type: the GGUF tensor type: "f32", "f16" or "q8_0".
    overwrite: replace an `out` that exists and is not empty (refused otherwise).
  """
  _check_out(out, overwrite)
  if export_format == "gguf" and gguf_type not in GGUF_TYPES:
    raise UserError(f"--gguf_type={gguf_type}: not one of {', '.join(GGUF_TYPES)}")
  family, config = check_format(trained, export_format, lora)
  out = os.path.normpath(out)
  parent = os.path.dirname(os.path.abspath(out))
  created = parent  # the outermost directory this export creates above `out` (removed again if it fails)
  while not os.path.exists(os.path.dirname(created)):
    created = os.path.dirname(created)
  created = None if os.path.exists(parent) else created
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.export-")
  try:
    if export_format == "params":
      write_params(trained, staging)
    elif lora == "adapter":
      write_adapter(trained, family, config, staging)
    elif export_format == "hf":
      write_hf(trained, family, config, staging)
    else:
      write_gguf(trained, family, config, staging, gguf_type)
    _move_into_place(staging, out)
  except BaseException:
    shutil.rmtree(created or staging, ignore_errors=True)
    raise
  return sorted(os.listdir(out))


def write_params(trained: Trained, directory: str) -> None:
  """model.safetensors (the plain parameters, each array named by its '/'-joined path) and kd_model.json (the model's
  name, with a factory file's path made absolute, its config block, the class count (a causal LM's vocabulary) and
  the shape of one example's inputs, or of each of its token arrays) in `directory`: what `load_exported` rebuilds.
  A causal LM's also get its tokenizer's files (the teacher's tokenizer, or student.checkpoint's: the one it trained
  with) and, in kd_model.json, the tokens its generation stops at (`exported_stop_token_ids`), for scripts/chat.py."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  from kd_jax.data.examples import first_inputs  # pylint: disable=g-import-not-at-top
  config = trained.run_config
  model_config = config[trained.section].to_dict()
  target, separator, factory = model_config["name"].rpartition(":")
  if separator and target.endswith(".py") and os.path.isfile(target):
    model_config["name"] = f"{os.path.abspath(target)}:{factory}"
  tensors = {peft.path_name(path): np.ascontiguousarray(leaf)
             for path, leaf in jax.tree_util.tree_flatten_with_path(trained.plain_params())[0]}
  describe = lambda value: {"shape": list(value.shape), "dtype": str(value.dtype)}
  example = first_inputs(data.load_task(config).train.inputs)
  record = {"name": model_config["name"], "config": model_config, "num_classes": data.num_classes(config),
            "example_inputs": ({name: describe(value) for name, value in example.items()} if isinstance(example, dict)
                               else describe(example))}
  if trained.task == "causal_lm":  # what chat.py needs beside the model: the student's tokenizer and stop tokens
    from kd_jax.data import causal_lm, text  # pylint: disable=g-import-not-at-top
    checkpoint, field = text.student_checkpoint_field(config)
    tokenizer = text.load_tokenizer(checkpoint, field)
    tokenizer.save_pretrained(directory)
    record["eos_token_ids"] = list(causal_lm.stop_token_ids(tokenizer, (checkpoint,)))
  files.write_json(os.path.join(directory, MODEL_FILE), record)
  safetensors.numpy.save_file(tensors, os.path.join(directory, SAFETENSORS_FILE), metadata={"format": "kd_jax"})


def exported_stop_token_ids(directory: str) -> tuple[int, ...]:
  """The tokens generation stops at, of a causal LM `write_params` wrote (its tokenizer's EOS and its source
  checkpoint's stop tokens: what the run's evaluation stopped at); a UserError for another model."""
  path = os.path.join(directory, MODEL_FILE)
  record = files.read_json(path) if os.path.isfile(path) else {}
  if "eos_token_ids" not in record:
    raise UserError(f"{directory}: not a causal LM exported with --format=params (its {MODEL_FILE} names no "
                    "eos_token_ids)")
  return tuple(record["eos_token_ids"])


def load_exported(directory: str):
  """(model, params) of a directory `write_params` wrote (format "params"): the model rebuilt from its name and
  config block (a user's factory is called again), the parameters read back as they were exported."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from kd_jax import models  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, MODEL_FILE)
  if not os.path.isfile(path):
    raise UserError(f"{directory}: no {MODEL_FILE}, so no model exported with --format=params is there")
  record = files.read_json(path)
  example = record["example_inputs"]
  zeros = lambda described: np.zeros(described["shape"], described["dtype"])
  model, initial = models.create(ml_collections.ConfigDict(record["config"]), num_classes=record["num_classes"],
                                 example_inputs=(zeros(example) if "shape" in example
                                                 else {name: zeros(value) for name, value in example.items()}),
                                 rng=jax.random.PRNGKey(0), field="model")
  params = traverse_util.unflatten_dict(safetensors.numpy.load_file(os.path.join(directory, SAFETENSORS_FILE)),
                                        sep="/")
  expected, loaded = jax.tree.map(np.shape, initial), jax.tree.map(np.shape, params)
  if expected != loaded:
    raise UserError(f"{directory}: its {SAFETENSORS_FILE} does not hold the parameters of {record['name']!r} "
                    "as its factory builds it now (was the model changed since the export?)")
  return model, params


def _check_out(out: str, overwrite: bool) -> None:
  """A UserError when `out` exists and is not an empty directory, unless `overwrite`."""
  if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)) and not overwrite:
    raise UserError(f"--out={out} exists and is not an empty directory; choose another, or pass --overwrite to "
                    "replace it")


def _move_into_place(staging: str, out: str) -> None:
  """Renames the finished `staging` directory to `out`; an existing `out` is moved aside first and removed after."""
  umask = os.umask(0)
  os.umask(umask)
  for name in os.listdir(staging):  # mkdtemp's (and safetensors') private modes: the umask's like any new file
    os.chmod(os.path.join(staging, name), 0o666 & ~umask)
  os.chmod(staging, 0o777 & ~umask)
  replaced = None
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    replaced = f"{out}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    os.rename(out, replaced)
  elif os.path.isdir(out):
    os.rmdir(out)
  os.rename(staging, out)
  if replaced is not None and os.path.isdir(replaced):
    shutil.rmtree(replaced)
  elif replaced is not None:
    os.remove(replaced)


def _built(trained: Trained, family, config, params):
  """The architecture `config` describes, checked to have exactly the shapes and structure of `params`."""
  from kd_jax.models.hf import weights  # pylint: disable=g-import-not-at-top
  num_labels = config.num_labels if trained.task == "sequence_classification" else None
  dtype = _dtype(params)
  architecture = family.build(config, checkpoint=trained.source, task=trained.task, num_labels=num_labels,
                              dtype=dtype, param_dtype=dtype)
  expected = jax.eval_shape(lambda: architecture.module.init(jax.random.key(0), **architecture.example_inputs))
  expected = jax.tree.map(lambda leaf: leaf.shape, expected["params"])
  actual = jax.tree.map(lambda leaf: tuple(np.shape(leaf)), params)
  assert expected == actual, (
      f"the exported config of {trained.source} describes other parameters than the trained ones: "
      f"{sorted(set(weights.to_tensors(expected)) ^ set(weights.to_tensors(actual)))[:5]}")
  return architecture


def _dtype(params) -> jnp.dtype:
  return jnp.dtype(jax.tree.leaves(params)[0].dtype)


def write_hf(trained: Trained, family, config, directory: str) -> None:
  """config.json, model.safetensors, generation_config.json (generative tasks) and the tokenizer's files of the
  plain model (adapters merged) in `directory`."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import weights  # pylint: disable=g-import-not-at-top
  params = trained.plain_params()
  tensors = weights.to_tensors(params)
  if trained.task == "sequence_classification":
    config.num_labels = tensors[family.classifier_tensor(config)].shape[0]
  architecture = _built(trained, family, config, params)
  tensors = weights.in_checkpoint_layout(architecture, tensors)
  config.architectures = [architecture.class_name]
  if "lm_head.weight" in tensors:  # an LM head of its own (T5 v1.1, untied Llama): transformers must not tie it
    config.tie_word_embeddings = False
  config.dtype = str(_dtype(params))
  config.save_pretrained(directory)
  safetensors.numpy.save_file(tensors, os.path.join(directory, SAFETENSORS_FILE), metadata={"format": "pt"})
  if trained.task in ("causal_lm", "seq2seq"):
    _generation_config(trained.source, config).save_pretrained(directory)
  _tokenizer(trained.source).save_pretrained(directory)


def _generation_config(source: str, config):
  """The source checkpoint's generation_config.json, or one derived from the model config (a GGUF file, a
  checkpoint without one)."""
  import transformers  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import gguf, weights  # pylint: disable=g-import-not-at-top
  if not gguf.is_gguf(source):
    directory = weights.resolve(source)
    if (directory / "generation_config.json").exists():
      return transformers.GenerationConfig.from_pretrained(directory)
  return transformers.GenerationConfig.from_model_config(config)


def _tokenizer(source: str):
  from kd_jax.data import text  # pylint: disable=g-import-not-at-top
  return text.load_tokenizer(source, "checkpoint")


def write_gguf(trained: Trained, family, config, directory: str, gguf_type: str) -> None:
  """model.gguf (gguf.write) of the plain model in `directory`."""
  from kd_jax.models.hf import gguf, weights  # pylint: disable=g-import-not-at-top
  params = trained.plain_params()
  architecture = _built(trained, family, config, params)
  gguf.write(os.path.join(directory, GGUF_FILE), config,
             weights.in_checkpoint_layout(architecture, weights.to_tensors(params)), _tokenizer(trained.source),
             gguf_type)


def write_adapter(trained: Trained, family, config, directory: str) -> None:
  """A peft LoRA adapter in `directory`: adapter_config.json and adapter_model.safetensors, whose lora_A [r, in]
  and lora_B [out, r] are the transposed lora_a, lora_b of each targeted layer (B's output units in the checkpoint's
  order: GPT-2's c_attn, held heads-first, is written back in (q, k, v) order like its weight), and whose
  modules_to_save are the classification head's modules (trained whole), over base_model_name_or_path = the
  student's checkpoint."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import weights  # pylint: disable=g-import-not-at-top
  tensors, targets, head_params, head_modules = {}, set(), {}, set()
  head = peft.Trainable((peft.HEAD_PATTERN,))
  architecture = _built(trained, family, config, trained.plain_params())
  for path, leaf in jax.tree_util.tree_flatten_with_path(trained.params)[0]:
    keys = tuple(str(key.key) for key in path)
    if keys[-1] in ("lora_a", "lora_b"):
      module = ".".join(keys[:-1])
      targets.add(module)
      leaf = np.asarray(leaf)
      if keys[-1] == "lora_b":  # B's output units in the checkpoint's order, as its weight's (GPT-2's c_attn)
        leaf = weights.in_checkpoint_layout(architecture, {f"{module}.weight": leaf})[f"{module}.weight"]
      tensors[f"base_model.model.{module}.lora_{keys[-1][-1].upper()}.weight"] = np.ascontiguousarray(leaf.T)
    elif head.is_trained(peft.path_name(path)):
      head_params[keys[0]] = trained.params[keys[0]]  # the head's top-level module, saved whole
      head_modules.add(keys[0].split(".")[0])  # peft's module name: RoBERTa's 'classifier' over classifier.dense
  tensors |= {f"base_model.model.{name}": value for name, value in weights.to_tensors(head_params).items()}
  _check_base(trained, family, config, head)
  lora = trained.lora
  files.write_json(os.path.join(directory, ADAPTER_CONFIG_FILE), {
      "peft_type": "LORA", "task_type": _PEFT_TASK_TYPES[trained.task],
      "base_model_name_or_path": trained.source, "r": lora.rank, "lora_alpha": lora.alpha,
      "lora_dropout": lora.dropout, "target_modules": sorted(targets), "modules_to_save": sorted(head_modules) or None,
      "bias": "none", "fan_in_fan_out": config.model_type == "gpt2",  # peft adapts GPT-2's Conv1D so
      "use_rslora": False, "inference_mode": True,
      "init_lora_weights": True})
  safetensors.numpy.save_file(tensors, os.path.join(directory, ADAPTER_FILE), metadata={"format": "pt"})
  _tokenizer(trained.source).save_pretrained(directory)



def _check_base(trained: Trained, family, config, head: peft.Trainable) -> None:
  """A UserError unless every parameter outside the adapters and the head equals the base checkpoint's (as kd_jax
  loads it): what transformers loads under a peft adapter. A base tensor the checkpoint lacks (initialized afresh in
  the run, such as a missing BERT pooler) is not in the adapter either."""
  from kd_jax.models.hf import pretrained, weights  # pylint: disable=g-import-not-at-top
  plain = {path: leaf for path, leaf in jax.tree_util.tree_flatten_with_path(trained.params)[0]
           if path[-1].key not in ("lora_a", "lora_b")}
  num_labels = None
  if trained.task == "sequence_classification":
    num_labels = weights.to_tensors(trained.plain_params())[family.classifier_tensor(config)].shape[0]
  _, base = pretrained.from_pretrained(trained.source, trained.task, num_labels=num_labels,
                                       param_dtype=_dtype(trained.params))
  base = {path: leaf for path, leaf in jax.tree_util.tree_flatten_with_path(base)[0]}
  for path, leaf in plain.items():
    if not head.is_trained(peft.path_name(path)) and not np.array_equal(np.asarray(base[path]), np.asarray(leaf)):
      raise UserError(f"--lora=adapter: parameter {peft.path_name(path)} differs from {trained.source}'s, on which "
                      "transformers would load the adapter (it trained, or the checkpoint lacks it); export the "
                      "merged model (--lora=merge)")
