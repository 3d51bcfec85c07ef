"""scripts/benchmark.py runs end to end (its smoke mode: every section at toy sizes, without torch) and writes every
kd_jax figure: the benchmark builds models and losses by hand, so a change to the library can stop it without any
other test noticing."""

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, child_environment, load_script


@pytest.mark.slow
def test_quick_benchmark_runs_and_writes_its_figures(tmp_path):
  out = tmp_path / "B.json"
  env = child_environment()
  # An interpreter without torch: the PyTorch side reports why it is missing instead of timing.
  result = subprocess.run([sys.executable, "scripts/benchmark.py", "--smoke", "--skip_default_run", "--out", str(out),
                           "--torch_python", sys.executable], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(out.read_text())
  for name in ("kd_over_ce_step_time", "vectorized_sweep_speedup", "vectorized_sweep_loop_speedup",
               "mfu_vs_matmul_peak", "distilbert_kd_examples_per_s",
               "cache_build_examples_per_s_mlp", "cache_build_examples_per_s_distilbert",
               "smollm2_student_kd_tokens_per_s", "smollm2_generate_tokens_per_s_batch8",
               "packed_over_padded_tokens_per_s"):
    assert figures[name] > 0, name
  # A share of a time, clipped at 0 (a timing: 0 when the staged run happens to be the slower; seen failing > 0).
  assert 0 <= figures["input_stall_fraction"] < 1
  # The vectorized sweep's points equal the sequential ones (the speedup compares equal work).
  assert figures["vectorized_sweep_end_to_end_max_metric_diff"] < 1e-5
  # 4 micro-batches hold the activations of 8 examples at a time instead of 32.
  assert 0 < figures["step_temp_ratio_microbatches_4"] < 0.5
  # FSDP-8 holds an eighth of the DistilBERT-shaped student's parameters and optimizer state per device.
  assert 0.12 < figures["sharded_param_bytes_ratio"] <= 0.15 and figures["fsdp_step_over_replicated"] > 0
  # Chunked losses hold a chunk's logits instead of the sequence's; the KD step's peak is near the CE step's.
  assert 0 < figures["chunked_over_unchunked_peak_bytes"] < 1 and figures["kd_over_ce_peak_bytes"] > 1
  assert figures["cache_bytes_per_example_dense"] == 44 and figures["cache_bytes_per_example_topk_esnli"] == 12548
  # Generation against transformers: kd_jax's side timed, the PyTorch side's absence said.
  assert figures["kd_jax_generate_tokens_per_s_batch8"] > 0
  assert figures["generate_over_transformers_tokens_per_s_batch8"] is None
  assert "cannot import torch and transformers" in figures["generate_torch_unavailable"]


# The accelerator section (scripts/benchmark.py --accelerator): its functions at tiny shapes on the CPU; the figures
# themselves need a GPU or TPU (scripts/accelerator_check.sh) and no test depends on one.


@pytest.fixture(scope="module")
def benchmark():
  """scripts/benchmark.py as a module; loading it puts scripts/ on sys.path, so its sections import as `benchmarks`."""
  return load_script("benchmark")


@pytest.fixture(scope="module")
def sections(benchmark):  # pylint: disable=redefined-outer-name,unused-argument
  """The benchmarks package's modules the tests read (scripts/benchmarks/)."""
  import benchmarks.accelerator  # pylint: disable=g-import-not-at-top
  import benchmarks.flops  # pylint: disable=g-import-not-at-top
  import benchmarks.machine  # pylint: disable=g-import-not-at-top
  return benchmarks


def jaxpr_matmul_flops(jaxpr) -> int:
  """2 x the multiply-adds of every dot_general of a jaxpr, nested ones included: 2 * |lhs| * |rhs's free dims|."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  total = 0
  for equation in jaxpr.eqns:
    if equation.primitive.name == "dot_general":
      (_, rhs_contracting), (_, rhs_batch) = equation.params["dimension_numbers"]
      lhs, rhs = (variable.aval.shape for variable in equation.invars)
      free = [size for axis, size in enumerate(rhs) if axis not in rhs_contracting and axis not in rhs_batch]
      total += 2 * int(np.prod(lhs)) * int(np.prod(free))
    for value in equation.params.values():
      for inner in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(inner, jax.extend.core.ClosedJaxpr):
          total += jaxpr_matmul_flops(inner.jaxpr)
        elif isinstance(inner, jax.extend.core.Jaxpr):
          total += jaxpr_matmul_flops(inner)
  return total


def test_flop_counters_count_every_matmul_of_the_models(sections):
  """The T5, Llama and DistilBERT counters against the matmuls kd_jax's models trace (a gated T5 with 2 encoder and
  3 decoder layers and source != target length; a Llama with grouped key-value heads and tied embeddings): the
  forward pass's exactly, the gradient's exactly 3x (every matmul has two trained operands); XLA's cost analysis of
  the compiled forward pass counts those and the elementwise work, which is under 10% at these widths."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import distilbert, llama, t5  # pylint: disable=g-import-not-at-top
  batch, source, target, length = 2, 16, 8, 16
  t5_dims = dict(vocab_size=256, d_model=64, d_ff=128, num_layers=2, num_decoder_layers=3, num_heads=4, d_kv=8,
                 feed_forward_proj="gated-gelu", tie_word_embeddings=False)
  llama_dims = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
  distilbert_dims = dict(vocab_size=256, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=64)
  ids = lambda n: jnp.ones((batch, n), jnp.int32)
  cases = {
      "t5": (t5.build(transformers.T5Config(**t5_dims), checkpoint="t", task="seq2seq", num_labels=None,
                      dtype=jnp.float32, param_dtype=jnp.float32),
             dict(input_ids=ids(source), attention_mask=ids(source), decoder_input_ids=ids(target)),
             sections.flops.t5_train_flops_per_example(t5_dims, source, target)),
      "llama": (llama.build(transformers.LlamaConfig(**llama_dims), checkpoint="l", task="causal_lm", num_labels=None,
                            dtype=jnp.float32, param_dtype=jnp.float32),
                dict(input_ids=ids(length), attention_mask=ids(length)),
                sections.flops.llama_train_flops_per_example(llama_dims, length)),
      "distilbert": (distilbert.build(transformers.DistilBertConfig(**distilbert_dims), checkpoint="d",
                                      task="sequence_classification", num_labels=2, dtype=jnp.float32,
                                      param_dtype=jnp.float32),
                     dict(input_ids=ids(length), attention_mask=ids(length)),
                     sections.flops.transformer_train_flops_per_example(distilbert_dims, length, 2))}
  for name, (architecture, inputs, train_flops) in cases.items():
    module = architecture.module
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), **inputs)["params"]
    def forward(params, module=module, inputs=inputs):
      return module.apply({"params": params}, **inputs, train=False)

    loss = lambda params, forward=forward: jnp.sum(forward(params) ** 2)
    assert jaxpr_matmul_flops(jax.make_jaxpr(forward)(params).jaxpr) == batch * train_flops / 3, name
    assert jaxpr_matmul_flops(jax.make_jaxpr(jax.grad(loss))(params).jaxpr) == batch * train_flops, name
    if name != "distilbert":
      cost = jax.jit(forward).lower(params).compile().cost_analysis()
      cost = cost[0] if isinstance(cost, list) else cost
      assert 1.0 <= cost["flops"] / (batch * train_flops / 3) < 1.1, (name, cost["flops"], batch * train_flops / 3)


def test_bf16_peaks_by_device_kind(sections):
  kinds = {"NVIDIA H100 80GB HBM3": 989.4, "NVIDIA H100 PCIe": 756.0, "NVIDIA H200": 989.4,
           "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA L4": 121.0, "NVIDIA L40S": None, "TPU v4": 275.0,
           "TPU v5 lite": 197.0, "TPU v5": 459.0, "TPU v5p": 459.0, "TPU v6 lite": 918.0, "cpu": None}
  for kind, tflops in kinds.items():
    assert sections.machine.bf16_peak_flops(kind) == (None if tflops is None else tflops * 1e12), kind


@pytest.mark.parametrize("arguments, message", [
    (["--accelerator"], "benchmark.py --accelerator: no GPU or TPU here (jax.default_backend() is 'cpu'); run it "
                        "where one is, e.g. scripts/accelerator_check.sh"),
    (["--accelerator", "--accelerator_on_cpu", "--accel_batch_sizes=t5_small=0"],
     "benchmark.py --accel_batch_sizes: 't5_small=0' is not NAME=SIZE with NAME one of distilbert, t5_small, "
     "smollm2, teacher and SIZE a positive integer"),
    (["--sections=generation,nope"], "benchmark.py --sections: 'nope' is not a section; sections: default_run, "
     "matmul_peak, kd_over_ce, vectorized_sweep, jax_over_torch, input_stall, cache_build, step_memory, fsdp, "
     "causal_lm, packing, loss_memory, generation")])
def test_bad_arguments_are_refused_with_one_line(benchmark, monkeypatch, capsys, tmp_path, arguments, message):
  out = tmp_path / "A.json"
  monkeypatch.setattr(sys, "argv", ["benchmark.py", *arguments, "--out", str(out)])
  with pytest.raises(SystemExit) as exit_info:
    benchmark.main()
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == message + "\n"
  assert not out.exists()


def test_accelerator_cache_build_figures(benchmark, sections):  # pylint: disable=redefined-outer-name
  """The tiny teacher's top-k cache build through kd_jax's builder: the cache's bytes per example, MB/s from
  examples/s, MFU = the teacher's FLOP/s over each peak given. Compiled as the section's run below compiles it
  (xla_optimizations_off): the two share their compiled programs through the session's compilation cache."""
  shapes = sections.accelerator.ACCEL_SHAPES["tiny"]
  peaks = {"spec": 1e12, "matmul": 2e12}
  with benchmark.xla_optimizations_off():
    cache = sections.accelerator.accel_cache_build(shapes, 4, peaks)
  # top-32 float16 values, int32 ids and a float32 tail per target position (8), an int32 index.
  assert cache["accel_cache_bytes_per_example"] == 8 * (32 * (2 + 4) + 4) + 4
  assert cache["accel_cache_examples"] == shapes["teacher_examples"]
  assert cache["accel_cache_mb_per_s"] == pytest.approx(
      cache["accel_cache_teacher_examples_per_s"] * cache["accel_cache_bytes_per_example"] / 1e6)
  assert 0 < cache["accel_cache_teacher_mfu"] == pytest.approx(2 * cache["accel_cache_teacher_mfu_vs_matmul"])


@pytest.mark.slow
def test_accelerator_section_runs_at_tiny_shapes_on_cpu(benchmark, monkeypatch, tmp_path):
  """`--accelerator --accelerator_on_cpu`: the whole section at tiny shapes writes every accel_ figure; without a
  CUDA GPU the PyTorch comparison is null with the reason."""
  out = tmp_path / "A.json"
  monkeypatch.setattr(sys, "argv", ["benchmark.py", "--accelerator", "--accelerator_on_cpu", "--out", str(out),
                                    "--torch_python", sys.executable])
  benchmark.main()
  figures = json.loads(out.read_text())
  assert figures["accel_shapes"] == "tiny" and figures["accel_device_kind"] == "cpu"
  assert figures["accel_bf16_peak_tflops_spec"] is None and figures["accel_bf16_matmul_tflops"] > 0
  for name, batch_size in (("distilbert", 4), ("t5_small", 4), ("smollm2", 4)):
    assert figures[f"accel_{name}_batch_size"] == batch_size, name
    assert figures[f"accel_{name}_examples_per_s"] == pytest.approx(batch_size / figures[f"accel_{name}_step_s"])
    achieved = figures[f"accel_{name}_train_gflop_per_example"] * 1e9 * figures[f"accel_{name}_examples_per_s"]
    assert figures[f"accel_{name}_achieved_tflops"] * 1e12 == pytest.approx(achieved), name
    assert figures[f"accel_{name}_mfu_vs_matmul"] == pytest.approx(
        achieved / (figures["accel_bf16_matmul_tflops"] * 1e12)), name
    assert figures[f"accel_{name}_mfu"] is None, name  # no known peak for a CPU
  assert figures["accel_smollm2_tokens_per_s"] == pytest.approx(16 * figures["accel_smollm2_examples_per_s"])
  assert figures["accel_cache_teacher_examples_per_s"] > 0 and figures["accel_cache_mb_per_s"] > 0
  assert figures["accel_jax_over_torch_throughput"] is None
  assert figures["accel_torch_unavailable"] == "no CUDA GPU: the backend is cpu"
