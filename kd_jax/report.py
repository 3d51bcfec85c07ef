"""Human-readable summaries of results.json files."""

MODEL_LABELS = {"teacher": "teacher", "student": "student (KD)", "student_hard": "student (hard labels)"}
TABLE_METRICS = ("accuracy", "ece", "nll", "brier", "agreement", "kl_to_teacher")


def metrics_table(results: dict) -> str:
  """A fixed-width table: one row per model (teacher, KD student, hard-label student), one column per metric."""
  header = f"{'model':<22}" + "".join(f"{name:>15}" for name in TABLE_METRICS)
  rows = [header, "-" * len(header)]
  for model, label in MODEL_LABELS.items():
    model_metrics = results["metrics"].get(model)
    if model_metrics is None:
      continue
    cells = "".join(f"{model_metrics[name]:>15.4f}" if name in model_metrics else f"{'-':>15}"
                    for name in TABLE_METRICS)
    rows.append(f"{label:<22}{cells}")
  return "\n".join(rows)
