"""Size and speed of a model, the cost side of distillation: `measure` one model, `compression` of a student.

measure(model, params, example_inputs, device=..., batch_size=...) gives
  params             parameter count (every array's size, summed)
  trainable_params   the parameters its training updates: every one, unless the caller counted fewer (a student with
                     frozen parameters or LoRA adapters: the adapters and the unfrozen parameters)
  param_bytes        bytes of the parameters at their stored dtype (param_dtype)
  flops_per_example  FLOPs of one forward pass on one example: XLA's cost analysis of the compiled prediction at
                     batch 1 (a seq2seq model: encoder and teacher-forced decoder over the target length)
  latency_ms         wall time of that forward pass at batch 1: the median of as many calls (after a warm-up) as fit
                     in TIMING_BUDGET_S, at least MIN_REPEATS and at most MAX_REPEATS (a small model's call is tens of
                     microseconds, mostly dispatch: many repeats steady its median)
  throughput_per_s   examples per second of the forward pass at `batch_size` (the eval batch size), timed alike
on one device (this process's first in the run's mesh). compression(teacher, student) gives the student's
`compression_params` (teacher's parameters / the student's) and `latency_speedup` (teacher's latency / the
student's).
"""

import functools
import statistics
import time

import jax
import numpy as np

from kd_jax.parallel import sharding

TIMING_BUDGET_S = 0.2
MIN_REPEATS = 5
MAX_REPEATS = 500


def parameter_counts(params, trainable_params: int | None = None) -> dict:
  """{params, trainable_params, param_bytes} of a parameter tree; trainable_params None: every parameter."""
  leaves = jax.tree.leaves(params)
  count = int(sum(np.size(leaf) for leaf in leaves))
  return {"params": count, "trainable_params": count if trainable_params is None else int(trainable_params),
          "param_bytes": int(sum(np.size(leaf) * np.dtype(leaf.dtype).itemsize for leaf in leaves))}


def _median_seconds(fn) -> float:
  """The median wall time of `fn()` (synced) over MIN_REPEATS to MAX_REPEATS calls within TIMING_BUDGET_S."""
  jax.block_until_ready(fn())  # warm-up: compiles
  times = []
  deadline = time.perf_counter() + TIMING_BUDGET_S
  while len(times) < MIN_REPEATS or (len(times) < MAX_REPEATS and time.perf_counter() < deadline):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def flops(compiled) -> float:
  """The FLOPs XLA's cost analysis counts for a compiled computation."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0))


def measure(model, params, example_inputs, *, device, batch_size: int, trainable_params: int | None = None) -> dict:
  """The size and speed of `model` (see the module docstring); `example_inputs`: one example's inputs [1, ...].
  `params` may be replicated over the devices of several processes; `device` must be one of this process's.
  trainable_params: how many of them training updated (None: all)."""
  predict = _prediction(model)
  params = jax.device_put(jax.tree.map(sharding.local_copy, params), device)
  one = jax.device_put(example_inputs, device)
  batch = jax.device_put(jax.tree.map(lambda value: np.repeat(np.asarray(value), batch_size, axis=0),
                                      example_inputs), device)
  compiled = predict.lower(params, one).compile()
  latency = _median_seconds(lambda: compiled(params, one))
  throughput = batch_size / _median_seconds(lambda: predict(params, batch))
  return {**parameter_counts(params, trainable_params), "flops_per_example": flops(compiled),
          "latency_ms": latency * 1e3, "throughput_per_s": throughput}


def _prediction(model):
  """model.apply in evaluation mode, jitted once per model: the KD and hard-label students of a run (the same model)
  and the runs of a sweep reuse its traces and compiled programs. A model that cannot be hashed gets its own."""
  try:
    return _cached_prediction(model)
  except TypeError:
    return _jitted_prediction(model)


def _jitted_prediction(model):
  return jax.jit(lambda params, inputs: model.apply({"params": params}, inputs, train=False))


_cached_prediction = functools.lru_cache(maxsize=16)(_jitted_prediction)


def compression(teacher: dict, student: dict) -> dict:
  """The student's size and latency relative to the teacher's: how many times smaller and faster it is."""
  return {"compression_params": teacher["params"] / student["params"],
          "latency_speedup": teacher["latency_ms"] / student["latency_ms"]}
