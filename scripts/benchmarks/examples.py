"""The examples the sections train and infer on: the default task with random teacher logits, and random text,
causal-LM and seq2seq batches with random teacher signals."""

from . import repo_config, settings


def default_task():
  """The default config (digits, MLP student) and its task with random teacher logits joined (the cache's shape)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  config = repo_config("default").get_config()
  config.train.num_devices = 1
  task = data.load_task(config)
  logits = np.random.default_rng(0).normal(size=(len(task.train), task.num_classes)).astype(np.float32)
  return config, task, task.train.replace(teacher=logits)


def synthetic_text_batch(num_examples: int, seed: int = 0) -> dict:
  """Random token ids (full length), labels and teacher logits: the same arrays in both frameworks."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  length = settings.SEQUENCE_LENGTH
  return {"input_ids": rng.integers(1000, settings.DISTILBERT["vocab_size"], (num_examples, length), dtype=np.int32),
          "attention_mask": np.ones((num_examples, length), np.int32),
          "label": rng.integers(0, settings.NUM_LABELS, num_examples).astype(np.int32),
          "teacher_logits": rng.normal(size=(num_examples, settings.NUM_LABELS)).astype(np.float32)}


def text_examples(num_examples: int):
  """synthetic_text_batch as kd_jax's training examples (data.Examples) with cached teacher logits."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  arrays = synthetic_text_batch(num_examples)
  return data.Examples(inputs={"input_ids": arrays["input_ids"], "attention_mask": arrays["attention_mask"]},
                       label=arrays["label"], index=np.arange(num_examples, dtype=np.int32),
                       teacher=arrays["teacher_logits"])


def random_topk_logits(rng, shape: tuple, k: int, vocab: int):
  """A random top-k teacher cache of `shape` positions (losses.TopKLogits: values descending, float16; distinct ids:
  a random start and a stride of 1531, prime to the vocabulary sizes used here; a tail log-sum-exp of 5)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax.training import losses  # pylint: disable=g-import-not-at-top
  start = rng.integers(0, vocab, shape + (1,))
  return losses.TopKLogits(values=np.sort(rng.normal(size=shape + (k,)), axis=-1)[..., ::-1].astype(np.float16),
                           indices=((start + 1531 * np.arange(k)) % vocab).astype(np.int32),
                           tail_logsumexp=np.full(shape, 5.0, np.float32))


def causal_lm_examples(batch_size: int, length: int, prompt: int, k: int, vocab: int, seed: int = 0):
  """Random causal-LM training examples (data.Examples): `length` tokens, the first `prompt` a prompt, the rest a
  response whose tokens are labels, with a random top-k teacher cache over every position."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  input_ids = rng.integers(3, vocab, (batch_size, length)).astype(np.int32)
  label = np.full((batch_size, length), -1, np.int32)
  label[:, prompt - 1:-1] = input_ids[:, prompt:]
  return data.Examples(inputs={"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}, label=label,
                       index=np.arange(batch_size, dtype=np.int32), token_weights=(label >= 0).astype(np.float32),
                       teacher=random_topk_logits(rng, (batch_size, length), k, vocab))


def seq2seq_examples(batch_size: int, source_length: int, target_length: int, vocab: int, k: int | None,
                     seed: int = 0):
  """Random e-SNLI-shaped seq2seq examples (data.Examples as kd_jax/data/esnli.py builds them: sources, targets
  shifted right behind the start token 0 as decoder inputs, every target token real), with a random top-k teacher
  cache over the target positions when k is not None."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from kd_jax import data  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  input_ids = rng.integers(2, vocab, (batch_size, source_length)).astype(np.int32)
  label = rng.integers(2, vocab, (batch_size, target_length)).astype(np.int32)
  decoder_input_ids = np.concatenate([np.zeros_like(label[:, :1]), label[:, :-1]], axis=1)
  return data.Examples(
      inputs={"input_ids": input_ids, "attention_mask": np.ones_like(input_ids),
              "decoder_input_ids": decoder_input_ids},
      label=label, index=np.arange(batch_size, dtype=np.int32), token_weights=np.ones(label.shape, np.float32),
      teacher=None if k is None else random_topk_logits(rng, label.shape, k, vocab))
