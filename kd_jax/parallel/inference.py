"""Batched, data-parallel inference (evaluation mode) over a whole split: logits, top-k logits, generations.

`map_batches(fn, inputs, ...)` cuts the inputs into global batches, gives each process its rows (`fn` places them on
the mesh and returns global arrays split over the batch), and yields every batch's outputs as NumPy on every
process. SIGTERM stops it between batches (`preemption.Preempted`; nothing of the inference is kept).
"""

import functools
from typing import Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from kd_jax.data import pipeline
from kd_jax.parallel import distributed, preemption, sharding


def batch_size_for(num_examples: int, batch_size: int, num_devices: int) -> int:
  """`batch_size`, or fewer rows (rounded up to a multiple of the device count) for a small split."""
  return min(batch_size, -(-num_examples // num_devices) * num_devices)


def map_batches(fn: Callable, inputs, *, batch_size: int, num_devices: int) -> Iterator[tuple[object, int]]:
  """(outputs, num_real) of `fn` on every batch of `inputs` (a pytree of arrays with first dimension N), in order.

  Batches hold `batch_size` rows (`batch_size_for`); the last one is padded (its first `num_real` rows are real).
  `fn(local_inputs)` gets this process's rows of the batch (`inputs` is the whole split on every process) and
  returns a pytree of global arrays split over the batch axis; every process gets all of them, as NumPy.
  """
  batch_size = batch_size_for(len(jax.tree.leaves(inputs)[0]), batch_size, num_devices)
  local_rows = sharding.process_rows(batch_size)
  for batch, num_real in pipeline.inference_batches(inputs, batch_size):
    if distributed.any_process(preemption.requested()):
      raise preemption.Preempted("stopped by SIGTERM during inference (nothing of it is kept); rerun the same "
                                 "command to resume")
    outputs = fn(jax.tree.map(lambda rows: rows[local_rows], batch))
    yield jax.tree.map(sharding.gather, outputs), num_real


def sharded(fn: Callable, mesh: Mesh) -> Callable:
  """`fn(params, inputs)` compiled with the params where they are (replicated, or split over fsdp / tensor: a
  teacher larger than one device) and the inputs (and outputs) split over the mesh's batch axes, called as (params,
  this process's rows)."""
  compiled = jax.jit(fn, in_shardings=(None, sharding.batch_sharded(mesh)),
                     out_shardings=sharding.batch_sharded(mesh))
  call = lambda params, local_inputs: compiled(params, sharding.shard_batch(local_inputs, mesh))
  call.lower = compiled.lower  # from global (abstract) inputs: scripts/memory_plan.py
  return call


@functools.lru_cache(maxsize=16)
def make_predict_fn(model, mesh: Mesh):
  """params, this process's rows of a global batch -> the batch's logits in eval mode (split over the mesh).

  One compiled function per model and mesh for the whole process (the runs of a sweep share it).
  """
  return sharded(lambda params, inputs: model.apply({"params": params}, inputs, train=False), mesh)


def predict_logits(predict_fn, params, inputs, *, batch_size: int, num_devices: int) -> np.ndarray:
  """Logits [N, ...] of every example of `inputs`, in order (`predict_fn` from `make_predict_fn`)."""
  return np.concatenate([logits[:num_real] for logits, num_real in map_batches(
      functools.partial(predict_fn, params), inputs, batch_size=batch_size, num_devices=num_devices)])
