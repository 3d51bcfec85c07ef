"""Training: the one loop, the compiled steps, the losses, on-policy sampling, vectorized points, checkpoints."""
