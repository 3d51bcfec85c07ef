"""The machine: its CPU and load, and the peaks that achieved FLOP/s are held against (a measured fp32 matmul on the
CPU; on an accelerator, the vendor's bf16 peak and a measured bf16 matmul)."""

import os
import platform
import re

from . import timing

# Dense (no 2:4 sparsity) bf16 peak FLOP/s of one device, by the first pattern found in jax.devices()[0].device_kind,
# from the vendors' specifications: H100 SXM 989.4 and H100 PCIe 756 TFLOP/s (NVIDIA's H100 table, 1,979 / 1,513
# with sparsity: glennklockwood.com/garden/processors/h100, archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html);
# H200 (SXM): the H100 SXM's rates (NVIDIA's H200 datasheet; /work/.library/device/H200.md); A100 312 (NVIDIA A100
# datasheet); L4 121 (242 with sparsity; NVIDIA L4 datasheet); TPU per chip (one JAX device; cloud.google.com/tpu/
# docs/v4, v5e, v5p-training, v6e): v4 275, v5e ('TPU v5 lite') 197, v5p 459, v6e ('TPU v6 lite') 918.
BF16_PEAK_TFLOPS = ((r"\bH100\b.*\bPCIe\b", 756.0), (r"\bH100\b", 989.4), (r"\bH200\b", 989.4),
                    (r"\bA100\b", 312.0), (r"\bL4\b", 121.0), (r"TPU v4", 275.0), (r"TPU v5 ?lite|TPU v5e", 197.0),
                    (r"TPU v5p?$", 459.0), (r"TPU v6 ?lite|TPU v6e", 918.0))


def machine() -> dict:
  model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
  return {"cpu": model, "cores": os.cpu_count(), "load_average_start": os.getloadavg()[0]}


def matmul_peak(size: int, repeats: int) -> dict:
  """FLOP/s of a size x size fp32 matmul: XLA (jax.jit) and NumPy, medians; the peak is the faster."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  a = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
  b = np.random.default_rng(1).normal(size=(size, size)).astype(np.float32)
  matmul = jax.jit(jnp.matmul)
  a_device, b_device = jax.device_put(a), jax.device_put(b)
  matmul(a_device, b_device).block_until_ready()
  flops = 2.0 * size**3
  xla = flops / timing.median_seconds(lambda: matmul(a_device, b_device).block_until_ready(), repeats)
  np.matmul(a, b)
  numpy = flops / timing.median_seconds(lambda: np.matmul(a, b), repeats)
  return {"xla_flops": xla, "numpy_flops": numpy, "peak_flops": max(xla, numpy), "size": size}


def bf16_peak_flops(device_kind: str) -> float | None:
  """The vendor's dense bf16 peak FLOP/s of one device of this kind (BF16_PEAK_TFLOPS), None if not listed."""
  return next((tflops * 1e12 for pattern, tflops in BF16_PEAK_TFLOPS if re.search(pattern, device_kind)), None)


def bf16_matmul_flops(size: int, chain: int, repeats: int) -> float:
  """FLOP/s of size x size x size bf16 matmuls on one device: `chain` products in one compiled call, each the next
  one's left operand (none can be skipped), the median of `repeats` calls after a compiling one."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  left_key, right_key = jax.random.split(jax.random.PRNGKey(0))
  left = jax.random.normal(left_key, (size, size), jnp.bfloat16)
  right = (jax.random.normal(right_key, (size, size), jnp.float32) / size**0.5).astype(jnp.bfloat16)  # norm ~1
  products = jax.jit(lambda x, y: jax.lax.fori_loop(0, chain, lambda _, z: z @ y, x))
  products(left, right).block_until_ready()
  seconds = timing.median_seconds(lambda: products(left, right).block_until_ready(), repeats)
  return 2.0 * size**3 * chain / seconds
