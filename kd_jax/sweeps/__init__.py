"""Sweeps: a config's points, run one by one, one per process, or vectorized."""
