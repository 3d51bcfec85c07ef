"""The input pipeline: the share of a fused training loop's time spent waiting for batches."""

from . import settings, timing
from .examples import default_task
from .students import mlp_student
from .trainer import FusedTrainer


def stall_fraction(quick: bool) -> dict:
  """The fused loop of the default KD student with batches gathered + transferred vs one staged chunk reused."""
  config, task, examples = default_task()
  model, params = mlp_student(config, task)
  num_steps = 10 if settings.SMOKE else 1000 if quick else 3000
  trainer = FusedTrainer(model=model, params=params, examples=examples, distills=True,
                         distill_config=config.distill, optim_config=config.optim,
                         batch_size=config.data.batch_size, num_steps=num_steps, seed=0)
  staged = trainer.staged_data()
  trainer.train(1)
  seconds, _ = timing.alternating({"fed": lambda: trainer.train(num_steps),
                                   "prestaged": lambda: trainer.train(num_steps, staged_data=staged)},
                                  1 if settings.SMOKE else 15 if quick else 31)
  return {"input_stall_fraction": max(0.0, 1 - seconds["prestaged"] / seconds["fed"])}
