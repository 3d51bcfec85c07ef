"""Sweep reports from a hand-made sweep workdir: statistics against independent computations, CSV, summary, plots."""

import csv
import glob
import itertools
import json
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from kd_jax import files
from kd_jax.reporting import report, results, stats
from tests.helpers import REPO_ROOT

TEMPERATURES = (1.0, 2.0, 3.0)
# KD and hard-label accuracy per (temperature, seed): KD peaks at T=2; T=3 is worse than hard labels on every seed.
KD_ACCURACY = {1.0: (0.90, 0.92, 0.91), 2.0: (0.95, 0.96, 0.94), 3.0: (0.80, 0.82, 0.81)}
HARD_ACCURACY = (0.85, 0.88, 0.86)
TEACHER_ACCURACY = 0.97


def fake_metrics(accuracy: float, num_classes: int = 3) -> dict:
  """Metrics as in results.json, with a reliability diagram and a confusion matrix consistent with `accuracy`."""
  correct = int(round(accuracy * 100))
  confusion = np.zeros((num_classes, num_classes), int)
  confusion[0, 0], confusion[1, 1], confusion[2, 1] = correct // 2, correct - correct // 2, 100 - correct
  counts = [0] * 13 + [100 - correct, correct]
  return {"accuracy": accuracy, "nll": 1.0 - accuracy, "ece": 0.1 * accuracy, "brier": 0.5 - 0.1 * accuracy,
          "agreement": accuracy, "kl_to_teacher": 0.05, "num_examples": 100, "confusion_matrix": confusion.tolist(),
          "reliability": {"count": counts, "confidence": [None] * 13 + [0.9, 0.97],
                          "accuracy": [None] * 13 + [0.0 if counts[13] else None, 1.0]}}


def write_point(workdir: str, name: str, kd: float, hard: float | None, teacher: float, num_labeled: int = 126,
                kd_validation: float | None = None):
  """A finished point's results.json and history; the validation metrics equal the test ones unless the KD student's
  validation accuracy is given."""
  directory = os.path.join(workdir, name)
  metrics = {"teacher": fake_metrics(teacher), "student": fake_metrics(kd)}
  if hard is not None:
    metrics["student_hard"] = fake_metrics(hard)
  validation = {**metrics, "student": fake_metrics(kd if kd_validation is None else kd_validation)}
  efficiency = {"teacher": {"params": 100_000, "param_bytes": 400_000, "latency_ms": 1.0, "throughput_per_s": 1e4},
                **{model: {"params": 1_000, "param_bytes": 4_000, "latency_ms": 0.1, "throughput_per_s": 1e5,
                           "compression_params": 100.0, "latency_speedup": 10.0} for model in metrics
                   if model != "teacher"}}
  files.write_json(os.path.join(directory, "results.json"), {
      "data": {"name": "fake", "num_classes": 3, "num_train": 1000, "num_labeled": num_labeled,
               "num_unlabeled": 1000 - num_labeled, "num_validation": 50, "num_test": 100},
      "metrics": metrics, "validation_metrics": validation, "efficiency": efficiency,
      "train": {"steps": 100, "wall_s": 2.5, "examples_per_sec": 1000.0, "num_devices": 1}})
  with open(os.path.join(directory, "history.jsonl"), "w") as stream:
    for phase, final in (("student", kd), ("student_hard", hard or 0.5)):
      for step in (50, 100):
        stream.write(json.dumps({"phase": phase, "step": step, "train/hard_loss": 1.0 / step}) + "\n")
        stream.write(json.dumps({"phase": phase, "step": step, "validation/accuracy": final * step / 100}) + "\n")


def write_sweep_json(workdir: str, factors: list[results.Factor], seeds: int, metric: str = "accuracy") -> list[dict]:
  points = []
  for value_indices in itertools.product(*(range(len(factor.values)) for factor in factors)):
    for seed in range(seeds):
      name = ",".join(f"{factor.label}={factor.value_label(i)}" for factor, i in zip(factors, value_indices))
      points.append({"index": len(points), "name": f"{name},seed={seed}", "value_indices": list(value_indices),
                     "seed": seed})
  files.write_json(os.path.join(workdir, results.SWEEP_FILE), {
      "factors": [factor.to_json() for factor in factors], "seeds": seeds, "selection_metric": metric,
      "points": points})
  return points


@pytest.fixture
def temperature_sweep(tmp_path):
  """3 temperatures x 3 seeds, every point finished, with the accuracies above."""
  workdir = str(tmp_path / "sweep")
  factor = results.Factor(("distill.temperature",), tuple((t,) for t in TEMPERATURES))
  for point in write_sweep_json(workdir, [factor], seeds=3):
    temperature = TEMPERATURES[point["value_indices"][0]]
    write_point(workdir, point["name"], KD_ACCURACY[temperature][point["seed"]], HARD_ACCURACY[point["seed"]],
                TEACHER_ACCURACY)
  return workdir


def test_mean_std_matches_statistics_module():
  values = [0.91, 0.95, 0.87, 0.9]
  mean, std = stats.mean_std(values)
  assert mean == pytest.approx(statistics.mean(values), abs=1e-12)
  assert std == pytest.approx(statistics.stdev(values), abs=1e-12)
  assert stats.mean_std([0.5, float("nan"), 0.7]) == pytest.approx((0.6, statistics.stdev([0.5, 0.7])))
  mean, std = stats.mean_std([0.5])
  assert mean == 0.5 and np.isnan(std)


def test_bootstrap_interval_matches_exact_enumeration():
  """The percentile interval of 10,000 resampled means against the exact bootstrap distribution (all n^n draws)."""
  values = np.array([0.0, 1.0, 3.0, 7.0])
  exact_means = [np.mean(values[list(draw)]) for draw in itertools.product(range(4), repeat=4)]
  exact_low, exact_high = np.quantile(exact_means, [0.025, 0.975])
  low, high = stats.bootstrap_mean_interval(values)
  assert abs(low - exact_low) <= 0.25 and abs(high - exact_high) <= 0.25, (low, high, exact_low, exact_high)
  assert (low, high) == stats.bootstrap_mean_interval(values)  # seeded: deterministic
  assert stats.bootstrap_mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_paired_difference_against_hand_computation():
  kd, hard = [0.95, 0.96, 0.94], [0.85, 0.88, 0.86]
  differences = [a - b for a, b in zip(kd, hard)]
  result = stats.paired_difference(kd, hard)
  assert result.n == 3
  assert result.mean == pytest.approx(statistics.mean(differences), abs=1e-12)
  assert result.std == pytest.approx(statistics.stdev(differences), abs=1e-12)
  # Student's t interval with n - 1 = 2 degrees of freedom, against scipy's.
  expected = scipy.stats.t.interval(0.95, 2, loc=statistics.mean(differences),
                                    scale=scipy.stats.sem(differences))
  assert result.method == "t" and abs(result.low - expected[0]) < 1e-9 and abs(result.high - expected[1]) < 1e-9
  assert result.values == pytest.approx(differences, abs=1e-12)
  assert result.sign == 1
  assert np.isnan(result.bootstrap_low)  # 3 seeds: no bootstrap interval
  # Differences that straddle 0 by more than their mean: no sign.
  straddling = stats.paired_difference([0.9, 0.8, 0.85], [0.85, 0.85, 0.85])
  assert straddling.sign == 0
  assert stats.paired_difference([0.5, 0.6], [0.5, 0.6]).sign == 0


def test_intervals_follow_the_number_of_seeds():
  """2 seeds: no interval; 3 to 9: Student's t (matching scipy to 1e-9); from 10: the bootstrap beside it."""
  rng = np.random.default_rng(4)
  two = stats.paired_difference([0.9, 0.7], [0.8, 0.8])
  assert two.method is None and two.n == 2 and np.isnan(two.low) and np.isnan(two.high) and two.sign == 0
  assert two.values == pytest.approx((0.1, -0.1))
  # Two differences of one sign and little spread: still no claim (no interval) from two values.
  assert stats.paired_difference([0.91, 0.92], [0.80, 0.80]).sign == 0
  for n in (3, 5, 9, 10, 25):
    a, b = rng.normal(0.85, 0.02, n), rng.normal(0.83, 0.02, n)
    result = stats.paired_difference(a, b)
    differences = a - b
    low, high = scipy.stats.t.interval(0.95, n - 1, loc=differences.mean(), scale=scipy.stats.sem(differences))
    assert result.method == "t" and abs(result.low - low) < 1e-9 and abs(result.high - high) < 1e-9, n
    assert np.isnan(result.bootstrap_low) == (n < 10), n
    if n >= 10:
      assert (result.bootstrap_low, result.bootstrap_high) == stats.bootstrap_mean_interval(differences)


def test_groups_statistics_and_best_value(temperature_sweep):
  sweep = results.load_sweep(temperature_sweep)
  assert len(sweep.runs) == 9 and sweep.num_points == 9
  groups = sweep.groups()
  assert [group.value_indices for group in groups] == [(0,), (1,), (2,)]
  for group, temperature in zip(groups, TEMPERATURES):
    mean, std = group.mean_std("student", "accuracy")
    assert mean == pytest.approx(statistics.mean(KD_ACCURACY[temperature]))
    assert std == pytest.approx(statistics.stdev(KD_ACCURACY[temperature]))
    difference = group.versus_baseline("student", "accuracy")
    expected = [kd - hard for kd, hard in zip(KD_ACCURACY[temperature], HARD_ACCURACY)]
    assert difference.mean == pytest.approx(statistics.mean(expected))
    assert difference.std == pytest.approx(statistics.stdev(expected))
  best = results.best_group(groups, "accuracy")  # on validation, here equal to test
  assert sweep.group_label(best) == "distill.temperature=2"
  assert sweep.group_label(results.best_group(groups, "nll")) == "distill.temperature=2"  # nll = 1 - accuracy here


@pytest.mark.parametrize("means, phrase", [
    ([0.1, 0.2, 0.3], "rises with T"),
    ([0.3, 0.2, 0.1], "falls with T"),
    ([0.1, 0.3, 0.2], "rises with T up to b, then falls"),
    ([0.3, 0.1, 0.2], "falls with T down to b, then rises"),
    ([0.1, 0.3, 0.1, 0.3], "varies non-monotonically with T (highest at b, lowest at a)"),
    ([0.20, 0.21, 0.20], "is flat in T within the seed noise"),
])
def test_trend_phrase(means, phrase):
  assert report.trend_phrase("T", ["a", "b", "c", "d"][:len(means)], means, noise=0.05) == phrase


def test_summary_findings_and_tables(temperature_sweep):
  text = report.summary_markdown(results.load_sweep(temperature_sweep))
  assert "3 of 3" not in text and "9 of 9 points finished" in text
  assert ("Selection (the best point, the trends) is on the **validation** split; every number reported for a point "
          "is on the **test** split.") in text
  # KD: 91.00, 95.00, 81.00 (%); best T=2: +8.67 points over hard labels (paired: +10, +8, +8), t interval with 2
  # degrees of freedom: 8.67 ± 4.303 * 1.155 / sqrt(3).
  assert ("- KD-student validation accuracy rises with distill.temperature up to 2, then falls (1: 91.00%, "
          "2: 95.00%, 3: 81.00%); best distill.temperature=2 (by validation accuracy); on test: KD student "
          "95.00 ± 1.00%, +8.67 ± 1.15 points (95% t interval [+5.80, +11.54], n = 3) vs hard labels") in text
  assert "+8.67 ± 1.15 points (95% t interval [+5.80, +11.54], n = 3) vs hard labels, its interval excludes 0" in text
  assert ("better at distill.temperature=1 (+4.67), distill.temperature=2 (+8.67); worse at "
          "distill.temperature=3 (-5.33)") in text
  assert "KD student 95.00%, teacher 97.00% (-2.00 points), hard-label student 86.33%" in text
  # T=2 against T=1 and T=3, paired by seed: (+5, +4, +3) and (+15, +14, +13) points, t intervals ± 4.303 / sqrt(3).
  assert ("- Best distill.temperature=2 against its neighbours (test accuracy of the KD student, paired by seed): "
          "2 − 1: +4.00 ± 1.00 points (95% t interval [+1.52, +6.48], n = 3), better; "
          "2 − 3: +14.00 ± 1.00 points (95% t interval [+11.52, +16.48], n = 3), better.") in text
  metrics_section = text.split("## Metrics by swept value")[1].split("## Difference")[0]
  assert metrics_section.count("| teacher |") == 3  # a teacher row per value
  assert "| **2** (best) | student (KD) | 95.00 ± 1.00 |" in metrics_section
  difference_section = text.split("## Difference from the hard-label student")[1]
  assert difference_section.count("teacher − hard labels") == 3
  assert "## Data per swept value" not in text  # the same data everywhere


def test_a_vectorized_groups_training_time_is_counted_once(temperature_sweep):
  """Every fake point took 2.5 s alone (9 points: 22 s); written by a vectorized group of 9 KD students, each point's
  results.json holds the group's 20 s, which the summary counts once, not 9 times."""
  assert "Training time of the finished points: 22 s (a vectorized group's once)." in report.summary_markdown(
      results.load_sweep(temperature_sweep))
  for path in glob.glob(os.path.join(temperature_sweep, "*", "results.json")):
    written = files.read_json(path)
    written["train"].update(wall_s=20.0, phases={"student": {"vectorized_runs": 9}, "student_hard": {
        "vectorized_runs": 3}})
    files.write_json(path, written)
  assert "Training time of the finished points: 20 s (a vectorized group's once)." in report.summary_markdown(
      results.load_sweep(temperature_sweep))


def test_best_value_against_neighbours_pairs_seeds_and_calls_only_intervals_that_exclude_zero(tmp_path):
  """T=2 is best, but its paired differences from T=1 (+1, -1, +2 points) have an interval containing 0; T=3 lost
  seed 2, so T=2 - T=3 pairs seeds 0 and 1 only (+16, +15): too few for an interval, so nothing is called."""
  workdir = str(tmp_path / "sweep")
  factor = results.Factor(("distill.temperature",), tuple((t,) for t in TEMPERATURES))
  kd = {1.0: (0.90, 0.92, 0.91), 2.0: (0.91, 0.91, 0.93), 3.0: (0.75, 0.76, None)}
  for point in write_sweep_json(workdir, [factor], seeds=3):
    accuracy = kd[TEMPERATURES[point["value_indices"][0]]][point["seed"]]
    if accuracy is not None:
      write_point(workdir, point["name"], accuracy, HARD_ACCURACY[point["seed"]], TEACHER_ACCURACY)
  text = report.summary_markdown(results.load_sweep(workdir))
  line = next(line for line in text.splitlines() if "against its neighbours" in line)
  one = stats.paired_difference([0.91, 0.91, 0.93], [0.90, 0.92, 0.91])
  assert one.low < 0 < one.high
  assert (f"2 − 1: +0.67 ± 1.53 points (95% t interval [{100 * one.low:+.2f}, {100 * one.high:+.2f}], n = 3), "
          "no difference shown (interval contains 0); 2 − 3: +15.50 ± 0.71 points (n = 2: too few seeds for an "
          "interval; differences +16.00, +15.00), no interval.") in line, line
  assert "better" not in line and "worse" not in line


def test_the_best_point_is_chosen_on_validation_and_reported_on_test(tmp_path):
  """T=2 is best on test, T=1 on validation: the report picks T=1 and reports T=1's test numbers."""
  workdir = str(tmp_path / "sweep")
  factor = results.Factor(("distill.temperature",), tuple((t,) for t in TEMPERATURES))
  validation = {1.0: 0.97, 2.0: 0.90, 3.0: 0.85}
  for point in write_sweep_json(workdir, [factor], seeds=3):
    temperature = TEMPERATURES[point["value_indices"][0]]
    write_point(workdir, point["name"], KD_ACCURACY[temperature][point["seed"]], HARD_ACCURACY[point["seed"]],
                TEACHER_ACCURACY, kd_validation=validation[temperature])
  sweep = results.load_sweep(workdir)
  groups = sweep.groups()
  assert sweep.selection_split == "validation"
  assert sweep.group_label(results.best_group(groups, "accuracy")) == "distill.temperature=1"
  assert sweep.group_label(results.best_group(groups, "accuracy", "test")) == "distill.temperature=2"
  text = report.summary_markdown(sweep)
  assert ("best distill.temperature=1 (by validation accuracy); on test: KD student 91.00 ± 1.00%, +4.67") in text
  assert "KD-student validation accuracy falls with distill.temperature (1: 97.00%, 2: 90.00%, 3: 85.00%)" in text
  assert "| **1** (best) | student (KD) | 91.00 ± 1.00 |" in text
  assert "KD student 91.00%, teacher 97.00% (-6.00 points)" in text


def test_results_without_validation_select_on_test_and_say_so(temperature_sweep):
  for name in os.listdir(temperature_sweep):
    path = os.path.join(temperature_sweep, name, "results.json")
    if os.path.exists(path):
      stored = files.read_json(path)
      del stored["validation_metrics"]
      files.write_json(path, stored)
  sweep = results.load_sweep(temperature_sweep)
  assert sweep.selection_split == "test"
  text = report.summary_markdown(sweep)
  assert "These results have no validation split" in text and "best distill.temperature=2 (by test accuracy)" in text


def test_partial_sweep_and_missing_baseline(tmp_path):
  workdir = str(tmp_path / "partial")
  factor = results.Factor(("student.hidden_sizes",), (((8,),), ((64, 64),)))
  points = write_sweep_json(workdir, [factor], seeds=2)
  write_point(workdir, points[0]["name"], 0.8, None, 0.9, num_labeled=10)
  write_point(workdir, points[2]["name"], 0.85, None, 0.9, num_labeled=20)
  sweep = results.load_sweep(workdir)
  assert sweep.factors[0].value_label(1) == "64x64" and not sweep.factors[0].numeric
  text = report.summary_markdown(sweep)
  assert "2 of 4 points finished" in text
  assert "hard labels" not in text  # no baseline: no baseline rows or lines
  assert "## Data per swept value" in text
  rows = list(csv.DictReader(report.results_csv(sweep).splitlines()))
  assert [row["student.hidden_sizes"] for row in rows] == ["8", "64x64"]
  assert rows[0]["student_hard_accuracy"] == ""


@pytest.mark.slow
def test_written_report_csv_and_plots(temperature_sweep):
  written = report.write_sweep_report(temperature_sweep)
  rows = list(csv.DictReader(open(os.path.join(temperature_sweep, "results.csv"))))
  assert len(rows) == 9
  assert {"point", "distill.temperature", "seed", "student_accuracy", "student_hard_accuracy", "teacher_accuracy",
          "wall_s", "steps"} <= set(rows[0])
  assert [float(row["distill.temperature"]) for row in rows[:3]] == [1.0, 1.0, 1.0]
  assert float(rows[4]["student_accuracy"]) == KD_ACCURACY[2.0][1]
  assert {"student_validation_accuracy", "student_params", "student_latency_ms", "teacher_params"} <= set(rows[0])
  for stem in ("accuracy_vs_distill.temperature", "ece_vs_distill.temperature", "reliability", "confusion",
               "training_curves", "accuracy_vs_parameters", "accuracy_vs_latency"):
    for extension in ("png", "pdf"):
      path = os.path.join(temperature_sweep, "plots", f"{stem}.{extension}")
      assert path in written and os.path.getsize(path) > 1000, path


@pytest.mark.slow
def test_two_factor_report_has_heatmap(tmp_path):
  workdir = str(tmp_path / "grid")
  factors = [results.Factor(("distill.temperature",), ((1.0,), (4.0,))),
             results.Factor(("distill.alpha",), ((0.5,), (0.9,)))]
  for point in write_sweep_json(workdir, factors, seeds=2):
    i, j = point["value_indices"]
    write_point(workdir, point["name"], 0.8 + 0.05 * i + 0.02 * j + 0.01 * point["seed"], 0.8 + 0.03 * i, 0.95)
  written = report.write_sweep_report(workdir)
  assert os.path.join(workdir, "plots", "heatmap_accuracy.pdf") in written
  assert os.path.join(workdir, "plots", "accuracy_vs_distill.temperature_by_distill.alpha.png") in written
  text = open(os.path.join(workdir, "summary.md")).read()
  assert ("Best point: distill.temperature=4,distill.alpha=0.9 (by validation accuracy); on test: KD student "
          "87.50 ± 0.71%, +4.50") in text
  assert "(averaged over the other factors)" in text
  # The hard-label student changes with T here, so the gain gets its own trend: 0.02 * i + 0.02 * j + 0.01 * seed.
  assert ("KD minus hard-label validation accuracy rises with distill.temperature (averaged over the other factors) "
          "(1: +1.50, 4: +3.50 points)") in text
  # 2 seeds: no interval, the differences listed instead; no bootstrap anywhere.
  assert "+4.50 ± 0.71 points (n = 2: too few seeds for an interval; differences +4.00, +5.00)" in text
  assert "bootstrap [" not in text


def test_report_command_line(tmp_path):
  """scripts/report.sh on a sweep none of whose points has finished yet, and on a directory that is no sweep."""
  workdir = str(tmp_path / "started")
  write_sweep_json(workdir, [results.Factor(("distill.alpha",), ((0.0,), (0.5,)))], seeds=1)
  done = subprocess.run([str(REPO_ROOT / "scripts" / "report.sh"), workdir], capture_output=True, text=True,
                        check=False, env=dict(os.environ, PYTHON=sys.executable))
  assert done.returncode == 0, done.stderr
  assert "0 of 2 points finished" in open(os.path.join(workdir, "summary.md")).read()
  command = [sys.executable, "-m", "kd_jax.reporting.report"]
  done = subprocess.run(command + [str(tmp_path / "nothing")], cwd=REPO_ROOT, capture_output=True, text=True,
                        check=False)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'nothing'} has no sweep.json")


def test_metrics_table_shows_the_metrics_the_task_has():
  generation = {"metrics": {
      "teacher": {"label_accuracy": 0.86, "rouge1": 0.41, "rouge2": 0.25, "rougeL": 0.41, "nll": 0.7},
      "student": {"label_accuracy": 0.55, "rouge1": 0.10, "rouge2": 0.0, "rougeL": 0.09, "nll": 1.2,
                  "agreement": 0.55, "kl_to_teacher": 0.51}}}
  lines = report.metrics_table(generation).splitlines()
  assert lines[0] == "test split: reported"
  assert lines[1].split() == ["model", "label_accuracy", "rouge1", "rouge2", "rougeL", "nll", "agreement",
                              "kl_to_teacher"]
  assert lines[3].split() == ["teacher", "0.8600", "0.4100", "0.2500", "0.4100", "0.7000", "-", "-"]
  assert lines[4].split()[:4] == ["student", "(KD)", "0.5500", "0.1000"]


def test_metrics_table_shows_test_validation_and_efficiency():
  results = {"data": {"num_test": 539, "num_validation": 126},
             "metrics": {"teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.8}},
             "validation_metrics": {"teacher": {"accuracy": 0.91}, "student": {"accuracy": 0.79}},
             "efficiency": {"teacher": {"params": 1_000_000, "param_bytes": 4_000_000, "latency_ms": 0.5},
                            "student": {"params": 2_000, "param_bytes": 8_000, "latency_ms": 0.05,
                                        "compression_params": 500.0, "latency_speedup": 10.0}}}
  blocks = [block.splitlines() for block in report.metrics_table(results).split("\n\n")]
  assert [block[0] for block in blocks] == ["test split (539 examples): reported",
                                            "validation split (126 examples): selects", "efficiency"]
  assert blocks[0][3].split() == ["teacher", "0.9000"] and blocks[1][3].split() == ["teacher", "0.9100"]
  assert blocks[2][1].split()[:4] == ["model", "params", "MiB", "MFLOP/example"]
  assert blocks[2][3].split()[:3] == ["teacher", "1,000,000", "3.815"]
  assert blocks[2][4].split()[-2:] == ["500.0x", "10.00x"]


@pytest.mark.parametrize("seeds, says, does_not_say", [
    (2, "listed per seed: 2 seeds give no interval (a Student-t interval needs 3)",
     ("Student-t interval of", "bootstrap")),
    (3, "with a 95% Student-t interval of the mean difference", ("bootstrap", "give no interval")),
    (10, "and a percentile-bootstrap interval beside it (10000 resamples", ("give no interval",)),
])
def test_summary_describes_only_the_intervals_its_seeds_give(tmp_path, seeds, says, does_not_say):
  """A 2-seed sweep's summary promises no interval, a 3-seed one the t interval, a 10-seed one the bootstrap too."""
  workdir = str(tmp_path / "sweep")
  factor = results.Factor(("distill.temperature",), ((1.0,), (2.0,)))
  for point in write_sweep_json(workdir, [factor], seeds=seeds):
    write_point(workdir, point["name"], 0.9 + 0.01 * point["seed"], 0.85, TEACHER_ACCURACY)
  protocol = next(line for line in report.summary_markdown(results.load_sweep(workdir)).splitlines()
                  if line.startswith("Selection metric"))
  assert says in protocol, protocol
  for text in does_not_say:
    assert text not in protocol, (text, protocol)


def test_a_zipped_factor_is_numbered_with_its_key_and_a_shared_baseline_spans_the_axis(tmp_path):
  """Five teachers zipped with `baseline` (True at the first: one hard-label student per seed, as
  configs/findings/sweep_fashion_capacity.py): the x axis numbers the values and keys them under it instead of
  overlapping tick labels, and the hard-label students, which do not depend on the teacher, are drawn across it."""
  from kd_jax.reporting import plots  # pylint: disable=import-outside-toplevel  (matplotlib)
  workdir = str(tmp_path / "capacity")
  factor = results.Factor(("teacher.hidden_sizes", "teacher.num_epochs", "baseline"),
                          (((32,), 6, True), ((64,), 6, False), ((256,), 6, False), ((256,), 1, False)))
  hard = [0.85, 0.86, 0.87]
  for point in write_sweep_json(workdir, [factor], seeds=3):
    i, seed = point["value_indices"][0], point["seed"]
    write_point(workdir, point["name"], 0.84 - 0.01 * i + 0.001 * seed, hard[seed] if i == 0 else None, 0.9)
  figure = plots._one_factor_lines(results.load_sweep(workdir), 0, "accuracy")  # pylint: disable=protected-access
  axis = figure.axes[0]
  assert [label.get_text() for label in axis.get_xticklabels()] == ["1", "2", "3", "4"]
  assert axis.get_xlabel().splitlines() == ["teacher.hidden_sizes + teacher.num_epochs + baseline", "1: 32,6,True",
                                            "2: 64,6,False", "3: 256,6,False", "4: 256,1,False"]
  (hard_line,) = [line for line in axis.get_lines() if line.get_label() == results.MODEL_LABELS["student_hard"]]
  np.testing.assert_allclose(hard_line.get_ydata(), [100 * np.mean(hard)] * 4)
