"""Batched, data-parallel inference (evaluation mode): logits for a whole split."""

import functools

import jax
import numpy as np
from jax.sharding import Mesh

from kd_jax import distributed, preemption, sharding
from kd_jax.data import pipeline


@functools.lru_cache(maxsize=16)
def make_predict_fn(model, mesh: Mesh):
  """Compiles params, this process's rows of a global batch -> the batch's logits in eval mode.

  The global batch is split over the mesh's data axis (the devices of every process); so are the logits. One
  compiled function per model and mesh for the whole process (the runs of a sweep share it).
  """
  apply = jax.jit(lambda params, inputs: model.apply({"params": params}, inputs, train=False),
                  in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                  out_shardings=sharding.batch_sharded(mesh))
  return lambda params, local_inputs: apply(params, sharding.shard_batch(local_inputs, mesh))


def predict_logits(predict_fn, params, inputs, *, batch_size: int, num_devices: int) -> np.ndarray:
  """Logits [N, ...] for every example of `inputs` (an array or dict of arrays with first dimension N), in order.

  Batches hold `batch_size` rows, or fewer (rounded up to a multiple of the device count) for a small split; the
  last one is padded and its padding dropped. Each process feeds its rows of every batch (`inputs` is the whole
  split on every process), and every process gets all the logits.
  """
  num_examples = len(jax.tree.leaves(inputs)[0])
  batch_size = min(batch_size, -(-num_examples // num_devices) * num_devices)
  local_rows = sharding.process_rows(batch_size)
  outputs = []
  for batch, num_real in pipeline.inference_batches({"inputs": inputs}, batch_size):
    if distributed.any_process(preemption.requested()):
      raise preemption.Preempted("stopped by SIGTERM during inference (nothing of it is kept); rerun the same "
                                 "command to resume")
    local_inputs = jax.tree.map(lambda rows: rows[local_rows], batch["inputs"])
    outputs.append(sharding.gather(predict_fn(params, local_inputs))[:num_real])
  return np.concatenate(outputs)
