"""Checks what kd_jax's T5 models sow for feature distillation against transformers' PyTorch T5: every hidden state of
both stacks (output_hidden_states: h_0 the embeddings .. h_L the final norm's output) and every self-attention
distribution (output_attentions), on the parity inputs of the fixtures tests/fixtures/hf/t5 and t5_v1_1.

The suite checks h_0 and h_L of both stacks against the fixtures' stored outputs (tests/test_hf_models.py); the layers
between and the attention need transformers itself, so this check runs outside the suite. Needs a separate virtual
environment with PyTorch and transformers (never a dependency of kd_jax or its tests; see
scripts/check_export_with_transformers.py):

    python scripts/check_t5_states_with_transformers.py --torch_python=.venv-torch/bin/python

Run with kd_jax's environment, it writes kd_jax's states (`<fixture>.npz`) into a temporary directory, then runs
itself under --torch_python with --compare=<that directory>, which prints per fixture the largest relative difference
||kd_jax - transformers|| / ||transformers|| of the hidden states and the largest absolute difference of the attention
probabilities over the real positions; exit status 1 when either exceeds --tolerance.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hf"
NAMES = ("t5", "t5_v1_1")
INPUTS = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")


def write_kd_jax_states(out: pathlib.Path) -> None:
  """(kd_jax's side) `<fixture>.npz`: {stack}_h{i} hidden states and {stack}_a{i} attention probabilities."""
  sys.path.insert(0, str(FIXTURES.parent.parent.parent))
  import jax  # pylint: disable=import-outside-toplevel
  from kd_jax.models import hf  # pylint: disable=import-outside-toplevel
  from kd_jax.training import feature_losses  # pylint: disable=import-outside-toplevel
  for name in NAMES:
    reference = np.load(FIXTURES / name / "reference.npz")
    model, params = hf.from_pretrained(str(FIXTURES / name), task="seq2seq")
    _, state = model.apply({"params": params}, **{key: reference[key] for key in INPUTS}, mutable=["intermediates"])
    found = feature_losses.collect(state["intermediates"])
    arrays = {}
    for stack, sown in (("encoder", found), ("decoder", found.decoder)):
      arrays.update({f"{stack}_h{i}": np.asarray(h) for i, h in enumerate(sown.hidden_states)})
      arrays.update({f"{stack}_a{i}": np.asarray(jax.nn.softmax(logits, axis=-1))
                     for i, logits in enumerate(sown.attention_logits)})
    np.savez(out / f"{name}.npz", **arrays)


def compare(directory: pathlib.Path, tolerance: float) -> int:
  """(transformers' side) one line per fixture; 1 when a difference exceeds `tolerance`."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  failed = 0
  for name in NAMES:
    reference = np.load(FIXTURES / name / "reference.npz")
    ours = np.load(directory / f"{name}.npz")
    model = transformers.T5ForConditionalGeneration.from_pretrained(FIXTURES / name, attn_implementation="eager")
    with torch.no_grad():
      outputs = model.eval()(**{key: torch.tensor(reference[key]) for key in INPUTS}, output_hidden_states=True,
                             output_attentions=True)
    hidden_error, attention_error, compared = 0.0, 0.0, 0
    for stack, mask in (("encoder", reference["attention_mask"]), ("decoder", reference["decoder_attention_mask"])):
      real = mask.astype(bool)
      for i, theirs in enumerate(getattr(outputs, f"{stack}_hidden_states")):
        theirs, mine = theirs.numpy()[real], ours[f"{stack}_h{i}"][real]
        hidden_error = max(hidden_error, float(np.linalg.norm(mine - theirs) / np.linalg.norm(theirs)))
        compared += 1
      for i, theirs in enumerate(getattr(outputs, f"{stack}_attentions")):
        queries = lambda probabilities: probabilities.transpose(0, 2, 1, 3)[real]  # [real queries, heads, keys]
        attention_error = max(attention_error, float(np.abs(queries(ours[f"{stack}_a{i}"])
                                                            - queries(theirs.numpy())).max()))
        compared += 1
    bad = hidden_error > tolerance or attention_error > tolerance
    failed |= bad
    print(f"{name}: {compared} arrays; hidden states max relative difference {hidden_error:.2e}, attention "
          f"probabilities max absolute difference {attention_error:.2e}{'  FAIL' if bad else ''}")
  return int(failed)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--torch_python", help="the Python of an environment with torch and transformers")
  parser.add_argument("--compare", help="(internal) the directory of kd_jax's states, compared under torch")
  parser.add_argument("--tolerance", type=float, default=1e-5)
  args = parser.parse_args()
  if args.compare:
    return compare(pathlib.Path(args.compare), args.tolerance)
  if not args.torch_python or not os.path.exists(args.torch_python):
    parser.error("--torch_python must name the Python of an environment with torch and transformers")
  with tempfile.TemporaryDirectory() as out:
    write_kd_jax_states(pathlib.Path(out))
    return subprocess.run([args.torch_python, __file__, f"--compare={out}", f"--tolerance={args.tolerance}"],
                          check=False).returncode


if __name__ == "__main__":
  sys.exit(main())
