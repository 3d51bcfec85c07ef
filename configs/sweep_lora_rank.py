"""LoRA-rank ablation on SST-2: a frozen body (the head alone trains), LoRA of rank 8, 32 and 64, and full
fine-tuning, each distilled from the same teacher and beside its hard-label twin; 3 seeds each.

Launch (downloads the SST-2 checkpoints and data like configs/sst2.py; the report lands in
runs/sweep_lora_rank/summary.md, results.csv, plots/):

    python main.py --config=configs/sweep_lora_rank.py --workdir=runs/sweep_lora_rank

The points (one zipped factor): student.lora.rank 0, 8, 32, 64, 0 with student.trainable ('classifier',) for the
first (every parameter frozen but the classification head: DistilBERT's pre_classifier and classifier) and None for
the others (LoRA: the adapters on the attention's query and value projections, DistilBERT's q_lin and v_lin, and the
head train; rank 0: everything trains), and optim.learning_rate 5e-4 for the head and LoRA points, 5e-5 for full
fine-tuning (LoRA trains at about ten times the full-model rate, as Hu et al. 2021 did on GLUE). LoRA's alpha stays 8
(peft's default), so the update's scale alpha / r falls as the rank grows. efficiency.trainable_params in each
results.json (and the report's size table) counts what each point trains.

Arguments: `smoke` (`--config=configs/sweep_lora_rank.py:smoke`) runs the five points once on the offline SST-2
fixtures (configs/sst2.py:smoke); the fixture DistilBERT is 32 wide, so its ranks are 4, 16 and 32 (a rank above a
targeted layer's width is refused), all at the fixture's learning rate. `from_teacher` builds the student from every
other teacher layer (configs/sst2.py). More seeds: `--config.sweep.seeds=5`.
"""

import ml_collections

from kd_jax.config import schema
from configs import sst2


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = schema.parse_options(arg, allowed=sst2.OPTIONS)
  config = sst2.get_config(arg)
  head_only, everything = ("classifier",), None
  ranks = (4, 16, 32) if "smoke" in options else (8, 32, 64)
  zipped = [("student.lora.rank", (0,) + ranks + (0,)),
            ("student.trainable", (head_only, everything, everything, everything, everything))]
  if "smoke" not in options:
    zipped.append(("optim.learning_rate", (5e-4, 5e-4, 5e-4, 5e-4, 5e-5)))
  config.sweep.zipped = (tuple(zipped),)
  config.sweep.seeds = 1 if "smoke" in options else 3
  return config
