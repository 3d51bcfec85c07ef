"""Figures of a sweep report, as PNG and PDF in `<workdir>/plots/`, drawn from the files read by results.py.

- `<metric>_vs_<factor>`: every test metric against the swept values, mean over seeds with std error bars, the
  hard-label student as a band (mean ± std) and the teacher as a dotted line; with two factors, one line per value
  of the second; with more, one figure per factor, averaged over the others.
- `heatmap_<metric>` (two factors): the KD student's selection metric and its paired difference from hard labels.
- `reliability`, `confusion`: teacher, KD student and hard-label student at the best point, pooled over seeds.
- `training_curves`: a validation metric and the labeled cross-entropy against the step, per swept value.
- `<metric>_vs_parameters`, `<metric>_vs_latency`: the test metric against model size and latency (log scale), with
  the KD students' Pareto front (chosen on validation).
- `training_time_vs_data_size` (when the sweep changes the data size): each phase's training wall time.

Colors are fixed per model (teacher gray, KD student blue, hard labels orange); the values of a factor are shades.
"""

import os
import textwrap

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from kd_jax.reporting import results, stats  # pylint: disable=g-import-not-at-top,wrong-import-position

MODEL_COLORS = {"teacher": "#4d4d4d", "student": "#1f77b4", "student_hard": "#d95f02"}
MODEL_SHADES = {"teacher": "Greys", "student": "Blues", "student_hard": "Oranges"}
STYLE = {
    "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 7.5, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "grid.linewidth": 0.6, "lines.linewidth": 1.5, "lines.markersize": 4, "legend.frameon": False,
    "savefig.dpi": 200, "savefig.bbox": "tight", "pdf.fonttype": 42, "ps.fonttype": 42, "figure.dpi": 100,
}
FIGURE_SIZE = (3.6, 2.7)
FORMATS = ("png", "pdf")


def write_plots(sweep: results.Sweep, plots_dir: str) -> list[str]:
  """Draws every figure of the sweep into `plots_dir`; returns the paths written."""
  os.makedirs(plots_dir, exist_ok=True)
  groups = sweep.groups()
  best = results.best_group(groups, sweep.selection_metric, sweep.selection_split)
  written = []
  with plt.rc_context(STYLE):
    for metric in sweep.metrics:
      if len(sweep.factors) == 2:
        written += _save(_two_factor_lines(sweep, groups, metric), plots_dir,
                         f"{metric}_vs_{sweep.factors[0].label}_by_{sweep.factors[1].label}")
      else:
        for index, factor in enumerate(sweep.factors):
          written += _save(_one_factor_lines(sweep, index, metric), plots_dir, f"{metric}_vs_{factor.label}")
    if len(sweep.factors) == 2:
      written += _save(_heatmaps(sweep, groups), plots_dir, f"heatmap_{sweep.selection_metric}")
    label = sweep.group_label(best)
    if "reliability" in best.runs[0].results.metrics["student"]:  # classification tasks
      written += _save(_reliability(best, label), plots_dir, "reliability")
      written += _save(_confusion(best, label), plots_dir, "confusion")
    written += _save(_training_curves(sweep, groups, best), plots_dir, "training_curves")
    if all(run.results.efficiency for run in sweep.runs):
      for cost, stem in (("params", "parameters"), ("latency_ms", "latency")):
        written += _save(_quality_vs_cost(sweep, groups, cost), plots_dir, f"{sweep.selection_metric}_vs_{stem}")
    if len({group.runs[0].results.data.get("num_train") for group in groups}) > 1:
      written += _save(_training_time_vs_data(groups), plots_dir, "training_time_vs_data_size")
  return written


def _save(figure, plots_dir: str, stem: str) -> list[str]:
  paths = [os.path.join(plots_dir, f"{stem}.{extension}") for extension in FORMATS]
  for path in paths:
    figure.savefig(path)
  plt.close(figure)
  return paths


def _models(sweep: results.Sweep) -> tuple[str, ...]:
  return ("student", "student_hard", "teacher") if sweep.has_baseline else ("student", "teacher")


def _axis_label(metric: str) -> str:
  return f"test {metric}{' (%)' if metric in results.PERCENT_METRICS else ''}"


def _scale(metric: str) -> float:
  return 100.0 if metric in results.PERCENT_METRICS else 1.0


KEY_WIDTH = 70  # characters per line of a numbered axis's key
# Tick labels longer than this (a zipped group of fields, long strings) become numbers with a key under the axis.
MAX_TICK_LABEL = 12


def _set_x_axis(axis, factor: results.Factor) -> np.ndarray:
  """x positions of the factor's values: the values themselves (log scale if they span > 1 decade) or 0..k-1. Values
  whose labels would overlap (a zipped factor's, long strings) are numbered 1..k, with the key as the axis label: the
  fields, then each number's values, wrapped to the figure's width."""
  labels = [factor.value_label(i) for i in range(len(factor.values))]
  if factor.numeric:
    x = np.array([value for (value,) in factor.values], np.float64)
    if (x > 0).all() and x.max() / x.min() > 10:
      axis.set_xscale("log")
    axis.set_xticks(x, labels)
    axis.minorticks_off()
    axis.set_xlabel(factor.label)
    return x
  x = np.arange(len(labels), dtype=np.float64)
  if not _numbered(factor):
    axis.set_xticks(x, labels)
    axis.set_xlabel(factor.label)
    return x
  axis.set_xticks(x, [str(i + 1) for i in range(len(labels))])
  key = [textwrap.fill(" + ".join(factor.fields), KEY_WIDTH)]
  key += [textwrap.fill(f"{i + 1}: {label}", KEY_WIDTH, subsequent_indent="    ") for i, label in enumerate(labels)]
  axis.set_xlabel("\n".join(key), fontsize=6.5, loc="left", linespacing=1.3)
  return x


def _numbered(factor: results.Factor) -> bool:
  """Whether `_set_x_axis` numbers the factor's values and keys them under the axis: a zipped factor, or labels
  longer than MAX_TICK_LABEL (a numeric factor's values are its ticks)."""
  return not factor.numeric and (len(factor.fields) > 1 or max(
      len(factor.value_label(i)) for i in range(len(factor.values))) > MAX_TICK_LABEL)


def _draw_model(axis, model: str, x: np.ndarray, means: np.ndarray, stds: np.ndarray, *, color, label: str) -> None:
  """The KD student as points with error bars; the baseline as a band; the teacher as a dotted line."""
  stds = np.nan_to_num(stds)
  if model == "student":
    axis.errorbar(x, means, yerr=stds, color=color, marker="o", capsize=2.5, label=label, zorder=3)
  elif model == "student_hard":
    axis.plot(x, means, color=color, linestyle="--", label=label, zorder=2)
    axis.fill_between(x, means - stds, means + stds, color=color, alpha=0.2, linewidth=0, zorder=1)
  else:
    axis.plot(x, means, color=color, linestyle=":", label=label, zorder=2)


def _one_factor_lines(sweep: results.Sweep, factor_index: int, metric: str):
  """Metric against one factor's values; with several factors, each value pools the runs of the other factors."""
  factor = sweep.factors[factor_index]
  figure, axis = plt.subplots(figsize=FIGURE_SIZE)
  x = _set_x_axis(axis, factor)
  for model in _models(sweep):
    per_value = [[run.metric(model, metric) for run in sweep.runs if run.value_indices[factor_index] == i]
                 for i in range(len(factor.values))]
    means, stds = np.array([stats.mean_std(values) for values in per_value]).T * _scale(metric)
    if model == "student_hard" and "baseline" in factor.fields and np.isfinite(means).sum() == 1:
      # `baseline` zipped with the factor (True at one value): its hard-label students stand for every value (they
      # do not depend on the teacher); drawn across the axis.
      (mean, std), = [(m, s) for m, s in zip(means, stds) if np.isfinite(m)]
      means, stds = np.full_like(x, mean), np.full_like(x, std)
    _draw_model(axis, model, x, means, stds, color=MODEL_COLORS[model], label=results.MODEL_LABELS[model])
  axis.set_ylabel(_axis_label(metric))
  averaged = " (averaged over the other factors)" if len(sweep.factors) > 1 else ""
  name = factor.label if len(factor.fields) == 1 else f"{len(factor.fields)} zipped fields"
  keyed = _numbered(factor)  # the axis's key under it: the legend goes above the axes
  axis.set_title(f"{metric} vs {name}{averaged}", fontsize=8 if averaged else None, pad=18 if keyed else None)
  axis.legend(**(dict(loc="lower center", bbox_to_anchor=(0.5, 1.0)) if keyed else
                 dict(loc="upper center", bbox_to_anchor=(0.5, -0.22))),
              ncol=3, fontsize=7, handlelength=1.8, columnspacing=1.0)
  return figure


def _two_factor_lines(sweep: results.Sweep, groups: list, metric: str):
  """x: the first factor; one line per value of the second. A model whose lines coincide is drawn once."""
  x_factor, line_factor = sweep.factors
  by_values = {group.value_indices: group for group in groups}
  figure, axis = plt.subplots(figsize=(FIGURE_SIZE[0] + 0.9, FIGURE_SIZE[1]))
  x = _set_x_axis(axis, x_factor)
  num_lines = len(line_factor.values)
  for model in _models(sweep):
    series = []
    for j in range(num_lines):
      cells = [by_values.get((i, j)) for i in range(len(x_factor.values))]
      series.append(np.array([cell.mean_std(model, metric) if cell else (np.nan, np.nan) for cell in cells]).T
                    * _scale(metric))
    identical = all(np.allclose(s, series[0], equal_nan=True) for s in series)
    shades = plt.get_cmap(MODEL_SHADES[model])(np.linspace(0.45, 0.95, num_lines))
    for j, (means, stds) in enumerate(series[:1] if identical else series):
      color = MODEL_COLORS[model] if identical else shades[j]
      label = results.MODEL_LABELS[model] + ("" if identical else f", {line_factor.label}={line_factor.value_label(j)}")
      _draw_model(axis, model, x, means, stds, color=color, label=label)
  axis.set_ylabel(_axis_label(metric))
  axis.set_title(f"{metric} vs {x_factor.label}")
  axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
  return figure


def _heatmaps(sweep: results.Sweep, groups: list):
  """Two panels over the 2-D grid: the KD student's mean selection metric, and its paired difference from hard."""
  metric = sweep.selection_metric
  row_factor, column_factor = sweep.factors
  shape = (len(row_factor.values), len(column_factor.values))
  student, difference = np.full(shape, np.nan), np.full(shape, np.nan)
  for group in groups:
    student[group.value_indices] = group.mean_std("student", metric)[0] * _scale(metric)
    versus = group.versus_baseline("student", metric)
    if versus is not None:
      difference[group.value_indices] = versus.mean * _scale(metric)
  percent = " (%)" if metric in results.PERCENT_METRICS else ""
  panels = [(student, f"KD student {metric}{percent}", "viridis" if metric in results.HIGHER_IS_BETTER else "viridis_r",
             None)]
  if sweep.has_baseline:
    limit = np.nanmax(np.abs(difference)) or 1.0
    panels.append((difference, f"KD − hard labels ({'points' if metric in results.PERCENT_METRICS else metric})",
                   "RdBu" if metric in results.HIGHER_IS_BETTER else "RdBu_r", (-limit, limit)))
  figure, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.9), squeeze=False)
  for axis, (values, title, colormap, limits) in zip(axes[0], panels):
    image = axis.imshow(values, cmap=colormap, aspect="auto", vmin=limits[0] if limits else None,
                        vmax=limits[1] if limits else None)
    for (i, j), value in np.ndenumerate(values):
      if np.isfinite(value):
        red, green, blue, _ = image.cmap(image.norm(value))
        luminance = 0.299 * red + 0.587 * green + 0.114 * blue
        axis.text(j, i, f"{value:+.1f}" if limits else f"{value:.1f}", ha="center", va="center", fontsize=7.5,
                  color="black" if luminance > 0.5 else "white")
    axis.set_xticks(range(shape[1]), [column_factor.value_label(j) for j in range(shape[1])])
    axis.set_yticks(range(shape[0]), [row_factor.value_label(i) for i in range(shape[0])])
    axis.set_xlabel(column_factor.label)
    axis.set_ylabel(row_factor.label)
    axis.set_title(title)
    axis.grid(False)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
  figure.tight_layout()
  return figure


def _pooled(runs, model: str, key: str):
  """A model's reliability bins or confusion matrix summed over the runs (seeds)."""
  entries = [run.results.metrics[model][key] for run in runs if model in run.results.metrics]
  if key == "confusion_matrix":
    return np.sum([np.asarray(entry, np.float64) for entry in entries], axis=0)
  counts = np.array([entry["count"] for entry in entries], np.float64)
  total = counts.sum(axis=0)

  def weighted(field):
    values = np.array([[np.nan if v is None else v for v in entry[field]] for entry in entries], np.float64)
    with np.errstate(invalid="ignore"):
      return np.nansum(values * counts, axis=0) / np.where(total > 0, total, np.nan)

  return total, weighted("confidence"), weighted("accuracy")


def _panels_models(group) -> list[str]:
  return [model for model in ("teacher", "student", "student_hard") if model in group.runs[0].results.metrics]


def _reliability(group, label: str):
  """Reliability diagrams: accuracy per confidence bin against the diagonal, with each model's ECE."""
  models = _panels_models(group)
  figure, axes = plt.subplots(1, len(models), figsize=(2.6 * len(models), 3.0), squeeze=False, sharey=True,
                              layout="constrained")
  for axis, model in zip(axes[0], models):
    counts, confidence, accuracy = _pooled(group.runs, model, "reliability")
    num_bins = len(counts)
    edges = np.linspace(0, 1, num_bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1 / num_bins
    filled = counts > 0
    axis.bar(centers[filled], accuracy[filled], width=width, color=MODEL_COLORS[model], alpha=0.85,
             edgecolor="white", linewidth=0.5, label="accuracy")
    axis.bar(centers[filled], (confidence - accuracy)[filled], bottom=accuracy[filled], width=width, color="none",
             edgecolor="#c0392b", hatch="///", linewidth=0.5, label="gap to confidence")
    axis.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=0.8)
    ece_mean, ece_std = group.mean_std(model, "ece")
    axis.set_title(f"{results.MODEL_LABELS[model]}\nECE {results.format_mean_std('ece', ece_mean, ece_std)}")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence")
    axis.set_aspect("equal")
  axes[0][0].set_ylabel("accuracy")
  figure.legend(*axes[0][-1].get_legend_handles_labels(), loc="outside lower center", ncol=2)
  figure.suptitle(f"Reliability at {label} (pooled over {len(group.runs)} seeds)", fontsize=9)
  return figure


def _confusion(group, label: str):
  """Row-normalized confusion matrices (rows: true class), pooled over seeds."""
  models = _panels_models(group)
  figure, axes = plt.subplots(1, len(models), figsize=(2.8 * len(models), 3.0), squeeze=False, layout="constrained")
  for axis, model in zip(axes[0], models):
    confusion = _pooled(group.runs, model, "confusion_matrix")
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    image = axis.imshow(rates, cmap=MODEL_SHADES[model], vmin=0, vmax=1)
    num_classes = len(rates)
    ticks = range(num_classes) if num_classes <= 20 else range(0, num_classes, max(num_classes // 10, 1))
    axis.set_xticks(ticks)
    axis.set_yticks(ticks)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.grid(False)
    accuracy_mean, accuracy_std = group.mean_std(model, "accuracy")
    axis.set_title(f"{results.MODEL_LABELS[model]}\naccuracy "
                   f"{results.format_mean_std('accuracy', accuracy_mean, accuracy_std)}%")
  figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="fraction of the true class")
  figure.suptitle(f"Confusion matrices at {label} (pooled over {len(group.runs)} seeds)", fontsize=9)
  return figure


def _curve(runs, phase: str, key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, mean over runs) of one scalar of one phase's history, at the steps every run logged."""
  by_step = {}
  for run in runs:
    for record in results.read_history(run):
      if record["phase"] == phase and key in record:
        by_step.setdefault(record["step"], []).append(record[key])
  steps = sorted(step for step, values in by_step.items() if len(values) == len(runs))
  return np.array(steps), np.array([np.mean(by_step[step]) for step in steps])


def _training_curves(sweep: results.Sweep, groups: list, best):
  """A validation metric (the selection metric where the history has it) and the labeled cross-entropy against the
  step: one KD line per swept value (shades of blue), the hard-label student of the best point dashed."""
  logged = {key for run in best.runs for record in results.read_history(run) for key in record}
  metric = next((name for name in (sweep.selection_metric, "accuracy", "token_accuracy", "nll")
                 if f"validation/{name}" in logged), sweep.selection_metric)
  scale = 100.0 if metric in results.PERCENT_METRICS else 1.0
  panels = ((f"validation/{metric}", f"validation {metric}{' (%)' if scale == 100 else ''}", scale),
            ("train/hard_loss", "train CE on labeled examples", 1.0))
  figure, axes = plt.subplots(1, 2, figsize=(7.4, 2.8), layout="constrained")
  shades = plt.get_cmap(MODEL_SHADES["student"])(np.linspace(0.4, 0.95, len(groups)))
  for axis, (key, ylabel, scale) in zip(axes, panels):
    for group, color in zip(groups, shades):
      steps, values = _curve(group.runs, "student", key)
      axis.plot(steps, values * scale, color=color, marker="o" if len(steps) < 8 else None,
                label=f"KD, {sweep.group_label(group)}")
    if sweep.has_baseline:
      steps, values = _curve(best.runs, "student_hard", key)
      label = "hard labels" + (f", {sweep.group_label(best)}" if results.model_varies(groups) else "")
      axis.plot(steps, values * scale, color=MODEL_COLORS["student_hard"], linestyle="--",
                marker="o" if len(steps) < 8 else None, label=label)
    if key.startswith("validation/"):
      teacher = best.mean_std("teacher", metric, "validation")[0]
      if np.isfinite(teacher):
        label = "teacher" + (f", {sweep.group_label(best)}" if results.model_varies(groups, "teacher") else "")
        axis.axhline(teacher * scale, color=MODEL_COLORS["teacher"], linestyle=":", label=label)
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
  axes[1].set_yscale("log")
  figure.suptitle(f"Training curves, mean over seeds ({sweep.seeds} per value)", fontsize=9)
  figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=6.5)
  return figure


def pareto_front(costs, qualities, higher_is_better: bool = True) -> np.ndarray:
  """Indices of the points no other point beats: one at most as costly and at least as good, better in one of the
  two. Ordered by cost."""
  costs, qualities = np.asarray(costs, np.float64), np.asarray(qualities, np.float64)
  qualities = qualities if higher_is_better else -qualities
  front = [i for i in range(len(costs))
           if not any(costs[j] <= costs[i] and qualities[j] >= qualities[i]
                      and (costs[j] < costs[i] or qualities[j] > qualities[i]) for j in range(len(costs)))]
  return np.array(sorted(front, key=lambda i: costs[i]), dtype=int)


def _quality_vs_cost(sweep: results.Sweep, groups: list, cost: str):
  """The selection metric on test against a cost (parameters or latency at batch 1, log scale) of every group's KD
  and hard-label students and of the teacher(s); the KD students' Pareto front, chosen on validation, connected."""
  metric = sweep.selection_metric
  scale = _scale(metric)
  higher = metric in results.HIGHER_IS_BETTER
  figure, axis = plt.subplots(figsize=(FIGURE_SIZE[0] + 0.6, FIGURE_SIZE[1]))
  for model in _models(sweep):
    points = [(group.efficiency(model, cost), group.mean_std(model, metric)[0] * scale) for group in groups]
    if model == "teacher" and not results.model_varies(groups, "teacher"):
      points = points[:1]
    x, y = np.array(points).T
    style = {"student": dict(marker="o", s=20, zorder=4, color=MODEL_COLORS[model]),
             "student_hard": dict(marker="s", s=34, zorder=3, facecolors="none", edgecolors=MODEL_COLORS[model]),
             "teacher": dict(marker="*", s=50, zorder=3, color=MODEL_COLORS[model])}[model]
    axis.scatter(x, y, label=results.MODEL_LABELS[model], **style)
  students = np.array([(group.efficiency("student", cost), group.mean_std("student", metric)[0] * scale)
                       for group in groups])
  selected = np.array([group.mean_std("student", metric, sweep.selection_split)[0] for group in groups])
  front = pareto_front(students[:, 0], selected, higher)
  axis.plot(students[front, 0], students[front, 1], color=MODEL_COLORS["student"], linewidth=1.0, zorder=2,
            label=f"KD Pareto front (by {sweep.selection_split})")
  for i in front:
    values = ",".join(factor.value_label(j) for factor, j in zip(sweep.factors, groups[i].value_indices))
    axis.annotate(values, students[i], fontsize=6, xytext=(3, 3), textcoords="offset points")
  axis.set_xscale("log")
  axis.set_xlabel({"params": "parameters", "latency_ms": "latency at batch 1 (ms)"}[cost])
  axis.set_ylabel(_axis_label(metric))
  axis.set_title(f"{metric} vs {'size' if cost == 'params' else 'latency'}")
  axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=7)
  return figure


def _training_time_vs_data(groups: list):
  """Training wall time of each phase after its first (compiling) chunk against the number of training examples
  (mean over seeds, log-log; only runs that trained the phase from start to end in one go)."""
  figure, axis = plt.subplots(figsize=FIGURE_SIZE)
  for phase in ("teacher", "student", "student_hard"):
    points = {}
    for group in groups:
      for run in group.runs:
        phase_stats = run.results.train.get("phases", {}).get(phase)
        if (phase_stats is not None and phase_stats.get("trained_steps") == phase_stats.get("steps")
            and "wall_s_after_compile" in phase_stats):
          points.setdefault(run.results.data["num_train"], []).append(phase_stats["wall_s_after_compile"])
    if points:
      sizes = sorted(points)
      axis.plot(sizes, [np.mean(points[size]) for size in sizes], color=MODEL_COLORS[phase], marker="o",
                label=results.MODEL_LABELS[phase])
  axis.set_xscale("log")
  axis.set_yscale("log")
  for scaled_axis in (axis.xaxis, axis.yaxis):
    scaled_axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    scaled_axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
  axis.set_xlabel("training examples")
  axis.set_ylabel("training wall time after compiling (s)")
  axis.set_title("training time vs data size", fontsize=8)
  axis.legend()
  return figure
