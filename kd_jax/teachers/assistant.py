"""The teacher assistant (Mirzadeh et al. 2020, "Improved Knowledge Distillation via Teacher Assistant"): a student
of the teacher that becomes the students' teacher (teacher -> assistant -> student), from one config.

When config.teacher.assistant.name is set, `obtain` distills the assistant (the model of config.teacher.assistant)
from the teacher as the KD student would be (the teacher's signal as student_data.prepare gives it: its logit cache
in the teacher's directory; the objective of config.distill, config.optim, the student's steps and batch size,
train.select) from seed teacher.seed, through the one training loop, and returns it as a `Teacher`: the students'
cache is then built from the assistant's logits, in the assistant's directory. That directory,
`<teacher directory>/assistants/<key>/`, holds checkpoints/ while it trains (a rerun resumes it) and params/ once
finished (later runs, and every sweep point with this teacher and assistant, reuse it), like a trained teacher's.
The key hashes what the assistant depends on (`identity`); the teacher's own identity leaves the assistant out, so runs
with and without one share the teacher and its cache.
"""

import logging
import os

import jax
import ml_collections

from kd_jax import data, files, fingerprints, models
from kd_jax.config import paths, schema
from kd_jax.data.examples import first_inputs
from kd_jax.teachers import student_data, teacher
from kd_jax.training import checkpointing, loop, steps
from kd_jax.training.objective import Objective

logger = logging.getLogger(__name__)

PHASE = "assistant"  # its training phase (history, results.json) and its model's name in results.json
DIRECTORY = "assistants"


def enabled(config: ml_collections.ConfigDict) -> bool:
  return config.teacher.assistant.name is not None


def phases(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The assistant's training phase, when the config has one."""
  return (PHASE,) if enabled(config) else ()


def identity(config: ml_collections.ConfigDict) -> dict:
  """What the assistant depends on, flat: its model and teacher.seed (config.teacher), how it trains (config.distill,
  config.optim, config.train) and its data (config.data), but the fields a resumed run may change."""
  sections = files.as_json_value({name: config[name].to_dict() for name in ("teacher", "distill", "optim", "train",
                                                                              "data")})
  return teacher.without_unset_additions(
      paths.without(sections, tuple(schema.OPERATIONAL_FIELDS) + teacher.NOT_IDENTITY))


def directory(config: ml_collections.ConfigDict, teacher_directory: str) -> str:
  """Where the assistant of `config` lives, under its teacher's directory."""
  return os.path.join(teacher_directory, DIRECTORY, fingerprints.fingerprint_json(identity(config)))


def check_config(config: ml_collections.ConfigDict) -> None:
  """The assistant's model against the data (models.check_config: a CNN's blocks fit the images)."""
  if enabled(config):
    models.check_config(config, "teacher.assistant")


def obtain(config: ml_collections.ConfigDict, task: data.TaskData, mesh, the_teacher: teacher.Teacher, *, writer,
           evaluate_fn, selection: loop.Selection | None) -> teacher.Teacher:
  """The teacher the students distill from: the assistant of `config` distilled from `the_teacher` (resumed from
  its checkpoints; reused once finished), or `the_teacher` itself when the config has none.

  Args:
    writer: where the assistant's training history goes.
    evaluate_fn: (model, params) -> validation scalars at the loop's eval steps (against the teacher).
    selection: train.select's choice of step (None: the last).
  """
  if not enabled(config):
    return the_teacher
  home = directory(config, the_teacher.directory)
  model, params = models.create(config.teacher.assistant, num_classes=task.num_classes,
                                example_inputs=first_inputs(task.train.inputs),
                                rng=jax.random.PRNGKey(config.teacher.seed), field="teacher.assistant")
  params_dir = os.path.join(home, "params")
  if os.path.isdir(params_dir):
    logger.info("%s: reusing the distilled assistant in %s.", PHASE, home)
    rules = tuple(config.mesh.rules) + models.partition_rules(model, mesh)
    return teacher.Teacher(model, teacher.restore_params(home, params, mesh, rules), home)
  taught = student_data.prepare(config, task, the_teacher, mesh)
  num_steps = steps.num_train_steps(len(task.train), config.data.batch_size, config.train.num_epochs,
                                    config.train.num_steps)
  objective = Objective.from_config(config, num_steps=num_steps, distills=taught.distills, task=task, model=model)
  online = taught.online_teacher
  program = steps.program(model=model, init_params=params, optim_config=config.optim, num_steps=num_steps,
                          objective=objective, examples=taught.examples, batch_size=config.data.batch_size,
                          seed=config.teacher.seed, mesh=mesh, train_config=config.train,
                          teacher=None if online is None else (online.model, online.params),
                          param_rules=config.mesh.rules)
  outcome = loop.train(
      PHASE, program, [loop.RunLog("", writer, steps.learning_rates(config.optim, num_steps),
                                   objective.schedule_table())],
      num_steps=num_steps, checkpoint_dir=os.path.join(home, "checkpoints"), train_config=config.train,
      evaluate=lambda params: evaluate_fn(model, params), selection=selection)
  (params,), (selected_step,) = outcome.params, outcome.selected_steps
  checkpointing.save_params(params_dir, params)
  return teacher.Teacher(model, params, home, outcome.stats | {"selected_step": selected_step})
