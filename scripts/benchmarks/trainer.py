"""Training as kd_jax's loop runs it: compiled chunks of fused steps (kd_jax/training/steps.py), fed by the
program's own feed."""

from . import settings


def train_chunks(program, num_steps: int, max_steps: int, staged_data=None):
  """Trains `num_steps` steps of a program (steps.program or vectorized.program) from its initial state in chunks of
  at most max_steps; returns the final state (synced).

  staged_data: one chunk's data already on the device, reused by every chunk (the stall measurement).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  state, feed = program.state, program.feed(0)
  step = 0
  while step < num_steps:
    length = min(max_steps, num_steps - step)
    data = staged_data if staged_data is not None else feed.next(length)
    state, _ = program.chunk(state, np.int32(length), *data)
    step += length
  return jax.block_until_ready(state)


class FusedTrainer:
  """A student trained by kd_jax's fused chunks as the training loop runs them (steps.program), from fixed initial
  parameters: with the distillation loss on examples carrying cached teacher logits, or with cross-entropy alone on
  the same examples without them."""

  def __init__(self, *, model, params, examples, distills: bool, distill_config, optim_config, batch_size: int,
               num_steps: int, seed: int, max_steps: int = 100, mesh_sizes: dict | None = None,
               num_devices: int | None = None):
    import ml_collections  # pylint: disable=g-import-not-at-top
    from kd_jax.parallel import sharding  # pylint: disable=g-import-not-at-top
    self.mesh = sharding.make_mesh(num_devices, sizes=mesh_sizes)
    self._program_args = dict(
        model=model, init_params=params, optim_config=optim_config, num_steps=num_steps,
        objective=settings.objective(distill_config, distills=distills),
        examples=examples if distills else examples.replace(teacher=None), batch_size=batch_size, seed=seed,
        mesh=self.mesh, train_config=ml_collections.ConfigDict(dict(steps_per_dispatch=max_steps,
                                                                    device_data_max_mib=256, microbatches=1)))
    self._max_steps = max_steps

  def program(self):
    """A fresh program (its initial state; the compiled chunk is shared by every program of the process)."""
    from kd_jax.training import steps  # pylint: disable=g-import-not-at-top
    return steps.program(**self._program_args)

  def train(self, num_steps: int, staged_data=None):
    """Trains `num_steps` steps from the initial state (train_chunks); returns the final state (synced)."""
    return train_chunks(self.program(), num_steps, self._max_steps, staged_data)

  def staged_data(self):
    return self.program().feed(0).next(self._max_steps)
