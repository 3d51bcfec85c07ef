"""The cost of distilling: a KD step with cached teacher logits over a hard-label cross-entropy step, same student
(the default config's MLP) and batch, fused steps."""

from . import settings, timing
from .examples import default_task
from .students import mlp_student
from .trainer import FusedTrainer


def kd_over_ce(quick: bool) -> dict:
  """Fused steps of the default MLP student: KD with cached logits vs hard-label CE, alternating."""
  config, task, examples = default_task()
  model, params = mlp_student(config, task)
  num_steps = 10 if settings.SMOKE else 1000 if quick else 3000
  trainers = {mode: FusedTrainer(model=model, params=params, examples=examples, distills=mode == "cached",
                                 distill_config=config.distill, optim_config=config.optim,
                                 batch_size=config.data.batch_size, num_steps=num_steps, seed=0)
              for mode in ("cached", "none")}
  compile_s = {mode: timing.seconds(lambda trainer=trainer: trainer.train(1)) for mode, trainer in trainers.items()}
  seconds, _ = timing.alternating({mode: lambda trainer=trainer: trainer.train(num_steps)
                                   for mode, trainer in trainers.items()},
                                  1 if settings.SMOKE else 21 if quick else 41)
  kd, ce = seconds["cached"] / num_steps, seconds["none"] / num_steps
  return {"kd_over_ce_step_time": kd / ce, "mlp_kd_step_us": kd * 1e6, "mlp_ce_step_us": ce * 1e6,
          "mlp_compile_s": compile_s["cached"]}
