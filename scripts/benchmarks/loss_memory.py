"""Chunked losses' memory (config.distill.loss_chunk): the compiled train step's peak bytes on one device (XLA's
memory_analysis: arguments + outputs + temporaries - donated), compiled from shapes only, never run.

- chunked_over_unchunked_peak_bytes: the KD step with the loss computed LOSS_CHUNK positions at a time over the same
  step with whole-sequence logits, for a Qwen3-0.6B-shaped student (configs/shapes/qwen3-0.6b: 28 layers, hidden
  1,024, vocabulary 151,936, tied embeddings; float32 parameters and AdamW state) at batch 8 x 2,048 tokens, the
  teacher online inside the step: a Qwen3-0.6B-shaped teacher in bfloat16 (its logits chunked too).
- kd_over_ce_peak_bytes: that chunked KD step over the chunked cross-entropy step of the same student and batch
  (the hard-label baseline: no teacher).
- logit_terms_chunked_over_unchunked_bytes: what the KD step holds beyond the chunked CE step, chunked over
  unchunked: the logit terms' own share of the peak (the teacher's parameters included), without the model's
  activations, which both steps hold alike.

The student trains as a user trains it at this size (REMAT, ATTENTION_CHUNK, SCAN_LAYERS) in all three steps, and the
teacher attends in ATTENTION_CHUNK queries at a time and scans its layers as train.py runs an online teacher.
LOSS_CHUNK 128: at 256 the chunk's [8, 256, 151936] float32 arrays (1.16 GiB each) sit under the step's long-lived
values in XLA's packing and the chunked step plans 20.2 GiB; at 128, 17.6; at 64, 17.5 (docs/benchmark.md). The
student's layers run as one scan (config.train.scan_layers), so XLA:CPU's plan keeps remat as it keeps chunked
attention (a loop): over unrolled layers it drops jax.checkpoint's optimization barriers and merges the recomputation
back (docs/parallelism.md), so every layer's activations counted as if remat were off. compile_seconds: the three
compilations' wall time.

--smoke compiles a 1-layer, 64-wide, 2,048-token-vocabulary student at batch 2 x 64 with chunks of 16.
"""

import json
import time

from . import REPO_ROOT, settings

LOSS_CHUNK = 128
# The student as a user trains it at this size, in the chunked and the unchunked steps alike (so the ratio compares
# the loss alone): per-layer rematerialization (config.train.remat) and attention ATTENTION_CHUNK queries at a time
# (config.train.attention_chunk), the layers as one rematerialized scan (config.train.scan_layers).
REMAT, ATTENTION_CHUNK, SCAN_LAYERS = "block", 512, True
BATCH, LENGTH = 8, 2048
SHAPES = REPO_ROOT / "configs" / "shapes" / "qwen3-0.6b" / "config.json"


def _shapes(smoke: bool) -> tuple[dict, int, int, int, int]:
  """(Qwen3 config.json fields, batch, length, loss chunk, attention chunk) of the measured student."""
  fields = json.loads(SHAPES.read_text())
  if not smoke:
    return fields, BATCH, LENGTH, LOSS_CHUNK, ATTENTION_CHUNK
  fields.update(bos_token_id=1, eos_token_id=2, vocab_size=2048, hidden_size=64, intermediate_size=128,
                num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
  return fields, 2, 64, 16, 16


def peak_bytes(fields: dict, batch: int, length: int, *, loss_chunk: int, distills: bool, remat: str = "none",
               attention_chunk: int = 0, scan_layers: bool = False) -> int:
  """The peak bytes of the compiled train step of a Qwen3 student of `fields` (float32) on one device: KD against a
  teacher of the same shape in bfloat16, online (`distills`), or cross-entropy alone; the student with
  config.train.remat `remat`, config.train.attention_chunk `attention_chunk` and config.train.scan_layers
  `scan_layers`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from kd_jax import models  # pylint: disable=g-import-not-at-top
  from kd_jax.data import Examples  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import llama, pretrained  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import sharding  # pylint: disable=g-import-not-at-top
  from kd_jax.training import steps  # pylint: disable=g-import-not-at-top

  def abstract_model(dtype):
    config = transformers.Qwen3Config(**fields)
    architecture = llama.build(config, checkpoint=str(SHAPES.parent), task="causal_lm", num_labels=None,
                               dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype))
    params = jax.eval_shape(lambda: architecture.module.init(jax.random.key(0), **architecture.example_inputs))
    return pretrained.RegistryModel(architecture.module), params["params"]

  mesh = sharding.make_mesh(1)
  student, student_params = abstract_model("float32")
  student = models.with_remat(student, remat, attention_chunk, scan_layers)
  teacher, teacher_params = abstract_model("bfloat16") if distills else (None, None)
  if distills:  # as train.py runs an online teacher: attention in the student's chunks, its layers scanned likewise
    teacher = models.with_attention_chunk(teacher, attention_chunk, scan_layers)
  state = jax.eval_shape(lambda params: steps.create_train_state(student, params, settings.notebook_optim_config(),
                                                                 1000), student_params)
  distill = settings.distill_config(temperature=1.0, alpha=0.5, loss_chunk=loss_chunk)
  objective = settings.objective(distill, distills=distills)
  tokens = np.zeros((batch, length), np.int32)
  examples = Examples(inputs={"input_ids": tokens, "attention_mask": tokens}, label=tokens,
                      index=np.zeros(batch, np.int32), token_weights=np.zeros((batch, length), np.float32))
  shaped = lambda tree, placement: jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=placement), tree)
  replicated = sharding.replicated(mesh)
  step = steps.compile_step(mesh, model=student, teacher_model=teacher)
  memory = sharding.memory_stats(step, shaped(state, replicated), shaped(teacher_params, replicated), objective,
                                 jax.random.PRNGKey(0), shaped(examples, sharding.batch_sharded(mesh)))
  return memory["peak_bytes"]


def loss_memory(quick: bool) -> dict:
  """The two ratios and the three peaks (GiB) they come from; compiled only, on one CPU device."""
  del quick  # three compilations either way
  fields, batch, length, chunk, attention_chunk = _shapes(settings.SMOKE)
  savers = {"remat": REMAT, "attention_chunk": attention_chunk, "scan_layers": SCAN_LAYERS}
  start = time.perf_counter()
  plain = peak_bytes(fields, batch, length, loss_chunk=0, distills=True, **savers)
  chunked = peak_bytes(fields, batch, length, loss_chunk=chunk, distills=True, **savers)
  cross_entropy = peak_bytes(fields, batch, length, loss_chunk=chunk, distills=False, **savers)
  return {"chunked_over_unchunked_peak_bytes": chunked / plain, "kd_over_ce_peak_bytes": chunked / cross_entropy,
          "logit_terms_chunked_over_unchunked_bytes": (chunked - cross_entropy) / (plain - cross_entropy),
          "qwen3_0_6b_kd_step_peak_gib_unchunked": plain / 2**30,
          "qwen3_0_6b_kd_step_peak_gib_chunked": chunked / 2**30,
          "qwen3_0_6b_ce_step_peak_gib_chunked": cross_entropy / 2**30, "loss_chunk": chunk,
          "attention_chunk": attention_chunk, "scan_layers": SCAN_LAYERS,
          "compile_seconds": time.perf_counter() - start}
