"""The models' sizes and the training settings the sections share (the SST-2 notebook's), and --smoke's toy sizes.

use_smoke_sizes() rebinds SMOKE, SEQUENCE_LENGTH and the LLM_ sizes and shrinks DISTILBERT and SMOLLM2_STUDENT in
place: read them as `settings.NAME` when a section runs, not imported by name.
"""

# The DistilBERT-shaped student: transformers DistilBertConfig fields.
DISTILBERT = dict(vocab_size=30522, dim=256, n_layers=4, n_heads=4, hidden_dim=1024, max_position_embeddings=512,
                  dropout=0.1, attention_dropout=0.1, seq_classif_dropout=0.2)
SEQUENCE_LENGTH = 128
BATCH_SIZE = 32
NUM_LABELS = 2
TEMPERATURE, ALPHA = 2.0, 0.5
LEARNING_RATE, WEIGHT_DECAY, WARMUP_RATIO = 5e-5, 0.01, 0.1
SMOKE = False  # --smoke: use_smoke_sizes() ran

# The SmolLM2-shaped student of configs/causal_lm.py:smollm: 6 of SmolLM2-135M's 30 layers (its published
# dimensions: hidden 576, MLP 1536, 9 query / 3 key-value heads, vocabulary 49,152, tied embeddings).
SMOLLM2_STUDENT = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=6,
                       num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                       rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1,
                       eos_token_id=2)
LLM_BATCH, LLM_LENGTH, LLM_PROMPT, LLM_TOPK = 8, 128, 32, 32

# The notebook's loss: (1 - a) CE + a T^2 KL, every other field of the loss at its plain value.
NOTEBOOK_LOSS = dict(temperature=TEMPERATURE, alpha=ALPHA, label_smoothing=0.0, divergence="forward_kl",
                     t2_scaling=True, input_noise_std=0.0)


def use_smoke_sizes() -> None:
  """--smoke: toy DistilBERT- and SmolLM2-shaped models (1 layer, 64 wide, vocabulary 2048, sequences of 32; the
  DistilBERT-shaped one without dropout, which XLA:CPU takes longest to compile), one round of each timing and the
  shortest trainings, so that every section's code runs in a test's time: its cost is the compiles, which a layer or
  a dropout mask more does not exercise further. The figures keep their keys; their values are not the machine's
  speed."""
  global SMOKE, SEQUENCE_LENGTH, LLM_LENGTH, LLM_PROMPT, LLM_TOPK  # pylint: disable=global-statement
  SMOKE = True
  DISTILBERT.update(vocab_size=2048, dim=64, n_layers=1, n_heads=2, hidden_dim=128, max_position_embeddings=64,
                    dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
  SEQUENCE_LENGTH = 32
  SMOLLM2_STUDENT.update(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
  LLM_LENGTH, LLM_PROMPT, LLM_TOPK = 32, 8, 8


def distill_config(**fields):
  """The default config's distill section (every field the loss reads) with `fields` changed."""
  from kd_jax.config import schema  # pylint: disable=g-import-not-at-top
  config = schema.default_config().distill
  config.update(fields)
  return config


def objective(distill_config, *, distills: bool = True):
  """The training objective (kd_jax.training.objective.Objective) of a distill section."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from kd_jax.training.objective import Objective  # pylint: disable=g-import-not-at-top
  return Objective.from_config(ml_collections.ConfigDict({"distill": distill_config}), distills=distills)


def notebook_optim_config():
  """The notebook's AdamW: its learning rate, weight decay and linear schedule's warmup."""
  from kd_jax.config import schema  # pylint: disable=g-import-not-at-top
  return schema.optim_config(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO)
