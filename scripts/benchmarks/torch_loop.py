"""The PyTorch side: the SST-2 notebook's training loop in a worker process answering JSON lines on stdin
(`python scripts/benchmark.py --torch_worker`), and why it cannot run with a given interpreter."""

import json
import os
import subprocess
import sys
import time

from . import SCRIPT, settings
from .examples import synthetic_text_batch


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
      transformers.DistilBertConfig(**request.get("dims", settings.DISTILBERT), num_labels=settings.NUM_LABELS)
  ).to(device)
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=settings.LEARNING_RATE, weight_decay=settings.WEIGHT_DECAY)
  total_steps = request["total_steps"]
  scheduler = transformers.get_linear_schedule_with_warmup(optimizer, int(settings.WARMUP_RATIO * total_steps),
                                                           total_steps)
  batch = {key: torch.from_numpy(value).to(device)
           for key, value in synthetic_text_batch(request.get("batch_size", settings.BATCH_SIZE)).items()}
  autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if request.get("bf16")
              else contextlib.nullcontext)
  input_ids, attention_mask = batch["input_ids"].long(), batch["attention_mask"].long()
  labels, teacher_logits = batch["label"].long(), batch["teacher_logits"]
  temperature, alpha = settings.TEMPERATURE, settings.ALPHA

  def kd_loss(student_logits):
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1), F.softmax(teacher_logits / temperature,
                                                                                      dim=-1),
                    reduction="batchmean") * temperature**2
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)

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
  """A PyTorch worker process (`python scripts/benchmark.py --torch_worker`: the notebook's training loop; or
  another worker flag, e.g. --torch_generate_worker) answering JSON lines."""

  def __init__(self, python: str, threads: int, worker: str = "--torch_worker", **first_request):
    """first_request: the worker's first-request fields besides `threads` (torch_worker: total_steps, and optionally
    dims, batch_size, device, bf16)."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")  # idle OpenMP threads must not spin while JAX is timed
    self._process = subprocess.Popen([python, str(SCRIPT), worker], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    self.info = self.ask({"threads": threads, **first_request})

  def ask(self, request: dict) -> dict:
    self._process.stdin.write(json.dumps(request) + "\n")
    self._process.stdin.flush()
    line = self._process.stdout.readline()
    if not line:
      raise RuntimeError(self._process.stderr.read().strip().splitlines()[-1])
    return json.loads(line)

  def seconds_for(self, num_steps: int) -> float:
    return self.ask({"steps": num_steps})["seconds"]

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
