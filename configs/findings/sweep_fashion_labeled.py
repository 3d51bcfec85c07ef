"""Finding 1 (Hinton et al. 2015, transfer set and few labels): KD - hard labels against the labeled fraction.

Launch (after configs/findings/fashion_strong.py has trained its teacher into runs/fashion_strong/teacher; the
report lands in runs/findings_labeled/summary.md; wall time and numbers in docs/findings.md):

    python main.py --config=configs/findings/sweep_fashion_labeled.py --workdir=runs/findings_labeled

The showcase's protocol (configs/findings/sweep_fashion_showcase.py: the strong teacher restored, trained on every
label; 2 student epochs over all 57,000 training images; selection on validation) with its small student (4,266
parameters) at data.labeled_fraction in {0.01, 0.03, 0.1, 0.3, 1} (570, 1,710, 5,700, 17,100 and 57,000 labels; the
rest is the unlabeled transfer set), 5 seeds. The claim: distillation gains most where labels are scarce and unlabeled data plentiful.

Arguments: `smoke`: the showcase's smoke (tiny teacher trained in the sweep, 2% of the images) with the small student
at labeled fractions {0.3, 1} x 2 seeds.
"""

import ml_collections

from kd_jax.config import schema
from configs.findings import sweep_fashion_showcase


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = schema.parse_options(arg, allowed=("smoke",))
  config = sweep_fashion_showcase.get_config(arg)
  config.sweep.zipped = ()
  config.student.conv_features = (4, 8)
  config.student.hidden_sizes = ()
  config.sweep.grid = (("data.labeled_fraction", (0.01, 0.03, 0.1, 0.3, 1.0)),)
  if "smoke" in options:
    config.sweep.grid = (("data.labeled_fraction", (0.3, 1.0)),)
  return config
