"""The teacher: obtained (trained here, restored from a teacher directory, or a pretrained checkpoint as it is), and
identified.

Two identities, each with one home here:
- `identity(config)`: the teacher a config asks for (config.teacher but where it is stored, and config.data but
  the inference batch size). It names a sweep's shared teacher directories (`identity_key`) and is recorded in a
  trained teacher's `teacher.json` (with the fingerprint of its labeled training data); a directory holding another
  teacher is refused.
- `Teacher.fingerprint`: a hash of the weights in hand, whichever way they were obtained. The teacher caches
  (kd_jax/teachers/teacher_cache.py) are keyed by it, so a cache is never reused for other weights.

A trained teacher lives in its directory (`<workdir>/teacher`, or config.teacher.workdir): checkpoints/ while it
trains (through the one training loop: a rerun resumes it), params/ once finished (later runs reuse it), and its
caches. Teachers are never part of a student's checkpoints: they do not change.
"""

import dataclasses
import functools
import logging
import os

import jax
import ml_collections

from kd_jax import data, files, fingerprints, models
from kd_jax.config import paths
from kd_jax.data.examples import first_inputs, wide_dtype
from kd_jax.errors import UserError, require
from kd_jax.parallel import distributed, sharding
from kd_jax.training import checkpointing, loop, steps
from kd_jax.training.objective import Objective

logger = logging.getLogger(__name__)

# Fields of the config that do not change which teacher it asks for: where it is stored, and how large the
# inference batches are.
NOT_IDENTITY = ("teacher.workdir", "data.eval_batch_size", "teacher.server_concurrency")
# A teacher assistant (kd_jax/teachers/assistant.py) is not the teacher: it lives in the teacher's directory under a
# key of its own, so runs with and without one share the teacher and its cache.
ASSISTANT_PREFIX = "teacher.assistant."
# Fields added to config.teacher after teachers were first keyed by their identity: part of it only when set, so the
# teacher directories and caches of runs and sweeps started before they existed keep their keys.
IDENTITY_WHEN_SET = ("teacher.hf_dropout", "teacher.assistant.hf_dropout")


def without_unset_additions(flat: dict) -> dict:
  """A flat config identity without the IDENTITY_WHEN_SET fields that are None."""
  return {path: value for path, value in flat.items() if not (path in IDENTITY_WHEN_SET and value is None)}


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A teacher ready to teach.

  Attributes:
    model, params: the flax module and its parameters, placed on the run's mesh (sharding.place_params: replicated,
      or split over fsdp / tensor).
    directory: where its trained weights (if trained) and its caches live.
    stats: the training phase's stats when it was trained (or resumed) in this call, else None.
    members: an ensemble's member teachers (kd_jax/teachers/ensemble.py), whose combination this is; () for one teacher.
    logprobs: a teacher from a logprobs file or a server (config.teacher.source): its logprobs as read
      (logprobs_file.Imported), and no model or params; else None.
  """
  model: object
  params: object
  directory: str
  stats: dict | None = None
  members: tuple = ()
  logprobs: object = None

  @functools.cached_property
  def fingerprint(self) -> str:
    """Hash of the parameters (computed on first use: only caches need it)."""
    return fingerprints.fingerprint_tree(jax.device_get(jax.tree.map(sharding.local_copy, self.params)))


def identity(config: ml_collections.ConfigDict) -> dict:
  """The teacher `config` asks for, as flat {dotted field: value} of config.teacher and config.data (but
  NOT_IDENTITY and the assistant)."""
  sections = files.as_json_value({"teacher": config.teacher.to_dict(), "data": config.data.to_dict()})
  return {path: value for path, value in without_unset_additions(paths.without(sections, NOT_IDENTITY)).items()
          if not path.startswith(ASSISTANT_PREFIX)}


def identity_key(config: ml_collections.ConfigDict) -> str:
  """A short hash of `identity(config)`: configs with equal keys share one teacher."""
  return fingerprints.fingerprint_json(identity(config))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless config.teacher's model fits the data (models.check_config) and teacher.init is
  'train', 'pretrained' or a teacher directory that exists."""
  models.check_config(config, "teacher")
  init = config.teacher.init
  require(init in ("train", "pretrained") or os.path.isdir(os.path.join(init, "checkpoints")), "teacher.init", init,
          "must be 'train' or an existing teacher directory with checkpoints/ (an earlier run's <workdir>/teacher), "
          "or 'pretrained' (an HF checkpoint's own weights)")


def directory(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Where the run's teacher and its caches live."""
  return config.teacher.workdir or os.path.join(workdir, "teacher")


def obtain(config: ml_collections.ConfigDict, task: data.TaskData, mesh, workdir: str, *, writer,
           evaluate_fn, phase: str = "teacher") -> Teacher:
  """The teacher of `config`: the pretrained checkpoint, an earlier run's teacher directory (teacher.init=<dir>), or
  trained here on the labeled training examples (resumed from its checkpoints; reused once finished).

  Args:
    writer: where the teacher's training history goes.
    phase: its training phase's name (history, messages): an ensemble's members are 'teacher_<m>'.
    evaluate_fn: (model, params) -> test scalars during its training (on its own inputs).
  """
  example_inputs = first_inputs(task.train.teacher_view().inputs)
  model, params = models.create(config.teacher, num_classes=task.num_classes, example_inputs=example_inputs,
                                rng=jax.random.PRNGKey(config.teacher.seed), field="teacher")
  home = directory(config, workdir)
  rules = tuple(config.mesh.rules) + models.partition_rules(model, mesh)
  if config.teacher.init == "pretrained":
    return Teacher(model, sharding.place_params(params, mesh, rules), home)
  if config.teacher.init != "train":
    return Teacher(model, restore_params(config.teacher.init, params, mesh, rules), home)
  labeled = task.labeled_train.teacher_view()
  recorded = {**identity(config), "labeled_train_fingerprint": fingerprints.fingerprint_arrays(
      *jax.tree.leaves(labeled.inputs), labeled.label, labeled.index, as_dtype=wide_dtype)}  # as load_task's
  record_path = os.path.join(home, "teacher.json")
  if os.path.exists(record_path) and files.read_json(record_path) != recorded:
    raise UserError(f"teacher directory {home} holds a teacher trained with another config or data set; "
                    "use a new --workdir or point config.teacher.workdir elsewhere")
  params_dir = os.path.join(home, "params")
  trained = os.path.isdir(params_dir)
  distributed.check_same_on_all_processes(trained, f"whether {params_dir} holds a trained teacher")
  if trained:
    logger.info("%s: reusing the trained teacher in %s.", phase, home)
    return Teacher(model, restore_params(home, params, mesh, rules), home)
  if distributed.is_main_process():
    files.write_json(record_path, recorded)
  optim_config = config.teacher.optim
  num_steps = steps.num_train_steps(len(labeled), config.data.batch_size, config.teacher.num_epochs)
  program = steps.program(model=models.with_remat(model, config.train.remat), init_params=params,
                          optim_config=optim_config, num_steps=num_steps,
                          objective=Objective.cross_entropy(), examples=labeled,
                          batch_size=config.data.batch_size, seed=config.teacher.seed, mesh=mesh,
                          train_config=config.train, param_rules=config.mesh.rules)
  outcome = loop.train(
      phase, program, [loop.RunLog("", writer, steps.learning_rates(optim_config, num_steps))],
      num_steps=num_steps, checkpoint_dir=os.path.join(home, "checkpoints"), train_config=config.train,
      evaluate=lambda params: evaluate_fn(model, params))
  (params,), stats = outcome.params, outcome.stats
  checkpointing.save_params(params_dir, params)
  return Teacher(model, params, home, stats)


def restore_params(teacher_dir: str, target_params, mesh, rules=()):
  """The final teacher parameters saved in `<teacher_dir>/params`, shaped like `target_params`, placed on `mesh` as
  sharding.param_shardings says (whatever mesh saved them)."""
  params_dir = os.path.abspath(os.path.join(teacher_dir, "params"))
  if not os.path.isdir(params_dir):
    raise UserError(f"teacher directory {teacher_dir} has no params/ (its training did not finish); "
                    "rerun the run that trains it, or set teacher.init='train'")
  abstract = jax.tree.map(lambda value, placement: jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=placement),
                          target_params, sharding.param_shardings(target_params, mesh, rules))
  try:
    return checkpointing.restore_params(params_dir, abstract)
  except (ValueError, KeyError) as error:
    raise UserError(f"teacher checkpoint {params_dir} does not match the teacher described by config.teacher "
                    f"({error.__class__.__name__}: {str(error).splitlines()[0]})") from error
