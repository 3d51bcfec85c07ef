"""The one check of a config before anything runs or is written (kd_jax/cli.py, train.py, each sweep point).

In order: the schema (kd_jax/config/validation.py: every field known, of its type and within its declaration), the
rules between fields (kd_jax/config/rules.py), then what the environment must hold, each checked by the module it
concerns: devices and mesh, data files and processes, the teacher's directory, models against their checkpoints,
feature maps against model depths, ensemble members, and the metrics the task's evaluator computes.
"""

import ml_collections

from kd_jax import data, evaluation, models
from kd_jax.config import rules, validation
from kd_jax.errors import require
from kd_jax.parallel import sharding
from kd_jax.teachers import assistant, ensemble, logprobs_file, teacher
from kd_jax.training import feature_losses


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (a UserError: one line naming the field, the value and what is allowed) for the first thing
  wrong with `config`."""
  validation.validate(config)
  rules.check(config)
  sharding.check_config(config)
  data.check_config(config)
  teacher.check_config(config)
  assistant.check_config(config)
  logprobs_file.check_config(config)
  models.check_config(config, "student")
  feature_losses.check_config(config)
  ensemble.check_config(config)
  metrics = evaluation.metrics_of(config.data.name)
  require(config.sweep.selection_metric in metrics, "sweep.selection_metric", config.sweep.selection_metric,
          f"not computed for data.name={config.data.name!r}; allowed: {', '.join(metrics)}")
