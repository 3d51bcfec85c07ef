"""Writes the student checkpoint of `configs/causal_lm.py:smollm,cross_tokenizer`: a small random Llama with a
tokenizer of its own, a byte-level BPE trained on the training passages of data.source='pydoc_topics'.

    python scripts/make_smollm_student.py                        # -> runs/smollm_xtok_student/
    python scripts/make_smollm_student.py --out=DIR --vocab_size=4096 --seed=0

Deterministic: the same Python (its pydoc topics), `tokenizers` and arguments write the same files (the tokenizer is
trained on the training split only, in the split's order; the weights come from numpy's generator at `--seed`). The
directory holds what a `student.checkpoint` needs: config.json (LlamaForCausalLM: 4 layers, hidden 256, 4 heads / 2
KV heads, MLP 768, tied embeddings), model.safetensors (every matrix N(0, 0.02), as transformers initializes a
Llama; norms 1), generation_config.json and the tokenizer's files. The BPE is byte-level like SmolLM2's (its likelihood
is one of the original bytes: bits per byte compare it with the teacher's 49,152-token vocabulary) but learned from
20,000 words of Python documentation, so the two tokenizations share only part of their pieces.
"""

import argparse
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from kd_jax.data import causal_lm  # pylint: disable=wrong-import-position

EOS, PAD = "<|endoftext|>", "<|pad|>"


def tokenizer(texts: list[str], vocab_size: int):
  """A byte-level BPE (GPT-2's pre-tokenizer, no prefix space) of `vocab_size` pieces trained on `texts`."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
                                           initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  bpe.train_from_iterator(texts, trainer)
  return transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD, unk_token=EOS)


def llama_config(fast_tokenizer, *, layers: int, hidden: int):
  import transformers  # pylint: disable=import-outside-toplevel
  return transformers.LlamaConfig(
      vocab_size=len(fast_tokenizer), hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
      bos_token_id=None, eos_token_id=fast_tokenizer.eos_token_id, pad_token_id=fast_tokenizer.pad_token_id,
      rms_norm_eps=1e-5, rope_theta=10000.0, initializer_range=0.02)


def random_tensors(config, seed: int) -> dict[str, np.ndarray]:
  """transformers' Llama initialization in the checkpoint's layout: N(0, initializer_range) matrices, unit norms."""
  import jax  # pylint: disable=import-outside-toplevel
  from kd_jax.models.hf import llama, weights  # pylint: disable=import-outside-toplevel
  architecture = llama.build(config, checkpoint="<new>", task="causal_lm", num_labels=None, dtype="float32",
                             param_dtype="float32")
  abstract = jax.eval_shape(lambda: architecture.module.init(jax.random.key(0), **architecture.example_inputs))
  rng = np.random.default_rng(seed)
  tensors = {}
  for name, leaf in sorted(weights.to_tensors(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                                                           abstract["params"])).items()):
    is_norm = leaf.ndim == 1
    tensors[name] = (np.ones(leaf.shape, np.float32) if is_norm
                     else rng.normal(0.0, config.initializer_range, leaf.shape).astype(np.float32))
  return weights.in_checkpoint_layout(architecture, tensors)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/smollm_xtok_student")
  parser.add_argument("--vocab_size", type=int, default=4096)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  import safetensors.numpy  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  train = causal_lm.pydoc_passages()["train"]
  fast = tokenizer([p + r for p, r in zip(train["prompt"], train["response"])], args.vocab_size)
  config = llama_config(fast, layers=args.layers, hidden=args.hidden)
  os.makedirs(args.out, exist_ok=True)
  config.architectures = ["LlamaForCausalLM"]
  config.save_pretrained(args.out)
  transformers.GenerationConfig.from_model_config(config).save_pretrained(args.out)
  tensors = random_tensors(config, args.seed)
  safetensors.numpy.save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
  fast.save_pretrained(args.out)
  responses = causal_lm.pydoc_passages()["test"]["response"]
  tokens = sum(len(ids) for ids in fast(responses)["input_ids"])
  print(f"{args.out}: vocabulary {len(fast)}, {sum(t.size for t in tensors.values()):,} "
        f"parameters; test responses {tokens / sum(len(r.encode()) for r in responses):.3f} tokens per byte")


if __name__ == "__main__":
  main()
