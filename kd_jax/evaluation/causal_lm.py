"""The causal-LM evaluator (kd_jax/data/causal_lm.py): the seq2seq evaluator's two kinds of metrics on the reference
responses.

Teacher-forced, means over real response tokens: nll, perplexity = exp(nll), token_accuracy, and against the reference
(the teacher run beside the model) kl_to_teacher and agreement = top-1 token agreement with the teacher.
bits_per_byte = sum of the response tokens' NLL / ln 2 / the UTF-8 bytes of the response texts
(CausalLMInfo.response_bytes): the NLL of every response token (EOS or the template's end of turn included) per byte
of the reference text, comparable across tokenizers, where perplexities (per token) are not. With a teacher of
another tokenizer (distill.cross_tokenizer) the teacher is evaluated on its own tokenization and the students have
no kl_to_teacher or agreement.
Generated from the prompts (max data.max_target_length new tokens, at every generation temperature): rouge1, rouge2,
rougeL of the response against the reference (none for plain text, which has no prompts).
"""

import math

import numpy as np

from kd_jax.evaluation import metrics, seq2seq


class CausalLMEvaluator(seq2seq.Seq2SeqEvaluator):
  """Seq2SeqEvaluator's teacher-forced token metrics (plus perplexity and top-1 agreement) on the reference responses,
  and ROUGE of the responses generated from the prompts (see the module docstring). Its Reference is
  seq2seq.Reference with no parsed labels."""
  METRICS = ("perplexity", "bits_per_byte", "nll", "token_accuracy", "agreement", "kl_to_teacher", "rouge1", "rouge2",
             "rougeL")
  GENERATED = ("rouge1", "rouge2", "rougeL")

  def _token_metrics(self, model, params, split: str, reference: seq2seq.Reference | None = None,
                     teacher_inputs: bool = False) -> dict:
    info = self._task.causal_lm
    if info.teacher_tokenizer is not None:
      reference = None  # across tokenizers no token-level KL or agreement: the positions and vocabularies differ
    result = super()._token_metrics(model, params, split, reference, teacher_inputs)
    result["perplexity"] = float(np.exp(result["nll"]))
    examples = self._examples(split, teacher_inputs)
    response_bytes = (info.teacher_response_bytes if teacher_inputs and info.teacher_tokenizer is not None
                      else info.response_bytes)
    num_bytes = sum(response_bytes[i] for i in examples.index.tolist())
    result["bits_per_byte"] = bits_per_byte(result["nll"], float(np.sum(examples.token_weights)), num_bytes)
    if reference is not None:
      result["agreement"] = result.pop("token_agreement")
    return result

  def _generated(self, model, params, split: str, temperature: float, teacher_inputs: bool = False) -> list[str]:
    info = self._task.causal_lm
    if not info.has_prompts:
      return []
    inputs = self._examples(split, teacher_inputs).inputs
    tokenizer = info.teacher_tokenizer if teacher_inputs and info.teacher_tokenizer is not None else info.tokenizer
    tokens = seq2seq.generate_tokens(model, params, {"input_ids": inputs["prompt_ids"],
                                                     "attention_mask": inputs["prompt_mask"]},
                                     mesh=self._mesh, batch_size=self._batch_size, max_new_tokens=info.max_new_tokens,
                                     temperature=temperature, top_k=self._generation.top_k,
                                     top_p=self._generation.top_p, seed=self._seed,
                                     eos_token_ids=(info.teacher_eos_token_ids if teacher_inputs
                                                    and info.teacher_tokenizer is not None else info.eos_token_ids))
    return tokenizer.batch_decode(tokens, skip_special_tokens=True)

  def _model_simulator(self, model, params) -> None:
    """No labels to simulate: no faithfulness metrics."""
    del model, params

  def _text_metrics(self, texts: list[str], split: str, teacher_labels, model_simulator=None) -> tuple[dict, None]:
    """ROUGE of the generated responses against the references (nothing for plain text)."""
    del teacher_labels, model_simulator  # top-1 agreement is teacher-forced (_token_metrics)
    if not texts:
      return {}, None
    references = [self._task.causal_lm.references[i] for i in self._splits[split].index.tolist()]
    return metrics.rouge_scores([text.strip() for text in texts], references), None


def bits_per_byte(mean_nll: float, num_tokens: float, num_bytes: int) -> float:
  """mean_nll * num_tokens / ln 2 / num_bytes: a mean token NLL in nats over num_tokens tokens, as bits per byte of
  the text they stand for."""
  return mean_nll * num_tokens / math.log(2) / num_bytes
