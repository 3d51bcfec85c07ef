"""Divergence ablation: the distillation term's D over the family of kd_jax/training/losses.py, 3 seeds each.

Launch (a few minutes on 2 CPU cores; the report lands in runs/sweep_divergence/summary.md, results.csv, plots/):

    python main.py --config=configs/sweep_divergence.py --workdir=runs/sweep_divergence

D in {forward KL (Hinton et al. 2015), reverse KL, Jensen-Shannon, generalized JSD at beta = 0.1 (GKD, Agarwal et
al. 2024), skew forward and skew reverse KL at lambda = 0.1 (DistiLLM, Ko et al. 2024), total variation, adaptive KL
at mu = 0.5 (Wu et al. 2024)}, everything else as configs/default.py (T = 4, alpha = 0.5, T^2 scaling for every
D). The divergence, beta and skew are swept together (`config.sweep.zipped`), so each point names its beta and
skew, which only generalized_js and the skew KLs read. Other values: override the zipped lists, e.g. a beta sweep
of generalized_js alone: `--config.sweep.zipped='()' --config.distill.divergence=generalized_js` with
`config.sweep.grid = (("distill.beta", (0.1, 0.5, 0.9)),)` in a config file.

Arguments (`--config=configs/sweep_divergence.py:smoke`): `smoke` runs forward KL, generalized JSD and adaptive
KL x 2 seeds with tiny training; the other arguments of configs/default.py apply as well.
"""

import ml_collections

from kd_jax.config import schema
from configs import default

DIVERGENCES = ("forward_kl", "reverse_kl", "js", "generalized_js", "skew_forward_kl", "skew_reverse_kl", "tvd", "akl")


def zipped(divergences: tuple[str, ...]) -> tuple:
  """(divergence, beta, skew) swept together: beta 0.1 for generalized_js, lambda 0.1 for the skew KLs (unread by
  the others, left at their defaults)."""
  beta = tuple(0.1 if kind == "generalized_js" else 0.5 for kind in divergences)
  return ((("distill.divergence", divergences), ("distill.beta", beta),
           ("distill.skew", tuple(0.1 for _ in divergences))),)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  config.sweep.zipped = zipped(DIVERGENCES)
  config.sweep.seeds = 3
  if "smoke" in schema.parse_options(arg, allowed=default.OPTIONS):
    config.sweep.zipped = zipped(("forward_kl", "generalized_js", "akl"))
    config.sweep.seeds = 2
  return config
