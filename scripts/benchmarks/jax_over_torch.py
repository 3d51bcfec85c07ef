"""kd_jax against PyTorch: the DistilBERT-shaped student's distillation training throughput, kd_jax's fused steps
vs the SST-2 notebook's PyTorch eager loop, and the kd_jax step's FLOP/s over the machine's matmul peak."""

import statistics

from . import settings, timing
from .examples import text_examples
from .flops import transformer_train_flops_per_example
from .students import distilbert_student
from .torch_loop import TorchWorker, torch_unavailable
from .trainer import FusedTrainer


def jax_over_torch(quick: bool, torch_python: str, threads: int, peak_flops: float) -> dict:
  """kd_jax's DistilBERT-shaped KD training vs the PyTorch notebook loop, alternating; MFU of the kd_jax step."""
  batch_size = settings.BATCH_SIZE
  model, params = distilbert_student()
  examples = text_examples(batch_size)
  distill_config = settings.distill_config(**settings.NOTEBOOK_LOSS)
  optim_config = settings.notebook_optim_config()
  steps_per_round, rounds = (1, 1) if settings.SMOKE else (2, 7) if quick else (4, 9)
  total_steps = steps_per_round * (rounds + 1) + 1
  trainers = {mode: FusedTrainer(model=model, params=params, examples=examples, distills=mode == "cached",
                                 distill_config=distill_config, optim_config=optim_config, batch_size=batch_size,
                                 num_steps=total_steps, seed=0, max_steps=steps_per_round)
              for mode in ("cached", "none")}
  compile_s = timing.seconds(lambda: trainers["cached"].train(1))
  trainers["none"].train(1)
  unavailable = torch_unavailable(torch_python)
  worker = None if unavailable else TorchWorker(torch_python, threads, total_steps=total_steps)
  # Alternating by hand: the PyTorch side's seconds are the worker's own, without the pipe's.
  times = {"kd_jax": [], "kd_jax_ce": [], "torch": []}
  for _ in range(rounds):
    times["kd_jax"].append(timing.seconds(lambda: trainers["cached"].train(steps_per_round)) / steps_per_round)
    if worker is not None:
      times["torch"].append(worker.seconds_for(steps_per_round) / steps_per_round)
    times["kd_jax_ce"].append(timing.seconds(lambda: trainers["none"].train(steps_per_round)) / steps_per_round)
  jax_step = statistics.median(times["kd_jax"])
  flops = batch_size * transformer_train_flops_per_example(settings.DISTILBERT, settings.SEQUENCE_LENGTH,
                                                           settings.NUM_LABELS)
  result = {"jax_over_torch_throughput": None, "mfu_vs_matmul_peak": flops / jax_step / peak_flops,
            "distilbert_kd_step_s": jax_step, "distilbert_kd_examples_per_s": batch_size / jax_step,
            "distilbert_kd_over_ce_step_time": jax_step / statistics.median(times["kd_jax_ce"]),
            "distilbert_compile_s": compile_s, "distilbert_step_gflop": flops / 1e9,
            "distilbert_achieved_gflops": flops / jax_step / 1e9}
  if worker is None:
    result["torch_unavailable"] = unavailable
    return result
  torch_step = statistics.median(times["torch"])
  result.update({"jax_over_torch_throughput": torch_step / jax_step, "torch_step_s": torch_step,
                 "torch_examples_per_s": batch_size / torch_step, "torch_first_step_s": worker.info["first_step_s"],
                 "torch_version": worker.info["torch"], "torch_threads": worker.info["threads"]})
  worker.close()
  return result
