"""The device mesh and where arrays live on it: data parallelism, FSDP and tensor parallelism.

All mesh and sharding code lives here. The training mesh has three axes, ('data', 'fsdp', 'tensor')
(config.mesh; the default, data = every device, is pure data parallelism). A step function is written for one
'data' shard of the global batch and reduces across it with `lax.pmean(..., DATA_AXIS)` (`data_parallel`: jax.jit
of a shard_map that is manual over 'data' only); within a shard, the 'fsdp' and 'tensor' axes are left to GSPMD:
the batch rows are split over 'fsdp' as well, and parameters and optimizer state are placed by `param_spec`
(tensor parallelism: the rules each model family declares beside its code, `megatron_rules` of its layers, e.g.
kd_jax/models/hf/llama.py `partition_rules`; FSDP: each array split along its largest axis divisible by the fsdp
size), GSPMD gathering them where the computation needs them.
"""

import math
import re
from typing import Callable

import jax
import ml_collections
import numpy as np
from jax import flatten_util
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kd_jax.config import schema
from kd_jax.errors import require

# DATA_AXIS: the batch rows are split over it. FSDP_AXIS: parameters and optimizer state split over it (and the batch
# rows, with DATA_AXIS). TENSOR_AXIS: attention heads and MLP hidden units split over it.
MESH_AXES = schema.MESH_AXES
DATA_AXIS, FSDP_AXIS, TENSOR_AXIS = MESH_AXES
PARAM_AXES = schema.PARAM_AXES  # the axes a sharding rule may name
SWEEP_AXIS = "sweep"  # vectorized sweeps (kd_jax/training/vectorized.py): points spread over devices


def megatron_rules(*, split_outputs: str, split_inputs: str) -> tuple:
  """Tensor-parallel placement rules in the Megatron-LM layout (Shoeybi et al. 2019, arXiv:1909.08053) for the
  layers whose '/'-joined module paths match the regular expressions (searched; the module's own name must end the
  match): (regular expression, axis of each dimension) pairs for `param_spec`.

  split_outputs: layers y = x W + b (W [in, out]: a Dense `kernel` or Conv1D `weight`) whose output units (whole
    heads of q / k / v, hidden units of an MLP's first layer, the vocabulary of an LM head) split over TENSOR_AXIS:
    W (None, tensor), b (tensor,), a LoRA adapter's B [r, out] (None, tensor); its A [in, r] stays whole, each
    device computing its share of y from the whole x.
  split_inputs: layers whose input units split (the attention output, an MLP's second layer): W and LoRA's A [in, r]
    (tensor, None), b and B replicated; each device multiplies its share of x and the partial products are summed
    across the axis (an all-reduce). An embedding table [vocab, features] (`embedding`: a layer over one-hot tokens)
    splits its rows, the vocabulary.
  A dimension a rule names must be divisible by the axis size, else the rule does not apply (`param_spec`); the
  model's rules say so where it can happen (a model's `partition_rules`).
  """
  return ((rf"(?:{split_outputs})/(?:kernel|weight|lora_b)$", (None, TENSOR_AXIS)),
          (rf"(?:{split_outputs})/bias$", (TENSOR_AXIS,)),
          (rf"(?:{split_inputs})/(?:kernel|weight|embedding|lora_a)$", (TENSOR_AXIS, None)))


def mesh_shape(sizes: dict, num_devices: int) -> dict:
  """The axis sizes {data, fsdp, tensor} of `sizes` (config.mesh) on `num_devices` devices: one size may be -1, the
  devices the others leave. Assumes checked sizes (`check_config`)."""
  shape = {axis: int(sizes[axis]) for axis in MESH_AXES}
  fixed = int(np.prod([size for size in shape.values() if size != -1]))
  return {axis: num_devices // fixed if size == -1 else size for axis, size in shape.items()}


def make_mesh(num_devices: int | None = None, sizes: dict | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh of `sizes` (config.mesh; default: data over every device) over all devices
  of all processes, or over the first `num_devices` local ones."""
  devices = jax.devices() if num_devices is None else jax.local_devices()[:num_devices]
  shape = mesh_shape(sizes or {DATA_AXIS: -1, FSDP_AXIS: 1, TENSOR_AXIS: 1}, len(devices))
  return Mesh(np.asarray(devices).reshape(tuple(shape.values())), MESH_AXES)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless train.num_devices and config.mesh fit this job's devices (and a tensor axis > 1 the
  models: models.check_tensor_parallel), the global batch sizes split evenly over the devices, and
  train.microbatches divides each device's rows."""
  num_local = config.train.num_devices
  require(num_local is None or 0 < num_local <= jax.local_device_count(), "train.num_devices", num_local,
          f"must be None (all devices) or between 1 and the {jax.local_device_count()} local devices")
  require(num_local is None or jax.process_count() == 1, "train.num_devices", num_local,
          f"must be None in a run of {jax.process_count()} processes (the mesh spans every process's devices)")
  num_devices = num_local or jax.device_count()
  sizes = {axis: config.mesh[axis] for axis in MESH_AXES}
  filled = [axis for axis, size in sizes.items() if size == -1]
  shape = " x ".join(f"{axis} {size}" for axis, size in sizes.items())
  resolved = mesh_shape(sizes, num_devices)
  require(math.prod(resolved.values()) == num_devices, f"mesh.{filled[0] if filled else 'data'}",
          sizes[filled[0]] if filled else sizes["data"],
          f"the mesh ({shape}) must multiply to the {num_devices} devices of the run")
  require(min(resolved.values()) == 1, "mesh.tensor", config.mesh.tensor,
          f"must be 1 when data and fsdp both exceed 1 (the mesh is {shape}): XLA (jax 0.10) aborts compiling the "
          "step of a model with embeddings on a mesh whose three axes all exceed 1; use two of them")
  tensor = resolved[TENSOR_AXIS]
  if tensor > 1:
    from kd_jax import models  # pylint: disable=g-import-not-at-top  (the models' checkpoints: transformers)
    for section in ("teacher", "student"):
      models.check_tensor_parallel(config, section, tensor)
  require(config.sweep.mode != "vectorized" or resolved[FSDP_AXIS] * tensor == 1, "sweep.mode", config.sweep.mode,
          f"'vectorized' keeps parameters replicated: it needs mesh.fsdp = mesh.tensor = 1 (the mesh is {shape})")
  for field, value in (("data.batch_size", config.data.batch_size),
                       ("data.eval_batch_size", config.data.eval_batch_size)):
    require(value > 0 and value % num_devices == 0, field, value,
            f"must be a positive multiple of the device count ({num_devices})")
  microbatches, rows = config.train.microbatches, config.data.batch_size // num_devices
  require(microbatches >= 1 and rows % microbatches == 0, "train.microbatches", microbatches,
          f"must be >= 1 and divide each device's rows of a batch (data.batch_size {config.data.batch_size} / "
          f"{num_devices} devices = {rows})")


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes the rows of a batch are split over: data and fsdp (those the mesh has)."""
  return tuple(axis for axis in (DATA_AXIS, FSDP_AXIS) if axis in mesh.axis_names)


def is_sharded(mesh: Mesh) -> bool:
  """Whether parameters are split over devices on `mesh` (fsdp or tensor > 1), not replicated."""
  return any(mesh.shape.get(axis, 1) > 1 for axis in PARAM_AXES)


def _path_name(path) -> str:
  return "/".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))) for key in path)


def param_spec(name: str, shape: tuple, mesh_sizes: dict, rules=()) -> P:
  """Where an array of `shape` at path `name` lives: the first of `rules` (config.mesh.rules, then the model's
  `partition_rules`: kd_jax/models.partition_rules) whose expression is found in `name` and whose axes fit the
  array (rank; each named dimension divisible by its axis size) places its dimensions; then the largest remaining
  dimension divisible by the fsdp size is split over FSDP_AXIS (the first of equal ones). Axes of size 1 are left
  out: on a mesh of data parallelism only, everything is replicated."""
  axes = [None] * len(shape)
  for expression, rule_axes in rules:
    if re.search(expression, name) and len(rule_axes) == len(shape) and all(
        axis is None or size % mesh_sizes.get(axis, 1) == 0 for axis, size in zip(rule_axes, shape)):
      axes = [axis if mesh_sizes.get(axis, 1) > 1 else None for axis in rule_axes]
      break
  fsdp = mesh_sizes.get(FSDP_AXIS, 1)
  if fsdp > 1 and FSDP_AXIS not in axes:
    free = [d for d in range(len(shape)) if axes[d] is None and shape[d] % fsdp == 0]
    if free:
      axes[max(free, key=lambda d: (shape[d], -d))] = FSDP_AXIS
  while axes and axes[-1] is None:
    axes.pop()
  return P(*axes)


def param_shardings(tree, mesh: Mesh, rules=()):
  """NamedSharding of every leaf of `tree` (parameters, a train state with its optimizer state) by `param_spec`."""
  sizes = dict(mesh.shape)
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: NamedSharding(mesh, param_spec(_path_name(path), np.shape(leaf), sizes, rules)), tree)


def place_params(tree, mesh: Mesh, rules=()):
  """Places `tree` (parameters, or a train state) on the mesh as `param_shardings` says: replicated on a mesh of
  data parallelism only, split over fsdp / tensor otherwise."""
  return jax.device_put(tree, param_shardings(tree, mesh, rules))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of values held whole on every device (parameters, optimizer state, scalars)."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of batches: the leading (example) axis split over the data (and fsdp) axes."""
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicate(tree, mesh: Mesh):
  """Places a pytree on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def process_rows(global_batch_size: int) -> slice:
  """This process's rows of a global batch: the `process_index`-th of `process_count` equal blocks.

  Meshes list the devices of process 0 first, then those of process 1..., so these are the rows that
  `shard_batch` places on this process's devices.
  """
  rows_per_process, remainder = divmod(global_batch_size, jax.process_count())
  assert remainder == 0, f"{global_batch_size} rows do not split over {jax.process_count()} processes"
  start = jax.process_index() * rows_per_process
  return slice(start, start + rows_per_process)


def shard_batch(local_batch: dict, mesh: Mesh, batch_axis: int = 0) -> dict:
  """Assembles global batch arrays from this process's rows of axis `batch_axis` (a single process holds all)."""
  sharding = NamedSharding(mesh, P(*(None,) * batch_axis, batch_axes(mesh)))
  return jax.tree.map(lambda rows: jax.make_array_from_process_local_data(sharding, rows), local_batch)


def data_axis() -> str | None:
  """Inside a step: the axis name its losses normalize over (losses.global_mean), DATA_AXIS; None when it has size 1
  (XLA's SPMD partitioner rejects an all-reduce over a manual axis of size 1 beside automatic ones, and it would
  change nothing)."""
  return DATA_AXIS if jax.sharding.get_abstract_mesh().shape.get(DATA_AXIS, 1) > 1 else None


def mean_over_devices(tree):
  """lax.pmean of every leaf of `tree` over DATA_AXIS (inside a data-parallel step), as a single all-reduce.

  XLA:CPU runs every all-reduce on its own, and between processes each costs a rendezvous (measured: 10 small
  all-reduces 31 ms, one of their concatenation 0.7 ms, 2 processes on 2 cores); so the leaves travel as one
  vector (in their common dtype). TPU and GPU compilers combine all-reduces anyway.
  """
  if data_axis() is None:
    return tree
  if jax.process_count() == 1 or _params_sharded_here():
    # Sharded leaves are not concatenated (that would gather them). Within one process XLA:CPU's all-reduces are cheap,
    # and concatenating large trees is not (measured: ravel + unravel of the default teacher's 1.5M gradients ~100 ms,
    # its whole step 8 ms).
    return jax.lax.pmean(tree, DATA_AXIS)
  vector, unravel = flatten_util.ravel_pytree(tree)
  return unravel(jax.lax.pmean(vector, DATA_AXIS))


def _params_sharded_here() -> bool:
  """Inside a step: whether the mesh it runs on splits parameters (fsdp or tensor > 1)."""
  sizes = jax.sharding.get_abstract_mesh().shape
  return any(sizes.get(axis, 1) > 1 for axis in PARAM_AXES)


def local_copy(leaf):
  """An array of a multi-process job as a whole copy on this process (device_put and device_get cannot move the
  global one): a replicated array's local copy, a sharded one gathered (a collective: every process calls it);
  other values as they are."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    return leaf.addressable_data(0) if leaf.is_fully_replicated else gather(leaf)
  return leaf


def gather(array: jax.Array) -> np.ndarray:
  """The whole value of a global array (e.g. batch-sharded logits) as NumPy, on every process."""
  return multihost_utils.process_allgather(array, tiled=True)


def data_parallel(step_fn: Callable, mesh: Mesh, *, num_replicated_args: int, donate_argnums=(0,),
                  batch_axis: int = 0) -> Callable:
  """Compiles `step_fn(state, *other_args, batch) -> (state, metrics)` as a pmap-style data-parallel step.

  `step_fn` sees its first `num_replicated_args` arguments whole over the data axis and the last one (the batch
  pytree) as this data shard's rows of axis `batch_axis` (1 for stacked batches [steps, batch, ...]); it must reduce
  what it returns across the data axis itself (`lax.pmean(x, DATA_AXIS)`). The other mesh axes are GSPMD's: the
  arguments keep their shardings over them (parameters split over fsdp / tensor, the batch rows over fsdp), the
  returned state keeps the input state's, the metrics are replicated.
  """
  in_specs = (P(),) * num_replicated_args + (P(*(None,) * batch_axis, DATA_AXIS),)
  mapped = jax.shard_map(step_fn, mesh=mesh, in_specs=in_specs, out_specs=P(), axis_names={DATA_AXIS},
                         check_vma=False)
  compiled = {}

  def jitted(state):
    state_shardings = jax.tree.map(lambda leaf: leaf.sharding, state)
    key = (jax.tree.structure(state), tuple(jax.tree.leaves(state_shardings)))
    if key not in compiled:
      compiled[key] = jax.jit(mapped, donate_argnums=donate_argnums,
                              out_shardings=(state_shardings, replicated(mesh)))
    return compiled[key]

  step = lambda state, *args: jitted(state)(state, *args)
  step.lower = lambda state, *args: jitted(state).lower(state, *args)  # also from jax.ShapeDtypeStructs
  return step


def per_device_bytes(tree) -> int:
  """Bytes of `tree`'s arrays (or jax.ShapeDtypeStructs with a sharding) held by one device: each leaf's shard."""
  return int(sum(np.prod(leaf.sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
                 for leaf in jax.tree.leaves(tree)))


def memory_stats(step: Callable, state, *args) -> dict:
  """Per-device memory of a compiled step (`data_parallel`'s) called on (state, *args): the state's parameters and
  optimizer state (their shards), and XLA's `memory_analysis` of the compiled program of one device: its arguments
  (state, teacher, data), outputs, temporaries (activations, gradients, gathered parameters) and peak estimate
  (arguments + outputs + temporaries - outputs aliased to donated arguments). Lowering takes the shapes and
  shardings only: after the step ran with these arguments it reuses the compiled program."""
  analysis = step.lower(state, *args).compile().memory_analysis()
  memory = {"params_bytes": per_device_bytes(state.params), "optimizer_bytes": per_device_bytes(state.opt_state)}
  if analysis is not None:
    memory.update(argument_bytes=int(analysis.argument_size_in_bytes), output_bytes=int(analysis.output_size_in_bytes),
                  temp_bytes=int(analysis.temp_size_in_bytes), alias_bytes=int(analysis.alias_size_in_bytes))
    memory["peak_bytes"] = (memory["argument_bytes"] + memory["output_bytes"] + memory["temp_bytes"]
                            - memory["alias_bytes"])
  return memory


def format_bytes(size: float) -> str:
  """1536 -> '1.5 KiB'."""
  for unit in ("B", "KiB", "MiB", "GiB"):
    if abs(size) < 1024 or unit == "GiB":
      return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
    size /= 1024


def make_sweep_mesh(num_points: int, num_devices: int | None = None) -> Mesh:
  """A 2-D ('sweep', 'data') mesh over the first `num_devices` local devices (all by default) for `num_points` points
  trained together: the sweep axis gets the largest device count that divides both, the data axis the rest."""
  devices = jax.local_devices()[:num_devices]
  sweep_size = int(np.gcd(len(devices), num_points))
  return Mesh(np.asarray(devices).reshape(sweep_size, -1), (SWEEP_AXIS, DATA_AXIS))


def sweep_parallel(fn: Callable, mesh: Mesh, *, in_specs: tuple, out_specs, donate_argnums=(0,)) -> Callable:
  """Compiles `fn` as a step over a ('sweep', 'data') mesh: each device sees its points (axis SWEEP_AXIS) and its
  rows of their batches (axis DATA_AXIS) as the specs say, and reduces over DATA_AXIS itself."""
  mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
  return jax.jit(mapped, donate_argnums=donate_argnums)
