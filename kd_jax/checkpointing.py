"""Orbax checkpoints of training states: save every N steps and at the end, resume from the latest."""

import jax
import orbax.checkpoint as ocp


class CheckpointStore:
  """The checkpoints of one model's training (`<directory>/<step>/`), kept `max_to_keep` at a time."""

  def __init__(self, directory: str, max_to_keep: int):
    self.directory = directory
    self._manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def restore_latest(self, target):
    """The newest checkpoint restored into the structure, shapes and shardings of `target`, or None if none exists."""
    step = self.latest_step()
    if step is None:
      return None
    abstract_target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_target))

  def save(self, step: int, state) -> None:
    """Saves `state` as checkpoint `step` (asynchronously; `close` waits for it)."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
