"""Run configuration: dataclasses, YAML loading, ``--set key=value`` overrides and validation.

Every error is a :class:`TasftError` with a one-line message that names the offending key, file or line.
Relative data paths inside a YAML file are resolved against the YAML file's directory; paths given with
``--set`` are taken relative to the current directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .errors import TasftError

METHODS = ("sft", "ta-sft", "stl", "kto")


@dataclass
class DataSource:
    """Where a data set comes from and which part of it to use.

    ``path``: a JSON/JSONL/CSV file, ``demo:NAME`` for the packaged demo files, or ``hf:ID[:SPLIT]``.
    ``split``: ``all``, or the deterministic ``train`` / ``heldout`` partition (hash of the prompt).
    ``exclude``: files or directories whose prompts are removed (deduplication against evaluation suites).
    ``harvest``: for the harmful set, generate missing responses from the starting model itself.
    ``missing_response``: ``error`` (default) or ``skip`` records whose response is empty.
    """

    path: str
    split: Literal["all", "train", "heldout"] = "all"
    heldout_fraction: float = 0.2
    limit: int | None = None
    shuffle_seed: int | None = None
    exclude: list[str] = field(default_factory=list)
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
class StlSettings:
    """``method: stl`` (Safety-Tuned LLaMAs): D_u plus ``examples`` (harmful instruction → safe response) pairs drawn
    with ``seed`` (default: the run's seed) from ``data`` (default: the STL safety-only file in the shared data),
    never from a prompt of an evaluation suite. STL released mixtures with 100, 300, 500, 1000, 1500 and 2000."""

    examples: int = 100
    data: str | None = None
    seed: int | None = None


@dataclass
class KtoSettings:
    """``method: kto`` (TRL's KTOTrainer): D_u desirable, D_h undesirable, reference = the starting model.
    A weight left null is set so that desirable_weight·n_desirable = undesirable_weight·n_undesirable."""

    beta: float = 0.1
    desirable_weight: float | None = None
    undesirable_weight: float | None = None


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
    max_new_tokens: int = 128


@dataclass
class GuardSettings:
    """The divergence guard (:mod:`tasft.guard`): a non-finite loss, gradient norm or weight always stops the run;
    so does a gradient norm <= ``min_grad_norm`` for ``collapse_steps`` consecutive steps (null: no collapse check)."""

    collapse_steps: int | None = 3
    min_grad_norm: float = 0.0


@dataclass
class TrainConfig:
    """One training run: ``sft`` (NLL on D_u), ``ta-sft`` (+ ``lambda · penalty`` on D_h), ``stl`` (D_u + safe
    refusals) or ``kto`` (TRL KTO with D_u desirable, D_h undesirable)."""

    model: str = "smollm2-135m-instruct"
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    method: str = "ta-sft"
    penalty: str = "emd"
    lambda_: float = 1.0
    bound_constant: Literal["paper", "tight"] = "tight"
    target: Literal["onehot", "soft"] = "onehot"
    soft_top_k: int = 64
    embedding_source: Literal["input", "output"] = "input"
    penalty_first_tokens: int | None = None
    # rows per chunk of the fused LM-head + loss (tasft.chunked_penalty) for the D_u NLL and the one-hot penalties;
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
    harvest_max_new_tokens: int = 96
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
    # false: delete the checkpoints once the final model is written (they exist to resume an interrupted run;
    # each holds the weights and the optimizer state, 3x the model's size in fp32)
    keep_checkpoints: bool = True
    eval_batch_size: int = 8
    measure: bool = True
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    lora: LoraSettings | None = None
    stl: StlSettings = field(default_factory=StlSettings)
    kto: KtoSettings = field(default_factory=KtoSettings)
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
        return _from_dict(tp, value, where)
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


def _from_dict(cls: type, data: dict, where: str = "config") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
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


def to_dict(cfg: Any) -> dict:
    """Plain dict of a config dataclass, with YAML key names (``lambda``, not ``lambda_``)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        out[_REVERSE_ALIASES.get(f.name, f.name)] = value
    return out


def _check_finite(node: Any, where: str = "") -> None:
    """Every number in a config must be finite: ``nan`` or ``inf`` (YAML ``.inf``) is a one-line error."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{where}{_REVERSE_ALIASES.get(f.name, f.name)}"
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise TasftError(f"{key}: must be a finite number, got {value}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check value ranges and combinations; raise a one-line :class:`TasftError` on the first problem."""
    if cfg.method not in METHODS:
        raise TasftError(f"method: unknown method '{cfg.method}' (choose from {', '.join(METHODS)})")
    from .objectives import PENALTIES

    if cfg.penalty not in PENALTIES:
        raise TasftError(f"penalty: unknown penalty '{cfg.penalty}' (choose from {', '.join(PENALTIES)})")
    _check_finite(cfg)
    if not cfg.output_dir.strip():
        raise TasftError("output_dir: must name a directory, got an empty string")
    if cfg.lambda_ < 0:
        raise TasftError(f"lambda: must be >= 0, got {cfg.lambda_}")
    for name in ("warmup_steps", "max_grad_norm", "weight_decay"):
        if getattr(cfg, name) < 0:
            raise TasftError(f"{name}: must be >= 0, got {getattr(cfg, name)}")
    if cfg.guard.collapse_steps is not None and cfg.guard.collapse_steps < 1:
        raise TasftError(f"guard.collapse_steps: must be >= 1 or null, got {cfg.guard.collapse_steps}")
    if cfg.guard.min_grad_norm < 0:
        raise TasftError(f"guard.min_grad_norm: must be >= 0, got {cfg.guard.min_grad_norm}")
    if cfg.save_total_limit < 1:
        raise TasftError(f"save_total_limit: must be >= 1, got {cfg.save_total_limit}")
    positive = ("max_length", "batch_size", "harmful_batch_size", "gradient_accumulation_steps", "max_steps",
                "logging_steps", "save_steps", "eval_batch_size", "soft_top_k", "harvest_max_new_tokens")
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise TasftError(f"{name}: must be > 0, got {getattr(cfg, name)}")
    if cfg.learning_rate <= 0:
        raise TasftError(f"learning_rate: must be > 0, got {cfg.learning_rate}")
    if cfg.penalty_first_tokens is not None and cfg.penalty_first_tokens <= 0:
        raise TasftError(f"penalty_first_tokens: must be > 0 or null, got {cfg.penalty_first_tokens}")
    if cfg.loss_chunk_size is not None and cfg.loss_chunk_size <= 0:
        raise TasftError(f"loss_chunk_size: must be > 0 or null, got {cfg.loss_chunk_size}")
    if cfg.method in ("ta-sft", "kto") and cfg.harmful_data is None:
        raise TasftError(f"harmful_data: method {cfg.method} needs a harmful data set (D_h)")
    if cfg.contrastive.enabled and cfg.harmful_data is None:
        raise TasftError("contrastive.enabled: the contrastive data option needs a harmful data set (D_h)")
    if cfg.stl.examples <= 0:
        raise TasftError(f"stl.examples: must be > 0, got {cfg.stl.examples}")
    if cfg.kto.beta <= 0:
        raise TasftError(f"kto.beta: must be > 0, got {cfg.kto.beta}")
    for name in ("desirable_weight", "undesirable_weight"):
        value = getattr(cfg.kto, name)
        if value is not None and value <= 0:
            raise TasftError(f"kto.{name}: must be > 0 or null, got {value}")
    if cfg.method == "kto" and cfg.batch_size + cfg.harmful_batch_size < 2:
        raise TasftError("batch_size: kto needs at least 2 examples per batch (batch_size + harmful_batch_size)")
    if cfg.contrastive.source not in ("auto", "generated"):
        raise TasftError(f"contrastive.source: must be auto or generated, got '{cfg.contrastive.source}'")
    if cfg.contrastive.max_new_tokens <= 0:
        raise TasftError(f"contrastive.max_new_tokens: must be > 0, got {cfg.contrastive.max_new_tokens}")
    if cfg.target == "soft" and not PENALTIES[cfg.penalty].soft_targets:
        raise TasftError(f"target: soft targets apply to emd/emd_lb, not to penalty '{cfg.penalty}'")
    for name in ("train_data", "harmful_data", "eval_data"):
        src = getattr(cfg, name)
        if src is None:
            continue
        if not 0 < src.heldout_fraction < 1:
            raise TasftError(f"{name}.heldout_fraction: must be in (0, 1), got {src.heldout_fraction}")
        if src.limit is not None and src.limit <= 0:
            raise TasftError(f"{name}.limit: must be > 0, got {src.limit}")
    if cfg.lora is not None and cfg.lora.r <= 0:
        raise TasftError(f"lora.r: must be > 0, got {cfg.lora.r}")
    return cfg


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TasftError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TasftError(f"{path}: cannot read config file ({exc.__class__.__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise TasftError(f"{path}{line}: malformed YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TasftError(f"{path}: a config file must be a YAML mapping of keys to values")
    return data


def _resolve_paths(data: dict, base: Path) -> dict:
    """Make relative data paths in a YAML mapping relative to the YAML file's directory."""

    def fix(p: str) -> str:
        if ":" in p.split("/")[0] or Path(p).is_absolute():
            return p
        return str((base / p).resolve())

    for key, sub in (("data_dir", None), ("stl", "data"), ("contrastive", "safety_data")):
        node = data.get(key)
        if sub is None and isinstance(node, str):
            data[key] = fix(node)
        elif sub is not None and isinstance(node, dict) and isinstance(node.get(sub), str):
            node[sub] = fix(node[sub])
    for key in ("train_data", "harmful_data", "eval_data"):
        src = data.get(key)
        if isinstance(src, str):
            data[key] = fix(src)
        elif isinstance(src, dict):
            if isinstance(src.get("path"), str):
                src["path"] = fix(src["path"])
            if isinstance(src.get("exclude"), list):
                src["exclude"] = [fix(p) if isinstance(p, str) else p for p in src["exclude"]]
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` overrides (dotted keys for nested settings; values parsed as YAML scalars)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TasftError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str):
                child = {"path": child}
            if child is None and node is data and isinstance(_DEFAULTS.get(part), dict):
                child = dict(_DEFAULTS[part])
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise TasftError(f"--set {key}: '{part}' is not a nested setting")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


_DEFAULTS = to_dict(TrainConfig())


def _merge(base: dict, child: dict) -> dict:
    """``child`` over ``base``; nested mappings are merged key by key."""
    out = dict(base)
    for key, value in child.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A YAML config with its relative paths resolved; ``base: OTHER.yaml`` (relative to this file) is read first
    and this file's keys override it."""
    resolved = path.resolve()
    if resolved in _seen:
        raise TasftError(f"{path}: 'base' files include each other in a cycle")
    data = _resolve_paths(_read_yaml(path), resolved.parent)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise TasftError(f"{path}: base: expected a file name, got {base!r}")
    return _merge(read_config_file(path.parent / base, (*_seen, resolved)), data)


def load_train_config(path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML file (optional; its ``base:`` first), apply overrides, build and validate a :class:`TrainConfig`."""
    data: dict = {}
    if path is not None:
        data = read_config_file(Path(path))
    data = apply_overrides(data, overrides or [])
    return validate(_from_dict(TrainConfig, data))
