"""Training and evaluation: `train_and_evaluate(config, workdir)`, and `run_group`, which every mode runs through.

Fixed order: data -> mesh -> the runs' workdirs -> evaluator (kd_jax/evaluation: the one the task names) -> teacher
(kd_jax/teachers/teacher.py: trained, restored or pretrained; or every member of an ensemble, kd_jax/teachers/ensemble.py)
-> its test metrics and the reference the students are compared with -> with teacher.assistant, the assistant distilled
from it, which takes its place as the students' teacher (kd_jax/teachers/assistant.py) -> the student's data
(kd_jax/teachers/student_data.py: cache, online teacher or teacher targets) -> the students (KD, then the hard-label
baseline; each under its objective, kd_jax/training/objective.py) through the one training loop
(kd_jax/training/loop.py) -> their test metrics -> results.json
(kd_jax/reporting/results.py). A single run is a group of one; a vectorized sweep group (kd_jax/training/vectorized.py)
is several runs whose configs differ only in vectorized.FIELDS, trained as one stacked program. Every training phase
restores its latest checkpoint first, so rerunning the same command resumes where a previous run stopped; SIGTERM stops
it at the next chunk with a checkpoint.
"""

import dataclasses
import functools
import logging
import os
import time

import jax
import ml_collections

from kd_jax import data, evaluation, files, models, preflight
from kd_jax.config import paths, schema
from kd_jax.data.examples import first_inputs
from kd_jax.errors import UserError
from kd_jax.models import peft
from kd_jax.parallel import distributed, preemption, sharding
from kd_jax.reporting import efficiency, results
from kd_jax.teachers import assistant, ensemble, logprobs_file, student_data, teacher, teacher_cache
from kd_jax.training import feature_losses, loop, metric_writer, steps, vectorized
from kd_jax.training.objective import Objective

logger = logging.getLogger(__name__)

STUDENT_PHASES = ("student", "student_hard")  # after the teacher's ('teacher', or an ensemble's 'teacher_<m>')
CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run: its config and workdir, and its name in messages ('' for a lone run; a sweep point's name)."""
  config: ml_collections.ConfigDict
  workdir: str
  name: str = ""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False) -> dict:
  """Validates `config`, runs teacher -> cache -> students -> evaluation in `workdir` and returns results.json.

  SIGTERM stops the run at the next step with a checkpoint (`preemption.Preempted`); a rerun resumes it. A workdir
  holding another config's run is refused unless `overwrite` (which moves that run aside).
  """
  preflight.check(config)
  with preemption.sigterm_requests_stop():
    return run_group([RunSpec(config, workdir)], overwrite=overwrite)[0]


def run_group(runs: list[RunSpec], *, vectorize: bool = False, overwrite: bool = False) -> list[dict]:
  """Runs validated configs that share data and teacher (a single run, or a vectorized group) in the fixed order of
  the module docstring; returns each run's results.json. A workdir holding another config's run is refused (moved
  aside with `overwrite`) once the data has loaded, before anything is written."""
  start_time = time.time()
  config = runs[0].config
  task = data.load_task(config)
  check_data_sizes(config, task)
  teacher_dir = teacher.directory(config, runs[0].workdir)
  # A teacher from a logprobs file: the file read and checked before anything is written (a server: reachable).
  logprobs = logprobs_file.read_for_run(config, task, teacher_dir)
  for run in runs:
    feature_losses.check_positions(run.config.distill, task.train)
  mesh = sharding.make_mesh(config.train.num_devices, config.mesh)
  logger.info("Data %s: %d training examples (%d labeled), %d test; %d classes. Mesh: %d devices (%s).", task.name,
              len(task.train), len(task.labeled_train), len(task.test), task.num_classes, mesh.size,
              ", ".join(f"{axis} {size}" for axis, size in mesh.shape.items()))
  writers = [_start_workdir(run, overwrite) for run in runs]
  if logprobs is logprobs_file.SERVER_PENDING:  # a served teacher, asked now that the workdir is this run's
    logprobs = logprobs_file.from_server(config, task, teacher_dir)
  evaluator = evaluation.for_task(config, task, mesh)
  if logprobs is not None:  # no model: no teacher metrics, and the students are not compared with one
    the_teacher = teacher.Teacher(None, None, teacher_dir, logprobs=logprobs)
    teacher_metrics, reference = None, None
  else:
    the_teacher = ensemble.obtain(config, task, mesh, runs[0].workdir, writers=writers[0],
                                  evaluate_fn=functools.partial(evaluator.during_training, teacher_inputs=True))
    teacher_metrics, reference = evaluator.teacher(the_teacher.model, the_teacher.params)
  teacher_results = ensemble.results(config, runs[0].workdir, the_teacher, evaluator, reference)
  selection = _selection(config)
  # With a teacher assistant, the students' teacher is the assistant, distilled from the teacher here.
  students_teacher = assistant.obtain(config, task, mesh, the_teacher, writer=writers[0].get(assistant.PHASE),
                                      evaluate_fn=functools.partial(evaluator.during_training, reference=reference),
                                      selection=selection)
  models_metrics = {} if teacher_metrics is None else {"teacher": teacher_metrics}
  if students_teacher is not the_teacher:
    models_metrics[assistant.PHASE] = evaluator.final(students_teacher.model, students_teacher.params, reference)
    reference = evaluator.teacher(students_teacher.model, students_teacher.params)[1]
  student = student_data.prepare(config, task, students_teacher, mesh,
                                 tail_temperatures=teacher_cache.topk_tail_temperatures([run.config for run in runs]))
  student_model, trained, trainable_params = train_students(
      runs, writers, task, mesh, students_teacher, student,
      evaluate_fn=functools.partial(evaluator.during_training, reference=reference), vectorize=vectorize,
      selection=selection)
  costs = model_efficiency(config, task, mesh, the_teacher, student_model, trained[0]["student"][0],
                           student_trainable_params=trainable_params,
                           the_assistant=None if students_teacher is the_teacher else students_teacher)
  final_metrics = {}  # id(params) -> metrics: a baseline shared by several runs is evaluated once
  outputs = []
  for i, run in enumerate(runs):
    metrics, phases = dict(models_metrics), {}
    if i == 0:  # the run that trained the teacher (or the ensemble's members) and the assistant
      phases.update(ensemble.training_stats(config, the_teacher))
      if students_teacher.stats is not None and students_teacher is not the_teacher:
        phases[assistant.PHASE] = students_teacher.stats
    for phase, (params, phase_stats) in trained[i].items():
      if id(params) not in final_metrics:
        final_metrics[id(params)] = evaluator.final(student_model, params, reference)
      metrics[phase], phases[phase] = final_metrics[id(params)], phase_stats
    # The compiled steps' per-device memory (loop stats) as its own section, by phase.
    memory = {phase: phase_stats["memory"] for phase, phase_stats in phases.items() if "memory" in phase_stats}
    phases = {phase: {key: value for key, value in phase_stats.items() if key != "memory"}
              for phase, phase_stats in phases.items()}
    outcome = results.Results.of_run(task=task, num_devices=mesh.size, num_processes=jax.process_count(),
                                     metrics=metrics, efficiency={model: costs[model] for model in metrics},
                                     phases=phases, extra={**teacher_results, **student.results, "memory": memory},
                                     wall_s=time.time() - start_time)
    for writer in writers[i].values():
      writer.close()
    outputs.append(outcome.write(run.workdir) if distributed.is_main_process() else outcome.to_json())
  logger.info("Wrote %s (%.1fs).", ", ".join(os.path.join(run.workdir, results.RESULTS_FILE) for run in runs),
              time.time() - start_time)
  return outputs


@dataclasses.dataclass(frozen=True)
class _Trainee:
  """One model a student phase trains: the config it follows (seed, objective, learning rate) and the runs sharing
  it."""
  config: ml_collections.ConfigDict
  objective: Objective
  run_indices: tuple[int, ...]


def _selection(config: ml_collections.ConfigDict) -> loop.Selection | None:
  """train.select's choice of step for the students (and an assistant): None keeps the last."""
  if config.train.select != "best_validation":
    return None
  metric = config.sweep.selection_metric
  return loop.Selection(metric, higher_is_better=metric in results.HIGHER_IS_BETTER)


def train_students(runs: list[RunSpec], writers: list[dict], task: data.TaskData, mesh, the_teacher: teacher.Teacher,
                   student: student_data.StudentData, *, evaluate_fn, vectorize: bool,
                   selection: loop.Selection | None) -> tuple[object, list[dict], int | None]:
  """The KD student and, with config.baseline, the hard-label student of every run, through the training loop.

  A single run trains one model per phase (steps.program); a vectorized group stacks its models (vectorized.program):
  one KD student per run, one hard-label student per distinct vectorized.BASELINE_FIELDS. The students are created
  by models.create_student (from the teacher's layers when config.student.init_from_teacher_layers is set) and train
  the parameters peft.of_student selects; LoRA adapters are merged into their layers at the end (peft.plain_params).
  Each trains under its Objective.from_config (the KD student's distills as `student` says; the hard-label student's
  never does).

  Args:
    evaluate_fn: (model, params) -> validation scalars at the loop's eval steps (the evaluator against the teacher).
    selection: train.select's choice of step (_selection).

  Returns:
    (the student model as evaluation sees it, per run {phase: (its final params, the phase's stats)}, the number of
    parameters training updates: None when it updates every one).
  """
  config = runs[0].config
  example_inputs = first_inputs(task.train.inputs)
  trainable = peft.of_student(config.student)
  init_params = {}
  for seed in sorted({run.config.seed for run in runs}):
    model, init_params[seed] = models.create_student(config.student, num_classes=task.num_classes,
                                                     example_inputs=example_inputs, rng=jax.random.PRNGKey(seed),
                                                     teacher_model=the_teacher.model,
                                                     teacher_params=the_teacher.params)
  trainable_params = None if trainable is None else trainable.count(next(iter(init_params.values())))
  num_steps = steps.num_train_steps(len(task.train), config.data.batch_size, config.train.num_epochs,
                                    config.train.num_steps)
  layers = None if not schema.uses_features(config.distill) else _feature_layers(student, model, init_params, example_inputs)
  objective_of = lambda run_config, distills: Objective.from_config(run_config, num_steps=num_steps, distills=distills,
                                                                    task=task, model=model, layers=layers,
                                                                    tail_temperatures=student.tail_temperatures)
  kd_objectives = [objective_of(run.config, student.distills) for run in runs]
  kd_init_params = init_params if layers is None else _with_projections(kd_objectives[0].feature_loss, layers,
                                                                        init_params)
  phases = {"student": (student.examples, [_Trainee(run.config, objective, (i,))
                                           for i, (run, objective) in enumerate(zip(runs, kd_objectives))])}
  if config.baseline:
    shares = vectorized.baseline_shares([run.config for run in runs]) if vectorize else [[0]]
    phases["student_hard"] = (task.train, [_Trainee(runs[indices[0]].config,
                                                    objective_of(runs[indices[0]].config, False), tuple(indices))
                                           for indices in shares])
  trained = [{} for _ in runs]
  for phase, (examples, trainees) in phases.items():
    online = student.online_teacher if phase == "student" else None
    phase_init_params = kd_init_params if phase == "student" else init_params
    phase_trainable = trainable
    if trainable is not None and phase_init_params is not init_params:  # the feature projections beside the model
      phase_trainable = dataclasses.replace(trainable, within=feature_losses.MODEL)
    trained_model = models.with_remat(model, config.train.remat, config.train.attention_chunk,
                                      config.train.scan_layers)
    common = dict(model=trained_model, optim_config=config.optim,
                  num_steps=num_steps, examples=examples, batch_size=config.data.batch_size, train_config=config.train,
                  teacher=None if online is None else (
                      models.with_attention_chunk(online.model, config.train.attention_chunk,
                                                   config.train.scan_layers), online.params),
                  input_noise_std=config.distill.input_noise_std, trainable=phase_trainable)
    if vectorize:
      program = vectorized.program(init_params=phase_init_params, objectives=[trainee.objective for trainee in trainees],
                                   learning_rates=[trainee.config.optim.learning_rate for trainee in trainees],
                                   seeds=[trainee.config.seed for trainee in trainees], **common)
      checkpoint_dir = os.path.join(vectorized.group_directory([run.workdir for run in runs]), phase)
    else:
      (trainee,) = trainees
      program = steps.program(init_params=phase_init_params[config.seed], objective=trainee.objective,
                              seed=config.seed, mesh=mesh, param_rules=config.mesh.rules, **common)
      checkpoint_dir = os.path.join(runs[0].workdir, "checkpoints", phase)
    logs = [loop.RunLog(", ".join(runs[i].name for i in trainee.run_indices),
                        metric_writer.FanOutWriter([writers[i][phase] for i in trainee.run_indices]),
                        steps.learning_rates(trainee.config.optim, num_steps), trainee.objective.schedule_table())
            for trainee in trainees]
    outcome = loop.train(phase, program, logs, num_steps=num_steps, checkpoint_dir=checkpoint_dir,
                         train_config=config.train,
                         evaluate=lambda params: evaluate_fn(peft.plain_model(model), peft.plain_params(model, params)),
                         selection=selection)
    for trainee, trainee_params, selected_step in zip(trainees, outcome.params, outcome.selected_steps):
      trainee_stats = outcome.stats | {"selected_step": selected_step}
      if phase == "student_hard":
        trainee_stats["shared_by_points"] = len(trainee.run_indices)
      for i in trainee.run_indices:
        trained[i][phase] = (peft.plain_params(model, trainee_params), trainee_stats)
  return peft.plain_model(model), trained, trainable_params


def _feature_layers(student: student_data.StudentData, model, init_params: dict,
                    example_inputs) -> feature_losses.ModelLayers:
  """What feature distillation maps: the layers of the teacher run in the step and of the student, and whether text
  positions are pooled."""
  online = student.online_teacher
  teacher_inputs = first_inputs(student.examples.teacher_view().inputs)
  return feature_losses.ModelLayers(
      teacher=feature_losses.describe(online.model, online.params, teacher_inputs),
      student=feature_losses.describe(model, next(iter(init_params.values())), example_inputs),
      pool_tokens=not feature_losses.tokens_aligned(student.examples))


def _with_projections(features: feature_losses.FeatureLoss, layers: feature_losses.ModelLayers,
                      init_params: dict) -> dict:
  """What the KD phase trains per seed: the student's initial params joined with freshly initialized projections
  (for the mapped layers whose widths differ; seeded by the seed)."""
  logger.info("Feature distillation: (teacher, student) hidden states %s (decoder: %s), widths %s -> %s, %s.",
              features.pairs, features.decoder_pairs, layers.student.widths, layers.teacher.widths,
              "mean-pooled per example (the tokenizations differ)" if layers.pool_tokens else "position by position")
  return {seed: feature_losses.join_params(params, feature_losses.init_projections(
      features.pairs, layers.teacher, layers.student, jax.random.fold_in(jax.random.PRNGKey(seed), 1),
      decoder_pairs=features.decoder_pairs))
          for seed, params in init_params.items()}


def model_efficiency(config, task: data.TaskData, mesh, the_teacher: teacher.Teacher, student_model,
                     student_params, *, student_trainable_params: int | None,
                     the_assistant: teacher.Teacher | None = None) -> dict:
  """efficiency.measure of the teacher, the assistant (if any) and the student architecture (both students share
  it), on this process's first device of the mesh, with the students' compression relative to the teacher;
  `student_trainable_params`: the parameters the students' training updated (LoRA adapters and unfrozen parameters;
  None: all)."""
  device = next(device for device in mesh.devices.flat if device.process_index == jax.process_index())
  one = lambda examples: first_inputs(examples.inputs)
  student = efficiency.measure(student_model, student_params, one(task.test), device=device,
                               batch_size=config.data.eval_batch_size, trainable_params=student_trainable_params)
  if the_teacher.model is None:  # a teacher from a logprobs file: nothing here to measure
    return {"student": student, "student_hard": student}
  costs = {"teacher": efficiency.measure(the_teacher.model, the_teacher.params, one(task.test.teacher_view()),
                                         device=device, batch_size=config.data.eval_batch_size)}
  costs["student"] = costs["student_hard"] = {**student, **efficiency.compression(costs["teacher"], student)}
  if the_assistant is not None:
    costs[assistant.PHASE] = efficiency.measure(the_assistant.model, the_assistant.params, one(task.test),
                                                device=device, batch_size=config.data.eval_batch_size)
  return costs


def check_data_sizes(config: ml_collections.ConfigDict, task: data.TaskData) -> None:
  """Each training phase needs at least one full global batch."""
  sizes = {"training": len(task.train)}
  if config.teacher.init == "train":
    sizes["labeled training (the teacher's)"] = len(task.labeled_train)
  for what, size in sizes.items():
    if size < config.data.batch_size:
      raise UserError(f"config.data.batch_size={config.data.batch_size}: larger than the {size} {what} examples of "
                      f"data set {task.name!r}; lower it or raise data.train_fraction / data.labeled_fraction")


def stored_config_differences(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """The fields in which the run stored in `workdir` (its config.json) differs from `config`, but those a resumed
  run may change (schema.OPERATIONAL_FIELDS); [] when the workdir holds no run."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return []
  return paths.differing(files.read_json(path), files.as_json_value(config.to_dict()),
                         ignore=schema.OPERATIONAL_FIELDS)


def claim_workdir(config: ml_collections.ConfigDict, workdir: str, overwrite: bool) -> None:
  """Refuses to resume a workdir that holds a run of another config; with `overwrite`, moves that run aside.

  The earlier run is renamed to `<workdir>.replaced-<time>`, never deleted.
  """
  differing = stored_config_differences(config, workdir)
  if not differing:
    return
  if not overwrite:
    stored = paths.flatten(files.read_json(os.path.join(workdir, CONFIG_FILE)))
    current = paths.flatten(files.as_json_value(config.to_dict()))
    shown = ", ".join(f"{field}: {stored[field]!r} -> {current[field]!r}" for field in differing[:3])
    more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
    raise UserError(f"--workdir={workdir} holds a run of another config ({shown}{more}); use a new workdir, or "
                    "--overwrite to move that run aside and start over")
  replaced = f"{workdir.rstrip(os.sep)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
  if distributed.is_main_process():
    os.rename(workdir, replaced)
  logger.warning("Moved the earlier run of another config from %s to %s.", workdir, replaced)


def _start_workdir(run: RunSpec, overwrite: bool) -> dict:
  """Claims the run's workdir (`claim_workdir`), writes its config.json, and returns its metric writers by phase."""
  claim_workdir(run.config, run.workdir, overwrite)
  os.makedirs(run.workdir, exist_ok=True)
  if distributed.is_main_process():
    files.write_json(os.path.join(run.workdir, CONFIG_FILE), run.config.to_dict())
  return {phase: metric_writer.MetricWriter(run.workdir, phase)
          for phase in ensemble.phases(run.config) + assistant.phases(run.config) + STUDENT_PHASES}
