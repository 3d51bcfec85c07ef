"""Hugging Face models in Flax: BERT, RoBERTa, DistilBERT, T5 / FLAN-T5 and the Llama family (Llama, Mistral, Qwen2,
Qwen3, SmolLM2) loaded from HF checkpoints (Llama also from llama.cpp GGUF files).

transformers 5 has no Flax models, so kd_jax owns the Flax (linen) code and reads checkpoints itself:
transformers for configs (and tokenizers, in the data pipeline), huggingface_hub for downloads, safetensors for
weights. `from_pretrained` is the entry point; `create` is the model registry's hook (`name="hf"`).
"""

from kd_jax.models.hf.generation import generate
from kd_jax.models.hf.generation import generated_mask
from kd_jax.models.hf.pretrained import create
from kd_jax.models.hf.pretrained import from_pretrained
from kd_jax.models.hf.pretrained import load_tokenizer
from kd_jax.models.hf.t5 import shift_right

__all__ = ["create", "from_pretrained", "generate", "generated_mask", "load_tokenizer", "shift_right"]
