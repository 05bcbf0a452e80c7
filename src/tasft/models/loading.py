"""Load causal LMs and tokenizers by alias, local path or Hugging Face id, with one-line errors before any weights
load; optional LoRA via PEFT; the token-embedding table the semantic penalties use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..config import LoraSettings
from ..errors import TasftError
from .offline import ALIASES, resolve_model

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _not_found(name: str, exc: Exception) -> TasftError:
    known = ", ".join(ALIASES)
    offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return TasftError(
        f"unknown model '{name}': not an alias ({known}), not a local model directory, and not loadable "
        f"from the Hugging Face Hub{offline} [{first[:160]}]"
    )


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists()


_REACHABLE: set[str] = set()


def check_available(name: str) -> None:
    """Fail in under a second, with one line, for a model that cannot load: a local path that does not exist, or a
    hub id that is neither in the local Hugging Face cache nor reachable (transformers would retry for ~a minute,
    printing a line per attempt). An alias, an existing directory or a cached / reachable hub id passes."""
    if name in _REACHABLE or name.lower() in ALIASES or Path(name).expanduser().exists():
        return
    if _looks_local(name):
        raise TasftError(f"model path '{name}' does not exist")
    from huggingface_hub import model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    known = ", ".join(ALIASES)
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except HFValidationError:
        raise TasftError(f"unknown model '{name}': not an alias ({known}), not a local model directory, and not a "
                         "valid Hugging Face model id") from None
    if isinstance(cached, str):
        _REACHABLE.add(name)
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise TasftError(f"unknown model '{name}': not an alias ({known}), not a local model directory, and not in "
                         "the local Hugging Face cache (offline: HF_HUB_OFFLINE is set)")
    try:
        model_info(name, timeout=10)
    except GatedRepoError:
        pass  # gated: from_pretrained uses the user's token, or says why it cannot
    except RepositoryNotFoundError:
        raise TasftError(f"unknown model '{name}': not an alias ({known}), not a local model directory, and not on "
                         "the Hugging Face Hub (a private model needs `hf auth login`)") from None
    except Exception as exc:  # noqa: BLE001 - any network failure: one line, not a minute of retries
        raise TasftError(f"model '{name}' is not in the local Hugging Face cache and the Hub cannot be reached "
                         f"({exc.__class__.__name__}); pass a local model directory or go online") from None
    _REACHABLE.add(name)


def check_loadable(name: str, trust_remote_code: bool = False) -> None:
    """Cheap checks before a run writes anything (no weights are read): the model is available
    (:func:`check_available`), and for a local directory its config parses and every safetensors header reads —
    corrupt weights are a one-line error now, not a traceback after the run has started."""
    from safetensors import SafetensorError, safe_open
    from transformers import AutoConfig

    check_available(name)
    path = resolve_model(name)
    directory = Path(path).expanduser()
    if not directory.is_dir():
        return  # a hub id: in the cache or reachable
    base = _adapter_base(path)
    try:
        if base is None:
            AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        for weights in sorted(directory.glob("*.safetensors")):
            with safe_open(str(weights), framework="pt"):
                pass
    except (OSError, ValueError, SafetensorError) as exc:
        raise _load_error(name, path, exc) from None
    if base is not None:
        check_loadable(base, trust_remote_code)


def _load_error(name: str, path: str, exc: Exception) -> TasftError:
    """One line for a model or tokenizer that exists but does not load (corrupt weights, malformed config)."""
    if not Path(path).expanduser().is_dir():
        return _not_found(name, exc)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return TasftError(f"model directory '{name}' does not load: {first[:200]}")


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """Tokenizer with a pad token (eos, else unk) and right padding (generation switches to left)."""
    from transformers import AutoTokenizer

    check_available(name)
    path = resolve_model(name)
    base = _adapter_base(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base or path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name, path, exc) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise TasftError(f"tokenizer of '{name}' has no pad, eos or unk token to pad with")
    tokenizer.padding_side = "right"
    return tokenizer


def _adapter_base(path: str) -> str | None:
    """For a PEFT adapter directory, the base model it was trained from (resolved), else None."""
    cfg = Path(path).expanduser() / "adapter_config.json"
    if not cfg.is_file():
        return None
    import json

    base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    if not base:
        raise TasftError(f"{cfg}: adapter config names no base model")
    return resolve_model(base)


def load_model(name: str, dtype: str = "float32", trust_remote_code: bool = False):
    """Causal LM from an alias, local directory (full model or PEFT adapter) or hub id, in eval mode."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    check_available(name)
    path = resolve_model(name)
    torch_dtype = _DTYPES[dtype]
    base = _adapter_base(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base or path, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
        if base is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, path)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise _load_error(name, path, exc) from None
    model.eval()
    return model


def check_fit(name: str, tokenizer, lora: LoraSettings | None, trust_remote_code: bool = False) -> None:
    """What would fail only once a run has started, checked before it writes anything — on the model's config and a
    skeleton built on the meta device (no weights read, no memory): the tokenizer's ids fit the model's vocabulary,
    and a LoRA adapter's ``target_modules`` exist and its rank is at most the width of the layers it adapts."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model(name)
    if _adapter_base(path) is not None:
        return  # a trained adapter: its base and modules were checked when it was made
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return  # check_loadable has named what is wrong with a local directory; a hub id is checked on loading
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise TasftError(f"model '{name}': its tokenizer has {len(tokenizer)} tokens, its vocabulary only {vocab}: "
                         "the two do not belong together")
    if lora is None:
        return
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, RuntimeError):
        return  # an architecture that cannot be built empty: PEFT checks the adapter when the run starts
    adapted = add_lora(skeleton, lora)
    widths = [(min(m.in_features, m.out_features), n) for n, m in adapted.named_modules()
              if hasattr(m, "lora_A") and isinstance(getattr(m, "in_features", None), int)]
    if widths and lora.r > min(widths)[0]:
        width, where = min(widths)
        raise TasftError(f"lora.r: {lora.r} is above the width of the layers it adapts (the narrowest, {where}, is "
                         f"{width} wide): a rank can be at most that")


def add_lora(model, settings: LoraSettings):
    """Wrap ``model`` with a trainable LoRA adapter (PEFT); the base weights stay frozen."""
    from peft import LoraConfig, get_peft_model

    target = settings.target_modules
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise TasftError(f"lora.target_modules: {str(exc).splitlines()[0][:200]}") from None


def token_embeddings(model, source: str = "input") -> torch.Tensor:
    """A detached fp32 copy of the (V, d) input embedding table or output (LM-head) weight matrix."""
    layer = model.get_input_embeddings() if source == "input" else model.get_output_embeddings()
    if layer is None:
        raise TasftError(f"embedding_source: model has no {source} embedding matrix")
    return layer.weight.detach().float().clone()
