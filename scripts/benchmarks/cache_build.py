"""The teacher cache: the teacher inference that building a logit cache runs (examples/s), and a cache's bytes per
example."""

from . import repo_config, settings, timing
from .examples import default_task, text_examples
from .students import distilbert_student


def cache_throughput(quick: bool) -> dict:
  """Teacher inference (what building a logit cache runs): the default 2x1200 MLP teacher on the digits training
  split and the DistilBERT-shaped model as a teacher, examples/s; cache bytes per example."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import models  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import inference, sharding
  esnli = repo_config("esnli")
  config, task, _ = default_task()
  mesh = sharding.make_mesh()
  teacher, teacher_params = models.create(config.teacher, num_classes=task.num_classes,
                                          example_inputs=task.train.inputs[:1], rng=jax.random.PRNGKey(0))
  teacher_params = sharding.replicate(teacher_params, mesh)
  inputs = task.train.inputs
  predict = inference.make_predict_fn(teacher, mesh)
  run = lambda: inference.predict_logits(predict, teacher_params, inputs, batch_size=config.data.eval_batch_size,
                                         num_devices=1)
  run()
  mlp_seconds = timing.median_seconds(run, 1 if settings.SMOKE else 5 if quick else 15)
  text_model, text_params = distilbert_student()
  text_params = sharding.replicate(text_params, mesh)
  text_inputs = text_examples(256).inputs
  text_predict = inference.make_predict_fn(text_model, mesh)
  text_run = lambda: inference.predict_logits(text_predict, text_params, text_inputs, batch_size=128, num_devices=1)
  text_run()
  text_seconds = timing.median_seconds(text_run, 1 if settings.SMOKE else 2 if quick else 5)
  esnli_config = esnli.get_config()
  topk_bytes = esnli_config.data.max_target_length * (
      esnli_config.distill.topk * (np.dtype(esnli_config.distill.topk_dtype).itemsize + 4) + 4) + 4
  return {"cache_build_examples_per_s_mlp": len(inputs) / mlp_seconds,
          "cache_build_examples_per_s_distilbert": 256 / text_seconds,
          "cache_bytes_per_example_dense": 4 * task.num_classes + 4,
          "cache_bytes_per_example_topk_esnli": topk_bytes}
