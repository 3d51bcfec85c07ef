"""Checks a GGUF file (an export of scripts/export.py --format=gguf) in llama.cpp: greedy tokens equal to kd_jax's.

Needs llama-cpp-python in a separate environment (never a dependency of kd_jax or its tests; tests/helpers.py's
llama_cpp_python() finds the one the tests use):

    python scripts/check_gguf_with_llama_cpp.py --llama_python=.llamaenv/bin/python --gguf=exports/lm/model.gguf \
        --message "What color is the snow?"

Run with kd_jax's environment, it renders --message as chat.py does (the file's chat template, or plain text with
--no_chat_template), decodes it greedily with kd_jax (hf.generate, the KV-cache decoder, float32), then runs itself
under --llama_python with the same prompt ids, where llama.cpp (logits_all) evaluates the prompt and appends the
argmax of its last logits until a stop token or --max_new_tokens. It prints both token lists and answers; exit status
1 when they differ. A float32 GGUF gives llama.cpp and kd_jax the same weights; quantized files may differ in the last
digits of the logits, and so at near ties.
"""

import argparse
import json
import os
import subprocess
import sys

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [SCRIPTS, os.path.dirname(SCRIPTS)]  # scripts/chat.py and kd_jax


def llama_cpp_greedy(gguf: str, prompt: list[int], max_new_tokens: int, eos_token_ids: list[int]) -> list[int]:
  """(llama.cpp's side) the argmax of llama.cpp's logits, token by token, up to and including a stop token."""
  import llama_cpp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  model = llama_cpp.Llama(model_path=gguf, n_ctx=len(prompt) + max_new_tokens + 1, logits_all=True, verbose=False,
                          n_threads=2)
  model.eval(prompt)
  tokens = []
  while len(tokens) < max_new_tokens and not (tokens and tokens[-1] in eos_token_ids):
    tokens.append(int(np.argmax(model.scores[model.n_tokens - 1])))
    model.eval([tokens[-1]])
  return tokens


def kd_jax_greedy(gguf: str, message: str, max_new_tokens: int, chat_template: bool = True):
  """(kd_jax's side) (prompt ids, greedy tokens up to and including the first stop token, stop tokens, tokenizer)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from chat import prompt_inputs  # pylint: disable=import-outside-toplevel  (scripts/chat.py: its rendering)
  from kd_jax.models import hf  # pylint: disable=import-outside-toplevel
  model, params = hf.from_pretrained(gguf, task="causal_lm")
  tokenizer = hf.load_tokenizer(gguf)
  prompt = prompt_inputs(tokenizer, message, chat_template)
  tokens = np.asarray(hf.generate(model, params, prompt["input_ids"], prompt["attention_mask"],
                                  max_new_tokens=max_new_tokens))
  length = int(hf.generated_mask(tokens, model.dims.eos_token_ids).sum())
  return ([int(t) for t in prompt["input_ids"][0]], [int(t) for t in tokens[0, :length]],
          list(model.dims.eos_token_ids), tokenizer)


def check(gguf: str, message: str, max_new_tokens: int, llama_python: str, chat_template: bool = True) -> bool:
  """Prints kd_jax's and llama.cpp's greedy tokens and answers; whether they are equal."""
  prompt, ours, eos_token_ids, tokenizer = kd_jax_greedy(gguf, message, max_new_tokens, chat_template)
  request = json.dumps({"gguf": gguf, "prompt": prompt, "max_new_tokens": max_new_tokens,
                        "eos_token_ids": eos_token_ids})
  done = subprocess.run([llama_python, os.path.abspath(__file__), f"--llama_side={request}"], capture_output=True,
                        text=True, check=True)
  theirs = json.loads(done.stdout.strip().splitlines()[-1])
  print(f"prompt: {len(prompt)} tokens")
  for name, tokens in (("kd_jax", ours), ("llama.cpp", theirs)):
    print(f"{name:9s} greedy tokens {tokens}\n{name:9s} answer {tokenizer.decode(tokens, skip_special_tokens=True)!r}")
  same = ours == theirs
  print(f"{'equal' if same else 'DIFFERENT'}: {len(ours)} tokens from kd_jax, {len(theirs)} from llama.cpp")
  return same


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gguf", help="the GGUF file")
  parser.add_argument("--message", default="What is the capital of France?")
  parser.add_argument("--max_new_tokens", type=int, default=32)
  parser.add_argument("--no_chat_template", action="store_true", help="the message as plain text to continue")
  parser.add_argument("--llama_python", help="the Python of an environment with llama-cpp-python")
  parser.add_argument("--llama_side", help=argparse.SUPPRESS)  # (internal) the request llama.cpp's side answers
  args = parser.parse_args(argv)
  if args.llama_side:
    request = json.loads(args.llama_side)
    print(json.dumps(llama_cpp_greedy(request["gguf"], request["prompt"], request["max_new_tokens"],
                                      request["eos_token_ids"])))
    return 0
  if not args.gguf or not args.llama_python:
    parser.error("--gguf and --llama_python are required")
  return 0 if check(args.gguf, args.message, args.max_new_tokens, args.llama_python, not args.no_chat_template) else 1


if __name__ == "__main__":
  sys.exit(main())
