"""FSDP: the DistilBERT-shaped student's per-device parameter and optimizer bytes and its KD step time, sharded over 8
forced CPU devices (config.mesh.fsdp=8) vs replicated over them, in a worker process
(`python scripts/benchmark.py --fsdp_worker`) that has the 8 devices."""

import json
import os
import subprocess
import sys

from . import SCRIPT, settings, timing
from .examples import text_examples
from .students import distilbert_student
from .trainer import FusedTrainer


def fsdp_worker(quick: bool) -> None:
  """(In a process with 8 forced CPU devices.) The DistilBERT-shaped student's KD training, FSDP-8 vs replicated
  (data parallelism over the 8 devices), alternating; prints the figures as JSON."""
  from kd_jax.parallel import sharding  # pylint: disable=g-import-not-at-top
  model, params = distilbert_student()
  examples = text_examples(settings.BATCH_SIZE)
  distill_config = settings.distill_config(**settings.NOTEBOOK_LOSS)
  optim_config = settings.notebook_optim_config()
  steps_per_round, rounds = (1, 1) if settings.SMOKE else (1, 3) if quick else (2, 5)
  meshes = {"replicated": {"data": 8, "fsdp": 1, "tensor": 1}, "fsdp": {"data": 1, "fsdp": 8, "tensor": 1}}
  trainers = {name: FusedTrainer(model=model, params=params, examples=examples, distills=True,
                                 distill_config=distill_config, optim_config=optim_config,
                                 batch_size=settings.BATCH_SIZE, num_steps=steps_per_round * rounds + 1, seed=0,
                                 max_steps=steps_per_round, mesh_sizes=sizes) for name, sizes in meshes.items()}
  result = {}
  for name, trainer in trainers.items():
    state = trainer.program().state
    result[f"{name}_param_optimizer_bytes_per_device"] = sharding.per_device_bytes((state.params, state.opt_state))
    result[f"{name}_compile_s"] = timing.seconds(lambda trainer=trainer: trainer.train(1))
  seconds, _ = timing.alternating({name: lambda trainer=trainer: trainer.train(steps_per_round)
                                   for name, trainer in trainers.items()}, rounds)
  step_s = {name: value / steps_per_round for name, value in seconds.items()}
  result.update({
      "sharded_param_bytes_ratio": (result["fsdp_param_optimizer_bytes_per_device"]
                                    / result["replicated_param_optimizer_bytes_per_device"]),
      "fsdp_step_over_replicated": step_s["fsdp"] / step_s["replicated"],
      "fsdp_step_s": step_s["fsdp"], "replicated_step_s": step_s["replicated"]})
  print(json.dumps(result))


def fsdp_figures(quick: bool) -> dict:
  """fsdp_worker's figures, from a subprocess with 8 forced CPU devices (this process has its own device count) and
  this process's other XLA flags (the test session's compile flags: the --smoke worker in 10.9 CPU-s instead of 17.4,
  two runs each)."""
  env = {**os.environ,
         "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()}
  env.pop("PJRT_NPROC", None)
  result = subprocess.run([sys.executable, str(SCRIPT), "--fsdp_worker"] + (["--quick"] if quick else [])
                          + (["--smoke"] if settings.SMOKE else []), env=env,
                          capture_output=True, text=True, check=True, timeout=1800)
  return json.loads(result.stdout.strip().splitlines()[-1])
