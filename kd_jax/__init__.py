"""kd_jax: knowledge distillation in JAX/Flax, from one config file to results.json, plots and sweep reports.

Importing it changes nothing: what must be set before JAX starts is set by the entry points
(kd_jax/parallel/environment.py).
"""
