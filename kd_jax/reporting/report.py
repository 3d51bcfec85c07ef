"""Human-readable summaries of results: the metrics table of one run, and the report of a sweep.

A sweep report is computed from files only: `<workdir>/sweep.json` (written by kd_jax/sweeps/) and each finished
point's results.json and history.jsonl. So `python -m kd_jax.reporting.report WORKDIR` (scripts/report.sh) re-aggregates
any sweep workdir, also while points are still running. It writes:
  results.csv  one row per finished point: swept fields, seed, metrics of the KD student, hard-label student and
               teacher, data sizes, steps and wall time;
  summary.md   per combination of swept values, mean ± std over seeds of every metric; the paired difference from
               the hard-label student of the same seed with a bootstrap interval; findings computed from the data;
  plots/       PNG and PDF figures (kd_jax/reporting/plots.py).
"""

import csv
import io
import json
import os
import sys

import numpy as np

from kd_jax import files
from kd_jax.errors import UserError
from kd_jax.reporting import stats
from kd_jax.reporting.results import (ASSISTANT, BASELINE, HIGHER_IS_BETTER, MODEL_LABELS, PERCENT_METRICS, Group,
                                      Sweep, best_group, format_mean_std, format_metric, format_value, load_sweep,
                                      model_varies, present_metrics)


def metrics_table(results: dict) -> str:
  """Fixed-width tables of a results.json: the test metrics (reported), the validation metrics (what selects) and
  the models' efficiency; one row per model (teacher, KD student, hard-label student). A teacher ensemble is named
  ('teacher (ensemble of 3)') and its members follow it in the metrics tables."""
  data = results.get("data", {})
  ensemble = results.get("teacher_ensemble")
  labels = {**MODEL_LABELS, "teacher": ensemble["label"]} if ensemble else MODEL_LABELS
  blocks = []
  for split, key in (("test", "metrics"), ("validation", "validation_metrics")):
    if results.get(key):
      size = data.get(f"num_{split}")
      role = "reported" if split == "test" else "selects"
      title = f"{split} split{f' ({size} examples)' if size is not None else ''}: {role}"
      columns = {name: (name, "{:.4f}".format) for name in present_metrics(results[key].values())}
      rows = [(labels[model], results[key][model]) for model in labels if model in results[key]]
      if ensemble:  # each member after the ensemble's row
        rows[1:1] = [(f"  member {m} (seed {member['seed']})", member[key])
                     for m, member in enumerate(ensemble["members"])]
      blocks.append([title] + _table_rows(rows, columns))
  if results.get("efficiency"):
    blocks.append(["efficiency"] + _table_rows([(labels[model], results["efficiency"][model]) for model in labels
                                                if model in results["efficiency"]],
                                               efficiency_columns(results["efficiency"].values())))
  return "\n\n".join("\n".join(block) for block in blocks)


# The efficiency table's columns: results.json key -> (header, format).
EFFICIENCY_COLUMNS = {
    "params": ("params", "{:,.0f}".format), "trainable_params": ("trainable", "{:,.0f}".format),
    "param_bytes": ("MiB", lambda value: f"{value / 2**20:.3f}"),
    "flops_per_example": ("MFLOP/example", lambda value: f"{value / 1e6:.4f}"),
    "latency_ms": ("latency ms", "{:.4f}".format), "throughput_per_s": ("examples/s", "{:,.0f}".format),
    "compression_params": ("compression", "{:.1f}x".format), "latency_speedup": ("speedup", "{:.2f}x".format)}


def efficiency_columns(efficiencies) -> dict:
  """EFFICIENCY_COLUMNS for tables of these efficiency dicts; 'trainable' only where some model trained fewer
  parameters than it has (frozen parameters, LoRA)."""
  partial = any(entry.get("trainable_params", entry.get("params")) != entry.get("params") for entry in efficiencies)
  return {key: column for key, column in EFFICIENCY_COLUMNS.items() if partial or key != "trainable_params"}


def _table_rows(rows: list[tuple[str, dict]], columns: dict) -> list[str]:
  """A header and one line per (label, {key: value}) of `rows`, `columns` {key: (header, format)}; '-' where a row
  lacks a key."""
  width = max([22] + [len(label) + 1 for label, _ in rows])
  header = f"{'model':<{width}}" + "".join(f"{name:>15}" for name, _ in columns.values())
  lines = [header, "-" * len(header)]
  for label, values in rows:
    lines.append(f"{label:<{width}}" + "".join(f"{form(values[key]) if key in values else '-':>15}"
                                                for key, (_, form) in columns.items()))
  return lines



def metric_unit(metric: str) -> str:
  return " points" if metric in PERCENT_METRICS else ""


def metric_header(metric: str, *, difference: bool = False) -> str:
  if metric in PERCENT_METRICS:
    return f"Δ {metric} (points)" if difference else f"{metric} (%)"
  return f"Δ {metric}" if difference else metric


def format_interval(metric: str, difference: stats.PairedDifference) -> str:
  """'95% t interval [+1.10, +2.40], n = 5' (and the bootstrap's from 10 seeds), or, below 3 seeds, 'n = 2: too few
  seeds for an interval; differences +1.20, +0.80'."""
  if difference.method is None:
    values = ", ".join(format_metric(metric, value, signed=True) for value in difference.values)
    return f"n = {difference.n}: too few seeds for an interval; differences {values}"
  text = (f"{stats.CONFIDENCE_LEVEL:.0%} t interval [{format_metric(metric, difference.low, signed=True)}, "
          f"{format_metric(metric, difference.high, signed=True)}], n = {difference.n}")
  if np.isfinite(difference.bootstrap_low):
    text += (f"; bootstrap [{format_metric(metric, difference.bootstrap_low, signed=True)}, "
             f"{format_metric(metric, difference.bootstrap_high, signed=True)}]")
  return text


def format_difference(metric: str, difference: stats.PairedDifference) -> str:
  """'+1.80 ± 0.60 points (95% t interval [+1.10, +2.40], n = 5)'."""
  return (f"{format_mean_std(metric, difference.mean, difference.std, signed=True)}{metric_unit(metric)} "
          f"({format_interval(metric, difference)})")


# Findings: sentences computed from the numbers.

def trend_phrase(name: str, labels: list[str], means: list[float], noise: float) -> str:
  """How the means change along the values of `name` (in their config order).

  'is flat in NAME' when their range is within the seed noise; else 'rises with NAME', 'falls with NAME', 'rises
  with NAME up to V, then falls', 'falls with NAME down to V, then rises', or 'varies non-monotonically'.
  """
  means = np.asarray(means, np.float64)
  steps = np.diff(means)
  if not means.max() - means.min() > (noise if np.isfinite(noise) else 0.0):
    return f"is flat in {name} within the seed noise"
  if (steps >= 0).all():
    return f"rises with {name}"
  if (steps <= 0).all():
    return f"falls with {name}"
  peak, trough = int(means.argmax()), int(means.argmin())
  if (steps[:peak] >= 0).all() and (steps[peak:] <= 0).all():
    return f"rises with {name} up to {labels[peak]}, then falls"
  if (steps[:trough] <= 0).all() and (steps[trough:] >= 0).all():
    return f"falls with {name} down to {labels[trough]}, then rises"
  return f"varies non-monotonically with {name} (highest at {labels[peak]}, lowest at {labels[trough]})"


def _series(metric: str, labels: list[str], means: list[float]) -> str:
  return ", ".join(f"{label}: {format_metric(metric, mean, unit=True)}" for label, mean in zip(labels, means))


def factor_means(sweep: Sweep, factor_index: int, value_of_run) -> list[float]:
  """Per value of the factor, the mean of `value_of_run(run)` over its runs (seeds and the other factors' values)."""
  values = [[value_of_run(run) for run in sweep.runs if run.value_indices[factor_index] == i]
            for i in range(len(sweep.factors[factor_index].values))]
  return [stats.mean_std(run_values)[0] for run_values in values]


def _gain(metric: str, split: str):
  """A run's KD-student metric minus its hard-label student's, on `split`."""
  return lambda run: run.metric("student", metric, split) - run.metric(BASELINE, metric, split)


def pooled_std(stds: list[float]) -> float:
  """The seed noise of several groups: sqrt of their mean variance (NaN when no group has 2 seeds)."""
  variances = [std ** 2 for std in stds if std is not None and np.isfinite(std)]
  return float(np.sqrt(np.mean(variances))) if variances else float("nan")


def findings(sweep: Sweep, groups: list[Group]) -> list[str]:
  """One line per swept factor (trend of the selection metric), the best value against hard labels and, in a
  one-factor sweep, against the values beside it, where KD beats hard labels and where it does not, and the student
  against the teacher. Trends and the best point are chosen on the selection split (validation); what is reported
  for the best point, against its neighbours and against hard labels, is on test."""
  metric, split = sweep.selection_metric, sweep.selection_split
  best = best_group(groups, metric, split)
  noise = pooled_std([group.mean_std("student", metric, split)[1] for group in groups])
  lines = []
  best_difference = best.versus_baseline("student", metric)
  against_baseline = "" if best_difference is None else f", {format_difference(metric, best_difference)} vs hard labels"
  if best_difference is not None and best_difference.n >= stats.MIN_SEEDS_FOR_INTERVAL:
    # A difference is called only where its interval excludes 0 (|mean| > std alone is no evidence at few seeds).
    against_baseline += (", its interval excludes 0" if best_difference.sign else
                         ", its interval contains 0: no difference shown")
  best_text = (f"{sweep.group_label(best)} (by {split} {metric}); on test: KD student "
               f"{format_mean_std(metric, *best.mean_std('student', metric))}"
               f"{'%' if metric in PERCENT_METRICS else ''}{against_baseline}")
  # The gain over hard labels gets its own trend when the baseline changes with the swept values (data, student).
  gain_varies = sweep.has_baseline and model_varies(groups)
  gain_noise = pooled_std([getattr(group.versus_baseline("student", metric, split), "std", None)
                           for group in groups])
  for index, factor in enumerate(sweep.factors):
    if len(factor.values) < 2:
      continue
    labels = [factor.value_label(i) for i in range(len(factor.values))]
    means = factor_means(sweep, index, lambda run: run.metric("student", metric, split))
    others_vary = any(len(other.values) > 1 for other in sweep.factors if other is not factor)
    averaged = " (averaged over the other factors)" if others_vary else ""
    trend = trend_phrase(factor.label, labels, means, noise)
    line = f"KD-student {split} {metric} {trend}{averaged} ({_series(metric, labels, means)})"
    if len(sweep.factors) == 1:
      line += f"; best {best_text}"
    lines.append(line + ".")
    if gain_varies:
      gains = factor_means(sweep, index, _gain(metric, split))
      series = ", ".join(f"{label}: {format_metric(metric, gain, signed=True)}" for label, gain in zip(labels, gains))
      lines.append(f"KD minus hard-label {split} {metric} {trend_phrase(factor.label, labels, gains, gain_noise)}"
                   f"{averaged} ({series}{metric_unit(metric)}).")
  if len(sweep.factors) == 1 and len(sweep.factors[0].values) > 1:
    lines.append(_neighbours_line(sweep, groups, best, metric))
  if len(sweep.factors) != 1:
    lines.append(f"Best point: {best_text}.")
  if sweep.has_baseline:
    lines.append(_baseline_line(sweep, groups, metric))
  teacher_mean, _ = best.mean_std("teacher", metric)
  student_mean, _ = best.mean_std("student", metric)
  line = (f"Student vs teacher at the best point (test {metric}): KD student "
          f"{format_metric(metric, student_mean, unit=True)}, teacher {format_metric(metric, teacher_mean, unit=True)} "
          f"({format_metric(metric, student_mean - teacher_mean, signed=True)}{metric_unit(metric)})")
  if sweep.has_baseline:
    line += f", hard-label student {format_metric(metric, best.mean_std(BASELINE, metric)[0], unit=True)}"
  lines.append(line + ".")
  return lines


def _neighbours_line(sweep: Sweep, groups: list[Group], best: Group, metric: str) -> str:
  """The best value of a one-factor sweep against the values beside it in the config's order: the KD student's test
  `metric` paired by seed, a difference called only where its interval excludes 0."""
  factor, index = sweep.factors[0], best.value_indices[0]
  direction = 1 if metric in HIGHER_IS_BETTER else -1
  parts = []
  for neighbour in sorted((group for group in groups if abs(group.value_indices[0] - index) == 1),
                          key=lambda group: group.value_indices[0]):
    difference = best.versus_group(neighbour, "student", metric)
    outcome = ("no interval" if difference.method is None else
               {direction: "better", -direction: "worse", 0: "no difference shown (interval contains 0)"}[
                   difference.sign])
    parts.append(f"{factor.value_label(index)} − {factor.value_label(neighbour.value_indices[0])}: "
                 f"{format_difference(metric, difference)}, {outcome}")
  return (f"Best {sweep.group_label(best)} against its neighbours (test {metric} of the KD student, paired by seed): "
          + ("; ".join(parts) if parts else "no neighbouring value has finished") + ".")


def training_time_share(train: dict) -> float:
  """A point's share of the wall time its results.json gives: a vectorized group writes the group's wall time into
  each of its points, so each gets it divided by the group's KD students (phases.student.vectorized_runs)."""
  runs = train.get("phases", {}).get("student", {}).get("vectorized_runs") or 1
  return (train.get("wall_s") or 0.0) / runs


def _baseline_line(sweep: Sweep, groups: list[Group], metric: str) -> str:
  """Where the KD student beats the hard-label one (whole interval on the better side), loses, or neither."""
  outcomes = {"better": [], "worse": [], "unclear": []}
  direction = 1 if metric in HIGHER_IS_BETTER else -1
  for group in groups:
    difference = group.versus_baseline("student", metric)
    if difference is None:
      continue
    outcome = {direction: "better", -direction: "worse", 0: "unclear"}[difference.sign]
    outcomes[outcome].append(f"{sweep.group_label(group)} ({format_metric(metric, difference.mean, signed=True)})")
  parts = [f"{what} at {', '.join(labels)}" for what, labels in (
      ("better", outcomes["better"]), ("worse", outcomes["worse"]),
      ("no clear difference (interval contains 0, or no interval)", outcomes["unclear"])) if labels]
  return (f"KD vs hard labels (test {metric}, paired {stats.CONFIDENCE_LEVEL:.0%} t interval; fewer than "
          f"{stats.MIN_SEEDS_FOR_INTERVAL} seeds give none): " + "; ".join(parts) + ".")


# Files.

def csv_rows(sweep: Sweep) -> list[dict]:
  """One row per finished point: swept fields by path, seed, metrics per model, data sizes, steps, wall time."""
  rows = []
  for run in sweep.runs:
    row = {"point": run.name}
    for factor, i in zip(sweep.factors, run.value_indices):
      for field, value in zip(factor.fields, factor.values[i]):
        row[field] = value if isinstance(value, (int, float, str, type(None))) else format_value(value)
    row["seed"] = run.seed
    for model in ("student", BASELINE, "teacher") + ((ASSISTANT,) if _has_assistant(sweep) else ()):
      for metric in sweep.metrics:
        row[f"{model}_{metric}"] = run.results.metrics.get(model, {}).get(metric)
      for metric in sweep.metrics:
        row[f"{model}_validation_{metric}"] = run.results.validation_metrics.get(model, {}).get(metric)
      for key in EFFICIENCY_COLUMNS:
        row[f"{model}_{key}"] = run.results.efficiency.get(model, {}).get(key)
    data = run.results.data
    for key in ("num_train", "num_labeled", "num_unlabeled", "num_validation", "num_test"):
      row[key] = data.get(key)
    train = run.results.train
    for key in ("steps", "wall_s", "examples_per_sec", "num_devices"):
      row[key] = train.get(key)
    rows.append(row)
  return rows


def _has_assistant(sweep: Sweep) -> bool:
  """Whether a finished point distilled its students from a teacher assistant."""
  return any(ASSISTANT in run.results.metrics for run in sweep.runs)


def results_csv(sweep: Sweep) -> str:
  rows = csv_rows(sweep)
  stream = io.StringIO()
  writer = csv.DictWriter(stream, fieldnames=list(rows[0]) if rows else ["point"], lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  return stream.getvalue()


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
  return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] +
          ["| " + " | ".join(row) + " |" for row in rows])


def _intervals_text(seeds: int) -> str:
  """What the summary's differences come with at `seeds` seeds (only the intervals a sweep of that size shows)."""
  if seeds < stats.MIN_SEEDS_FOR_INTERVAL:
    return (f"listed per seed: {seeds} seed{'s' if seeds > 1 else ''} give no interval (a Student-t interval needs "
            f"{stats.MIN_SEEDS_FOR_INTERVAL})")
  text = (f"with a {stats.CONFIDENCE_LEVEL:.0%} Student-t interval of the mean difference (n - 1 degrees of "
          "freedom)")
  if seeds >= stats.MIN_SEEDS_FOR_BOOTSTRAP:
    text += (f" and a percentile-bootstrap interval beside it ({stats.BOOTSTRAP_RESAMPLES} resamples, seed "
             f"{stats.BOOTSTRAP_SEED})")
  return text


def summary_markdown(sweep: Sweep) -> str:
  """summary.md: header, findings, metrics per swept value, paired differences from hard labels, data sizes."""
  groups = sweep.groups()
  metric = sweep.selection_metric
  factor_text = " × ".join(f"`{factor.label}` ({len(factor.values)} value{'s' if len(factor.values) > 1 else ''})"
                           for factor in sweep.factors)
  lines = [f"# Sweep report: {os.path.basename(os.path.normpath(sweep.workdir))}", "",
           f"{factor_text or 'Seeds only'}, {sweep.seeds} seed{'s' if sweep.seeds > 1 else ''} each: "
           f"{len(sweep.runs)} of {sweep.num_points} points finished.", ""]
  if not groups:
    return "\n".join(lines + ["No point has finished yet."]) + "\n"
  split = sweep.selection_split
  best = best_group(groups, metric, split)
  wall_s = [training_time_share(run.results.train) for run in sweep.runs]
  protocol = ("Selection (the best point, the trends) is on the **validation** split; every number reported for a "
              "point is on the **test** split." if split == "validation" else
              "These results have no validation split (written by an older kd_jax): the best point and the trends "
              "are chosen on the **test** split itself, which biases the reported numbers upwards.")
  lines += [protocol, "",
            f"Selection metric: {metric} ({'higher' if metric in HIGHER_IS_BETTER else 'lower'} is better), of the KD "
            f"student. Cells are mean ± sample std (ddof=1) over seeds; accuracy and agreement in %. Differences are "
            f"paired: each model minus the hard-label student of the same seed, {_intervals_text(sweep.seeds)}. "
            f"Training time of the finished points: {sum(wall_s):.0f} s (a vectorized group's once).", "", "## Findings",
            ""]
  lines += [f"- {line}" for line in findings(sweep, groups)]
  value_header = [factor.label for factor in sweep.factors]

  def value_cells(group: Group) -> list[str]:
    cells = [factor.value_label(i) for factor, i in zip(sweep.factors, group.value_indices)]
    if group is best and cells:
      cells[0] = f"**{cells[0]}** (best)"
    return cells

  models = [(model, label) for model, label in MODEL_LABELS.items()
            if (model != BASELINE or sweep.has_baseline) and (model != ASSISTANT or _has_assistant(sweep))]
  rows = []
  for group in groups:
    for model, label in models:
      cells = [format_mean_std(name, *group.mean_std(model, name)) for name in sweep.metrics]
      selection_cell = format_mean_std(metric, *group.mean_std(model, metric, split))
      rows.append(value_cells(group) + [label] + cells + [selection_cell, str(len(group.runs))])
  lines += ["", "## Metrics by swept value (test split; the last column: the selection metric on validation)", ""]
  lines += _markdown_table(value_header + ["model"] + [metric_header(name) for name in sweep.metrics]
                           + [f"{split} {metric_header(metric)}", "seeds"], rows)
  if sweep.has_baseline:
    difference_metrics = (metric,) + tuple(name for name in ("accuracy", "label_accuracy", "rougeL", "nll", "ece")
                                           if name != metric and name in sweep.metrics)
    rows = []
    for group in groups:
      for model in ("student", "teacher"):
        cells = []
        for name in difference_metrics:
          difference = group.versus_baseline(model, name)
          if difference is None:
            cells += ["-"] * (3 if name == metric else 1)
            continue
          cells.append(format_mean_std(name, difference.mean, difference.std, signed=True))
          if name == metric:
            cells.append(format_interval(name, difference))
            too_few = difference.n < stats.MIN_SEEDS_FOR_INTERVAL
            cells.append("-" if too_few else ("yes" if difference.sign else "no"))
        rows.append(value_cells(group) + [f"{MODEL_LABELS[model]} − hard labels"] + cells)
    header = value_header + ["model", metric_header(metric, difference=True), "interval of the mean",
                             "interval excludes 0"] + [metric_header(name, difference=True)
                                                       for name in difference_metrics[1:]]
    lines += ["", "## Difference from the hard-label student (test split, paired over seeds)", ""]
    lines += _markdown_table(header, rows)
  if any(run.results.efficiency for run in sweep.runs):
    columns = efficiency_columns([entry for run in sweep.runs for entry in run.results.efficiency.values()])
    rows = [value_cells(group) + [label] + [
        "-" if not np.isfinite(value := group.efficiency(model, key)) else form(value)
        for key, (_, form) in columns.items()] for group in groups for model, label in models]
    lines += ["", "## Size and speed (mean over seeds; the students' compression and speedup are the teacher's "
              "parameters and latency over theirs)", ""]
    lines += _markdown_table(value_header + ["model"] + [header for header, _ in columns.values()], rows)
  sizes = [(group, group.runs[0].results.data) for group in groups]
  if len({json.dumps(data, sort_keys=True) for _, data in sizes}) > 1:
    lines += ["", "## Data per swept value", ""]
    lines += _markdown_table(value_header + ["train", "labeled", "unlabeled (transfer set)", "validation", "test"], [
        value_cells(group) + [str(data.get(key, "-")) for key in ("num_train", "num_labeled", "num_unlabeled",
                                                                   "num_validation", "num_test")]
        for group, data in sizes])
  return "\n".join(lines) + "\n"


def write_sweep_report(workdir: str) -> list[str]:
  """Writes results.csv, summary.md and plots/ into the sweep workdir; returns the paths written."""
  from kd_jax.reporting import plots  # pylint: disable=g-import-not-at-top  (matplotlib only where figures are drawn)
  sweep = load_sweep(workdir)
  written = []
  for name, text in (("results.csv", results_csv(sweep)), ("summary.md", summary_markdown(sweep))):
    path = os.path.join(workdir, name)
    with files.atomic_open(path) as stream:
      stream.write(text.encode())
    written.append(path)
  if sweep.runs:
    written += plots.write_plots(sweep, os.path.join(workdir, "plots"))
  return written


def main(argv: list[str]) -> None:
  """`python -m kd_jax.reporting.report SWEEP_WORKDIR`: (re)writes the sweep's report; bad input is one line, exit 2."""
  if len(argv) != 2:
    print("usage: python -m kd_jax.reporting.report SWEEP_WORKDIR", file=sys.stderr)
    sys.exit(2)
  try:
    written = write_sweep_report(argv[1])
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print("\n".join(written))


if __name__ == "__main__":
  main(sys.argv)
