"""Run configuration types: the dataclasses of a run's settings (each default defined once, here) and their coercion
from and to YAML values (:func:`from_dict`, :func:`to_dict`). The checks every run gets: :mod:`tasft.config_checks`;
reading files, ``--set`` overrides, the method's settings block and the method's own checks: :mod:`tasft.run_config`.

Every error is a :class:`TasftError` with a one-line message that names the offending key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from .errors import TasftError

#: the model every command uses when none is named (an offline alias: tasft.models.ALIASES)
DEFAULT_MODEL = "smollm2-135m-instruct"
#: rows per forward pass of the teacher-forced measurements (D_h log-probs, held-out and reference NLL)
MEASURE_BATCH_SIZE = 8


@dataclass
class GenerationSettings:
    """Decoding settings; ``do_sample=False`` is greedy, and sampling is reproducible for a ``seed``."""

    max_new_tokens: int = 128
    batch_size: int = 64  # prompts per batch (bench/bench_generate.py --batch-sweep measures the choice)
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    max_prompt_tokens: int = 1024
    # processes sharing the batches on CPU, one torch thread each (Linux; the same outputs as 1): on 2 cores,
    # 2 workers do ~1.7x the work of one 2-thread process (tasft.generation.workers); 1 = this process only
    workers: int = 1

    def check(self) -> GenerationSettings:
        """One-line errors for values no decoder accepts (before a model is loaded or a file is written)."""
        for name in ("max_new_tokens", "batch_size", "max_prompt_tokens", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TasftError(f"--{name.replace('_', '-')}: must be an integer >= 1, got {value!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise TasftError(f"--temperature: must be a finite number > 0, got {self.temperature}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise TasftError(f"--top-p: must be in (0, 1], got {self.top_p}")
        return self


@dataclass
class DataSource:
    """Where a data set comes from and which part of it to use.

    ``path``: a JSON/JSONL/CSV file, ``demo:NAME`` for the packaged demo files, or ``hf:ID[:SPLIT]``.
    ``split``: ``all``, or the deterministic ``train`` / ``heldout`` partition (hash of the prompt).
    ``exclude``: files or directories whose prompts are removed (deduplication against evaluation suites).
    ``audit``: a prompt audit CSV (``prompt_id,verdict``; ``tasft audit``'s format) — records whose verdict is in
    ``audit_drop`` (default: ``benign``) are removed (a harvested D_h without its answers to benign requests).
    ``harvest``: for the harmful set, generate missing responses from the starting model itself.
    ``missing_response``: ``error`` (default) or ``skip`` records whose response is empty.
    """

    path: str
    split: Literal["all", "train", "heldout"] = "all"
    heldout_fraction: float = 0.2
    limit: int | None = None
    shuffle_seed: int | None = None
    exclude: list[str] = field(default_factory=list)
    audit: str | None = None
    audit_drop: list[str] = field(default_factory=lambda: ["benign"])
    harvest: bool = False
    missing_response: Literal["error", "skip"] = "error"


@dataclass
class LoraSettings:
    """PEFT LoRA adapter settings; ``target_modules`` may be a list of names or ``all-linear``."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


@dataclass
class ContrastiveSettings:
    """The contrastive augmented data set: for every D_h prompt also a *safe* response in D_u — the STL safety
    answer when the prompt is in ``safety_data``, else one written by ``generator`` (default: the starting model)
    under ``system_prompt``; ``source: generated`` always writes them with the generator (the paper's
    LLM-generated counterparts). Works with every method."""

    enabled: bool = False
    source: str = "auto"
    safety_data: str | None = None
    generator: str | None = None
    system_prompt: str = (
        "You are a helpful and harmless assistant. When a request is harmful, unethical, dangerous or illegal, "
        "decline it in one or two sentences and explain why."
    )
    max_new_tokens: int = GenerationSettings.max_new_tokens


@dataclass
class GuardSettings:
    """The divergence guard (:mod:`tasft.guard`): a non-finite loss, gradient norm or weight always stops the run;
    so does a gradient norm <= ``min_grad_norm`` for ``collapse_steps`` consecutive steps (null: no collapse check)."""

    collapse_steps: int | None = 3
    min_grad_norm: float = 0.0


@dataclass
class TrainConfig:
    """One training run: the model, the data, the loop's settings, and ``method`` (a name registered in
    :data:`tasft.methods.METHODS`) with its ``method_settings``."""

    model: str = DEFAULT_MODEL
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # how the weights are stored (and the master copy)
    # the compute: fp32, or mixed precision — bf16 / fp16 autocast over the stored weights (the Trainer's bf16 /
    # fp16; bf16 also on CPU, fp16 on CUDA only); with dtype float32 the master weights and the optimizer stay fp32
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    method: str = "ta-sft"
    # the settings of ``method`` (its own block in YAML: ``ta_sft:``, ``stl:``, ``kto:``, ...; tasft.methods);
    # None: the method's defaults, filled in by validation
    method_settings: Any = None
    # rows per chunk of the fused LM-head + loss (tasft.objectives.fused) for the D_u NLL and the one-hot penalties;
    # null = the plain full-logits path (docs/PERFORMANCE.md)
    loss_chunk_size: int | None = 256
    # DDP's per-step search for parameters without a gradient; null = off for sft/stl/ta-sft on dense models,
    # transformers' default for kto and mixture-of-experts models (docs/PERFORMANCE.md)
    ddp_find_unused_parameters: bool | None = None
    train_data: DataSource = field(default_factory=lambda: DataSource("demo:benign.jsonl"))
    harmful_data: DataSource | None = field(
        default_factory=lambda: DataSource("demo:toxic_prompts.jsonl", harvest=True)
    )
    eval_data: DataSource | None = None
    max_length: int = 256
    long_prompt: Literal["error", "skip"] = "error"
    harvest_max_new_tokens: int = GenerationSettings.max_new_tokens  # D_h harvested in the run (as tasft harvest)
    batch_size: int = 4
    harmful_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_steps: int = 100
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: str = "constant"
    max_grad_norm: float = 1.0
    seed: int = 0
    logging_steps: int = 5
    save_steps: int = 50
    save_total_limit: int = 2
    # the checkpoints exist to resume an interrupted run (each holds the weights and the optimizer state, 3x the
    # model's size in fp32): deleted once the final model is written, unless true (to continue training it later)
    keep_checkpoints: bool = False
    eval_batch_size: int = MEASURE_BATCH_SIZE
    measure: bool = True
    # measure the held-out D_u NLL on the λ controller's rows (the last 16 of eval_data) at step 0 and every
    # logging step into heldout_nll.json: the step-by-step reference a ta_sft.lambda_reference_run reads
    log_heldout_nll: bool = False
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    # any other field of transformers.TrainingArguments (gradient_checkpointing, optim, adam_beta2, ...), passed
    # through; a field tasft sets from its own settings (OWNED_TRAINING_ARGS) is an error naming that setting
    training_args: dict = field(default_factory=dict)
    lora: LoraSettings | None = None
    contrastive: ContrastiveSettings = field(default_factory=ContrastiveSettings)
    guard: GuardSettings = field(default_factory=GuardSettings)
    data_dir: str | None = None
    output_dir: str = "runs/demo"


# YAML key -> field name where Python forbids the natural name.
_ALIASES = {"lambda": "lambda_"}
_REVERSE_ALIASES = {v: k for k, v in _ALIASES.items()}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` or raise a one-line error naming ``where``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except TasftError as exc:
                errors.append(str(exc))
        raise TasftError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(map(str, get_args(tp)))
            raise TasftError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is list:
        (item_tp,) = get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise TasftError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and tp is DataSource:
            value = {"path": value}
        if not isinstance(value, dict):
            raise TasftError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise TasftError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TasftError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TasftError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TasftError(f"{where}: expected a string, got {value!r}")
        return value
    return value


#: fields set by tasft itself, never a YAML key (``method_settings`` comes from the method's own block)
_NOT_KEYS = {"method_settings"}


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a YAML mapping, coercing each value to its annotation; an unknown key is a
    one-line error with the closest known key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - _NOT_KEYS
    kwargs = {}
    for key, value in data.items():
        name = _ALIASES.get(key, key)
        if name not in names:
            public = sorted(_REVERSE_ALIASES.get(n, n) for n in names)
            hint = difflib.get_close_matches(str(key), public, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise TasftError(f"{where}: unknown key '{key}'{suggestion}")
        kwargs[name] = _coerce(value, hints[name], f"{where}.{key}" if where != "config" else key)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise TasftError(f"{where}: missing required key '{missing[0]}'")
    return cls(**kwargs)


def yaml_key(name: str) -> str:
    """The YAML key of a settings field (``lambda`` for ``lambda_``): what an error message names."""
    return _REVERSE_ALIASES.get(name, name)


def to_dict(cfg: Any) -> dict:
    """Plain dict of a config dataclass, with YAML key names (``lambda``, not ``lambda_``); a run's method settings
    go under their own block key (their class's ``BLOCK``)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "method_settings":
            if value is not None:
                out[type(value).BLOCK] = to_dict(value)
            continue
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        out[_REVERSE_ALIASES.get(f.name, f.name)] = value
    return out
