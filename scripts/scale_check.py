"""Scale check: kd_jax's data paths at full e-SNLI / SST-2 size, simulated offline, for host memory and I/O.

    python scripts/scale_check.py --fractions=0.01,0.1,1.0 --out=S.json [--plot=docs/scale_check.png]
        [--workdir=DIR] [--topk=32] [--teacher=embedding|fixture] [--epoch_steps=100] [--stall_steps=2]

For each fraction f of e-SNLI's 549,367 training examples, a child process (its own peak RSS) runs the real code
paths on a stand-in data set:
  source      f x 549,367 premise / hypothesis / explanation triples of e-SNLI's lengths (premise ~14 words,
              hypothesis ~8, explanation ~12) drawn from a word list, written as JSON lines (plus 64 validation and
              64 test examples) by the parent, outside the measurement.
  load        data.load_task of configs/esnli.py with source='files': the file reader, the fixture T5 tokenizer
              (tests/fixtures/hf/t5, a 120-piece vocabulary: sources hit max_length 128, targets 64), the splits.
  cache_build student_data.prepare: the real top-k cache builder (k = --topk, the targets' 64 positions, float16).
              The teacher is a stand-in (--teacher=embedding: logits from two embedding tables, microseconds per
              example) so that the build is about the cache's I/O and memory; --teacher=fixture uses the fixture T5
              (about 130 examples/s on 2 loaded cores: 70 minutes at full size).
  cache_load  student_data.prepare again: the cache validated, loaded and joined by index.
  cache_read  every row of the cache gathered through the join, in batches of 512 of a shuffled order (what
              training reads), first from disk (the cache's pages dropped from the page cache with posix_fadvise),
              then again warm.
  epoch       steps.program + the tf.data ChunkFeeder (train.device_data_max_mib=0) with the fixture T5 as the
              student (batch 32), --epoch_steps steps at most: seconds per step (an epoch's time is extrapolated),
              the share of time waiting for batches, and input_stall_fraction (1 - time with one chunk staged /
              time fed).
  stall       (--stall_steps > 0, largest fraction only) input_stall_fraction of a FLAN-T5-small-shaped student
              (d_model 512, 8 + 8 layers, 6 heads, d_kv 64, gated-GELU d_ff 1024, vocabulary 32,128, random
              weights) fed from the cache at e-SNLI's shape (sources 128, targets 64, batch 32), one step per chunk:
              the first (compiling) step untimed, then --stall_steps - 1 steps fed and as many from a staged chunk.
              Its peak RSS (the model's step) is reported in its stages, apart from the data paths' peak_rss_mib.
Per stage: wall seconds and peak RSS (VmRSS, and RssAnon: the process's own memory without mapped files such as
shared libraries), sampled from /proc every 10 ms. The SST-2-sized set (67,349 sentences, two tokenizers: the
fixture DistilBERT's and BERT's) runs load + a dense cache build + its reload once. The parent measures the disk
with dd (1 GiB, fdatasync write, O_DIRECT read) in the same run and fits log-log slopes of time and peak RSS
against size.
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import types

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "hf"
ESNLI_TRAIN = 549_367
SST2_TRAIN = 67_349
EVAL_EXAMPLES = 64
# google/flan-t5-small's config.json: the shape of the stall measurement's student.
FLAN_T5_SMALL = {"vocab_size": 32_128, "d_model": 512, "d_ff": 1024, "d_kv": 64, "num_heads": 6, "num_layers": 8,
                 "num_decoder_layers": 8, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
                 "dense_act_fn": "gelu_new", "feed_forward_proj": "gated-gelu", "is_gated_act": True,
                 "scale_decoder_outputs": False, "tie_word_embeddings": False}
WORDS = (
    "a man woman person child boy girl dog cat people group young old two three men women street city park beach "
    "water snow grass field road car bike bus train horse ball game music guitar band stage crowd table food "
    "restaurant kitchen shirt hat jacket dress red blue green black white yellow small large tall outside inside "
    "near front behind next while is are sitting standing walking running playing riding holding looking wearing "
    "eating drinking talking smiling jumping climbing swimming working reading writing waiting watching singing "
    "dancing cooking throwing catching building painting pulling pushing carrying on in at with of to for from "
    "the an and or his her their its some several many one another other through over under down up into across "
    "around together alone happy sad tired busy wet dry sunny cold hot night day morning evening because since "
    "cannot not both same different must would can be being has have there this that these those then so"
).split()


class RssSampler:
  """Peak VmRSS / RssAnon (MiB) of this process, sampled from /proc/self/status in a thread, per stage."""

  def __init__(self, interval_s: float = 0.01):
    self._interval_s, self._peak, self._lock = interval_s, {"VmRSS": 0, "RssAnon": 0}, threading.Lock()
    self._stop = threading.Event()
    threading.Thread(target=self._run, daemon=True).start()

  @staticmethod
  def now() -> dict:
    values = {}
    with open("/proc/self/status") as stream:
      for line in stream:
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "RssAnon", "RssFile"):
          values[key] = int(line.split()[1]) / 1024
    return values

  def _run(self):
    while not self._stop.is_set():
      values = self.now()
      with self._lock:
        for key in self._peak:
          self._peak[key] = max(self._peak[key], values[key])
      time.sleep(self._interval_s)

  def reset(self) -> None:
    values = self.now()
    with self._lock:
      self._peak = {key: values[key] for key in self._peak}

  def peak(self) -> dict:
    values = self.now()
    with self._lock:
      return {key: max(self._peak[key], values[key]) for key in self._peak}


class Stages:
  """Wall time and peak RSS of named stages: `with stages('load'): ...`."""

  def __init__(self):
    self.sampler, self.figures = RssSampler(), {}

  def __call__(self, name: str):
    stages = self

    class Stage:
      def __enter__(self):
        stages.sampler.reset()
        self.start = time.perf_counter()
        return self

      def __exit__(self, *exc):
        peak = stages.sampler.peak()
        stages.figures[name] = {"wall_s": time.perf_counter() - self.start, "peak_rss_mib": peak["VmRSS"],
                                "peak_rss_anon_mib": peak["RssAnon"]}
        print(f"  {name}: {stages.figures[name]['wall_s']:.1f} s, peak RSS {peak['VmRSS']:.0f} MiB "
              f"(anon {peak['RssAnon']:.0f})", flush=True)

    return Stage()


def sentence(rng, mean_words: int) -> str:
  length = max(3, int(rng.normal(mean_words, mean_words / 3)))
  return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), length)) + "."


def write_esnli(directory: pathlib.Path, num_train: int, seed: int = 0) -> None:
  """train/validation/test.jsonl of e-SNLI's columns, written in blocks (little memory)."""
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  for split, size in (("train", num_train), ("validation", EVAL_EXAMPLES), ("test", EVAL_EXAMPLES)):
    with open(directory / f"{split}.jsonl", "w") as stream:
      for start in range(0, size, 10_000):
        stream.write("".join(json.dumps({"premise": sentence(rng, 14), "hypothesis": sentence(rng, 8),
                                         "label": int(rng.integers(0, 3)), "explanation_1": sentence(rng, 12)}) + "\n"
                             for _ in range(min(10_000, size - start))))


def write_sst2(directory: pathlib.Path, num_train: int, seed: int = 1) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  for split, size in (("train", num_train), ("validation", EVAL_EXAMPLES)):
    with open(directory / f"{split}.jsonl", "w") as stream:
      for start in range(0, size, 10_000):
        stream.write("".join(json.dumps({"sentence": sentence(rng, 19), "label": int(rng.integers(0, 2))}) + "\n"
                             for _ in range(min(10_000, size - start))))


def count_tokenization(figures: dict):
  """Wraps kd_jax.data.text.tokenize to count the texts and tokens it tokenizes and the seconds it takes."""
  from kd_jax.data import text  # pylint: disable=g-import-not-at-top
  tokenize = text.tokenize
  figures.update(texts=0, tokens=0, seconds=0.0)

  def counted(tokenizer, texts, max_length):
    start = time.perf_counter()
    arrays = tokenize(tokenizer, texts, max_length)
    figures["seconds"] += time.perf_counter() - start
    figures["texts"] += len(texts)
    figures["tokens"] += int(arrays["attention_mask"].sum())
    return arrays

  text.tokenize = counted


def drop_from_page_cache(paths) -> None:
  for path in paths:
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
      os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
      os.close(fd)


class EmbeddingTeacher:
  """The stand-in teacher (--teacher=embedding), table lookups of microseconds per example, so that a cache build is
  about the cache: seq2seq logits [B, T, V] = E[decoder_input_ids] + mean over the source of F[input_ids] (two
  [V, V] tables); classification logits [B, C] = the mean over the input of F[input_ids] ([V, C])."""

  def __init__(self, vocab_size: int, num_classes: int | None = None):
    self.module = types.SimpleNamespace(dims=types.SimpleNamespace(vocab_size=vocab_size))
    self.num_outputs = vocab_size if num_classes is None else num_classes
    self.seq2seq = num_classes is None

  def init(self, rng):
    import jax  # pylint: disable=g-import-not-at-top
    target_rng, source_rng = jax.random.split(rng)
    size = self.module.dims.vocab_size
    params = {"source": jax.random.normal(source_rng, (size, self.num_outputs))}
    if self.seq2seq:
      params["target"] = jax.random.normal(target_rng, (size, size))
    return params

  def apply(self, variables, inputs, train: bool = False):
    del train
    params = variables["params"]
    mask = inputs["attention_mask"][..., None]
    source = (params["source"][inputs["input_ids"]] * mask).sum(axis=1) / mask.sum(axis=1)
    return params["target"][inputs["decoder_input_ids"]] + source[:, None, :] if self.seq2seq else source


def stand_in_teacher(kind: str, config, task, mesh, workdir: pathlib.Path):
  """The teacher of the cache build: the fixture checkpoint of config.teacher, or an EmbeddingTeacher of its
  vocabulary."""
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import sharding  # pylint: disable=g-import-not-at-top
  from kd_jax.teachers import teacher
  if kind == "fixture":
    return teacher.obtain(config, task, mesh, str(workdir), writer=None, evaluate_fn=None)
  vocab_size = json.loads((pathlib.Path(config.teacher.checkpoint) / "config.json").read_text())["vocab_size"]
  model = EmbeddingTeacher(vocab_size, None if task.seq2seq is not None else task.num_classes)
  return teacher.Teacher(model, sharding.replicate(model.init(jax.random.PRNGKey(0)), mesh),
                         teacher.directory(config, str(workdir)))


def esnli_config(data_dir: pathlib.Path, cache_workdir: pathlib.Path, topk: int):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import esnli  # pylint: disable=g-import-not-at-top
  config = esnli.get_config()
  config.data.source, config.data.path = "files", str(data_dir)
  for model in (config.teacher, config.student):
    model.checkpoint, model.dtype, model.param_dtype = str(FIXTURES / "t5"), "float32", "float32"
  config.teacher.workdir = str(cache_workdir)
  config.data.eval_batch_size = 512
  config.distill.topk = topk
  config.train.num_devices = 1
  config.train.device_data_max_mib = 0  # the tf.data feed, as any training set larger than the default 256 MiB
  config.train.steps_per_dispatch = 20
  return config


def child_esnli(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax import data, models  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import sharding
  from kd_jax.teachers import student_data
  from kd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(args.workdir)
  stages, tokenization = Stages(), {}
  figures = {"fraction": args.fraction}
  count_tokenization(tokenization)
  config = esnli_config(workdir / "data", workdir / "teacher", args.topk)
  with stages("load"):
    task = data.load_task(config)
  figures["train_examples"] = len(task.train)
  figures["tokenization"] = {**tokenization, "texts_per_s": tokenization["texts"] / tokenization["seconds"],
                             "tokens_per_s": tokenization["tokens"] / tokenization["seconds"]}
  figures["source_tokens"] = task.train.inputs["input_ids"].shape[1]
  figures["target_positions"] = task.train.label.shape[1]
  if args.child == "esnli_load":
    figures.update(stages=stages.figures, peak_rss_mib=stages.figures["load"]["peak_rss_mib"],
                   peak_rss_anon_mib=stages.figures["load"]["peak_rss_anon_mib"])
    return figures
  mesh = sharding.make_mesh(1)
  the_teacher = stand_in_teacher(args.teacher, config, task, mesh, workdir)
  figures["teacher"] = args.teacher
  with stages("cache_build"):
    student = student_data.prepare(config, task, the_teacher, mesh)
  cache_stats = student.results["teacher_cache"]
  assert cache_stats["built"], cache_stats
  cache_dir = pathlib.Path(cache_stats["path"])
  cache_files = sorted(str(path) for path in cache_dir.glob("*.npy"))
  cache_bytes = sum(os.path.getsize(path) for path in cache_files)
  figures["cache"] = {"bytes": cache_bytes, "gib": cache_bytes / 2**30, "k": cache_stats["k"],
                      "bytes_per_example": cache_stats["bytes_per_example"],
                      "build_mb_per_s": cache_bytes / 1e6 / stages.figures["cache_build"]["wall_s"],
                      "build_examples_per_s": len(task.train) / stages.figures["cache_build"]["wall_s"]}
  del student
  with stages("cache_load"):
    student = student_data.prepare(config, task, the_teacher, mesh)
  assert not student.results["teacher_cache"]["built"]
  teacher_leaves = jax.tree.leaves(student.examples.teacher)
  order = pipeline.epoch_order(len(task.train), 0, 0)
  for warm in (False, True):
    name = "cache_read_warm" if warm else "cache_read"
    if not warm:
      drop_from_page_cache(cache_files)
    with stages(name):
      read = 0
      for start in range(0, len(order), 512):
        rows = np.sort(order[start:start + 512])
        read += sum(np.asarray(leaf[rows]).nbytes for leaf in teacher_leaves)
    figures["cache"][f"{name}_mb_per_s"] = read / 1e6 / stages.figures[name]["wall_s"]
  model, params = models.create(config.student, num_classes=task.num_classes,
                                example_inputs=jax.tree.map(lambda value: value[:1], task.train.inputs),
                                rng=jax.random.PRNGKey(0), field="student")
  figures["epoch"] = train_part_of_epoch(stages, "epoch", config, model, params, student.examples, mesh,
                                         args.epoch_fraction, max_steps=args.epoch_steps)
  if args.stall_steps:
    figures["stall_t5_small"] = t5_small_stall(stages, config, task, student.examples, mesh, args.stall_steps)
  figures["stages"] = stages.figures
  # The data paths' peak; the stall stages' own (a FLAN-T5-small step's parameters, optimizer state and
  # activations, on the host here, on the accelerator elsewhere) is in their stages.
  data_stages = [stage for name, stage in stages.figures.items() if not name.startswith("stall_t5_small")]
  figures["peak_rss_mib"] = max(stage["peak_rss_mib"] for stage in data_stages)
  figures["peak_rss_anon_mib"] = max(stage["peak_rss_anon_mib"] for stage in data_stages)
  return figures


def train_part_of_epoch(stages, name, config, model, params, examples, mesh, epoch_fraction: float,
                        max_steps: int | None = None) -> dict:
  """Trains through steps.program's tf.data feed; the time blocked in feed.next vs the chunk, and the stall
  fraction from one staged chunk."""
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax.training import steps  # pylint: disable=g-import-not-at-top
  from kd_jax.training.objective import Objective
  batch_size = config.data.batch_size
  num_steps = max(1, int(epoch_fraction * (len(examples) // batch_size)))
  if max_steps is not None:
    num_steps = min(num_steps, max_steps)
  chunk_steps = config.train.steps_per_dispatch
  program = steps.program(model=model, init_params=params, optim_config=config.optim, num_steps=num_steps,
                          objective=Objective.from_config(config, num_steps=num_steps), examples=examples,
                          batch_size=batch_size, seed=0, mesh=mesh, train_config=config.train)
  assert program.stats["data_feed"] == "tf.data", program.stats
  feed = program.feed(0)
  state = program.state
  with stages(f"{name}_compile"):  # the first chunk: compiles, not timed as training
    first = feed.next(min(chunk_steps, num_steps))
    state, _ = program.chunk(state, np.int32(min(chunk_steps, num_steps)), *first)
    jax.block_until_ready(state)
  with stages(name):
    waited, done = 0.0, min(chunk_steps, num_steps)
    start = time.perf_counter()
    while done < num_steps:
      length = min(chunk_steps, num_steps - done)
      wait_start = time.perf_counter()
      data = feed.next(length)
      waited += time.perf_counter() - wait_start
      state, chunk_metrics = program.chunk(state, np.int32(length), *data)
      done += length
    jax.block_until_ready(state)
    fed_s = time.perf_counter() - start
  trained = done - min(chunk_steps, num_steps)
  figures = {"steps": num_steps, "timed_steps": trained, "batch_size": batch_size,
             "examples_per_s": trained * batch_size / max(fed_s, 1e-9), "step_s": fed_s / max(trained, 1),
             "epoch_s_extrapolated": fed_s / max(trained, 1) * (len(examples) // batch_size),
             "feed_wait_fraction": waited / max(fed_s, 1e-9)}
  if trained:
    repeats = max(1, trained // chunk_steps)
    start = time.perf_counter()
    for _ in range(repeats):
      state, _ = program.chunk(state, np.int32(chunk_steps), *first)
    jax.block_until_ready(state)
    staged_s_per_step = (time.perf_counter() - start) / (repeats * chunk_steps)
    figures["input_stall_fraction"] = max(0.0, 1 - staged_s_per_step * trained / fed_s)
  return figures


def t5_small_stall(stages, config, task, examples, mesh, num_steps: int) -> dict:
  """input_stall_fraction of a FLAN-T5-small-shaped student (random weights) fed from the cache."""
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import pretrained, t5  # pylint: disable=g-import-not-at-top
  fixture = json.loads((FIXTURES / "t5" / "config.json").read_text())
  dims = {**fixture, **FLAN_T5_SMALL}
  architecture = t5.build(types.SimpleNamespace(**dims), checkpoint="t5-small-shaped", task="seq2seq",
                          num_labels=None, dtype=np.float32, param_dtype=np.float32)
  params = jax.jit(architecture.module.init)(jax.random.PRNGKey(0), **architecture.example_inputs)["params"]
  small = config.copy_and_resolve_references()
  small.train.steps_per_dispatch = 1  # steps of ~a minute on 2 loaded cores: the first one compiles, untimed
  return train_part_of_epoch(stages, "stall_t5_small", small, pretrained.RegistryModel(architecture.module), params,
                             examples, mesh, 1.0, max_steps=num_steps)


def child_sst2(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  from kd_jax.parallel import sharding
  from kd_jax.teachers import student_data
  sys.path.insert(0, str(REPO_ROOT))
  from configs import sst2  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(args.workdir)
  stages, tokenization = Stages(), {}
  count_tokenization(tokenization)
  config = sst2.get_config()
  config.data.source, config.data.path = "files", str(workdir / "data")
  config.data.validation_split = None
  config.data.test_split = "validation"
  config.teacher.checkpoint, config.student.checkpoint = str(FIXTURES / "bert"), str(FIXTURES / "distilbert")
  for model in (config.teacher, config.student):
    model.dtype, model.param_dtype = "float32", "float32"
  config.teacher.init, config.teacher.workdir = "pretrained", str(workdir / "teacher")
  config.train.num_devices = 1
  with stages("load"):
    task = data.load_task(config)
  mesh = sharding.make_mesh(1)
  the_teacher = stand_in_teacher(args.teacher, config, task, mesh, workdir)
  with stages("cache_build"):
    student = student_data.prepare(config, task, the_teacher, mesh)
  del student
  with stages("cache_load"):
    student = student_data.prepare(config, task, the_teacher, mesh)
  return {"train_examples": len(task.train), "input_tokens": task.train.inputs["input_ids"].shape[1],
          "tokenization": {**tokenization, "texts_per_s": tokenization["texts"] / tokenization["seconds"],
                           "tokens_per_s": tokenization["tokens"] / tokenization["seconds"]},
          "teacher_cache_bytes_per_example": student.results["teacher_cache"]["bytes_per_example"],
          "stages": stages.figures, "peak_rss_mib": max(stage["peak_rss_mib"] for stage in stages.figures.values()),
          "peak_rss_anon_mib": max(stage["peak_rss_anon_mib"] for stage in stages.figures.values()),
          "jax_devices": jax.device_count()}


def dd_throughput(directory: pathlib.Path, mib: int = 1024) -> dict:
  """The disk's own sequential MB/s: dd write (fdatasync) and O_DIRECT read of `mib` MiB."""
  path = directory / "dd.bin"

  def run(arguments):
    output = subprocess.run(["dd", *arguments], capture_output=True, text=True, check=True).stderr
    match = re.search(r"(\d+) bytes.*copied, ([\d.]+) s", output)
    return int(match.group(1)) / 1e6 / float(match.group(2))

  write = run(["if=/dev/zero", f"of={path}", "bs=16M", f"count={mib // 16}", "conv=fdatasync"])
  try:
    read = run([f"if={path}", "of=/dev/null", "bs=16M", "iflag=direct"])
  finally:
    path.unlink()
  return {"dd_write_mb_per_s": write, "dd_read_mb_per_s": read, "dd_mib": mib}


def run_child(kind: str, fraction: float, workdir: pathlib.Path, args) -> dict:
  out = workdir / "figures.json"
  command = [sys.executable, __file__, f"--child={kind}", f"--fraction={fraction}", f"--workdir={workdir}",
             f"--child_out={out}", f"--topk={args.topk}", f"--epoch_fraction={args.epoch_fraction}",
             f"--epoch_steps={args.epoch_steps}", f"--teacher={args.teacher}",
             f"--stall_steps={args.stall_steps if fraction == max(args.fraction_list) else 0}"]
  env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "PJRT_NPROC")}
  start = time.perf_counter()
  process = subprocess.Popen(command, env=env)
  _, status, usage = os.wait4(process.pid, 0)
  assert status == 0, f"{' '.join(command)} failed (wait status {status})"
  figures = json.loads(out.read_text())
  figures.update(child_wall_s=time.perf_counter() - start, child_max_rss_mib=usage.ru_maxrss / 1024)
  return figures


def slope(sizes, values) -> float:
  """Least-squares slope of log(value) against log(size)."""
  return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def plot(results: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  runs = results["esnli"]
  sizes = [run["train_examples"] for run in runs]
  figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
  for stage in ("load", "cache_build", "cache_read"):
    left.loglog(sizes, [run["stages"][stage]["wall_s"] for run in runs], "o-",
                label=f"{stage} (slope {results['slopes'][stage + '_time']:.2f})")
  left.loglog(sizes, [run["epoch"]["step_s"] * 1000 for run in runs], "o-",
              label=f"one training step x 1000 (slope {results['slopes']['step_time']:.2f})")
  left.set(xlabel="training examples", ylabel="seconds", title="time vs size")
  left.legend(fontsize=8)
  for key, label in (("peak_rss_mib", "peak RSS"), ("peak_rss_anon_mib", "peak RSS (anonymous)")):
    right.loglog(sizes, [run[key] for run in runs], "o-", label=f"{label} (slope {results['slopes'][key]:.2f})")
  right.loglog(sizes, [run["cache"]["bytes"] / 2**20 for run in runs], "k:", label="top-k cache size")
  right.set(xlabel="training examples", ylabel="MiB", title="host memory vs size")
  right.legend(fontsize=8)
  figure.suptitle("scripts/scale_check.py: e-SNLI-sized stand-ins (2 loaded CPU cores)")
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=100)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--fractions", default="0.01,0.1,1.0", help="sizes as fractions of e-SNLI's training split")
  parser.add_argument("--out", help="write every figure to this JSON file")
  parser.add_argument("--workdir", default="/tmp/kd_jax_scale_check", help="data, caches (deleted per size)")
  parser.add_argument("--plot", default=None, help="write the log-log figure to this PNG")
  parser.add_argument("--topk", type=int, default=32, help="k of the top-k cache (e-SNLI's: 32)")
  parser.add_argument("--epoch_fraction", type=float, default=1.0, help="the part of an epoch trained per size")
  parser.add_argument("--epoch_steps", type=int, default=100, help="at most this many steps trained per size")
  parser.add_argument("--teacher", default="embedding", choices=("embedding", "fixture"),
                      help="the teacher of the cache builds: embedding lookups, or the fixture checkpoints (T5, BERT)")
  parser.add_argument("--stall_steps", type=int, default=2,
                      help="steps of the FLAN-T5-small-shaped student's stall measurement at the largest size, the "
                           "first (compiling) one untimed (0: none)")
  parser.add_argument("--skip_sst2", action="store_true", help="do not run the SST-2-sized set")
  parser.add_argument("--merge", nargs="+", help="instead of running: merge these --out files into one (slopes, plot)")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  parser.add_argument("--fraction", type=float, help=argparse.SUPPRESS)
  parser.add_argument("--child_out", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    sys.path.insert(0, str(REPO_ROOT))
    from kd_jax.parallel import environment  # pylint: disable=g-import-not-at-top
    environment.prepare()  # before JAX starts
    figures = child_sst2(args) if args.child == "sst2" else child_esnli(args)
    pathlib.Path(args.child_out).write_text(json.dumps(figures, indent=2) + "\n")
    return
  if args.merge:
    summarize(merge(args.merge), args.plot, args.out)
    return
  args.fraction_list = [float(value) for value in args.fractions.split(",")]
  root = pathlib.Path(args.workdir)
  root.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  results = {"load_average_start": os.getloadavg()[0], "cores": os.cpu_count(), "topk": args.topk,
             "epoch_fraction": args.epoch_fraction, "epoch_steps": args.epoch_steps, "teacher": args.teacher,
             **dd_throughput(root), "esnli": []}
  print(f"disk: dd write {results['dd_write_mb_per_s']:.0f} MB/s, read {results['dd_read_mb_per_s']:.0f} MB/s",
        flush=True)
  for fraction in args.fraction_list:
    workdir = root / f"esnli-{fraction}"
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    write_esnli(workdir / "data", round(ESNLI_TRAIN * fraction))
    print(f"e-SNLI x {fraction} ({round(ESNLI_TRAIN * fraction)} examples):", flush=True)
    results["esnli"].append(run_child("esnli", fraction, workdir, args))
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    if args.out:  # partial figures survive a later size's failure
      pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
  if not args.skip_sst2:
    workdir = root / "sst2"
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    write_sst2(workdir / "data", SST2_TRAIN)
    print(f"SST-2 ({SST2_TRAIN} sentences):", flush=True)
    results["sst2"] = run_child("sst2", 1.0, workdir, args)
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
  results.update(load_average_end=os.getloadavg()[0], wall_s=time.perf_counter() - start)
  summarize(results, args.plot, args.out)


def summarize(results: dict, plot_path: str | None, out: str | None) -> None:
  """Adds the log-log slopes against size, prints the figures, writes the plot and the JSON."""
  runs = results["esnli"] = sorted(results["esnli"], key=lambda run: run["train_examples"])
  if len(runs) > 1:
    sizes = [run["train_examples"] for run in runs]
    results["slopes"] = {f"{stage}_time": slope(sizes, [run["stages"][stage]["wall_s"] for run in runs])
                         for stage in runs[0]["stages"] if not stage.startswith(("stall_t5_small", "epoch"))}
    results["slopes"]["step_time"] = slope(sizes, [run["epoch"]["step_s"] for run in runs])
    results["slopes"].update({key: slope(sizes, [run[key] for run in runs])
                              for key in ("peak_rss_mib", "peak_rss_anon_mib")})
    if plot_path:
      plot(results, plot_path)
  for run in runs:
    print(f"e-SNLI {run['train_examples']:>7} examples: peak RSS {run['peak_rss_mib']:.0f} MiB (anon "
          f"{run['peak_rss_anon_mib']:.0f}), cache {run['cache']['gib']:.2f} GiB built at "
          f"{run['cache']['build_mb_per_s']:.0f} MB/s, read {run['cache']['cache_read_mb_per_s']:.0f} MB/s; "
          f"tokenization {run['tokenization']['texts_per_s']:.0f} texts/s; training "
          f"{run['epoch']['examples_per_s']:.0f} examples/s, waiting for batches "
          f"{run['epoch']['feed_wait_fraction']:.3f}, stall {run['epoch'].get('input_stall_fraction')}", flush=True)
    if "stall_t5_small" in run:
      stall = run["stall_t5_small"]
      print(f"  FLAN-T5-small-shaped student: {stall['step_s']:.1f} s per step, waiting for batches "
            f"{stall['feed_wait_fraction']:.3f}, input_stall_fraction {stall.get('input_stall_fraction')}", flush=True)
  if "slopes" in results:
    print("log-log slopes vs size:", ", ".join(f"{key} {value:.2f}" for key, value in results["slopes"].items()))
  if out:
    pathlib.Path(out).write_text(json.dumps(results, indent=2) + "\n")


def merge(paths: list[str]) -> dict:
  """The figures of several runs (e.g. of different fractions, run side by side) as one: their e-SNLI sizes
  together, each run's machine figures (dd, load average) kept per size."""
  merged = {"merged_from": paths, "esnli": []}
  for path in paths:
    results = json.loads(pathlib.Path(path).read_text())
    machine = {key: value for key, value in results.items() if key not in ("esnli", "sst2", "slopes")}
    merged["esnli"] += [{**run, "run": machine} for run in results["esnli"]]
    if "sst2" in results:
      merged["sst2"] = results["sst2"]
  return merged


if __name__ == "__main__":
  main()
