"""Memory plan: the per-device memory of a config's compiled programs on a mesh, from shapes alone.

    python scripts/memory_plan.py --config=configs/esnli.py --mesh=data:8 --mesh=data:2,fsdp:4 \
        --device_memory=16GiB [--devices=8] [--loss_chunk=256] [--config.FIELD=VALUE ...]

Lowers and compiles, on `--devices` fake CPU devices, the programs a run of the config compiles: the student's
train step (steps.compile_step; with the teacher inside it when distill.teacher_mode='online') and, for a cached
teacher, its batched inference (the top-k cache of seq2seq and causal-LM tasks, else the dense logits), with the
models' parameter shapes from their checkpoints' config.json (jax.eval_shape: no weights are read or allocated) and
the batches' from the config (data.batch_size, data.eval_batch_size, data.max_length, data.max_target_length,
distill.topk). Seq2seq and causal-LM students' steps are planned twice: with whole-sequence logits and with the loss
computed `--loss_chunk` positions at a time (distill.loss_chunk, kd_jax/training/chunked.py). For every mesh
(`--mesh`, repeatable; axes data, fsdp, tensor as in config.mesh, the rest 1) it prints one row per program (the
student's step with config.train.microbatches): the per-device bytes of the student's parameters and optimizer state
and of the teacher's parameters (from their shardings), XLA's temporaries and peak estimate (memory_analysis:
arguments + outputs + temporaries - donated), and whether the peak fits `--device_memory`. Exit status 1 when a
program does not fit.

HF models only (teacher.name = student.name = 'hf'); shape-only checkpoints (a config.json and no weights) serve:
configs/shapes/flan-t5-xl and configs/shapes/flan-t5-small hold FLAN-T5-XL's and FLAN-T5-small's published
dimensions, configs/shapes/qwen3-8b and configs/shapes/qwen3-0.6b Qwen3-8B's and Qwen3-0.6B's (their config.json
files). XLA:CPU's memory_analysis is the CPU compiler's plan; a TPU's or GPU's differs in temporaries (fusion,
layouts), not in the parameter and optimizer bytes.
"""

import os
import re
import sys


def _flag_values(name: str) -> list[str]:
  return [arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith(f"--{name}=")]


# The fake devices exist only if XLA is told before JAX starts. The programs are compiled, never run: LLVM's
# optimization of their CPU code would be wasted (level 0 leaves XLA's buffer assignment, hence every figure
# printed, as it is, and took the esnli smoke plan from 35 to 31 CPU-s); a level in XLA_FLAGS comes after and wins.
_DEVICES = int((_flag_values("devices") or ["8"])[-1])
os.environ["XLA_FLAGS"] = (f"--xla_backend_optimization_level=0 {os.environ.get('XLA_FLAGS', '')} "
                           f"--xla_force_host_platform_device_count={_DEVICES}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from absl import app, flags  # pylint: disable=wrong-import-position
from ml_collections import config_flags  # pylint: disable=wrong-import-position

from kd_jax import models  # pylint: disable=wrong-import-position
from kd_jax.data import Examples  # pylint: disable=wrong-import-position
from kd_jax.errors import UserError  # pylint: disable=wrong-import-position
from kd_jax.models.hf import pretrained  # pylint: disable=wrong-import-position
from kd_jax.parallel import inference, sharding  # pylint: disable=wrong-import-position
from kd_jax.teachers import student_data, teacher_cache
from kd_jax.training import losses, steps
from kd_jax.training.objective import Objective

config_flags.DEFINE_config_file("config", None, "Config file (its fields can be overridden: --config.FIELD=VALUE).")
flags.DEFINE_multi_string("mesh", None, "A mesh, e.g. data:2,fsdp:4 (axes left out are 1; one may be -1); repeat "
                          "the flag to compare meshes. Default: the config's mesh.")
flags.DEFINE_string("device_memory", "16GiB", "Memory of one device, e.g. 16GiB, 80GB, 512MiB.")
flags.DEFINE_integer("devices", 8, "Number of (fake CPU) devices of the mesh.")
flags.DEFINE_integer("loss_chunk", None, "Seq2seq and causal-LM configs: the student's step is planned with whole-"
                     "sequence logits and with the loss computed this many positions at a time (distill.loss_chunk); "
                     "default: the config's distill.loss_chunk, or 256 where it is 0.")
FLAGS = flags.FLAGS

DEFAULT_LOSS_CHUNK = 256
UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30,
         "TIB": 2**40}


def parse_bytes(text: str) -> int:
  """'16GiB' -> 17179869184."""
  match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
  if not match or match.group(2).upper() not in UNITS:
    raise UserError(f"--device_memory={text}: not a size such as 16GiB, 80GB or 512MiB")
  return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def parse_mesh(text: str) -> dict:
  """'data:2,fsdp:4' -> {'data': 2, 'fsdp': 4, 'tensor': 1}."""
  sizes = {axis: 1 for axis in sharding.MESH_AXES}
  for part in text.split(","):
    axis, _, size = part.partition(":")
    if axis not in sizes or not re.fullmatch(r"-?[0-9]+", size):
      raise UserError(f"--mesh={text}: write axis:size pairs of {', '.join(sharding.MESH_AXES)}, e.g. data:2,fsdp:4")
    sizes[axis] = int(size)
  return sizes


def abstract(tree, shardings):
  """jax.ShapeDtypeStructs of `tree`'s leaves with `shardings` (a tree of them, or one for every leaf)."""
  if not isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda leaf, placement: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=placement),
                        tree, shardings)
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=shardings), tree)


def shapes(config, rows: int, *, cached_teacher: bool, num_classes: int) -> Examples:
  """The shapes (np.empty placeholders, never filled) of `rows` examples of the config's task as the student's
  step (or, without a cached teacher, the teacher's inference) sees them."""
  ints = lambda *shape: np.empty(shape, np.int32)
  length, target_length = config.data.max_length, config.data.max_target_length
  inputs = {"input_ids": ints(rows, length), "attention_mask": ints(rows, length)}
  k, tail = config.distill.topk, len(teacher_cache.topk_tail_temperatures([config]))
  # The top-k cache of `positions` target positions: its tail [rows, positions] (flat) or [.., n] (exact at n T).
  topk = lambda positions: losses.TopKLogits(np.empty((rows, positions, k), jnp.dtype(config.distill.topk_dtype)),
                                             ints(rows, positions, k),
                                             np.empty((rows, positions) + ((tail,) if tail else ()), np.float32))
  if config.student.task == "causal_lm":
    teacher = topk(length) if cached_teacher else None
    return Examples(inputs=inputs, label=ints(rows, length), index=ints(rows),
                    token_weights=np.empty((rows, length), np.float32), class_label=ints(rows), teacher=teacher)
  if config.student.task == "seq2seq":
    inputs["decoder_input_ids"] = ints(rows, target_length)
    teacher = topk(target_length) if cached_teacher else None
    return Examples(inputs=inputs, label=ints(rows, target_length), index=ints(rows),
                    token_weights=np.empty((rows, target_length), np.float32), class_label=ints(rows),
                    teacher=teacher)
  teacher = np.empty((rows, num_classes), np.float32) if cached_teacher else None
  return Examples(inputs=inputs, label=ints(rows), index=ints(rows), teacher=teacher)


def plan(config, mesh_sizes: dict, num_classes: int = 3, loss_chunks: tuple[int, ...] = (0,)) -> list[dict]:
  """The rows of one mesh: {program, student params / optimizer / teacher params bytes, temp, peak} per program; the
  student's step once per distill.loss_chunk of `loss_chunks` (0: whole-sequence logits)."""
  mesh = sharding.make_mesh(sizes=mesh_sizes)
  rules = tuple(config.mesh.rules)
  student, student_params = pretrained.abstract_model(config.student, num_classes=num_classes)
  student = models.with_remat(student, config.train.remat, config.train.attention_chunk,
                              config.train.scan_layers)  # as train.py trains it
  teacher, teacher_params = pretrained.abstract_model(config.teacher, num_classes=num_classes)
  teacher = models.with_attention_chunk(teacher, config.train.attention_chunk)  # as train.py and the cache run it
  teacher_params = abstract(teacher_params, sharding.param_shardings(
      teacher_params, mesh, rules + models.partition_rules(teacher, mesh)))
  online = config.distill.teacher_mode == "online"
  batch = sharding.batch_sharded(mesh)
  rows = []

  microbatches = config.train.microbatches
  step = steps.compile_step(mesh, model=student, teacher_model=teacher if online else None, microbatches=microbatches)
  state = jax.eval_shape(lambda params: steps.create_train_state(student, params, config.optim, 1000), student_params)
  state = abstract(state, sharding.param_shardings(state, mesh, rules + models.partition_rules(student, mesh)))
  rng = sharding.replicate(jax.random.PRNGKey(0), mesh)
  examples = abstract(shapes(config, config.data.batch_size, cached_teacher=not online, num_classes=num_classes),
                      batch)
  for chunk in loss_chunks:
    # The step's logit terms: on-policy sampling and feature terms (which need the task and both models' layers)
    # are not planned.
    plain = config.copy_and_resolve_references()
    plain.distill.on_policy_fraction, plain.distill.features, plain.distill.loss_chunk = 0.0, None, chunk
    objective = sharding.replicate(Objective.from_config(plain, num_steps=1000), mesh)
    memory = sharding.memory_stats(step, state, teacher_params if online else None, objective, rng, examples)
    memory["teacher_params_bytes"] = sharding.per_device_bytes(teacher_params) if online else 0
    name = ("student train step" + (" (teacher online)" if online else "")
            + (f", {microbatches} micro-batches" if microbatches > 1 else "") + (f", loss chunk {chunk}" if chunk
                                                                                  else ""))
    rows.append({"program": name, **memory})

  if not online:
    inputs = abstract(shapes(config, config.data.eval_batch_size, cached_teacher=False, num_classes=num_classes),
                      batch).inputs
    if config.teacher.task in ("seq2seq", "causal_lm"):
      program, name = student_data.topk_program(teacher, mesh, config.distill.topk, config.distill.topk_dtype,
                                                teacher_cache.topk_tail_temperatures([config])), "top-k"
    else:
      program, name = inference.make_predict_fn(teacher, mesh), "dense"
    analysis = program.lower(teacher_params, inputs).compile().memory_analysis()
    peak = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
            - analysis.alias_size_in_bytes)
    rows.append({"program": f"teacher {name} cache inference", "params_bytes": 0, "optimizer_bytes": 0,
                 "teacher_params_bytes": sharding.per_device_bytes(teacher_params),
                 "temp_bytes": int(analysis.temp_size_in_bytes), "peak_bytes": int(peak)})
  return rows


def main(argv) -> None:
  del argv
  config = FLAGS.config
  if config is None:
    raise UserError("--config is required, e.g. --config=configs/esnli.py")
  for section in ("teacher", "student"):
    if config[section].name != "hf":
      raise UserError(f"config.{section}.name={config[section].name!r}: the memory plan needs HF models ('hf')")
  device_memory = parse_bytes(FLAGS.device_memory)
  loss_chunks = (0,)
  if config.student.task in ("seq2seq", "causal_lm"):
    loss_chunks = (0, FLAGS.loss_chunk or config.distill.loss_chunk or DEFAULT_LOSS_CHUNK)
  meshes = [parse_mesh(text) for text in FLAGS.mesh] if FLAGS.mesh else [{axis: config.mesh[axis] for axis in sharding.MESH_AXES}]
  fits_everywhere = True
  header = (f"{'mesh':24s} {'program':64s} {'student params':>14s} {'optimizer':>10s} {'teacher params':>14s} "
            f"{'temporaries':>11s} {'peak':>10s}  fits {FLAGS.device_memory}")
  print(f"{config.teacher.checkpoint} -> {config.student.checkpoint} on {FLAGS.devices} devices; per-device bytes")
  print(header)
  print("-" * len(header))
  for mesh_sizes in meshes:
    product = int(np.prod([size for size in mesh_sizes.values() if size != -1]))
    if (-1 in mesh_sizes.values() and FLAGS.devices % product) or (-1 not in mesh_sizes.values()
                                                                   and product != FLAGS.devices):
      raise UserError(f"--mesh={mesh_sizes}: must multiply to --devices={FLAGS.devices}")
    resolved = sharding.mesh_shape(mesh_sizes, FLAGS.devices)
    name = " x ".join(f"{axis} {size}" for axis, size in resolved.items() if size > 1) or "1 device"
    for row in plan(config, resolved, loss_chunks=loss_chunks):
      fits = row["peak_bytes"] <= device_memory
      fits_everywhere &= fits
      print(f"{name:24s} {row['program']:64s} {sharding.format_bytes(row['params_bytes']):>14s} "
            f"{sharding.format_bytes(row['optimizer_bytes']):>10s} "
            f"{sharding.format_bytes(row['teacher_params_bytes']):>14s} {sharding.format_bytes(row['temp_bytes']):>11s} "
            f"{sharding.format_bytes(row['peak_bytes']):>10s}  {'yes' if fits else 'NO'}")
  if not fits_everywhere:
    print(f"A program does not fit {FLAGS.device_memory} per device: shard further (--config.mesh.fsdp), or lower "
          "data.batch_size / data.eval_batch_size.")
    sys.exit(1)


if __name__ == "__main__":
  try:
    app.run(main)
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
