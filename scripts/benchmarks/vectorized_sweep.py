"""Vectorized sweeps: 8 points of the default task (4 temperatures x 2 seeds) one after another vs together, the
training loops alone and end to end as the sweep runs them."""

import os
import statistics
import tempfile
import time

from . import repo_config, settings, timing
from .examples import default_task
from .students import mlp_student
from .trainer import FusedTrainer, train_chunks


def vectorized_speedup(quick: bool) -> dict:
  """8 points (4 temperatures x 2 seeds) of the default student: one after another vs together, alternating."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax.training import vectorized  # pylint: disable=g-import-not-at-top
  config, task, examples = default_task()
  # 10 / 30 epochs of the default task; --smoke: kd_over_ce's step count, whose compiled KD chunk the sequential
  # students then reuse (the optimizer's schedule, compiled in, depends on it)
  num_steps = 10 if settings.SMOKE else 390 if quick else 1170
  temperatures, seeds = (1.0, 2.0, 3.0, 4.0), (0, 1)
  points = [(temperature, seed) for temperature in temperatures for seed in seeds]
  init = {seed: mlp_student(config, task, seed) for seed in seeds}
  model = init[0][0]
  max_steps = 100

  def distill(temperature):
    distill_config = ml_collections.ConfigDict(config.distill.to_dict())
    distill_config.temperature = temperature
    return distill_config

  sequential = [FusedTrainer(model=model, params=init[seed][1], examples=examples, distills=True,
                             distill_config=distill(temperature), optim_config=config.optim,
                             batch_size=config.data.batch_size, num_steps=num_steps, seed=seed)
                for temperature, seed in points]
  train_config = ml_collections.ConfigDict(dict(steps_per_dispatch=max_steps, num_devices=1, microbatches=1))

  def train_together(steps):
    program = vectorized.program(
        model=model, init_params={seed: params for seed, (_, params) in init.items()}, optim_config=config.optim,
        num_steps=num_steps,
        objectives=[settings.objective(distill(t)) for t, _ in points],
        learning_rates=[config.optim.learning_rate] * len(points), seeds=[seed for _, seed in points],
        examples=examples, batch_size=config.data.batch_size, train_config=train_config)
    return train_chunks(program, steps, max_steps)

  def train_one_after_another(steps):
    return [trainer.train(steps) for trainer in sequential]

  compile_vectorized = timing.seconds(lambda: train_together(1))
  train_one_after_another(1)
  seconds, last = timing.alternating({"sequential": lambda: train_one_after_another(num_steps),
                                      "vectorized": lambda: train_together(num_steps)},
                                     1 if settings.SMOKE else 7 if quick else 15)
  together_params = jax.device_get(last["vectorized"].params)
  difference = max(float(np.max(np.abs(np.asarray(a[i]) - np.asarray(b))))
                   for i, state in enumerate(last["sequential"])
                   for a, b in zip(jax.tree.leaves(together_params), jax.tree.leaves(jax.device_get(state.params))))
  return {"vectorized_sweep_loop_speedup": seconds["sequential"] / seconds["vectorized"],
          "vectorized_sweep_points": len(points), "vectorized_sweep_steps": num_steps,
          "vectorized_sweep_sequential_s": seconds["sequential"],
          "vectorized_sweep_vectorized_s": seconds["vectorized"],
          "vectorized_sweep_compile_s": compile_vectorized, "vectorized_sweep_max_param_diff": difference}


def vectorized_sweep_end_to_end(quick: bool) -> dict:
  """The same 8 points (4 temperatures x 2 seeds, 10 epochs each, the teacher already trained; --smoke: 2 points, no warm-up) as
  the sweep runs them: point after point (train.run_group each: data, teacher, cache, KD and hard-label students,
  evaluation, checkpoints, results.json) vs sweep.mode='vectorized' (one group); the report is not timed."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from kd_jax import files  # pylint: disable=g-import-not-at-top
  from kd_jax.sweeps import expansion, runner
  from kd_jax.training import vectorized
  logging.set_verbosity(logging.WARNING)
  config = repo_config("default").get_config("smoke")
  config.sweep.grid = (("distill.temperature", (1.0, 2.0, 3.0, 4.0)),)
  config.sweep.seeds = 2
  if settings.SMOKE:  # two points: the code path of eight, a fraction of the compiles and runs
    config.sweep.grid, config.sweep.seeds = (("distill.temperature", (1.0, 2.0)),), 1
    config.teacher.num_epochs, config.train.num_epochs = 2, 1
  root = tempfile.mkdtemp()
  warm = expansion.expand(config, os.path.join(root, "warm-up"))
  config.teacher.workdir = warm[0].config.teacher.workdir
  if not settings.SMOKE:  # --smoke times nothing worth warming up for: its first point trains the teacher
    runner.run_point(warm[0], os.path.join(root, "warm-up"), 1)  # trains the teacher, compiles
    runner.run_vectorized_group(expansion.expand(config, os.path.join(root, "warm-up-vectorized")),
                                os.path.join(root, "warm-up-vectorized"))  # compiles for the points
  # Alternating by hand: each repeat's points are expanded into a fresh workdir outside the timing.
  times = {"sequential": [], "vectorized": []}
  metrics = {}
  for repeat in range(1 if settings.SMOKE else 2 if quick else 5):
    for mode in times:
      workdir = os.path.join(root, f"{mode}-{repeat}")
      points = expansion.expand(config, workdir)
      start = time.perf_counter()
      if mode == "sequential":
        for point in points:
          runner.run_point(point, workdir, len(points))
      else:
        for group in vectorized.groups(points):
          runner.run_vectorized_group(group, workdir)
      times[mode].append(time.perf_counter() - start)
      metrics[mode] = [files.read_json(os.path.join(workdir, point.name, "results.json"))["metrics"]
                       for point in points]
  difference = max(abs(a[model][name] - b[model][name]) for a, b in zip(metrics["sequential"], metrics["vectorized"])
                   for model in ("student", "student_hard") for name in ("accuracy", "nll", "ece", "brier"))
  return {"vectorized_sweep_speedup": statistics.median(times["sequential"]) / statistics.median(times["vectorized"]),
          "vectorized_sweep_end_to_end_sequential_s": statistics.median(times["sequential"]),
          "vectorized_sweep_end_to_end_vectorized_s": statistics.median(times["vectorized"]),
          "vectorized_sweep_end_to_end_max_metric_diff": difference}
