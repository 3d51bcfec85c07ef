"""FLOPs of a training step counted from a model's configuration: matmuls only, backward = 2 x forward."""


def transformer_train_flops_per_example(dims: dict, length: int, num_labels: int) -> float:
  """3 x forward matmul FLOPs of one example (backward = 2 x forward): per layer the Q, K, V, output projections
  (4 * 2 L H^2), attention scores and mixing (2 * 2 L^2 H), the FFN (2 * 2 L H F); the classifier head on the first
  token (2 H^2 + 2 H C). Embeddings, norms, softmax and activations are not counted."""
  hidden, ffn = dims["dim"], dims["hidden_dim"]
  per_layer = 4 * 2 * length * hidden**2 + 2 * 2 * length**2 * hidden + 2 * 2 * length * hidden * ffn
  forward = dims["n_layers"] * per_layer + 2 * hidden**2 + 2 * hidden * num_labels
  return 3.0 * forward


def t5_train_flops_per_example(dims: dict, source_length: int, target_length: int) -> float:
  """3 x forward matmul FLOPs of one seq2seq example of a T5 (transformers T5Config fields; S source and T target
  tokens, D = d_model, F = d_ff, A = num_heads * d_kv, V = vocab_size). Per encoder layer: Q, K, V, O projections
  (4 * 2 S D A), attention scores and mixing (2 * 2 S^2 A), the FFN (m * 2 S D F, m = 3 matmuls when gated as in
  T5 v1.1 / FLAN-T5, else 2). Per decoder layer: the same on T tokens plus cross-attention (Q, O: 2 * 2 T D A; K, V
  of the S encoder states: 2 * 2 S D A; scores and mixing: 2 * 2 T S A). The LM head: 2 T D V. Embeddings, norms,
  the position bias, softmax and activations are not counted."""
  d_model, inner, ffn = dims["d_model"], dims["num_heads"] * dims["d_kv"], dims["d_ff"]
  ffn_matmuls = 3 if dims.get("feed_forward_proj", "relu").startswith("gated") else 2

  def attention_and_ffn(length):
    return 4 * 2 * length * d_model * inner + 2 * 2 * length**2 * inner + ffn_matmuls * 2 * length * d_model * ffn

  source, target = source_length, target_length
  cross = 2 * 2 * target * d_model * inner + 2 * 2 * source * d_model * inner + 2 * 2 * target * source * inner
  forward = (dims["num_layers"] * attention_and_ffn(source)
             + dims.get("num_decoder_layers", dims["num_layers"]) * (attention_and_ffn(target) + cross)
             + 2 * target * d_model * dims["vocab_size"])
  return 3.0 * forward


def llama_train_flops_per_example(dims: dict, length: int) -> float:
  """3 x forward matmul FLOPs of one causal-LM sequence of L tokens of a Llama (transformers LlamaConfig fields;
  H = hidden_size, I = intermediate_size, Q / K = query / key-value heads of head_dim E, V = vocab_size). Per layer:
  the Q and O projections (2 * 2 L H Q E), K and V (2 * 2 L H K E), scores and mixing over every key, the causally
  masked ones too, as the step computes them (2 * 2 L^2 Q E), the gated MLP (3 * 2 L H I). The LM head over every
  position: 2 L H V. Embeddings, norms, rotary embeddings, softmax and activations are not counted."""
  hidden, heads, kv_heads = dims["hidden_size"], dims["num_attention_heads"], dims["num_key_value_heads"]
  head_dim = dims.get("head_dim") or hidden // heads
  per_layer = (2 * 2 * length * hidden * heads * head_dim + 2 * 2 * length * hidden * kv_heads * head_dim
               + 2 * 2 * length**2 * heads * head_dim + 3 * 2 * length * hidden * dims["intermediate_size"])
  return 3.0 * (dims["num_hidden_layers"] * per_layer + 2 * length * hidden * dims["vocab_size"])
