"""Measures the top-k cached distillation loss against the dense one on a batch of a seq2seq run.

    PYTHONPATH=. python scripts/topk_vs_dense.py --workdir=W2 [--config=configs/esnli.py:smoke] [--batch_size=16]

W2 is the workdir of a finished run of the config (its teacher in W2/teacher). On the first `batch_size` training
examples it computes, per temperature, the distillation term T^2 KL(p_teacher || p_student) averaged over real target
tokens with the teacher's full logits (dense) and with its top-k logits as the cache stores them (values rounded to
config.distill.topk_dtype; losses.topk_divergence with the flat tail and with the exact tail at T), for the untrained student (its checkpoint's weights, where
distillation starts) and the distilled student (W2's final checkpoint). Prints one line per (student, k, T) and the
cache bytes per example.
"""

import os

from absl import app, flags
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "Workdir of a finished seq2seq run.")
config_flags.DEFINE_config_file("config", "configs/esnli.py:smoke", "Config file of that run, with its argument.")
flags.DEFINE_integer("batch_size", 16, "Training examples in the batch.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from kd_jax import data, models  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import sharding
  from kd_jax.teachers import teacher
  from kd_jax.training import checkpointing, losses, steps
  from kd_jax.data.examples import widened  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  task = data.load_task(config)
  batch = widened(task.train.select(np.arange(FLAGS.batch_size)))  # as the pipelines give batches
  teacher_model, teacher_params = models.create(config.teacher, num_classes=task.num_classes, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  teacher_params = teacher.restore_params(os.path.join(FLAGS.workdir, "teacher"), teacher_params,
                                         sharding.make_mesh(1))
  student_model, initial_params = models.create(config.student, num_classes=task.num_classes, example_inputs=None,
                                                rng=jax.random.PRNGKey(0))
  store = checkpointing.CheckpointStore(os.path.join(os.path.abspath(FLAGS.workdir), "checkpoints", "student"), 1)
  trained = store.restore_latest(steps.create_train_state(student_model, initial_params, config.optim, 1))
  last_step, trained_params = int(trained.step), trained.params
  teacher_logits = teacher_model.apply({"params": teacher_params}, batch.inputs, train=False).astype(jnp.float32)
  weights = jnp.asarray(batch.token_weights)
  vocab = teacher_logits.shape[-1]
  length = teacher_logits.shape[1]
  print(f"batch: {FLAGS.batch_size} examples, {int(weights.sum())} real target tokens of {length} positions, "
        f"vocabulary {vocab}, values stored as {config.distill.topk_dtype}")
  for student, params in (("untrained", initial_params), (f"distilled (step {last_step})", trained_params)):
    student_logits = student_model.apply({"params": params}, batch.inputs, train=False)
    for k in sorted({8, config.distill.topk, 64, vocab} & set(range(1, vocab + 1))):
      values, indices = jax.lax.top_k(teacher_logits, k)
      values = values.astype(config.distill.topk_dtype)
      tail = jnp.put_along_axis(teacher_logits, indices, -jnp.inf, axis=-1, inplace=False)
      for temperature in (1.0, 2.0, 4.0):
        dense = losses.global_mean(losses.divergence(student_logits, teacher_logits, temperature), weights)
        flat = losses.TopKLogits(values, indices, jax.nn.logsumexp(tail, axis=-1))
        exact = losses.TopKLogits(values, indices, jax.nn.logsumexp(tail / temperature, axis=-1)[..., None])
        line = f"{student:<22} k={k:<4} T={temperature:g}  dense {float(dense):.5f}"
        for name, topk, grid in (("flat", flat, ()), ("exact", exact, (temperature,))):
          approx = losses.global_mean(losses.topk_divergence(student_logits, topk, temperature,
                                                             tail_temperatures=grid), weights)
          line += f"  {name} {float(approx):.5f} ({float((approx - dense) / dense):+.2%})"
        print(line)
  k = config.distill.topk
  bytes_per_example = length * (k * (jnp.dtype(config.distill.topk_dtype).itemsize + 4) + 4) + 4
  print(f"cache at k={k}: {bytes_per_example} B/example + 4 B per position per extra temperature")


if __name__ == "__main__":
  app.run(main)
