"""Exports a finished run's student, hard-label student or teacher: a Hugging Face directory, GGUF file or arrays.

--format=params writes named arrays and the model's config (a user's own model, the MLP, the CNN: load_exported).

    python scripts/export.py --workdir=runs/sst2 --model=student --format=hf --out=exports/sst2-student
    python scripts/export.py --workdir=runs/lm --model=student --format=gguf --gguf_type=q8_0 --out=exports/lm-gguf
    python scripts/export.py --workdir=runs/custom --model=student --format=params --out=exports/custom  # load_exported

--workdir is a run's workdir (or a sweep point's, `<sweep workdir>/<point>`); --lora=adapter writes a LoRA student as
a peft adapter instead of merging its adapters; --overwrite replaces a non-empty --out. What is written, and which
families each format takes: kd_jax/models/export.py and docs/export.md. Bad input: one line on stderr, exit status 2,
nothing written.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kd_jax.errors import UserError  # pylint: disable=wrong-import-position
from kd_jax.models import export  # pylint: disable=wrong-import-position


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="the run's workdir")
  parser.add_argument("--model", default="student", help=f"one of {', '.join(export.MODELS)}")
  parser.add_argument("--format", default="hf", help=f"one of {', '.join(export.FORMATS)}")
  parser.add_argument("--out", required=True, help="the directory to write")
  parser.add_argument("--lora", default="merge", help=f"one of {', '.join(export.LORA_MODES)}")
  parser.add_argument("--gguf_type", default="f32", help=f"one of {', '.join(export.GGUF_TYPES)}")
  parser.add_argument("--overwrite", action="store_true", help="replace an --out that is not empty")
  args = parser.parse_args(argv)
  try:
    written = export.export(args.workdir, model=args.model, export_format=args.format, out=args.out, lora=args.lora,
                            gguf_type=args.gguf_type, overwrite=args.overwrite)
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(f"wrote {args.out}: {', '.join(written)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
