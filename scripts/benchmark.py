"""Benchmark: kd_jax against PyTorch and against the machine's own matmul speed.

    python scripts/benchmark.py [--quick | --smoke] [--out B.json] [--torch_python PYTHON]
    python scripts/benchmark.py --accelerator [--out A.json] [--accel_batch_sizes distilbert=256,...]

`--quick` (under 5 minutes on 2 CPU cores) takes fewer repeats and shorter trainings; `--smoke` (what
tests/test_benchmark.py runs) runs every section once at toy sizes (use_smoke_sizes): its figures say that the code
runs, not how fast; `--out` writes the figures as a JSON object; a table is printed either way. Every time is a median
over repeats measured after a warm-up call that compiles (compile times are reported separately), and each ratio is
measured within this run with its two sides alternating, so that a change in machine load hits both alike. The keys:

- kd_over_ce_step_time: a distillation step with cached teacher logits over a plain cross-entropy step, same
  student and batch: the default config's MLP student on digits (batch 32), fused steps (kd_jax/training/steps.py).
- vectorized_sweep_speedup: 8 sweep points (4 temperatures x 2 seeds) of the default task (smoke teacher, already
  trained; 10 epochs per student) run as the sweep runs them, point after point (train.run_group: data, teacher and
  cache loading, KD and hard-label students, evaluation, checkpoints, results.json), over the same points run by
  sweep.mode='vectorized' (kd_jax/training/vectorized.py); the report is not timed, and the points' metrics must agree
  (vectorized_sweep_end_to_end_max_metric_diff). vectorized_sweep_loop_speedup isolates the training loops: the 8 KD
  students' fused steps one after another vs together (vectorized_sweep_max_param_diff).
- jax_over_torch_throughput: distillation training examples/s of kd_jax over a PyTorch eager loop written as the
  SST-2 notebook writes it (transformers' DistilBertForSequenceClassification, torch AdamW, linear schedule with
  warmup, the same KD loss: (1 - a) CE + a T^2 KL), for a DistilBERT-shaped student (4 layers, hidden 256, 4 heads,
  FFN 1024, sequence 128, random weights), batch 32, the same CPU threads. The PyTorch side runs in a worker
  process (`--torch_python`, default this interpreter) that must have torch and transformers
  (requirements-torch.txt); without them the key is null and `torch_unavailable` says why.
- mfu_vs_matmul_peak: that kd_jax step's FLOP/s (forward + backward = 3x the forward matmul FLOPs counted from the
  model configuration) over the FLOP/s of a large fp32 matmul measured here (4096 x 4096, 2048 with --quick; the
  faster of XLA and NumPy).
- sharded_param_bytes_ratio: per-device bytes of the DistilBERT-shaped student's parameters and optimizer state
  (from the arrays' shards) with FSDP over 8 forced CPU devices (config.mesh.fsdp=8) over replicated (data
  parallelism over the 8). fsdp_step_over_replicated: its KD step time, FSDP-8 over replicated, alternating (a memory
  feature: on CPU, where the all-gathers are copies, above 1). Both in a subprocess with 8 forced CPU devices.

Extras: compile times, the input-pipeline stall fraction (the share of a fused training loop's time spent waiting
for batches: 1 - time with one chunk's data staged on the device / time with each chunk's data prepared and sent),
the teacher-cache build throughput (examples/s of the teacher's inference), cache bytes per example (dense for the
default task, top-k for the e-SNLI config), the peak host memory (max RSS) of the default run (`main.py
--config=configs/default.py`, in a subprocess), the machine (CPU model, cores, load average), and the memory
savers (config.train.remat and microbatches): the compiled KD step's temporaries (XLA memory_analysis, per device)
of the DistilBERT-shaped student, plain (step_temp_mib_plain) and as a ratio to it with remat per block
(step_temp_ratio_block, step_temp_ratio_dots_saveable) and 4 micro-batches (step_temp_ratio_microbatches_4).

`--accelerator` runs instead the accelerator section on one GPU or TPU chip (exit 2 on a CPU backend; the keys
accel_*): bf16 KD training examples/s and MFU of DistilBERT-base, FLAN-T5-small- and SmolLM2-shaped students
against the chip's specified bf16 peak and a measured bf16 matmul, a FLAN-T5-large-shaped teacher's top-k cache
build, and the PyTorch loop on CUDA under bf16 autocast (accelerator_figures; scripts/accelerator_check.sh).
"""

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# The DistilBERT-shaped student: transformers DistilBertConfig fields.
DISTILBERT = dict(vocab_size=30522, dim=256, n_layers=4, n_heads=4, hidden_dim=1024, max_position_embeddings=512,
                  dropout=0.1, attention_dropout=0.1, seq_classif_dropout=0.2)
SEQUENCE_LENGTH = 128
BATCH_SIZE = 32
NUM_LABELS = 2
TEMPERATURE, ALPHA = 2.0, 0.5
LEARNING_RATE, WEIGHT_DECAY, WARMUP_RATIO = 5e-5, 0.01, 0.1
SMOKE = False  # --smoke: use_smoke_sizes() ran


def transformer_train_flops_per_example(dims: dict, length: int, num_labels: int) -> float:
  """3 x forward matmul FLOPs of one example (backward = 2 x forward): per layer the Q, K, V, output projections
  (4 * 2 L H^2), attention scores and mixing (2 * 2 L^2 H), the FFN (2 * 2 L H F); the classifier head on the first
  token (2 H^2 + 2 H C). Embeddings, norms, softmax and activations are not counted."""
  hidden, ffn = dims["dim"], dims["hidden_dim"]
  per_layer = 4 * 2 * length * hidden**2 + 2 * 2 * length**2 * hidden + 2 * 2 * length * hidden * ffn
  forward = dims["n_layers"] * per_layer + 2 * hidden**2 + 2 * hidden * num_labels
  return 3.0 * forward


def t5_train_flops_per_example(dims: dict, source_length: int, target_length: int) -> float:
  """3 x forward matmul FLOPs of one seq2seq example of a T5 (transformers T5Config fields; S source and T target
  tokens, D = d_model, F = d_ff, A = num_heads * d_kv, V = vocab_size). Per encoder layer: Q, K, V, O projections
  (4 * 2 S D A), attention scores and mixing (2 * 2 S^2 A), the FFN (m * 2 S D F, m = 3 matmuls when gated as in
  T5 v1.1 / FLAN-T5, else 2). Per decoder layer: the same on T tokens plus cross-attention (Q, O: 2 * 2 T D A; K, V
  of the S encoder states: 2 * 2 S D A; scores and mixing: 2 * 2 T S A). The LM head: 2 T D V. Embeddings, norms,
  the position bias, softmax and activations are not counted."""
  d_model, inner, ffn = dims["d_model"], dims["num_heads"] * dims["d_kv"], dims["d_ff"]
  ffn_matmuls = 3 if dims.get("feed_forward_proj", "relu").startswith("gated") else 2

  def attention_and_ffn(length):
    return 4 * 2 * length * d_model * inner + 2 * 2 * length**2 * inner + ffn_matmuls * 2 * length * d_model * ffn

  source, target = source_length, target_length
  cross = 2 * 2 * target * d_model * inner + 2 * 2 * source * d_model * inner + 2 * 2 * target * source * inner
  forward = (dims["num_layers"] * attention_and_ffn(source)
             + dims.get("num_decoder_layers", dims["num_layers"]) * (attention_and_ffn(target) + cross)
             + 2 * target * d_model * dims["vocab_size"])
  return 3.0 * forward


def llama_train_flops_per_example(dims: dict, length: int) -> float:
  """3 x forward matmul FLOPs of one causal-LM sequence of L tokens of a Llama (transformers LlamaConfig fields;
  H = hidden_size, I = intermediate_size, Q / K = query / key-value heads of head_dim E, V = vocab_size). Per layer:
  the Q and O projections (2 * 2 L H Q E), K and V (2 * 2 L H K E), scores and mixing over every key, the causally
  masked ones too, as the step computes them (2 * 2 L^2 Q E), the gated MLP (3 * 2 L H I). The LM head over every
  position: 2 L H V. Embeddings, norms, rotary embeddings, softmax and activations are not counted."""
  hidden, heads, kv_heads = dims["hidden_size"], dims["num_attention_heads"], dims["num_key_value_heads"]
  head_dim = dims.get("head_dim") or hidden // heads
  per_layer = (2 * 2 * length * hidden * heads * head_dim + 2 * 2 * length * hidden * kv_heads * head_dim
               + 2 * 2 * length**2 * heads * head_dim + 3 * 2 * length * hidden * dims["intermediate_size"])
  return 3.0 * (dims["num_hidden_layers"] * per_layer + 2 * length * hidden * dims["vocab_size"])


def synthetic_text_batch(num_examples: int, seed: int = 0) -> dict:
  """Random token ids (full length), labels and teacher logits: the same arrays in both frameworks."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  return {"input_ids": rng.integers(1000, DISTILBERT["vocab_size"], (num_examples, SEQUENCE_LENGTH), dtype=np.int32),
          "attention_mask": np.ones((num_examples, SEQUENCE_LENGTH), np.int32),
          "label": rng.integers(0, NUM_LABELS, num_examples).astype(np.int32),
          "teacher_logits": rng.normal(size=(num_examples, NUM_LABELS)).astype(np.float32)}


# ----------------------------------------------------------------------------------------------------------------
# The PyTorch side: a worker process answering JSON lines on stdin.


def torch_worker() -> None:
  """Builds the notebook's PyTorch training loop, then runs `{"steps": n}` requests, answering their seconds.

  The first request may also name `dims` (DistilBertConfig fields; default DISTILBERT), `batch_size` (BATCH_SIZE),
  `device` ('cpu'; 'cuda' for the accelerator section) and `bf16` (False; True: the forward pass and the loss under
  torch.autocast in bfloat16, as a notebook on a GPU runs them)."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  request = json.loads(sys.stdin.readline())
  torch.set_num_threads(request["threads"])
  torch.manual_seed(0)
  device = torch.device(request.get("device", "cpu"))
  model = transformers.DistilBertForSequenceClassification(
      transformers.DistilBertConfig(**request.get("dims", DISTILBERT), num_labels=NUM_LABELS)).to(device)
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
  total_steps = request["total_steps"]
  scheduler = transformers.get_linear_schedule_with_warmup(optimizer, int(WARMUP_RATIO * total_steps), total_steps)
  batch = {key: torch.from_numpy(value).to(device)
           for key, value in synthetic_text_batch(request.get("batch_size", BATCH_SIZE)).items()}
  autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if request.get("bf16")
              else contextlib.nullcontext)
  input_ids, attention_mask = batch["input_ids"].long(), batch["attention_mask"].long()
  labels, teacher_logits = batch["label"].long(), batch["teacher_logits"]

  def kd_loss(student_logits):
    soft = F.kl_div(F.log_softmax(student_logits / TEMPERATURE, dim=-1), F.softmax(teacher_logits / TEMPERATURE,
                                                                                      dim=-1),
                    reduction="batchmean") * TEMPERATURE**2
    return ALPHA * soft + (1 - ALPHA) * F.cross_entropy(student_logits, labels)

  def train_steps(num_steps):
    start = time.perf_counter()
    for _ in range(num_steps):
      with autocast():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        loss = kd_loss(logits)
      loss.backward()
      optimizer.step()
      scheduler.step()
      optimizer.zero_grad()
    if device.type == "cuda":
      torch.cuda.synchronize()  # CUDA kernels run asynchronously: the steps are done when the queue is
    return time.perf_counter() - start, float(loss)

  seconds, _ = train_steps(1)  # warm-up (PyTorch has nothing to compile; the first step allocates)
  print(json.dumps({"ready": True, "first_step_s": seconds, "torch": torch.__version__,
                    "transformers": transformers.__version__, "threads": torch.get_num_threads()}), flush=True)
  for line in sys.stdin:
    request = json.loads(line)
    if "steps" not in request:
      break
    seconds, loss = train_steps(request["steps"])
    print(json.dumps({"seconds": seconds, "loss": loss}), flush=True)


class TorchWorker:
  """The PyTorch loop in a worker process (`python scripts/benchmark.py --torch_worker`)."""

  def __init__(self, python: str, threads: int, total_steps: int, **options):
    """options: the worker's optional first-request fields (torch_worker: dims, batch_size, device, bf16)."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")  # idle OpenMP threads must not spin while JAX is timed
    self._process = subprocess.Popen([python, __file__, "--torch_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    self.info = self._ask({"threads": threads, "total_steps": total_steps, **options})

  def _ask(self, request: dict) -> dict:
    self._process.stdin.write(json.dumps(request) + "\n")
    self._process.stdin.flush()
    line = self._process.stdout.readline()
    if not line:
      raise RuntimeError(self._process.stderr.read().strip().splitlines()[-1])
    return json.loads(line)

  def seconds_for(self, num_steps: int) -> float:
    return self._ask({"steps": num_steps})["seconds"]

  def close(self) -> None:
    self._process.stdin.write("{}\n")
    self._process.stdin.close()
    self._process.wait(timeout=60)


def torch_unavailable(python: str) -> str | None:
  """Why the PyTorch side cannot run with `python`, or None."""
  check = subprocess.run([python, "-c", "import torch, transformers"], capture_output=True, text=True, check=False)
  if check.returncode != 0:
    last = (check.stderr.strip().splitlines() or ["import failed"])[-1]
    return (f"{python} cannot import torch and transformers ({last}); install requirements-torch.txt "
            "(pip install torch==2.13.0 transformers) or pass --torch_python")
  return None


# ----------------------------------------------------------------------------------------------------------------
# The kd_jax side.


def median_seconds(function, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


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
  xla = flops / median_seconds(lambda: matmul(a_device, b_device).block_until_ready(), repeats)
  np.matmul(a, b)
  numpy = flops / median_seconds(lambda: np.matmul(a, b), repeats)
  return {"xla_flops": xla, "numpy_flops": numpy, "peak_flops": max(xla, numpy), "size": size}


class FusedTrainer:
  """A student trained by kd_jax's fused chunks as the training loop runs them (steps.program), from fixed initial
  parameters: with the distillation loss on examples carrying cached teacher logits, or with cross-entropy alone on
  the same examples without them."""

  def __init__(self, *, model, params, examples, distills: bool, distill_config, optim_config, batch_size: int,
               num_steps: int, seed: int, max_steps: int = 100, mesh_sizes: dict | None = None,
               num_devices: int | None = None):
    import ml_collections  # pylint: disable=g-import-not-at-top
    from kd_jax.parallel import sharding  # pylint: disable=g-import-not-at-top
    from kd_jax.training import losses
    self.mesh = sharding.make_mesh(num_devices, sizes=mesh_sizes)
    self._program_args = dict(
        model=model, init_params=params, optim_config=optim_config, num_steps=num_steps,
        loss=losses.DistillationLoss.from_config(distill_config, distills=distills),
        examples=examples if distills else examples.replace(teacher=None), batch_size=batch_size, seed=seed,
        mesh=self.mesh, train_config=ml_collections.ConfigDict(dict(steps_per_dispatch=max_steps,
                                                                    device_data_max_mib=256, microbatches=1)))
    self._max_steps = max_steps

  def program(self):
    """A fresh program (its initial state; the compiled chunk is shared by every program of the process)."""
    from kd_jax.training import steps  # pylint: disable=g-import-not-at-top
    return steps.program(**self._program_args)

  def train(self, num_steps: int, staged_data=None):
    """Trains `num_steps` steps from the initial state in chunks of max_steps; returns the final state (synced).

    staged_data: one chunk's data already on the device, reused by every chunk (the stall measurement).
    """
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    program = self.program()
    state, feed = program.state, program.feed(0)
    step = 0
    while step < num_steps:
      length = min(self._max_steps, num_steps - step)
      data = staged_data if staged_data is not None else feed.next(length)
      state, _ = program.chunk(state, np.int32(length), *data)
      step += length
    return jax.block_until_ready(state)

  def staged_data(self):
    return self.program().feed(0).next(self._max_steps)


def default_task():
  """The default config (digits, MLP student) and its task with random teacher logits joined (the cache's shape)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(REPO_ROOT))
  from configs import default  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.train.num_devices = 1
  task = data.load_task(config)
  logits = np.random.default_rng(0).normal(size=(len(task.train), task.num_classes)).astype(np.float32)
  return config, task, task.train.replace(teacher=logits)


def mlp_student(config, task, seed: int = 0):
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax import models  # pylint: disable=g-import-not-at-top
  return models.create(config.student, num_classes=task.num_classes, example_inputs=task.train.inputs[:1],
                       rng=jax.random.PRNGKey(seed))


def kd_over_ce(quick: bool) -> dict:
  """Fused steps of the default MLP student: KD with cached logits vs hard-label CE, alternating."""
  config, task, examples = default_task()
  model, params = mlp_student(config, task)
  num_steps = 10 if SMOKE else 1000 if quick else 3000
  trainers = {mode: FusedTrainer(model=model, params=params, examples=examples, distills=mode == "cached",
                                 distill_config=config.distill, optim_config=config.optim,
                                 batch_size=config.data.batch_size, num_steps=num_steps, seed=0)
              for mode in ("cached", "none")}
  compile_s = {}
  for mode, trainer in trainers.items():
    start = time.perf_counter()
    trainer.train(1)
    compile_s[mode] = time.perf_counter() - start
  times = {mode: [] for mode in trainers}
  for _ in range(1 if SMOKE else 21 if quick else 41):
    for mode, trainer in trainers.items():
      start = time.perf_counter()
      trainer.train(num_steps)
      times[mode].append((time.perf_counter() - start) / num_steps)
  kd, ce = statistics.median(times["cached"]), statistics.median(times["none"])
  return {"kd_over_ce_step_time": kd / ce, "mlp_kd_step_us": kd * 1e6, "mlp_ce_step_us": ce * 1e6,
          "mlp_compile_s": compile_s["cached"]}


def stall_fraction(quick: bool) -> dict:
  """The fused loop of the default KD student with batches gathered + transferred vs one staged chunk reused."""
  config, task, examples = default_task()
  model, params = mlp_student(config, task)
  num_steps = 10 if SMOKE else 1000 if quick else 3000
  trainer = FusedTrainer(model=model, params=params, examples=examples, distills=True,
                         distill_config=config.distill, optim_config=config.optim,
                         batch_size=config.data.batch_size, num_steps=num_steps, seed=0)
  staged = trainer.staged_data()
  trainer.train(1)
  fed, prestaged = [], []
  for _ in range(1 if SMOKE else 15 if quick else 31):
    start = time.perf_counter()
    trainer.train(num_steps)
    fed.append(time.perf_counter() - start)
    start = time.perf_counter()
    trainer.train(num_steps, staged_data=staged)
    prestaged.append(time.perf_counter() - start)
  return {"input_stall_fraction": max(0.0, 1 - statistics.median(prestaged) / statistics.median(fed))}


def vectorized_speedup(quick: bool) -> dict:
  """8 points (4 temperatures x 2 seeds) of the default student: one after another vs together, alternating."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax.training import losses, vectorized  # pylint: disable=g-import-not-at-top
  config, task, examples = default_task()
  num_steps = 20 if SMOKE else 390 if quick else 1170  # 10 / 30 epochs of the default task
  temperatures, seeds = (1.0, 2.0, 3.0, 4.0), (0, 1)
  points = [(temperature, seed) for temperature in temperatures for seed in seeds]
  init = {seed: mlp_student(config, task, seed) for seed in seeds}
  model = init[0][0]
  max_steps = 100

  def distill(temperature):
    distill_config = ml_collections.ConfigDict(config.distill.to_dict())
    distill_config.temperature = temperature
    return distill_config

  sequential = [FusedTrainer(model=model, params=init[seed][1], examples=examples, distills=True,
                             distill_config=distill(temperature), optim_config=config.optim,
                             batch_size=config.data.batch_size, num_steps=num_steps, seed=seed)
                for temperature, seed in points]
  train_config = ml_collections.ConfigDict(dict(steps_per_dispatch=max_steps, num_devices=1, microbatches=1))

  def train_together(steps):
    program = vectorized.program(
        model=model, init_params={seed: params for seed, (_, params) in init.items()}, optim_config=config.optim,
        num_steps=num_steps, losses_of_runs=[losses.DistillationLoss.from_config(distill(t)) for t, _ in points],
        learning_rates=[config.optim.learning_rate] * len(points), seeds=[seed for _, seed in points],
        examples=examples, batch_size=config.data.batch_size, train_config=train_config)
    state, feed = program.state, program.feed(0)
    step = 0
    while step < steps:
      length = min(max_steps, steps - step)
      state, _ = program.chunk(state, np.int32(length), *feed.next(length))
      step += length
    return jax.block_until_ready(state)

  def train_one_after_another(steps):
    return [trainer.train(steps) for trainer in sequential]

  start = time.perf_counter()
  train_together(1)
  compile_vectorized = time.perf_counter() - start
  train_one_after_another(1)
  times = {"sequential": [], "vectorized": []}
  for _ in range(1 if SMOKE else 7 if quick else 15):
    start = time.perf_counter()
    one_by_one = train_one_after_another(num_steps)
    times["sequential"].append(time.perf_counter() - start)
    start = time.perf_counter()
    together = train_together(num_steps)
    times["vectorized"].append(time.perf_counter() - start)
  together_params = jax.device_get(together.params)
  difference = max(float(np.max(np.abs(np.asarray(a[i]) - np.asarray(b))))
                   for i, state in enumerate(one_by_one)
                   for a, b in zip(jax.tree.leaves(together_params), jax.tree.leaves(jax.device_get(state.params))))
  loop_speedup = statistics.median(times["sequential"]) / statistics.median(times["vectorized"])
  return {"vectorized_sweep_loop_speedup": loop_speedup,
          "vectorized_sweep_points": len(points), "vectorized_sweep_steps": num_steps,
          "vectorized_sweep_sequential_s": statistics.median(times["sequential"]),
          "vectorized_sweep_vectorized_s": statistics.median(times["vectorized"]),
          "vectorized_sweep_compile_s": compile_vectorized, "vectorized_sweep_max_param_diff": difference}


def vectorized_sweep_end_to_end(quick: bool) -> dict:
  """The same 8 points (4 temperatures x 2 seeds, 10 epochs each, the teacher already trained) as the sweep runs
  them: point after point (train.run_group each: data, teacher, cache, KD and hard-label students,
  evaluation, checkpoints, results.json) vs sweep.mode='vectorized' (one group); the report is not timed."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from kd_jax import files  # pylint: disable=g-import-not-at-top
  from kd_jax.sweeps import expansion, runner
  from kd_jax.training import vectorized
  logging.set_verbosity(logging.WARNING)
  config = default.get_config("smoke")
  config.sweep.grid = (("distill.temperature", (1.0, 2.0, 3.0, 4.0)),)
  config.sweep.seeds = 2
  if SMOKE:
    config.teacher.num_epochs, config.train.num_epochs = 2, 1
  root = tempfile.mkdtemp()
  warm = expansion.expand(config, os.path.join(root, "warm-up"))
  config.teacher.workdir = warm[0].config.teacher.workdir
  runner.run_point(warm[0], os.path.join(root, "warm-up"), 1)  # trains the teacher, compiles
  runner.run_vectorized_group(expansion.expand(config, os.path.join(root, "warm-up-vectorized")),
                              os.path.join(root, "warm-up-vectorized"))  # compiles for 8 points
  times = {"sequential": [], "vectorized": []}
  metrics = {}
  for repeat in range(1 if SMOKE else 2 if quick else 5):
    for mode in times:
      workdir = os.path.join(root, f"{mode}-{repeat}")
      points = expansion.expand(config, workdir)
      start = time.perf_counter()
      if mode == "sequential":
        for point in points:
          runner.run_point(point, workdir, len(points))
      else:
        for group in vectorized.groups(points):
          runner.run_vectorized_group(group, workdir)
      times[mode].append(time.perf_counter() - start)
      metrics[mode] = [files.read_json(os.path.join(workdir, point.name, "results.json"))["metrics"]
                       for point in points]
  difference = max(abs(a[model][name] - b[model][name]) for a, b in zip(metrics["sequential"], metrics["vectorized"])
                   for model in ("student", "student_hard") for name in ("accuracy", "nll", "ece", "brier"))
  return {"vectorized_sweep_speedup": statistics.median(times["sequential"]) / statistics.median(times["vectorized"]),
          "vectorized_sweep_end_to_end_sequential_s": statistics.median(times["sequential"]),
          "vectorized_sweep_end_to_end_vectorized_s": statistics.median(times["vectorized"]),
          "vectorized_sweep_end_to_end_max_metric_diff": difference}


def distilbert_student(dims: dict | None = None, dtype: str = "float32"):
  """kd_jax's Flax DistilBERT classifier with `dims` (default DISTILBERT) and random float32 weights, computing in
  `dtype`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import distilbert, pretrained  # pylint: disable=g-import-not-at-top
  architecture = distilbert.build(transformers.DistilBertConfig(**(dims or DISTILBERT)), checkpoint="random",
                                  task="sequence_classification", num_labels=NUM_LABELS, dtype=jnp.dtype(dtype),
                                  param_dtype=jnp.float32)
  ids = jnp.zeros((1, SEQUENCE_LENGTH), jnp.int32)
  params = jax.jit(architecture.module.init)(jax.random.PRNGKey(0), input_ids=ids, attention_mask=ids)["params"]
  return pretrained.RegistryModel(architecture.module), params


def jax_over_torch(quick: bool, torch_python: str, threads: int, peak_flops: float) -> dict:
  """kd_jax's DistilBERT-shaped KD training vs the PyTorch notebook loop, alternating; MFU of the kd_jax step."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  from kd_jax.config import schema
  model, params = distilbert_student()
  arrays = synthetic_text_batch(BATCH_SIZE)
  examples = data.Examples(inputs={"input_ids": arrays["input_ids"], "attention_mask": arrays["attention_mask"]},
                           label=arrays["label"], index=np.arange(BATCH_SIZE, dtype=np.int32),
                           teacher=arrays["teacher_logits"])
  distill_config = schema.default_config().distill  # every field the loss reads, then the notebook's settings
  distill_config.update(dict(temperature=TEMPERATURE, alpha=ALPHA, label_smoothing=0.0, divergence="forward_kl",
                             t2_scaling=True, input_noise_std=0.0))
  optim_config = schema.optim_config(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO)
  steps_per_round, rounds = (1, 1) if SMOKE else (2, 7) if quick else (4, 9)
  total_steps = steps_per_round * (rounds + 1) + 1
  trainers = {mode: FusedTrainer(model=model, params=params, examples=examples, distills=mode == "cached",
                                 distill_config=distill_config, optim_config=optim_config, batch_size=BATCH_SIZE,
                                 num_steps=total_steps, seed=0, max_steps=steps_per_round)
              for mode in ("cached", "none")}
  start = time.perf_counter()
  trainers["cached"].train(1)
  compile_s = time.perf_counter() - start
  trainers["none"].train(1)
  unavailable = torch_unavailable(torch_python)
  worker = None if unavailable else TorchWorker(torch_python, threads, total_steps)
  times = {"kd_jax": [], "kd_jax_ce": [], "torch": []}
  for _ in range(rounds):
    start = time.perf_counter()
    trainers["cached"].train(steps_per_round)
    times["kd_jax"].append((time.perf_counter() - start) / steps_per_round)
    if worker is not None:
      times["torch"].append(worker.seconds_for(steps_per_round) / steps_per_round)
    start = time.perf_counter()
    trainers["none"].train(steps_per_round)
    times["kd_jax_ce"].append((time.perf_counter() - start) / steps_per_round)
  jax_step = statistics.median(times["kd_jax"])
  flops = BATCH_SIZE * transformer_train_flops_per_example(DISTILBERT, SEQUENCE_LENGTH, NUM_LABELS)
  result = {"jax_over_torch_throughput": None, "mfu_vs_matmul_peak": flops / jax_step / peak_flops,
            "distilbert_kd_step_s": jax_step, "distilbert_kd_examples_per_s": BATCH_SIZE / jax_step,
            "distilbert_kd_over_ce_step_time": jax_step / statistics.median(times["kd_jax_ce"]),
            "distilbert_compile_s": compile_s, "distilbert_step_gflop": flops / 1e9,
            "distilbert_achieved_gflops": flops / jax_step / 1e9}
  if worker is None:
    result["torch_unavailable"] = unavailable
    return result
  torch_step = statistics.median(times["torch"])
  result.update({"jax_over_torch_throughput": torch_step / jax_step, "torch_step_s": torch_step,
                 "torch_examples_per_s": BATCH_SIZE / torch_step, "torch_first_step_s": worker.info["first_step_s"],
                 "torch_version": worker.info["torch"], "torch_threads": worker.info["threads"]})
  worker.close()
  return result


# The SmolLM2-shaped student of configs/causal_lm.py:smollm: 6 of SmolLM2-135M's 30 layers (its published
# dimensions: hidden 576, MLP 1536, 9 query / 3 key-value heads, vocabulary 49,152, tied embeddings).
SMOLLM2_STUDENT = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=6,
                       num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                       rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1,
                       eos_token_id=2)
LLM_BATCH, LLM_LENGTH, LLM_PROMPT, LLM_TOPK = 8, 128, 32, 32


def smollm2_student(dims: dict | None = None, dtype: str = "float32"):
  """kd_jax's Flax Llama causal LM with `dims` (default SMOLLM2_STUDENT) and random float32 weights, computing in
  `dtype`: (raw module, params)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import llama  # pylint: disable=g-import-not-at-top
  architecture = llama.build(transformers.LlamaConfig(**(dims or SMOLLM2_STUDENT)), checkpoint="random",
                             task="causal_lm", num_labels=None, dtype=jnp.dtype(dtype), param_dtype=jnp.float32)
  ids = jnp.zeros((1, LLM_LENGTH), jnp.int32)
  params = jax.jit(architecture.module.init)(jax.random.PRNGKey(0), input_ids=ids, attention_mask=ids)["params"]
  return architecture.module, params


def random_topk_logits(rng, shape: tuple, k: int, vocab: int):
  """A random top-k teacher cache of `shape` positions (losses.TopKLogits: values descending, float16; distinct ids:
  a random start and a stride of 1531, prime to the vocabulary sizes used here; a tail log-sum-exp of 5)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax.training import losses  # pylint: disable=g-import-not-at-top
  start = rng.integers(0, vocab, shape + (1,))
  return losses.TopKLogits(values=np.sort(rng.normal(size=shape + (k,)), axis=-1)[..., ::-1].astype(np.float16),
                           indices=((start + 1531 * np.arange(k)) % vocab).astype(np.int32),
                           tail_logsumexp=np.full(shape, 5.0, np.float32))


def causal_lm_examples(batch_size: int, length: int, prompt: int, k: int, vocab: int, seed: int = 0):
  """Random causal-LM training examples (data.Examples): `length` tokens, the first `prompt` a prompt, the rest a
  response whose tokens are labels, with a random top-k teacher cache over every position."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  input_ids = rng.integers(3, vocab, (batch_size, length)).astype(np.int32)
  label = np.full((batch_size, length), -1, np.int32)
  label[:, prompt - 1:-1] = input_ids[:, prompt:]
  return data.Examples(inputs={"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}, label=label,
                       index=np.arange(batch_size, dtype=np.int32), token_weights=(label >= 0).astype(np.float32),
                       teacher=random_topk_logits(rng, (batch_size, length), k, vocab))


def llm_throughput(quick: bool) -> dict:
  """Tokens/s of the SmolLM2-shaped student's KD step (batch 8 x 128 tokens, the last 96 of each a response, a
  top-32 teacher cache as configs/causal_lm.py builds it) and of its greedy KV-cache generation (batch 8, a
  32-token prompt, 32 new tokens), each the median over repeats after a compiling call."""
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax.config import schema  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import generate, pretrained  # pylint: disable=g-import-not-at-top
  module, params = smollm2_student()
  vocab = SMOLLM2_STUDENT["vocab_size"]
  examples = causal_lm_examples(LLM_BATCH, LLM_LENGTH, LLM_PROMPT, LLM_TOPK, vocab)
  input_ids = examples.inputs["input_ids"]
  distill_config = schema.default_config().distill
  distill_config.update(dict(temperature=1.0, alpha=ALPHA))
  optim_config = schema.optim_config(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO)
  steps_per_round, rounds = (1, 3) if quick else (2, 5)
  trainer = FusedTrainer(model=pretrained.RegistryModel(module), params=params, examples=examples, distills=True,
                         distill_config=distill_config, optim_config=optim_config, batch_size=LLM_BATCH,
                         num_steps=steps_per_round * rounds + 1, seed=0, max_steps=steps_per_round)
  start_time = time.perf_counter()
  trainer.train(1)
  compile_s = time.perf_counter() - start_time
  step_s = median_seconds(lambda: trainer.train(steps_per_round), rounds) / steps_per_round
  prompt = jax.numpy.asarray(input_ids[:, :LLM_PROMPT])
  mask = jax.numpy.ones_like(prompt)
  # An EOS id past the vocabulary: every sequence runs its 32 new tokens.
  run = lambda: jax.block_until_ready(generate(module, params, prompt, mask, max_new_tokens=LLM_PROMPT,
                                               eos_token_id=vocab, pad_token_id=0))
  run()
  generate_s = median_seconds(run, 2 if quick else 5)
  return {"smollm2_student_kd_tokens_per_s": LLM_BATCH * LLM_LENGTH / step_s,
          "smollm2_student_kd_response_tokens_per_s": float(examples.token_weights.sum()) / step_s,
          "smollm2_student_kd_step_s": step_s, "smollm2_student_compile_s": compile_s,
          "smollm2_generate_tokens_per_s_batch8": LLM_BATCH * LLM_PROMPT / generate_s,
          "smollm2_generate_s": generate_s}


def step_temporaries(quick: bool) -> dict:
  """Per-device temporaries of the DistilBERT-shaped student's compiled KD step (batch 32, cached teacher logits,
  one device), from XLA's memory_analysis: plain, with 4 micro-batches, with remat per block ('block',
  'dots_saveable'). Compiled only, not run; --quick compiles plain and 4 micro-batches only. XLA:CPU drops remat's
  optimization barriers and merges the recomputation back into the forward pass (same temporaries with and
  without: measured), so the remat ratios say something on GPU and TPU only."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import data, models  # pylint: disable=g-import-not-at-top
  from kd_jax.config import schema
  from kd_jax.parallel import sharding
  from kd_jax.training import losses, steps
  model, params = distilbert_student()
  arrays = synthetic_text_batch(BATCH_SIZE)
  batch = data.Examples(inputs={"input_ids": arrays["input_ids"], "attention_mask": arrays["attention_mask"]},
                        label=arrays["label"], index=np.arange(BATCH_SIZE, dtype=np.int32),
                        teacher=arrays["teacher_logits"])
  mesh = sharding.make_mesh(1)
  optim_config = schema.optim_config(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO)
  state = sharding.replicate(steps.create_train_state(model, params, optim_config, 100), mesh)
  loss = losses.DistillationLoss.from_config(schema.default_config().distill)
  settings = {"none": ("none", 1), "microbatches_4": ("none", 4)}
  if not quick:
    settings.update({"block": ("block", 1), "dots_saveable": ("dots_saveable", 1)})
  temporaries = {}
  for name, (remat, microbatches) in settings.items():
    step = steps.compile_step(mesh, model=models.with_remat(model, remat), teacher_model=None,
                              microbatches=microbatches)
    compiled = step.lower(state, None, loss, jax.random.PRNGKey(0), batch).compile()
    temporaries[name] = compiled.memory_analysis().temp_size_in_bytes
  results = {"step_temp_mib_plain": temporaries["none"] / 2**20}
  results.update({f"step_temp_ratio_{name}": value / temporaries["none"] for name, value in temporaries.items()
                  if name != "none"})
  return results


def fsdp_worker(quick: bool) -> None:
  """(In a process with 8 forced CPU devices.) The DistilBERT-shaped student's KD training, FSDP-8 vs replicated
  (data parallelism over the 8 devices), alternating; prints the figures as JSON."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  from kd_jax.config import schema
  from kd_jax.parallel import sharding
  model, params = distilbert_student()
  arrays = synthetic_text_batch(BATCH_SIZE)
  examples = data.Examples(inputs={"input_ids": arrays["input_ids"], "attention_mask": arrays["attention_mask"]},
                           label=arrays["label"], index=np.arange(BATCH_SIZE, dtype=np.int32),
                           teacher=arrays["teacher_logits"])
  distill_config = schema.default_config().distill
  distill_config.update(dict(temperature=TEMPERATURE, alpha=ALPHA))
  optim_config = schema.optim_config(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO)
  steps_per_round, rounds = (1, 3) if quick else (2, 5)
  meshes = {"replicated": {"data": 8, "fsdp": 1, "tensor": 1}, "fsdp": {"data": 1, "fsdp": 8, "tensor": 1}}
  trainers = {name: FusedTrainer(model=model, params=params, examples=examples, distills=True,
                                 distill_config=distill_config, optim_config=optim_config, batch_size=BATCH_SIZE,
                                 num_steps=steps_per_round * rounds + 1, seed=0, max_steps=steps_per_round,
                                 mesh_sizes=sizes) for name, sizes in meshes.items()}
  result, times = {}, {name: [] for name in meshes}
  for name, trainer in trainers.items():
    state = trainer.program().state
    result[f"{name}_param_optimizer_bytes_per_device"] = sharding.per_device_bytes((state.params, state.opt_state))
    start = time.perf_counter()
    trainer.train(1)
    result[f"{name}_compile_s"] = time.perf_counter() - start
  for _ in range(rounds):
    for name, trainer in trainers.items():
      start = time.perf_counter()
      trainer.train(steps_per_round)
      times[name].append((time.perf_counter() - start) / steps_per_round)
  result.update({
      "sharded_param_bytes_ratio": (result["fsdp_param_optimizer_bytes_per_device"]
                                    / result["replicated_param_optimizer_bytes_per_device"]),
      "fsdp_step_over_replicated": statistics.median(times["fsdp"]) / statistics.median(times["replicated"]),
      "fsdp_step_s": statistics.median(times["fsdp"]), "replicated_step_s": statistics.median(times["replicated"])})
  print(json.dumps(result))


def fsdp_figures(quick: bool) -> dict:
  """fsdp_worker's figures, from a subprocess with 8 forced CPU devices (this process has its own device count)."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  env.pop("PJRT_NPROC", None)
  result = subprocess.run([sys.executable, __file__, "--fsdp_worker"] + (["--quick"] if quick else [])
                          + (["--smoke"] if SMOKE else []), env=env,
                          capture_output=True, text=True, check=True, timeout=1800)
  return json.loads(result.stdout.strip().splitlines()[-1])


def cache_throughput(quick: bool) -> dict:
  """Teacher inference (what building a logit cache runs): the default 2x1200 MLP teacher on the digits training
  split and the DistilBERT-shaped model as a teacher, examples/s; cache bytes per example."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import models  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import inference, sharding
  sys.path.insert(0, str(REPO_ROOT))
  from configs import esnli  # pylint: disable=g-import-not-at-top
  config, task, _ = default_task()
  mesh = sharding.make_mesh()
  teacher, teacher_params = models.create(config.teacher, num_classes=task.num_classes,
                                          example_inputs=task.train.inputs[:1], rng=jax.random.PRNGKey(0))
  teacher_params = sharding.replicate(teacher_params, mesh)
  inputs = task.train.inputs
  predict = inference.make_predict_fn(teacher, mesh)
  run = lambda: inference.predict_logits(predict, teacher_params, inputs, batch_size=config.data.eval_batch_size,
                                         num_devices=1)
  run()
  mlp_seconds = median_seconds(run, 5 if quick else 15)
  text_model, text_params = distilbert_student()
  text_params = sharding.replicate(text_params, mesh)
  arrays = synthetic_text_batch(256)
  text_inputs = {"input_ids": arrays["input_ids"], "attention_mask": arrays["attention_mask"]}
  text_predict = inference.make_predict_fn(text_model, mesh)
  text_run = lambda: inference.predict_logits(text_predict, text_params, text_inputs, batch_size=128, num_devices=1)
  text_run()
  text_seconds = median_seconds(text_run, 2 if quick else 5)
  esnli_config = esnli.get_config()
  topk_bytes = esnli_config.data.max_target_length * (
      esnli_config.distill.topk * (np.dtype(esnli_config.distill.topk_dtype).itemsize + 4) + 4) + 4
  return {"cache_build_examples_per_s_mlp": len(inputs) / mlp_seconds,
          "cache_build_examples_per_s_distilbert": 256 / text_seconds,
          "cache_bytes_per_example_dense": 4 * task.num_classes + 4,
          "cache_bytes_per_example_topk_esnli": topk_bytes}


def default_run_peak_memory() -> dict:
  """Max RSS of `python main.py --config=configs/default.py` (a child process, its own rusage) in MiB, and its wall
  time."""
  with tempfile.TemporaryDirectory() as workdir:
    env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "PJRT_NPROC")}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "main.py", "--config=configs/default.py", f"--workdir={workdir}"],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
  assert status == 0, f"the default run failed (wait status {status})"
  return {"default_run_peak_host_memory_mib": usage.ru_maxrss / 1024, "default_run_wall_s": wall}


# ----------------------------------------------------------------------------------------------------------------
# The accelerator section (--accelerator): bf16 training of three students and a large teacher's top-k cache build
# on one GPU or TPU chip, against the chip's peak; the PyTorch loop on the same GPU.

# Real DistilBERT-base (distilbert-base-uncased's config.json): the SST-2 notebook's student at full size.
DISTILBERT_BASE = dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512,
                       dropout=0.1, attention_dropout=0.1, seq_classif_dropout=0.2)
# FLAN-T5-small (configs/esnli.py's student; google/flan-t5-small's config.json) and a FLAN-T5-large-shaped teacher.
FLAN_T5_SMALL = dict(vocab_size=32128, d_model=512, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6,
                     d_kv=64, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
FLAN_T5_LARGE = dict(FLAN_T5_SMALL, d_model=1024, d_ff=2816, num_layers=24, num_decoder_layers=24, num_heads=16)
# e-SNLI's lengths (configs/esnli.py: data.max_length, data.max_target_length) and its top-k cache.
T5_SOURCE_LENGTH, T5_TARGET_LENGTH, T5_TOPK = 128, 64, 32
# What each figure is measured on: --accelerator (full) and the test's --accelerator_on_cpu (tiny). batch: the
# default batch sizes (--accel_batch_sizes changes them), steps: steps per timed round, rounds: timed rounds after a
# compiling one; teacher_examples: the examples of the timed cache build.
ACCEL_SHAPES = {
    "full": dict(distilbert=DISTILBERT_BASE, t5=FLAN_T5_SMALL, smollm2=SMOLLM2_STUDENT, teacher=FLAN_T5_LARGE,
                 source_length=T5_SOURCE_LENGTH, target_length=T5_TARGET_LENGTH, llm_length=LLM_LENGTH,
                 llm_prompt=LLM_PROMPT, batch=dict(distilbert=256, t5_small=256, smollm2=128, teacher=256),
                 steps=10, rounds=5, teacher_examples=8192, matmul_size=8192, matmul_chain=10),
    # Without dropout, which XLA:CPU takes longest to compile.
    "tiny": dict(distilbert=dict(DISTILBERT, dim=32, n_layers=1, n_heads=2, hidden_dim=64, dropout=0.0,
                                 attention_dropout=0.0, seq_classif_dropout=0.0),
                 t5=dict(FLAN_T5_SMALL, vocab_size=512, d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1,
                         num_heads=2, d_kv=16, dropout_rate=0.0),
                 smollm2=dict(SMOLLM2_STUDENT, vocab_size=512, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2),
                 teacher=dict(FLAN_T5_SMALL, vocab_size=512, d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1,
                              num_heads=2, d_kv=16),
                 source_length=16, target_length=8, llm_length=16, llm_prompt=4,
                 batch=dict(distilbert=4, t5_small=4, smollm2=4, teacher=4),
                 steps=2, rounds=2, teacher_examples=8, matmul_size=128, matmul_chain=2),
}
# Dense (no 2:4 sparsity) bf16 peak FLOP/s of one device, by the first pattern found in jax.devices()[0].device_kind,
# from the vendors' specifications: H100 SXM 989.4 and H100 PCIe 756 TFLOP/s (NVIDIA's H100 table, 1,979 / 1,513
# with sparsity: glennklockwood.com/garden/processors/h100, archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html);
# H200 (SXM): the H100 SXM's rates (NVIDIA's H200 datasheet; /work/.library/device/H200.md); A100 312 (NVIDIA A100
# datasheet); L4 121 (242 with sparsity; NVIDIA L4 datasheet); TPU per chip (one JAX device; cloud.google.com/tpu/
# docs/v4, v5e, v5p-training, v6e): v4 275, v5e ('TPU v5 lite') 197, v5p 459, v6e ('TPU v6 lite') 918.
BF16_PEAK_TFLOPS = ((r"\bH100\b.*\bPCIe\b", 756.0), (r"\bH100\b", 989.4), (r"\bH200\b", 989.4),
                    (r"\bA100\b", 312.0), (r"\bL4\b", 121.0), (r"TPU v4", 275.0), (r"TPU v5 ?lite|TPU v5e", 197.0),
                    (r"TPU v5p?$", 459.0), (r"TPU v6 ?lite|TPU v6e", 918.0))


def bf16_peak_flops(device_kind: str) -> float | None:
  """The vendor's dense bf16 peak FLOP/s of one device of this kind (BF16_PEAK_TFLOPS), None if not listed."""
  import re  # pylint: disable=g-import-not-at-top
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
  seconds = median_seconds(lambda: products(left, right).block_until_ready(), repeats)
  return 2.0 * size**3 * chain / seconds


def accel_train(name: str, *, model, params, examples, distill_config, optim_config, flops_per_example: float,
                shapes: dict, peaks: dict, between_rounds=None) -> dict:
  """bf16 KD training of one student on one device through kd_jax's fused chunks (FusedTrainer's program): one
  compiling chunk, then `rounds` timed chunks of `steps` steps from the state reached (the median); examples/s and
  MFU (the FLOPs counted from the config per second over peaks' 'spec' and 'matmul'). between_rounds(): run after
  each timed round (the PyTorch side, alternating)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  steps, rounds = shapes["steps"], shapes["rounds"]
  batch_size = len(examples)
  trainer = FusedTrainer(model=model, params=params, examples=examples, distills=True, distill_config=distill_config,
                         optim_config=optim_config, batch_size=batch_size, num_steps=steps * (rounds + 1), seed=0,
                         max_steps=steps, num_devices=1)
  program = trainer.program()
  state, feed = program.state, program.feed(0)

  def chunk(state):
    state, _ = program.chunk(state, np.int32(steps), *feed.next(steps))
    return jax.block_until_ready(state)

  start = time.perf_counter()
  state = chunk(state)
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    state = chunk(state)
    times.append((time.perf_counter() - start) / steps)
    if between_rounds is not None:
      between_rounds()
  step_s = statistics.median(times)
  achieved = flops_per_example * batch_size / step_s
  return {f"accel_{name}_examples_per_s": batch_size / step_s, f"accel_{name}_step_s": step_s,
          f"accel_{name}_batch_size": batch_size, f"accel_{name}_compile_s": compile_s,
          f"accel_{name}_train_gflop_per_example": flops_per_example / 1e9,
          f"accel_{name}_achieved_tflops": achieved / 1e12,
          f"accel_{name}_mfu": None if peaks["spec"] is None else achieved / peaks["spec"],
          f"accel_{name}_mfu_vs_matmul": achieved / peaks["matmul"]}


def torch_cuda_unavailable(python: str) -> str | None:
  """Why the PyTorch side cannot run on a CUDA GPU with `python`, or None."""
  missing = torch_unavailable(python)
  if missing is not None:
    return missing
  check = subprocess.run([python, "-c", "import torch; assert torch.cuda.is_available(), torch.__version__"],
                         capture_output=True, text=True, check=False)
  if check.returncode != 0:
    return f"{python}'s torch has no CUDA device ({(check.stderr.strip().splitlines() or ['?'])[-1]})"
  return None


def accel_distilbert(shapes: dict, batch_size: int, peaks: dict, torch_python: str) -> dict:
  """The DistilBERT-shaped student (shapes['distilbert']; DistilBERT-base in the full section) on SST-2-like batches
  (SEQUENCE_LENGTH tokens, cached teacher logits, the notebook's loss and AdamW), bf16 compute and float32
  parameters; alternating with the notebook's PyTorch loop on the GPU under bf16 autocast, same model and batch."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  from kd_jax.config import schema
  dims = shapes["distilbert"]
  model, params = distilbert_student(dims, "bfloat16")
  arrays = synthetic_text_batch(batch_size)
  examples = data.Examples(inputs={"input_ids": arrays["input_ids"], "attention_mask": arrays["attention_mask"]},
                           label=arrays["label"], index=np.arange(batch_size, dtype=np.int32),
                           teacher=arrays["teacher_logits"])
  distill_config = schema.default_config().distill
  distill_config.update(dict(temperature=TEMPERATURE, alpha=ALPHA, label_smoothing=0.0, divergence="forward_kl",
                             t2_scaling=True, input_noise_std=0.0))
  optim_config = schema.optim_config(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO)
  unavailable = ("no CUDA GPU: the backend is " + jax.default_backend() if jax.default_backend() != "gpu"
                 else torch_cuda_unavailable(torch_python))
  worker, torch_times = None, []
  if unavailable is None:
    worker = TorchWorker(torch_python, os.cpu_count(), shapes["steps"] * (shapes["rounds"] + 1) + 1, dims=dims,
                         batch_size=batch_size, device="cuda", bf16=True)
    worker.seconds_for(shapes["steps"])  # the same warm-up as the kd_jax side's compiling chunk
  between = None if worker is None else (
      lambda: torch_times.append(worker.seconds_for(shapes["steps"]) / shapes["steps"]))
  result = accel_train("distilbert", model=model, params=params, examples=examples, distill_config=distill_config,
                       optim_config=optim_config, shapes=shapes, peaks=peaks, between_rounds=between,
                       flops_per_example=transformer_train_flops_per_example(dims, SEQUENCE_LENGTH, NUM_LABELS))
  result["accel_distilbert_dims"] = dims
  if worker is None:
    result.update({"accel_jax_over_torch_throughput": None, "accel_torch_unavailable": unavailable})
    return result
  worker.close()
  torch_step = statistics.median(torch_times)
  result.update({"accel_jax_over_torch_throughput": torch_step / result["accel_distilbert_step_s"],
                 "accel_torch_examples_per_s": batch_size / torch_step, "accel_torch_step_s": torch_step,
                 "accel_torch_version": worker.info["torch"]})
  return result


def seq2seq_examples(batch_size: int, source_length: int, target_length: int, vocab: int, k: int | None,
                     seed: int = 0):
  """Random e-SNLI-shaped seq2seq examples (data.Examples as kd_jax/data/esnli.py builds them: sources, targets
  shifted right behind the start token 0 as decoder inputs, every target token real), with a random top-k teacher
  cache over the target positions when k is not None."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  input_ids = rng.integers(2, vocab, (batch_size, source_length)).astype(np.int32)
  label = rng.integers(2, vocab, (batch_size, target_length)).astype(np.int32)
  decoder_input_ids = np.concatenate([np.zeros_like(label[:, :1]), label[:, :-1]], axis=1)
  return data.Examples(
      inputs={"input_ids": input_ids, "attention_mask": np.ones_like(input_ids),
              "decoder_input_ids": decoder_input_ids},
      label=label, index=np.arange(batch_size, dtype=np.int32), token_weights=np.ones(label.shape, np.float32),
      teacher=None if k is None else random_topk_logits(rng, label.shape, k, vocab))


def t5_model(dims: dict, dtype: str, param_dtype: str):
  """kd_jax's Flax T5ForConditionalGeneration with `dims` (T5Config fields) and random weights, on the default
  device: (RegistryModel, params)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import pretrained, t5  # pylint: disable=g-import-not-at-top
  architecture = t5.build(transformers.T5Config(**dims), checkpoint="random", task="seq2seq", num_labels=None,
                          dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))
  params = jax.jit(architecture.module.init)(jax.random.PRNGKey(0), **architecture.example_inputs)["params"]
  return pretrained.RegistryModel(architecture.module), params


def accel_t5_small(shapes: dict, batch_size: int, peaks: dict) -> dict:
  """The FLAN-T5-small-shaped student of configs/esnli.py (bf16 compute, float32 parameters) on e-SNLI-shaped
  examples with a top-32 teacher cache: that config's loss (CE + 0.5 T^2 KL at T = 2 over the top-k) and optimizer."""
  sys.path.insert(0, str(REPO_ROOT))
  from configs import esnli  # pylint: disable=g-import-not-at-top
  dims = shapes["t5"]
  model, params = t5_model(dims, "bfloat16", "float32")
  config = esnli.get_config()
  examples = seq2seq_examples(batch_size, shapes["source_length"], shapes["target_length"], dims["vocab_size"],
                              config.distill.topk)
  return accel_train("t5_small", model=model, params=params, examples=examples, distill_config=config.distill,
                     optim_config=config.optim, shapes=shapes, peaks=peaks,
                     flops_per_example=t5_train_flops_per_example(dims, shapes["source_length"],
                                                                  shapes["target_length"]))


def accel_smollm2(shapes: dict, batch_size: int, peaks: dict) -> dict:
  """The SmolLM2-shaped causal-LM student (bf16 compute, float32 parameters) as llm_throughput trains it (a prompt,
  a response, a top-32 teacher cache), at a larger batch; its tokens/s too."""
  from kd_jax.config import schema  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import pretrained  # pylint: disable=g-import-not-at-top
  dims, length = shapes["smollm2"], shapes["llm_length"]
  module, params = smollm2_student(dims, "bfloat16")
  examples = causal_lm_examples(batch_size, length, shapes["llm_prompt"], LLM_TOPK, dims["vocab_size"])
  distill_config = schema.default_config().distill
  distill_config.update(dict(temperature=1.0, alpha=ALPHA))
  optim_config = schema.optim_config(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO)
  result = accel_train("smollm2", model=pretrained.RegistryModel(module), params=params, examples=examples,
                       distill_config=distill_config, optim_config=optim_config, shapes=shapes, peaks=peaks,
                       flops_per_example=llama_train_flops_per_example(dims, length))
  result["accel_smollm2_tokens_per_s"] = result["accel_smollm2_examples_per_s"] * length
  return result


def accel_cache_build(shapes: dict, batch_size: int, peaks: dict) -> dict:
  """A FLAN-T5-large-shaped teacher (bf16 weights and compute, random) building e-SNLI's top-32 float16 cache of
  shapes['teacher_examples'] random examples through kd_jax's builder (student_data.topk_program over
  inference.map_batches into teacher_cache.load_or_build: the inference, the host transfers and the file writes),
  into a temporary directory, after a one-batch build that compiles; examples/s, MB/s of cache written, and the
  teacher's MFU (forward FLOPs counted from the config)."""
  import functools  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import inference, sharding  # pylint: disable=g-import-not-at-top
  from kd_jax.teachers import student_data, teacher_cache
  dims = shapes["teacher"]
  source_length, target_length = shapes["source_length"], shapes["target_length"]
  model, params = t5_model(dims, "bfloat16", "bfloat16")
  mesh = sharding.make_mesh(1)
  topk = functools.partial(student_data.topk_program(model, mesh, T5_TOPK, "float16"), params)
  num_examples = shapes["teacher_examples"]
  examples = seq2seq_examples(num_examples, source_length, target_length, dims["vocab_size"], None)

  def build(directory, examples):
    expected = teacher_cache.expected_metadata(
        "topk", data_name="benchmark", split="train", data_fingerprint="random", size=len(examples),
        num_classes=dims["vocab_size"], teacher_fingerprint="random", k=T5_TOPK, dtype="float16",
        target_length=target_length)
    compute = lambda rows: inference.map_batches(topk, rows.teacher_view().inputs, batch_size=batch_size,
                                                 num_devices=mesh.size)
    start = time.perf_counter()
    cache, built = teacher_cache.load_or_build(directory, expected, examples, compute)
    assert built and len(cache.index) == len(examples), (built, len(cache.index))
    return time.perf_counter() - start, cache.bytes_per_example

  with tempfile.TemporaryDirectory() as root:
    compile_s, _ = build(os.path.join(root, "warm-up"), examples.select(slice(0, batch_size)))
    wall_s, bytes_per_example = build(os.path.join(root, "cache"), examples)
  forward_flops = t5_train_flops_per_example(dims, source_length, target_length) / 3
  achieved = forward_flops * num_examples / wall_s
  return {"accel_cache_teacher_examples_per_s": num_examples / wall_s,
          "accel_cache_mb_per_s": bytes_per_example * num_examples / wall_s / 1e6,
          "accel_cache_bytes_per_example": bytes_per_example, "accel_cache_examples": num_examples,
          "accel_cache_batch_size": batch_size, "accel_cache_wall_s": wall_s, "accel_cache_compile_s": compile_s,
          "accel_cache_teacher_forward_gflop_per_example": forward_flops / 1e9,
          "accel_cache_teacher_mfu": None if peaks["spec"] is None else achieved / peaks["spec"],
          "accel_cache_teacher_mfu_vs_matmul": achieved / peaks["matmul"]}


def accelerator_figures(shapes: dict, batch_sizes: dict, torch_python: str) -> dict:
  """Every figure of the accelerator section on jax.devices()[0] (see ACCEL_SHAPES and the functions above)."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  print(f"accelerator: {device.device_kind} ({jax.default_backend()}, {jax.device_count()} devices; one is "
        "measured)", flush=True)
  spec = bf16_peak_flops(device.device_kind)
  matmul = bf16_matmul_flops(shapes["matmul_size"], shapes["matmul_chain"], 5)
  peaks = {"spec": spec, "matmul": matmul}
  results = {"accel_device_kind": device.device_kind, "accel_backend": jax.default_backend(),
             "accel_device_count": jax.device_count(), "accel_bf16_peak_tflops_spec": spec and spec / 1e12,
             "accel_bf16_matmul_tflops": matmul / 1e12, "accel_bf16_matmul_size": shapes["matmul_size"],
             "accel_matmul_over_spec": spec and matmul / spec}
  results.update(accel_distilbert(shapes, batch_sizes["distilbert"], peaks, torch_python))
  results.update(accel_t5_small(shapes, batch_sizes["t5_small"], peaks))
  results.update(accel_smollm2(shapes, batch_sizes["smollm2"], peaks))
  results.update(accel_cache_build(shapes, batch_sizes["teacher"], peaks))
  return results


def accelerator_main(args) -> dict:
  """--accelerator: refuses (one line, exit 2) on a CPU backend unless --accelerator_on_cpu (tiny shapes), else the
  accelerator section's figures."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() == "cpu" and not args.accelerator_on_cpu:
    print("benchmark.py --accelerator: no GPU or TPU here (jax.default_backend() is 'cpu'); run it where one is, "
          "e.g. scripts/accelerator_check.sh", file=sys.stderr)
    sys.exit(2)
  shapes = ACCEL_SHAPES["tiny" if args.accelerator_on_cpu else "full"]
  batch_sizes = dict(shapes["batch"])
  for item in filter(None, args.accel_batch_sizes.split(",")):
    name, _, size = item.partition("=")
    if name not in batch_sizes or not size.isdigit() or int(size) < 1:
      print(f"benchmark.py --accel_batch_sizes: {item!r} is not NAME=SIZE with NAME one of "
            f"{', '.join(batch_sizes)} and SIZE a positive integer", file=sys.stderr)
      sys.exit(2)
    batch_sizes[name] = int(size)
  start = time.perf_counter()
  results = {"accel_shapes": "tiny" if args.accelerator_on_cpu else "full", **machine(),
             "jax_version": jax.__version__}
  results.update(accelerator_figures(shapes, batch_sizes, args.torch_python))
  results["accel_wall_s"] = time.perf_counter() - start
  return results


def machine() -> dict:
  model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
  return {"cpu": model, "cores": os.cpu_count(), "load_average_start": os.getloadavg()[0]}


def print_table(results: dict) -> None:
  goals = {"kd_over_ce_step_time": ("<=", 1.05), "vectorized_sweep_speedup": (">=", 8.0),
           "jax_over_torch_throughput": (">=", 1.5), "mfu_vs_matmul_peak": (">=", 0.45),
           "sharded_param_bytes_ratio": ("<=", 0.15)}
  print(f"{'figure':40s} {'value':>14s}  goal")
  print("-" * 70)
  for key, value in results.items():
    if isinstance(value, (dict, list)):
      continue
    shown = f"{value:14.4g}" if isinstance(value, float) else f"{str(value):>14s}"
    goal = ""
    if key in goals:
      sign, target = goals[key]
      met = value is not None and (value <= target if sign == "<=" else value >= target)
      goal = f"{sign} {target}: {'met' if met else 'NOT met'}"
    print(f"{key:40s} {shown}  {goal}")


def use_smoke_sizes() -> None:
  """--smoke: toy DistilBERT- and SmolLM2-shaped models (2 layers, 64 wide, vocabulary 2048, sequences of 32), one
  round of each timing and the shortest trainings, so that every section's code runs in a test's time. The figures
  keep their keys; their values are not the machine's speed."""
  global SMOKE, SEQUENCE_LENGTH, LLM_LENGTH, LLM_PROMPT, LLM_TOPK  # pylint: disable=global-statement
  SMOKE = True
  DISTILBERT.update(vocab_size=2048, dim=64, n_layers=2, n_heads=2, hidden_dim=128, max_position_embeddings=64)
  SEQUENCE_LENGTH = 32
  SMOLLM2_STUDENT.update(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
  LLM_LENGTH, LLM_PROMPT, LLM_TOPK = 32, 8, 8


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter trainings (< 5 min, 2 cores)")
  parser.add_argument("--smoke", action="store_true",
                      help="every section once at toy sizes (tests/test_benchmark.py): the code runs; not timings")
  parser.add_argument("--out", help="write the figures to this JSON file")
  parser.add_argument("--torch_python", default=sys.executable,
                      help="interpreter with torch + transformers for the PyTorch side (default: this one)")
  parser.add_argument("--skip_default_run", action="store_true", help="do not measure the default run's memory")
  parser.add_argument("--accelerator", action="store_true",
                      help="only the accelerator section (needs a GPU or TPU): bf16 students, a FLAN-T5-large-shaped "
                      "teacher's cache build, the PyTorch loop on the GPU; see scripts/accelerator_check.sh")
  parser.add_argument("--accel_batch_sizes", default="",
                      help="batch sizes of --accelerator, e.g. distilbert=256,t5_small=256,smollm2=128,teacher=256")
  # The test's: the accelerator section at tiny shapes on the CPU.
  parser.add_argument("--accelerator_on_cpu", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--torch_worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--fsdp_worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.accelerator:  # before JAX starts: it takes 75% of a GPU's memory by default; PyTorch shares the GPU
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
  if args.torch_worker:
    torch_worker()
    return
  if args.smoke:
    use_smoke_sizes()
    args.quick = True
  sys.path.insert(0, str(REPO_ROOT))
  import kd_jax  # pylint: disable=g-import-not-at-top,unused-import  (before jax: XLA thread pools)
  if args.fsdp_worker:
    fsdp_worker(args.quick)
    return
  import jax  # pylint: disable=g-import-not-at-top
  if args.accelerator:
    report(accelerator_main(args), args.out)
    return
  start = time.perf_counter()
  results = {"quick": args.quick, "smoke": args.smoke, **machine(), "jax_version": jax.__version__,
             "devices": jax.device_count()}
  if not args.skip_default_run:
    # First: a child's max RSS includes what it shared with this process when forked.
    results.update(default_run_peak_memory())
  peak = matmul_peak(*((256, 1) if args.smoke else (2048, 5) if args.quick else (4096, 10)))
  results.update({"matmul_peak_gflops": peak["peak_flops"] / 1e9, "matmul_xla_gflops": peak["xla_flops"] / 1e9,
                  "matmul_numpy_gflops": peak["numpy_flops"] / 1e9, "matmul_size": peak["size"]})
  results.update(kd_over_ce(args.quick))
  results.update(vectorized_speedup(args.quick))
  results.update(vectorized_sweep_end_to_end(args.quick))
  results.update(jax_over_torch(args.quick, args.torch_python, os.cpu_count(), peak["peak_flops"]))
  results.update(stall_fraction(args.quick))
  results.update(cache_throughput(args.quick))
  results.update(step_temporaries(args.quick))
  results.update(fsdp_figures(args.quick))
  results.update(llm_throughput(args.quick))
  results.update({"load_average_end": os.getloadavg()[0], "benchmark_wall_s": time.perf_counter() - start,
                  "own_peak_host_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
  report(results, args.out)


def report(results: dict, out: str | None) -> None:
  """The table, and the figures as a JSON object in `out` (if given)."""
  print_table(results)
  if out:
    with open(out, "w") as stream:
      json.dump(results, stream, indent=2)
      stream.write("\n")


if __name__ == "__main__":
  main()
