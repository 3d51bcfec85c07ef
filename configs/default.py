"""The embedded default: distill an MLP teacher into a small MLP student on scikit-learn's digits, offline.

Launch (11.6 to 12.9 s on 2 CPU cores: the README, The default run):

    python main.py --config=configs/default.py --workdir=runs/default

Only 10% of the training labels are kept; the other 90% of the training images form an unlabeled transfer set that
only the distillation term sees (Hinton et al. 2015). The teacher (2x1200 MLP with dropout) is trained on the
labeled images, its logits for every training image are cached, then two students with 32 hidden units are trained
on the same batches: one distilled (labeled CE + T^2 KL on everything), one on hard labels only (the baseline).
Expect the distilled student to beat the hard-label one by a few points of test accuracy.

Arguments (`--config=configs/default.py:smoke`): `smoke` shrinks the run to a few seconds of training. A task name,
`sst2`, `esnli` or `fashion_mnist`, returns that task's config (configs/sst2.py, configs/esnli.py,
configs/fashion_mnist.py) instead, so that every config built on this one (the sweeps) runs on it:
`--config=configs/sweep_temp.py:sst2,smoke`.
Any field can be overridden from the command line, e.g. `--config.distill.temperature=2`.

The fields, their defaults and a comment on each are the schema in kd_jax/config/schema.py; fields it lacks are
rejected.
"""

import ml_collections

from kd_jax.config import schema
from configs import esnli, fashion_mnist, sst2

# Other tasks: the argument `sst2`, `esnli` or `fashion_mnist` makes get_config return that task's config.
TASKS = {"sst2": sst2, "esnli": esnli, "fashion_mnist": fashion_mnist}
# The arguments a config accepts (`--config=file.py:arg1,arg2`); sweep configs accept the same ones.
OPTIONS = ("smoke",) + tuple(TASKS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the default config; `arg` is a comma-separated list of options (`smoke`, and a task name)."""
  options = schema.parse_options(arg, allowed=OPTIONS)
  tasks = [option for option in options if option in TASKS]
  if len(tasks) > 1:
    raise ValueError(f"config arguments {', '.join(tasks)}: choose one task")
  if tasks:
    return TASKS[tasks[0]].get_config(",".join(option for option in options if option not in TASKS))
  config = schema.default_config()
  if "smoke" in options:
    config.teacher.hidden_sizes = (256, 256)
    config.teacher.num_epochs = 40
    config.train.num_epochs = 10
    config.train.eval_every_steps = 200
    config.train.checkpoint_every_steps = 200
    config.train.log_every_steps = 50
  return config
