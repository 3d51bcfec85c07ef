"""Orbax checkpoints, all of them: training states (save every N steps and at the end, resume from the latest) and
finished parameters (a trained teacher's params/, a phase's best-validation parameters).

Pretrained weights from Hugging Face (safetensors, msgpack, GGUF) are not checkpoints of ours: kd_jax/models/hf/
reads them (weights.py, pretrained.py, gguf.py).
"""

import logging
import os
import time

import jax
import orbax.checkpoint as ocp

from kd_jax.parallel import distributed

logger = logging.getLogger(__name__)


class CheckpointStore:
  """The checkpoints of one model's training (`<directory>/<step>/`), kept `max_to_keep` at a time."""

  def __init__(self, directory: str, max_to_keep: int):
    self.directory = os.path.abspath(directory)  # orbax's asynchronous saves need an absolute path
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def restore_latest(self, target):
    """The newest readable checkpoint, restored into the structure, shapes and shardings of `target`; else None.

    A checkpoint that fails to restore (cut off or damaged on disk) is moved aside to `corrupt-<step>-<time>` with
    a warning, and the previous one is tried.
    """
    abstract_target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_target))
      except Exception as error:  # pylint: disable=broad-except  (orbax/tensorstore raise many kinds for bad files)
        set_aside = os.path.join(self.directory, f"corrupt-{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        logger.warning("Checkpoint %s/%d cannot be restored (%s: %s); moved it to %s, trying the previous one.",
                       self.directory, step, error.__class__.__name__, str(error).splitlines()[0][:200],
                       set_aside)
        if distributed.is_main_process():
          os.rename(os.path.join(self.directory, str(step)), set_aside)
        distributed.barrier(f"set aside checkpoint {self.directory}/{step}")  # before any process rereads the steps
        self._manager.reload()
    return None

  def save(self, step: int, state) -> None:
    """Saves `state` as checkpoint `step` (asynchronously; `close` waits for it)."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


def save_params(directory: str, params, *, force: bool = False) -> None:
  """Saves a parameter tree in `directory` and waits for it; every process saves (orbax's multi-process path:
  process 0 writes the metadata, the owner of each shard its data). `force` replaces an existing directory."""
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.abspath(directory), params, force=force)


def restore_params(directory: str, abstract_params):
  """The parameter tree saved in `directory` by `save_params`, with the structure, shapes, dtypes and shardings of
  `abstract_params` (jax.ShapeDtypeStruct leaves, or arrays)."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_params)
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(os.path.abspath(directory), abstract)


def _as_saved(metadata_tree):
  """The jax.ShapeDtypeStruct tree of checkpoint metadata, placed on this process's first device (whatever mesh saved
  it)."""
  placement = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=placement), metadata_tree)


def restore_saved_params(directory: str):
  """The parameter tree saved in `directory` by `save_params`, in the structure its own metadata records, on this
  process's first device: for readers that have no model at hand (export)."""
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(os.path.abspath(directory)).item_metadata.tree
  return restore_params(directory, _as_saved(metadata))


def restore_latest_state(directory: str):
  """(step, state as a dict: params, opt_state, step) of the newest checkpoint of a CheckpointStore's `directory`, in
  the structure its own metadata records, on this process's first device; None when it holds none."""
  if not os.path.isdir(directory):
    return None
  manager = ocp.CheckpointManager(os.path.abspath(directory), item_handlers=ocp.StandardCheckpointHandler(),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    step = manager.latest_step()
    if step is None:
      return None
    abstract = _as_saved(manager.item_metadata(step).tree)
    return step, manager.restore(step, args=ocp.args.StandardRestore(abstract))
  finally:
    manager.close()
