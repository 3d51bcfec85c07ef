"""The accelerator section (--accelerator): bf16 training of three students and a large teacher's top-k cache build
on one GPU or TPU chip, against the chip's peak; the PyTorch loop on the same GPU."""

import functools
import os
import statistics
import tempfile
import time

from . import repo_config, settings
from .examples import causal_lm_examples, seq2seq_examples, text_examples
from .flops import llama_train_flops_per_example, t5_train_flops_per_example, transformer_train_flops_per_example
from .machine import bf16_matmul_flops, bf16_peak_flops
from .students import distilbert_student, smollm2_student, t5_model
from .torch_loop import TorchWorker, torch_cuda_unavailable
from .trainer import FusedTrainer

# Real DistilBERT-base (distilbert-base-uncased's config.json): the SST-2 notebook's student at full size.
DISTILBERT_BASE = dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512,
                       dropout=0.1, attention_dropout=0.1, seq_classif_dropout=0.2)
# FLAN-T5-small (configs/esnli.py's student; google/flan-t5-small's config.json) and a FLAN-T5-large-shaped teacher.
FLAN_T5_SMALL = dict(vocab_size=32128, d_model=512, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6,
                     d_kv=64, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
FLAN_T5_LARGE = dict(FLAN_T5_SMALL, d_model=1024, d_ff=2816, num_layers=24, num_decoder_layers=24, num_heads=16)
# e-SNLI's lengths (configs/esnli.py: data.max_length, data.max_target_length) and its top-k cache.
T5_SOURCE_LENGTH, T5_TARGET_LENGTH, T5_TOPK = 128, 64, 32
# What each figure is measured on: --accelerator (full) and the test's --accelerator_on_cpu (tiny). batch: the
# default batch sizes (--accel_batch_sizes changes them), steps: steps per timed round, rounds: timed rounds after a
# compiling one; teacher_examples: the examples of the timed cache build. Built when the script imports this module,
# before --smoke shrinks settings' models (the full shapes share SMOLLM2_STUDENT itself).
ACCEL_SHAPES = {
    "full": dict(distilbert=DISTILBERT_BASE, t5=FLAN_T5_SMALL, smollm2=settings.SMOLLM2_STUDENT,
                 teacher=FLAN_T5_LARGE, source_length=T5_SOURCE_LENGTH, target_length=T5_TARGET_LENGTH,
                 llm_length=settings.LLM_LENGTH, llm_prompt=settings.LLM_PROMPT,
                 batch=dict(distilbert=256, t5_small=256, smollm2=128, teacher=256),
                 steps=10, rounds=5, teacher_examples=8192, matmul_size=8192, matmul_chain=10),
    # Without dropout, which XLA:CPU takes longest to compile; one step per round, one round (the cost is the
    # compiles: one chunk of one step has no loop to compile).
    "tiny": dict(distilbert=dict(settings.DISTILBERT, dim=32, n_layers=1, n_heads=2, hidden_dim=64, dropout=0.0,
                                 attention_dropout=0.0, seq_classif_dropout=0.0),
                 t5=dict(FLAN_T5_SMALL, vocab_size=512, d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1,
                         num_heads=2, d_kv=16, dropout_rate=0.0),
                 smollm2=dict(settings.SMOLLM2_STUDENT, vocab_size=512, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2),
                 teacher=dict(FLAN_T5_SMALL, vocab_size=512, d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1,
                              num_heads=2, d_kv=16),
                 source_length=16, target_length=8, llm_length=16, llm_prompt=4,
                 batch=dict(distilbert=4, t5_small=4, smollm2=4, teacher=4),
                 steps=1, rounds=1, teacher_examples=8, matmul_size=128, matmul_chain=2),
}


def accel_train(name: str, *, model, params, examples, distill_config, optim_config, flops_per_example: float,
                shapes: dict, peaks: dict, between_rounds=None) -> dict:
  """bf16 KD training of one student on one device through kd_jax's fused chunks (FusedTrainer's program): one
  compiling chunk, then `rounds` timed chunks of `steps` steps from the state reached (the median); examples/s and
  MFU (the FLOPs counted from the config per second over peaks' 'spec' and 'matmul'). between_rounds(): run after
  each timed round (the PyTorch side, alternating)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  steps, rounds = shapes["steps"], shapes["rounds"]
  batch_size = len(examples)
  trainer = FusedTrainer(model=model, params=params, examples=examples, distills=True, distill_config=distill_config,
                         optim_config=optim_config, batch_size=batch_size, num_steps=steps * (rounds + 1), seed=0,
                         max_steps=steps, num_devices=1)
  program = trainer.program()
  state, feed = program.state, program.feed(0)

  def chunk(state):
    state, _ = program.chunk(state, np.int32(steps), *feed.next(steps))
    return jax.block_until_ready(state)

  start = time.perf_counter()
  state = chunk(state)
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    state = chunk(state)
    times.append((time.perf_counter() - start) / steps)
    if between_rounds is not None:
      between_rounds()
  step_s = statistics.median(times)
  achieved = flops_per_example * batch_size / step_s
  return {f"accel_{name}_examples_per_s": batch_size / step_s, f"accel_{name}_step_s": step_s,
          f"accel_{name}_batch_size": batch_size, f"accel_{name}_compile_s": compile_s,
          f"accel_{name}_train_gflop_per_example": flops_per_example / 1e9,
          f"accel_{name}_achieved_tflops": achieved / 1e12,
          f"accel_{name}_mfu": None if peaks["spec"] is None else achieved / peaks["spec"],
          f"accel_{name}_mfu_vs_matmul": achieved / peaks["matmul"]}


def accel_distilbert(shapes: dict, batch_size: int, peaks: dict, torch_python: str) -> dict:
  """The DistilBERT-shaped student (shapes['distilbert']; DistilBERT-base in the full section) on SST-2-like batches
  (SEQUENCE_LENGTH tokens, cached teacher logits, the notebook's loss and AdamW), bf16 compute and float32
  parameters; alternating with the notebook's PyTorch loop on the GPU under bf16 autocast, same model and batch."""
  import jax  # pylint: disable=g-import-not-at-top
  dims = shapes["distilbert"]
  model, params = distilbert_student(dims, "bfloat16")
  examples = text_examples(batch_size)
  unavailable = ("no CUDA GPU: the backend is " + jax.default_backend() if jax.default_backend() != "gpu"
                 else torch_cuda_unavailable(torch_python))
  worker, torch_times = None, []
  if unavailable is None:
    worker = TorchWorker(torch_python, os.cpu_count(), total_steps=shapes["steps"] * (shapes["rounds"] + 1) + 1,
                         dims=dims, batch_size=batch_size, device="cuda", bf16=True)
    worker.seconds_for(shapes["steps"])  # the same warm-up as the kd_jax side's compiling chunk
  between = None if worker is None else (
      lambda: torch_times.append(worker.seconds_for(shapes["steps"]) / shapes["steps"]))
  result = accel_train("distilbert", model=model, params=params, examples=examples,
                       distill_config=settings.distill_config(**settings.NOTEBOOK_LOSS),
                       optim_config=settings.notebook_optim_config(), shapes=shapes, peaks=peaks,
                       between_rounds=between,
                       flops_per_example=transformer_train_flops_per_example(dims, settings.SEQUENCE_LENGTH,
                                                                             settings.NUM_LABELS))
  result["accel_distilbert_dims"] = dims
  if worker is None:
    result.update({"accel_jax_over_torch_throughput": None, "accel_torch_unavailable": unavailable})
    return result
  worker.close()
  torch_step = statistics.median(torch_times)
  result.update({"accel_jax_over_torch_throughput": torch_step / result["accel_distilbert_step_s"],
                 "accel_torch_examples_per_s": batch_size / torch_step, "accel_torch_step_s": torch_step,
                 "accel_torch_version": worker.info["torch"]})
  return result


def accel_t5_small(shapes: dict, batch_size: int, peaks: dict) -> dict:
  """The FLAN-T5-small-shaped student of configs/esnli.py (bf16 compute, float32 parameters) on e-SNLI-shaped
  examples with a top-32 teacher cache: that config's loss (CE + 0.5 T^2 KL at T = 2 over the top-k) and optimizer."""
  dims = shapes["t5"]
  model, params = t5_model(dims, "bfloat16", "float32")
  config = repo_config("esnli").get_config()
  examples = seq2seq_examples(batch_size, shapes["source_length"], shapes["target_length"], dims["vocab_size"],
                              config.distill.topk)
  return accel_train("t5_small", model=model, params=params, examples=examples, distill_config=config.distill,
                     optim_config=config.optim, shapes=shapes, peaks=peaks,
                     flops_per_example=t5_train_flops_per_example(dims, shapes["source_length"],
                                                                  shapes["target_length"]))


def accel_smollm2(shapes: dict, batch_size: int, peaks: dict) -> dict:
  """The SmolLM2-shaped causal-LM student (bf16 compute, float32 parameters) as llm_throughput trains it (a prompt,
  a response, a top-32 teacher cache), at a larger batch; its tokens/s too."""
  from kd_jax.models.hf import pretrained  # pylint: disable=g-import-not-at-top
  dims, length = shapes["smollm2"], shapes["llm_length"]
  module, params = smollm2_student(dims, "bfloat16")
  examples = causal_lm_examples(batch_size, length, shapes["llm_prompt"], settings.LLM_TOPK, dims["vocab_size"])
  result = accel_train("smollm2", model=pretrained.RegistryModel(module), params=params, examples=examples,
                       distill_config=settings.distill_config(temperature=1.0, alpha=settings.ALPHA),
                       optim_config=settings.notebook_optim_config(), shapes=shapes, peaks=peaks,
                       flops_per_example=llama_train_flops_per_example(dims, length))
  result["accel_smollm2_tokens_per_s"] = result["accel_smollm2_examples_per_s"] * length
  return result


def accel_cache_build(shapes: dict, batch_size: int, peaks: dict) -> dict:
  """A FLAN-T5-large-shaped teacher (bf16 weights and compute, random) building e-SNLI's top-32 float16 cache of
  shapes['teacher_examples'] random examples through kd_jax's builder (student_data.topk_program over
  inference.map_batches into teacher_cache.load_or_build: the inference, the host transfers and the file writes),
  into a temporary directory, after a one-batch build that compiles; examples/s, MB/s of cache written, and the
  teacher's MFU (forward FLOPs counted from the config)."""
  from kd_jax.parallel import inference, sharding  # pylint: disable=g-import-not-at-top
  from kd_jax.teachers import student_data, teacher_cache
  dims = shapes["teacher"]
  source_length, target_length = shapes["source_length"], shapes["target_length"]
  model, params = t5_model(dims, "bfloat16", "bfloat16")
  mesh = sharding.make_mesh(1)
  topk = functools.partial(student_data.topk_program(model, mesh, T5_TOPK, "float16"), params)
  num_examples = shapes["teacher_examples"]
  examples = seq2seq_examples(num_examples, source_length, target_length, dims["vocab_size"], None)

  def build(directory, examples):
    expected = teacher_cache.expected_metadata(
        "topk", data_name="benchmark", split="train", data_fingerprint="random", size=len(examples),
        num_classes=dims["vocab_size"], teacher_fingerprint="random", k=T5_TOPK, dtype="float16",
        target_length=target_length)
    compute = lambda rows: inference.map_batches(topk, rows.teacher_view().inputs, batch_size=batch_size,
                                                 num_devices=mesh.size)
    start = time.perf_counter()
    cache, built = teacher_cache.load_or_build(directory, expected, examples, compute)
    assert built and len(cache.index) == len(examples), (built, len(cache.index))
    return time.perf_counter() - start, cache.bytes_per_example

  with tempfile.TemporaryDirectory() as root:
    compile_s, _ = build(os.path.join(root, "warm-up"), examples.select(slice(0, batch_size)))
    wall_s, bytes_per_example = build(os.path.join(root, "cache"), examples)
  forward_flops = t5_train_flops_per_example(dims, source_length, target_length) / 3
  achieved = forward_flops * num_examples / wall_s
  return {"accel_cache_teacher_examples_per_s": num_examples / wall_s,
          "accel_cache_mb_per_s": bytes_per_example * num_examples / wall_s / 1e6,
          "accel_cache_bytes_per_example": bytes_per_example, "accel_cache_examples": num_examples,
          "accel_cache_batch_size": batch_size, "accel_cache_wall_s": wall_s, "accel_cache_compile_s": compile_s,
          "accel_cache_teacher_forward_gflop_per_example": forward_flops / 1e9,
          "accel_cache_teacher_mfu": None if peaks["spec"] is None else achieved / peaks["spec"],
          "accel_cache_teacher_mfu_vs_matmul": achieved / peaks["matmul"]}


def accelerator_figures(shapes: dict, batch_sizes: dict, torch_python: str) -> dict:
  """Every figure of the accelerator section on jax.devices()[0] (see ACCEL_SHAPES and the functions above)."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  print(f"accelerator: {device.device_kind} ({jax.default_backend()}, {jax.device_count()} devices; one is "
        "measured)", flush=True)
  spec = bf16_peak_flops(device.device_kind)
  matmul = bf16_matmul_flops(shapes["matmul_size"], shapes["matmul_chain"], 5)
  peaks = {"spec": spec, "matmul": matmul}
  results = {"accel_device_kind": device.device_kind, "accel_backend": jax.default_backend(),
             "accel_device_count": jax.device_count(), "accel_bf16_peak_tflops_spec": spec and spec / 1e12,
             "accel_bf16_matmul_tflops": matmul / 1e12, "accel_bf16_matmul_size": shapes["matmul_size"],
             "accel_matmul_over_spec": spec and matmul / spec}
  results.update(accel_distilbert(shapes, batch_sizes["distilbert"], peaks, torch_python))
  results.update(accel_t5_small(shapes, batch_sizes["t5_small"], peaks))
  results.update(accel_smollm2(shapes, batch_sizes["smollm2"], peaks))
  results.update(accel_cache_build(shapes, batch_sizes["teacher"], peaks))
  return results
