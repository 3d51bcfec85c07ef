"""Writes the causal-LM test fixtures: a tiny chat data set, a tiny byte-level BPE tokenizer with a ChatML chat
template, and two tiny random Llama checkpoints that use it (teacher and student).

    /work/.venv-torch/bin/python scripts/make_causal_lm_fixtures.py     (any environment with torch + transformers)

  tests/fixtures/text/causal_lm/   train.jsonl (192), validation.jsonl (32), test.jsonl (32): columns prompt,
                                   response; questions about a fixed little world whose answers follow from the words
                                   ("What color is the apple?" -> "The apple is red."), so tiny models can learn them
  tests/fixtures/hf/llama_chat/    teacher: LlamaForCausalLM, 4 layers, hidden 32, 4 heads / 2 KV heads, tied
                                   embeddings, the tokenizer below (vocabulary 320; <|im_start|>, <|im_end|>,
                                   <|endoftext|>), random weights
  tests/fixtures/hf/llama_chat_small/  student: the same with 2 layers and hidden 16

The tokenizer is trained on the data set's texts with `tokenizers` (byte-level BPE, like GPT-2 / SmolLM2), so every
text of the fixtures encodes in a few tokens; its chat template is SmolLM2's ChatML form without a system turn.
"""

import json
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
DATA = ROOT / "text" / "causal_lm"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")
COLORS = {"apple": "red", "sky": "blue", "grass": "green", "sun": "yellow", "snow": "white", "coal": "black",
          "orange": "orange", "plum": "purple"}
PLACES = {"dog": "kennel", "bird": "nest", "fish": "pond", "cow": "barn", "bee": "hive", "king": "castle",
          "horse": "stable", "child": "bed"}
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def pair(rng: np.random.Generator) -> dict:
  kind = rng.integers(3)
  if kind == 0:
    thing = rng.choice(sorted(COLORS))
    return {"prompt": f"What color is the {thing}?", "response": f"The {thing} is {COLORS[thing]}."}
  if kind == 1:
    animal = rng.choice(sorted(PLACES))
    return {"prompt": f"Where does the {animal} sleep?", "response": f"The {animal} sleeps in the {PLACES[animal]}."}
  start = int(rng.integers(len(NUMBERS) - 2))
  return {"prompt": f"Count on from {NUMBERS[start]}.", "response": " ".join(NUMBERS[start + 1:start + 3]) + "."}


def write_data() -> list[str]:
  rng = np.random.default_rng(0)
  texts = []
  DATA.mkdir(parents=True, exist_ok=True)
  for split, size in (("train", 192), ("validation", 32), ("test", 32)):
    rows = [pair(rng) for _ in range(size)]
    with open(DATA / f"{split}.jsonl", "w", encoding="utf-8") as f:
      f.writelines(json.dumps(row) + "\n" for row in rows)
    texts += [row["prompt"] for row in rows] + [row["response"] for row in rows]
  return texts


def tokenizer(texts: list[str]):
  import tokenizers  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(vocab_size=320, special_tokens=list(SPECIAL_TOKENS),
                                           initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  chat_texts = [f"<|im_start|>user\n{t}<|im_end|>\n<|im_start|>assistant\n" for t in texts]
  bpe.train_from_iterator(texts + chat_texts + ["user", "assistant"] * 20, trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                              pad_token="<|endoftext|>", unk_token="<|endoftext|>")
  fast.chat_template = CHAT_TEMPLATE
  return fast


def llama(directory: pathlib.Path, fast_tokenizer, *, layers: int, hidden: int, seed: int) -> None:
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(
      vocab_size=len(fast_tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
      bos_token_id=fast_tokenizer.bos_token_id, eos_token_id=fast_tokenizer.eos_token_id,
      pad_token_id=fast_tokenizer.pad_token_id, rms_norm_eps=1e-5, rope_theta=10000.0)
  model = transformers.LlamaForCausalLM(config)
  model.save_pretrained(directory, safe_serialization=True)
  fast_tokenizer.save_pretrained(directory)


def main() -> None:
  fast = tokenizer(write_data())
  llama(ROOT / "hf" / "llama_chat", fast, layers=4, hidden=32, seed=0)
  llama(ROOT / "hf" / "llama_chat_small", fast, layers=2, hidden=16, seed=1)
  print("vocabulary", len(fast), "example", fast.apply_chat_template(
      [{"role": "user", "content": "What color is the sky?"}], add_generation_prompt=True, tokenize=True))


if __name__ == "__main__":
  main()
