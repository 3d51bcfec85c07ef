"""The results contract: what a run writes (`Results`, results.json) and a sweep's finished points read back (`Sweep`).

A run of any mode (single, a sweep point, a point of a vectorized group) writes the same results.json through
`Results`:
  data     {name, num_classes, num_train, num_labeled, num_unlabeled, num_validation, num_test}
  metrics  {teacher, assistant (with teacher.assistant), student, student_hard (when trained)}: each model's test
           metrics (kd_jax/evaluation/): what is reported
  validation_metrics   the same models' metrics on the validation split: what selects (the final model with
           train.select, a sweep's best point)
  efficiency  {teacher, assistant, student, student_hard}: size and speed of each model (kd_jax/reporting/efficiency.py)
  train    {num_devices, num_processes, phases: {phase: the loop's stats}, steps, examples_per_sec (of the KD
           student), resumed_from_step, resumed_phase (where a rerun took up an interrupted run), wall_s}
  teacher_cache or teacher_generations   what the student's data was built from (kd_jax/teachers/student_data.py)
  memory   {phase: per-device bytes of its compiled step (sharding.memory_stats): params_bytes, optimizer_bytes (from
           the state's shards), argument_bytes, output_bytes, temp_bytes, alias_bytes, peak_bytes (XLA's
           memory_analysis)}, for the phases trained in this call
The report (kd_jax/reporting/report.py, kd_jax/reporting/plots.py) reads these files back, never live objects:
`load_sweep(workdir)` gives the sweep's factors (sweep.json, written by kd_jax/sweeps/) and every finished point's
Results and history. The metric catalog (which metrics exist, which direction is better, how they are written) lives
here too.
"""

import dataclasses
import json
import os

import numpy as np

from kd_jax import files
from kd_jax.errors import UserError
from kd_jax.reporting import stats

RESULTS_FILE = "results.json"
MODEL_LABELS = {"teacher": "teacher", "assistant": "teacher assistant", "student": "student (KD)",
                "student_hard": "student (hard labels)"}
ASSISTANT = "assistant"  # a teacher assistant's model (kd_jax/teachers/assistant.py), in the runs that have one
# Every metric a table may show, in column order: classification tasks have accuracy, ece, brier; generation tasks
# (e-SNLI) label_accuracy and ROUGE, causal LMs perplexity, bits per byte and ROUGE. Tables show the ones the results
# hold (`present_metrics`).
TABLE_METRICS = ("accuracy", "label_accuracy", "perplexity", "bits_per_byte", "rouge1", "rouge2", "rougeL", "faithfulness",
                 "las", "ece", "nll", "brier", "agreement", "kl_to_teacher")
HIGHER_IS_BETTER = ("accuracy", "label_accuracy", "token_accuracy", "rouge1", "rouge2", "rougeL", "faithfulness", "las",
                    "las_leaking", "las_nonleaking", "las_gold", "agreement")
PERCENT_METRICS = ("accuracy", "label_accuracy", "agreement")  # shown in %, their differences in percentage points
SWEEP_FILE = "sweep.json"
BASELINE = "student_hard"


def present_metrics(metric_dicts) -> tuple[str, ...]:
  """The TABLE_METRICS that at least one of the `{metric: value}` dicts holds, in table order."""
  metric_dicts = list(metric_dicts)
  return tuple(name for name in TABLE_METRICS if any(name in metrics for metrics in metric_dicts))




@dataclasses.dataclass(frozen=True)
class Results:
  """A run's results.json (see the module docstring); `extra` holds the teacher_cache / teacher_generations
  sections."""
  data: dict
  metrics: dict
  train: dict
  validation_metrics: dict = dataclasses.field(default_factory=dict)
  efficiency: dict = dataclasses.field(default_factory=dict)
  extra: dict = dataclasses.field(default_factory=dict)

  SECTIONS = ("data", "metrics", "validation_metrics", "efficiency", "train")

  @classmethod
  def of_run(cls, *, task, num_devices: int, num_processes: int, metrics: dict, efficiency: dict, phases: dict,
             extra: dict, wall_s: float) -> "Results":
    """The results of a finished run: the task's sizes, each model's metrics ({model: {test, validation}}) and
    efficiency, each trained phase's loop stats (teacher when trained in this call, student, student_hard) and where
    a rerun took up an interrupted run: the first phase resumed from a checkpoint before its last step, and that step
    (else the first phase restored at its end, as in a rerun of a finished run)."""
    num_train, num_labeled = len(task.train), len(task.labeled_train)
    resumed = [(phase, phase_stats["resumed_from_step"]) for phase, phase_stats in phases.items()
               if phase_stats.get("resumed_from_step") is not None]
    resumed = [(phase, step) for phase, step in resumed if step < phases[phase]["steps"]] + resumed
    student = phases["student"]
    return cls(
        data={"name": task.name, "num_classes": task.num_classes, "num_train": num_train, "num_labeled": num_labeled,
              "num_unlabeled": num_train - num_labeled, "num_validation": len(task.validation),
              "num_test": len(task.test)},
        metrics={model: by_split["test"] for model, by_split in metrics.items()},
        validation_metrics={model: by_split["validation"] for model, by_split in metrics.items()},
        efficiency=efficiency,
        train={"num_devices": num_devices, "num_processes": num_processes, "phases": phases,
               "steps": student["steps"], "examples_per_sec": student["examples_per_sec"],
               "resumed_from_step": resumed[0][1] if resumed else None,
               "resumed_phase": resumed[0][0] if resumed else None, "wall_s": wall_s},
        extra=extra)

  def to_json(self) -> dict:
    return files.as_json_value({**{section: getattr(self, section) for section in self.SECTIONS}, **self.extra})

  @classmethod
  def from_json(cls, value: dict) -> "Results":
    """Reads what `to_json` wrote; sections a file lacks (written by hand, or by an older kd_jax) are empty."""
    extra = {key: section for key, section in value.items() if key not in cls.SECTIONS}
    return cls(**{section: value.get(section, {}) for section in cls.SECTIONS}, extra=extra)

  def write(self, workdir: str) -> dict:
    """Writes `<workdir>/results.json` (atomically); returns its content."""
    content = self.to_json()
    files.write_json(os.path.join(workdir, RESULTS_FILE), content)
    return content

  def metric(self, model: str, metric: str, split: str = "test") -> float:
    """The metric of `model` on `split` ('test' or 'validation'), NaN if there is no such model (no hard-label
    baseline), metric or split (results written before validation splits existed)."""
    by_model = self.metrics if split == "test" else self.validation_metrics
    value = by_model.get(model, {}).get(metric)
    return float("nan") if value is None else float(value)


def read(workdir: str) -> Results:
  return Results.from_json(files.read_json(os.path.join(workdir, RESULTS_FILE)))


def format_value(value) -> str:
  """A swept value as written in point names, tables and plots: 2.0 -> '2', (64, 64) -> '64x64', 'a/b' -> 'a_b'."""
  if isinstance(value, float):
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text
  if isinstance(value, (tuple, list)):
    return "x".join(format_value(item) for item in value) if value else "()"
  return str(value).replace("/", "_")


@dataclasses.dataclass(frozen=True)
class Factor:
  """One swept dimension: a grid field, or a zipped group of fields that take their i-th values together."""
  fields: tuple[str, ...]
  values: tuple[tuple, ...]  # values[i][j]: the i-th value of fields[j]

  @property
  def label(self) -> str:
    return "+".join(self.fields)

  def value_label(self, i: int) -> str:
    return ",".join(format_value(value) for value in self.values[i])

  @property
  def numeric(self) -> bool:
    """A single field with numbers for values (plotted on a numeric axis)."""
    return len(self.fields) == 1 and all(
        isinstance(value, (int, float)) and not isinstance(value, bool) for (value,) in self.values)

  def to_json(self) -> dict:
    return {"fields": list(self.fields), "values": files.as_json_value(self.values)}

  @classmethod
  def from_json(cls, value: dict) -> "Factor":
    return cls(tuple(value["fields"]), tuple(tuple(_as_tuple(item) for item in values) for values in value["values"]))


def _as_tuple(value):
  """JSON lists back to tuples (swept tuple values such as hidden sizes), recursively."""
  return tuple(_as_tuple(item) for item in value) if isinstance(value, list) else value


@dataclasses.dataclass(frozen=True)
class Run:
  """A finished sweep point: which value of each factor it ran, its seed, and its results.json."""
  name: str
  directory: str
  value_indices: tuple[int, ...]
  seed: int
  results: Results

  def metric(self, model: str, metric: str, split: str = "test") -> float:
    """The metric of `model` on `split`, NaN if this run has no such model (no hard-label baseline)."""
    return self.results.metric(model, metric, split)


@dataclasses.dataclass(frozen=True)
class Group:
  """The runs (one per seed) of one combination of factor values."""
  value_indices: tuple[int, ...]
  runs: tuple[Run, ...]

  def values(self, model: str, metric: str, split: str = "test") -> np.ndarray:
    """[seeds] the metric of `model` on `split` in each run."""
    return np.array([run.metric(model, metric, split) for run in self.runs])

  def mean_std(self, model: str, metric: str, split: str = "test") -> tuple[float, float]:
    return stats.mean_std(self.values(model, metric, split))

  def versus_baseline(self, model: str, metric: str, split: str = "test") -> stats.PairedDifference | None:
    """`model` minus the hard-label student of the same seed, or None without a baseline."""
    baseline = self.values(BASELINE, metric, split)
    if np.isnan(baseline).all():
      return None
    return stats.paired_difference(self.values(model, metric, split), baseline)

  def versus_group(self, other: "Group", model: str, metric: str, split: str = "test") -> stats.PairedDifference:
    """`model` here minus `model` in `other`, paired over the seeds both have finished (a seed fixes the
    initialization and the batches, so the difference of one seed is that of the swept values alone)."""
    theirs = {run.seed: run.metric(model, metric, split) for run in other.runs}
    shared = [run for run in self.runs if run.seed in theirs]
    return stats.paired_difference([run.metric(model, metric, split) for run in shared],
                                   [theirs[run.seed] for run in shared])

  def efficiency(self, model: str, key: str) -> float:
    """The mean over seeds of `model`'s efficiency `key` (NaN where the results hold none)."""
    return stats.mean_std([run.results.efficiency.get(model, {}).get(key, np.nan) for run in self.runs])[0]


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A sweep workdir as read from its files."""
  workdir: str
  factors: tuple[Factor, ...]
  seeds: int
  selection_metric: str
  num_points: int
  runs: tuple[Run, ...]  # the finished points, in sweep order

  def groups(self) -> list[Group]:
    """The combinations of factor values that have at least one finished run, in sweep order."""
    by_values = {}
    for run in self.runs:
      by_values.setdefault(run.value_indices, []).append(run)
    return [Group(key, tuple(sorted(runs, key=lambda run: run.seed))) for key, runs in by_values.items()]

  def group_label(self, group: Group) -> str:
    return ",".join(f"{factor.label}={factor.value_label(i)}" for factor, i in zip(self.factors, group.value_indices))

  @property
  def metrics(self) -> tuple[str, ...]:
    """The metrics the finished points report (classification or generation ones)."""
    return present_metrics(metrics for run in self.runs for metrics in run.results.metrics.values())

  @property
  def has_baseline(self) -> bool:
    return any(BASELINE in run.results.metrics for run in self.runs)

  @property
  def selection_split(self) -> str:
    """Where the best point, the findings and the trends are chosen: 'validation'; 'test' only for results written
    before kd_jax had validation splits (no validation metrics), which the summary then says."""
    return "validation" if self.runs and all(run.results.validation_metrics for run in self.runs) else "test"


def load_sweep(workdir: str) -> Sweep:
  """Reads `<workdir>/sweep.json` and the results.json of every point that has finished."""
  path = os.path.join(workdir, SWEEP_FILE)
  if not os.path.exists(path):
    raise UserError(f"{workdir} has no {SWEEP_FILE}: not a sweep workdir (run a sweep config with --workdir={workdir})")
  definition = files.read_json(path)
  runs = []
  for point in definition["points"]:
    directory = os.path.join(workdir, point["name"])
    if os.path.exists(os.path.join(directory, RESULTS_FILE)):
      runs.append(Run(name=point["name"], directory=directory, value_indices=tuple(point["value_indices"]),
                      seed=point["seed"], results=read(directory)))
  return Sweep(workdir=workdir, factors=tuple(Factor.from_json(factor) for factor in definition["factors"]),
               seeds=definition["seeds"], selection_metric=definition["selection_metric"],
               num_points=len(definition["points"]), runs=tuple(runs))


def read_history(run: Run) -> list[dict]:
  """The run's history.jsonl records ({phase, step, train/... or validation/... scalars}); [] if it has none."""
  path = os.path.join(run.directory, "history.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as stream:
    return [json.loads(line) for line in stream if line.strip()]


def better(metric: str, a: float, b: float) -> bool:
  """Whether value a of `metric` is better than b."""
  return a > b if metric in HIGHER_IS_BETTER else a < b


def model_varies(groups: list[Group], model: str = BASELINE) -> bool:
  """Whether a model's results differ between groups: the hard-label student does not when only KD settings are
  swept, the teacher not unless its config or the data are."""
  first = [run.results.metrics.get(model) for run in groups[0].runs]
  return any([run.results.metrics.get(model) for run in group.runs] != first for group in groups[1:])


def best_group(groups: list[Group], metric: str, split: str = "validation") -> Group:
  """The group whose KD student has the best mean `metric` over seeds on `split` (the first one on ties): chosen on
  the validation split, so that the test metrics reported for it are not selected on."""
  best = groups[0]
  for group in groups[1:]:
    if better(metric, group.mean_std("student", metric, split)[0], best.mean_std("student", metric, split)[0]):
      best = group
  return best



# Formatting of metric values (tables, summaries, figure titles).

def format_metric(metric: str, value: float, *, signed: bool = False, unit: bool = False) -> str:
  """Accuracy-like metrics in % with 2 decimals (a '%' sign if `unit`), the others with 4; NaN as '-'."""
  if not np.isfinite(value):
    return "-"
  scale, digits = (100.0, 2) if metric in PERCENT_METRICS else (1.0, 4)
  text = f"{value * scale:{'+' if signed else ''}.{digits}f}"
  return text + "%" if unit and metric in PERCENT_METRICS else text


def format_mean_std(metric: str, mean: float, std: float, *, signed: bool = False) -> str:
  text = format_metric(metric, mean, signed=signed)
  return text if not np.isfinite(std) else f"{text} ± {format_metric(metric, std)}"
