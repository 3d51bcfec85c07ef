"""Finding 2 (Hinton et al. 2015, the distillation temperature): KD - hard labels against T at a fixed weight.

Launch (after configs/findings/fashion_strong.py has trained its teacher into runs/fashion_strong/teacher; the
report lands in runs/findings_temperature/summary.md; wall time and numbers in docs/findings.md):

    python main.py --config=configs/findings/sweep_fashion_temperature.py --workdir=runs/findings_temperature

The showcase's protocol (configs/findings/sweep_fashion_showcase.py: the strong teacher restored; 2 student epochs
over all 57,000 training images; selection on validation, test reported) in the regime where it found KD helps:
data.labeled_fraction 0.1 (5,700 labels; the other 51,300 images are the transfer set only the KD term sees), its
medium student (conv 4 and 8 channels, a 64-unit Dense layer; 26,138 parameters), the Hinton form at a fixed weight
(0.5 CE + 0.5 T^2 KL) with distill.temperature in {1, 2, 4, 8, 16}, 5 seeds. The hard-label student does not
depend on T: sweep.mode='vectorized' trains all 25 KD students together and one hard-label student per seed, which
every temperature's paired difference shares.

Arguments: `smoke`: the showcase's smoke (a tiny teacher trained in the sweep, 2% of the images, one epoch) with its
small student at labeled fraction 0.3 and T in {1, 4, 16} x 2 seeds. More or fewer seeds: `--config.sweep.seeds=N`.
"""

import ml_collections

from kd_jax.config import schema
from configs.findings import sweep_fashion_showcase

TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 16.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = schema.parse_options(arg, allowed=("smoke",))
  config = sweep_fashion_showcase.get_config(arg)
  config.data.labeled_fraction = 0.1
  config.student.conv_features = (4, 8)
  config.student.hidden_sizes = (64,)
  config.distill.alpha = 0.5
  config.sweep.zipped = ()
  config.sweep.grid = (("distill.temperature", TEMPERATURES),)
  if "smoke" in options:
    config.data.labeled_fraction = 0.3
    config.student.hidden_sizes = ()
    config.sweep.grid = (("distill.temperature", (1.0, 4.0, 16.0)),)
  return config
