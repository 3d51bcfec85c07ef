"""The causal-LM evaluator (kd_jax/data/causal_lm.py): the seq2seq evaluator's two kinds of metrics on the reference
responses.

Teacher-forced, means over real response tokens: nll, perplexity = exp(nll), token_accuracy, and against the reference
(the teacher run beside the model) kl_to_teacher and agreement = top-1 token agreement with the teacher.
Generated from the prompts (max data.max_target_length new tokens, at every generation temperature): rouge1, rouge2,
rougeL of the response against the reference (none for plain text, which has no prompts).
"""

import numpy as np

from kd_jax.evaluation import metrics, seq2seq


class CausalLMEvaluator(seq2seq.Seq2SeqEvaluator):
  """Seq2SeqEvaluator's teacher-forced token metrics (plus perplexity and top-1 agreement) on the reference responses,
  and ROUGE of the responses generated from the prompts (see the module docstring). Its Reference is
  seq2seq.Reference with no parsed labels."""
  METRICS = ("perplexity", "nll", "token_accuracy", "agreement", "kl_to_teacher", "rouge1", "rouge2", "rougeL")
  GENERATED = ("rouge1", "rouge2", "rougeL")

  def _token_metrics(self, model, params, split: str, reference: seq2seq.Reference | None = None) -> dict:
    result = super()._token_metrics(model, params, split, reference)
    result["perplexity"] = float(np.exp(result["nll"]))
    if reference is not None:
      result["agreement"] = result.pop("token_agreement")
    return result

  def _generated(self, model, params, split: str, temperature: float) -> list[str]:
    info = self._task.causal_lm
    if not info.has_prompts:
      return []
    inputs = self._splits[split].inputs
    tokens = seq2seq.generate_tokens(model, params, {"input_ids": inputs["prompt_ids"],
                                                     "attention_mask": inputs["prompt_mask"]},
                                     mesh=self._mesh, batch_size=self._batch_size, max_new_tokens=info.max_new_tokens,
                                     temperature=temperature, top_k=self._generation.top_k,
                                     top_p=self._generation.top_p, seed=self._seed, eos_token_ids=info.eos_token_ids)
    return info.tokenizer.batch_decode(tokens, skip_special_tokens=True)

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
