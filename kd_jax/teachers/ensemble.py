"""Teacher ensembles (config.ensemble): several teachers whose averaged probabilities at temperature T are the
distillation target, p_ens^T = mean_m softmax(z_m / T) (big_vision's and TextBrewer's multi-teacher setting).

The members: member m is config.teacher with teacher.seed + m (ensemble.size teachers), or with the changes of
ensemble.members[m]. Each member is an ordinary teacher (kd_jax/teachers/teacher.py), obtained through the same path and
so trained once and cached once: member m lives in the teacher directory when it is config.teacher itself (member 0 of a
seed ensemble is then the single-teacher run's teacher, shared with it in a sweep over ensemble.size), else in `<teacher
directory>/members/<its teacher.identity_key>`. Its history phase is `teacher_<m>`.

The target: the members' logits stay separate, as losses.EnsembleLogits [..., M, C] (each member's own dense cache,
stacked by student_data.py, or `MemberLogits` run in the step online), and losses.divergence averages their
probabilities at the step's T. A cached average would have to be T log p_ens^T for one fixed T (the average is over
probabilities inside the temperature, so no one logits vector gives p_ens^T at every T): a cache per temperature,
and no vectorized sweep over T on one cache. Per-member logits cost M floats per class instead of one and keep one
cache per teacher, whatever T.

As one model (evaluation, size and speed), the ensemble is `Averaged`: log p_ens^1, the log of its averaged
probabilities at T = 1, as logits; it is the evaluator's reference, what the students' (and the members') agreement
and kl_to_teacher compare against. results.json names it (`teacher_ensemble`: size and each member's directory, seed and metrics).
"""

import dataclasses
import os

import jax.numpy as jnp
import ml_collections

from kd_jax import files
from kd_jax.config import paths, rules, validation
from kd_jax.errors import ConfigError, require
from kd_jax.teachers import teacher
from kd_jax.training import losses


def phases(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The training phases (history, results.json) of the teachers: 'teacher', or 'teacher_<m>' per member."""
  return ("teacher",) if config.ensemble.size == 1 else tuple(f"teacher_{m}" for m in range(config.ensemble.size))


def member_configs(config: ml_collections.ConfigDict, workdir: str | None = None) -> list[ml_collections.ConfigDict]:
  """The config of each member: config with that member's teacher section (and ensemble.size 1), teacher.workdir set
  to its directory when the run's `workdir` is given."""
  home = None if workdir is None else teacher.directory(config, workdir)
  members = []
  for m in range(config.ensemble.size):
    member = config.copy_and_resolve_references()
    if config.ensemble.members:
      for field, value in config.ensemble.members[m]:
        paths.set_value(member.teacher, field, value)
    else:
      member.teacher.seed = config.teacher.seed + m
    member.ensemble.size, member.ensemble.members = 1, ()
    if home is not None:
      same = teacher.identity(member) == teacher.identity(config)
      member.teacher.workdir = home if same else os.path.join(home, "members", teacher.identity_key(member))
    members.append(member)
  return members


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless every member of an ensemble is a valid teacher (its fields, their rules, its
  directory), distinct from the others and of this run's label space, and at most one is the checkpoint's own
  weights. A member's errors name it: config.ensemble.members[m].<field>."""
  size, members = config.ensemble.size, tuple(config.ensemble.members)
  if size == 1:
    return
  identities = {}
  for m, member in enumerate(member_configs(config)):
    try:
      validation.check_values(member, "teacher")
      rules.check_teacher(member)
      teacher.check_config(member)
    except ConfigError as error:
      raise ConfigError(f"ensemble.members[{m}].{error.field.removeprefix('teacher.')}", error.value,
                        error.allowed) from None
    key = teacher.identity_key(member)
    require(key not in identities, "ensemble.members" if members else "ensemble.size", members or size,
            f"members {identities.get(key)} and {m} are the same teacher; vary their seed, init or widths")
    identities[key] = m
    _check_label_space(config, member, m)
  pretrained = [member for member in member_configs(config) if member.teacher.init == "pretrained"]
  require(len(pretrained) <= 1, "ensemble.members" if members else "ensemble.size", members or size,
          f"{len(pretrained)} members are teacher.checkpoint as it is (init='pretrained'), the same weights; give "
          "the others teacher directories (('init', <dir>),) in ensemble.members")


def _check_label_space(config: ml_collections.ConfigDict, member: ml_collections.ConfigDict, m: int) -> None:
  """A member restored from a teacher directory (init=<dir>) was trained on this run's label space: its recorded
  teacher.json names the same data set (and number of synthetic classes)."""
  record_path = os.path.join(member.teacher.init, "teacher.json")
  if member.teacher.init in ("train", "pretrained") or not os.path.exists(record_path):
    return
  recorded = files.read_json(record_path)
  space = lambda flat: (flat.get("data.name"), flat.get("data.synthetic.num_classes")
                        if str(flat.get("data.name")).startswith("synthetic") else None)
  ours = space(paths.flatten(files.as_json_value({"data": config.data.to_dict()})))
  require(space(recorded) == ours, f"ensemble.members[{m}].init", member.teacher.init,
          f"a teacher of data.name={recorded.get('data.name')!r}, whose classes are not this run's "
          f"(data.name={config.data.name!r}); an ensemble averages probabilities over one label space")


def obtain(config: ml_collections.ConfigDict, task, mesh, workdir: str, *, writers: dict,
           evaluate_fn) -> teacher.Teacher:
  """The run's teacher: `teacher.obtain` of config itself, or of every member, combined (`combine`).

  Args:
    writers: {phase: metric writer} holding every phase of `phases(config)`.
    evaluate_fn: see teacher.obtain.
  """
  if config.ensemble.size == 1:
    return teacher.obtain(config, task, mesh, workdir, writer=writers["teacher"], evaluate_fn=evaluate_fn)
  return combine([teacher.obtain(member, task, mesh, workdir, writer=writers[phase], evaluate_fn=evaluate_fn,
                                 phase=phase)
                  for member, phase in zip(member_configs(config, workdir), phases(config))])


@dataclasses.dataclass(frozen=True)
class MemberLogits:
  """The members as one model whose output is their logits side by side: apply(variables, inputs) ->
  losses.EnsembleLogits [batch, M, C], variables {'params': (params of member 0, ..., of member M-1)}. What the
  train step runs online."""
  models: tuple

  def apply(self, variables, inputs, train: bool = False, rngs=None):
    return losses.EnsembleLogits(jnp.stack([model.apply({"params": params}, inputs, train=train, rngs=rngs)
                                            for model, params in zip(self.models, variables["params"])], axis=-2))


@dataclasses.dataclass(frozen=True)
class Averaged:
  """The ensemble as one classifier: apply -> [batch, C] log p_ens^1 = log mean_m softmax(z_m), its averaged
  probabilities at T = 1 as logits (what evaluation and the size-and-speed measurement see)."""
  members: MemberLogits

  def apply(self, variables, inputs, train: bool = False, rngs=None):
    return self.members.apply(variables, inputs, train=train, rngs=rngs).log_probs(1.0)


def combine(members: list[teacher.Teacher]) -> teacher.Teacher:
  """The ensemble of `members` as one Teacher (model `Averaged`, params the tuple of the members'), keeping them."""
  model = Averaged(MemberLogits(tuple(member.model for member in members)))
  return teacher.Teacher(model, tuple(member.params for member in members), members[0].directory,
                         members=tuple(members))


def online(the_teacher: teacher.Teacher) -> teacher.Teacher:
  """The teacher the train step runs: the ensemble's members side by side (`MemberLogits`), or the single one."""
  if not the_teacher.members:
    return the_teacher
  return dataclasses.replace(the_teacher, model=the_teacher.model.members)


def training_stats(config: ml_collections.ConfigDict, the_teacher: teacher.Teacher) -> dict:
  """{phase: the loop's stats} of the teachers trained (or resumed) in this call: 'teacher', or members'."""
  return {phase: member.stats for phase, member in zip(phases(config), the_teacher.members or (the_teacher,))
          if member.stats is not None}


def label(num_members: int) -> str:
  """How tables name the teacher."""
  return "teacher" if num_members == 1 else f"teacher (ensemble of {num_members})"


def results(config: ml_collections.ConfigDict, workdir: str, the_teacher: teacher.Teacher, evaluator,
            reference) -> dict:
  """What results.json records about an ensemble ({} for a single teacher): `teacher_ensemble` with its size, label
  and, per member, its phase, directory, teacher seed and init, its changes to config.teacher, and its test and
  validation metrics on the teacher's inputs (evaluator.final; agreement and kl_to_teacher against `reference`, the
  ensemble's: evaluator.teacher of the ensemble)."""
  if not the_teacher.members:
    return {}
  members = []
  for m, (member, member_config) in enumerate(zip(the_teacher.members, member_configs(config, workdir))):
    metrics = evaluator.final(member.model, member.params, reference, teacher_inputs=True)
    members.append({"phase": phases(config)[m], "directory": member.directory, "seed": member_config.teacher.seed,
                    "init": member_config.teacher.init,
                    "changes": dict(config.ensemble.members[m]) if config.ensemble.members else {},
                    "metrics": metrics["test"], "validation_metrics": metrics["validation"]})
  return {"teacher_ensemble": {"size": config.ensemble.size, "label": label(config.ensemble.size), "members": members}}
