"""Models: the offline aliases and their GGUF cache (:mod:`.offline`), and loading by alias, local path or Hugging
Face id with optional LoRA (:mod:`.loading`)."""

from .loading import add_lora, check_available, check_fit, check_loadable, load_model, load_tokenizer, token_embeddings
from .offline import ALIASES, WEIGHT_FILES, GgufAlias, cache_dir, gguf_directory, model_fingerprint, resolve_model

__all__ = ["ALIASES", "WEIGHT_FILES", "GgufAlias", "add_lora", "cache_dir", "check_available", "check_fit",
           "check_loadable", "gguf_directory", "load_model", "load_tokenizer", "model_fingerprint", "resolve_model",
           "token_embeddings"]
