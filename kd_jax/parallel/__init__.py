"""Parallelism: the device mesh and shardings, multi-process jobs, preemption, batched inference."""
