"""Cross-tokenizer losses on real models: `configs/causal_lm.py:smollm,cross_tokenizer` with distill.cross_tokenizer
in {uld, gold, alm} x 3 seeds, each point with its hard-label student of the same seed.

Launch (offline on CPU; first `python scripts/make_smollm_student.py`, which writes the student's checkpoint and
tokenizer into runs/smollm_xtok_student; the report lands in runs/sweep_xtok/summary.md, results.csv, plots/):

    python scripts/make_smollm_student.py
    python main.py --config=configs/sweep_cross_tokenizer.py --workdir=runs/sweep_xtok

The teacher (SmolLM2-135M-Instruct, GGUF) is cached (distill.teacher_mode='cached'): it writes its top-32 logprobs of
the training passages once, into the sweep's shared teacher directory, and every point reads them. The seed orders
the batches; the student's initial weights are the checkpoint's, the same at every seed. Measured figures:
docs/causal_lm.md ("Real models: SmolLM2 into a student of its own tokenizer").

Arguments: `server` (`--config=configs/sweep_cross_tokenizer.py:server`): the same sweep with the teacher served by
llama.cpp's server (`configs/causal_lm.py:smollm,cross_tokenizer,server`: start the server first, as
docs/causal_lm.md shows); the server is asked once, its logprobs written into the sweep's teacher directory, and
only the `uld` points train the hard-label student (the same at every loss), the others pair with it by seed.
`smoke` (`--config=configs/sweep_cross_tokenizer.py:smoke`) sweeps the fixture pair of
`configs/causal_lm.py:smoke,cross_tokenizer` instead (offline, no SmolLM2, 3 losses x 2 seeds, tiny training).
"""

import ml_collections

from kd_jax.config import schema
from configs import causal_lm

LOSSES = ("uld", "gold", "alm")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = schema.parse_options(arg, allowed=("smoke", "server"))
  smoke = "smoke" in options
  config = causal_lm.get_config(("smoke" if smoke else "smollm") + ",cross_tokenizer"
                                + (",server" if "server" in options else ""))
  losses = ("distill.cross_tokenizer", LOSSES)
  if "server" in options:  # the hard-label student does not depend on the teacher: the first loss's points train it
    config.sweep.grid, config.sweep.zipped = (), ((losses, ("baseline", (True, False, False))),)
  else:
    config.sweep.grid = (losses,)
  config.sweep.seeds = 2 if smoke else 3
  config.sweep.selection_metric = "bits_per_byte"
  return config
