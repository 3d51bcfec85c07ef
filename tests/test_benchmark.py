"""scripts/benchmark.py runs end to end (its smoke mode: every section at toy sizes, without torch) and writes every
kd_jax figure: the benchmark builds models and losses by hand, so a change to the library can stop it without any
other test noticing."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_quick_benchmark_runs_and_writes_its_figures(tmp_path):
  out = tmp_path / "B.json"
  env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "PJRT_NPROC")}
  # An interpreter without torch: the PyTorch side reports why it is missing instead of timing.
  result = subprocess.run([sys.executable, "scripts/benchmark.py", "--smoke", "--skip_default_run", "--out", str(out),
                           "--torch_python", sys.executable], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(out.read_text())
  for name in ("kd_over_ce_step_time", "vectorized_sweep_speedup", "vectorized_sweep_loop_speedup",
               "mfu_vs_matmul_peak", "distilbert_kd_examples_per_s",
               "cache_build_examples_per_s_mlp", "cache_build_examples_per_s_distilbert",
               "smollm2_student_kd_tokens_per_s", "smollm2_generate_tokens_per_s_batch8"):
    assert figures[name] > 0, name
  # A share of a time, clipped at 0 (a timing: 0 when the staged run happens to be the slower; seen failing > 0).
  assert 0 <= figures["input_stall_fraction"] < 1
  # The vectorized sweep's points equal the sequential ones (the speedup compares equal work).
  assert figures["vectorized_sweep_end_to_end_max_metric_diff"] < 1e-5
  # 4 micro-batches hold the activations of 8 examples at a time instead of 32.
  assert 0 < figures["step_temp_ratio_microbatches_4"] < 0.5
  # FSDP-8 holds an eighth of the DistilBERT-shaped student's parameters and optimizer state per device.
  assert 0.12 < figures["sharded_param_bytes_ratio"] <= 0.15 and figures["fsdp_step_over_replicated"] > 0
  assert figures["cache_bytes_per_example_dense"] == 44 and figures["cache_bytes_per_example_topk_esnli"] == 12548
