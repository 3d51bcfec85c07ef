"""The memory savers (config.train.remat and microbatches): the compiled KD step's temporaries, plain and with each
saver."""

from . import settings
from .examples import text_examples
from .students import distilbert_student


def step_temporaries(quick: bool) -> dict:
  """Per-device temporaries of the DistilBERT-shaped student's compiled KD step (batch 32, cached teacher logits,
  one device), from XLA's memory_analysis: plain, with 4 micro-batches, with remat per block ('block',
  'dots_saveable'). Compiled only, not run; --quick compiles plain and 4 micro-batches only. XLA:CPU drops remat's
  optimization barriers and merges the recomputation back into the forward pass (same temporaries with and
  without: measured), so the remat ratios say something on GPU and TPU only."""
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax import models  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import sharding
  from kd_jax.training import steps
  model, params = distilbert_student()
  batch = text_examples(settings.BATCH_SIZE)
  mesh = sharding.make_mesh(1)
  state = sharding.replicate(steps.create_train_state(model, params, settings.notebook_optim_config(), 100), mesh)
  objective = settings.objective(settings.distill_config())
  savers = {"none": ("none", 1), "microbatches_4": ("none", 4)}
  if not quick:
    savers.update({"block": ("block", 1), "dots_saveable": ("dots_saveable", 1)})
  temporaries = {}
  for name, (remat, microbatches) in savers.items():
    step = steps.compile_step(mesh, model=models.with_remat(model, remat), teacher_model=None,
                              microbatches=microbatches)
    compiled = step.lower(state, None, objective, jax.random.PRNGKey(0), batch).compile()
    temporaries[name] = compiled.memory_analysis().temp_size_in_bytes
  results = {"step_temp_mib_plain": temporaries["none"] / 2**20}
  results.update({f"step_temp_ratio_{name}": value / temporaries["none"] for name, value in temporaries.items()
                  if name != "none"})
  return results
