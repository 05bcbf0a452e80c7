"""The checks every run gets, whatever its method (:func:`check_core`): finite numbers, ranges and sizes, data
sources, the ``training_args:`` pass-through — and :func:`positive`, which the methods' own checks use. Every error
is a :class:`TasftError` with a one-line message that names the offending key."""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

from .config import TrainConfig, yaml_key
from .errors import TasftError


def check_finite(node: Any, where: str = "") -> None:
    """Every number in a config must be finite: ``nan`` or ``inf`` (YAML ``.inf``) is a one-line error."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{where}{yaml_key(f.name)}"
        if f.name == "method_settings" and value is not None:
            check_finite(value, f"{type(value).BLOCK}.")
        elif dataclasses.is_dataclass(value):
            check_finite(value, f"{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise TasftError(f"{key}: must be a finite number, got {value}")


#: TrainingArguments fields tasft sets itself → the tasft setting that decides them (None: its loop needs its own
#: value); ``training_args:`` may not set them
OWNED_TRAINING_ARGS: dict[str, str | None] = {
    "output_dir": "output_dir", "max_steps": "max_steps", "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate", "weight_decay": "weight_decay", "warmup_steps": "warmup_steps",
    "lr_scheduler_type": "lr_scheduler", "max_grad_norm": "max_grad_norm", "logging_steps": "logging_steps",
    "save_strategy": "save_steps", "save_steps": "save_steps", "save_total_limit": "save_total_limit",
    "seed": "seed", "data_seed": "seed", "report_to": "report_to", "bf16": "precision", "fp16": "precision",
    "ddp_find_unused_parameters": "ddp_find_unused_parameters", "per_device_train_batch_size": "batch_size",
    "num_train_epochs": "max_steps",  # a run is as long as max_steps: epochs would have no effect
    "remove_unused_columns": None, "dataloader_num_workers": None, "dataloader_pin_memory": None,
}


def check_training_args(block: dict) -> None:
    """``training_args:`` keys must be ``TrainingArguments`` fields that tasft does not set itself (one-line errors
    naming the closest field, or the tasft setting to use instead)."""
    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    for key in block:
        if key in OWNED_TRAINING_ARGS:
            owner = OWNED_TRAINING_ARGS[key]
            raise TasftError(f"training_args.{key}: tasft sets it " + (
                f"from its own setting — set {owner} instead" if owner else "itself (its training loop needs it)"))
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1)
            raise TasftError(f"training_args.{key}: not a TrainingArguments field"
                             + (f" (did you mean {close[0]}?)" if close else ""))


def positive(node: Any, where: str, *names: str, allow_none: bool = False, zero: bool = False) -> None:
    """One-line errors for settings of ``node`` that must be > 0 (``zero``: >= 0; ``allow_none``: or null)."""
    for name in names:
        value = getattr(node, name)
        if value is None and allow_none:
            continue
        if value is None or (value < 0 if zero else value <= 0):
            bound = ">= 0" if zero else "> 0"
            raise TasftError(f"{where}{yaml_key(name)}: must be {bound}"
                             f"{' or null' if allow_none else ''}, got {value}")


#: the largest value a size setting may take: beyond these a number is a typo (10**24 steps), not a plan
SIZE_LIMITS = {"max_steps": 10**8, "save_steps": 10**8, "logging_steps": 10**8, "warmup_steps": 10**8,
               "gradient_accumulation_steps": 10**6, "batch_size": 10**6, "harmful_batch_size": 10**6,
               "eval_batch_size": 10**6, "max_length": 10**7, "harvest_max_new_tokens": 10**6,
               "save_total_limit": 10**9}
SEED_MAX = 2**32 - 1  # numpy's and torch's seeding both take 0 .. 2**32 - 1


def check_sizes(cfg: TrainConfig) -> None:
    """Seeds in the range the random generators take, sizes below :data:`SIZE_LIMITS` (one-line errors)."""
    for name, limit in SIZE_LIMITS.items():
        value = getattr(cfg, name)
        if isinstance(value, int) and value > limit:
            raise TasftError(f"{name}: {value} is beyond any run (at most {limit:,})")
    for where, value in (("seed", cfg.seed), *((f"{k}.shuffle_seed", getattr(cfg, k).shuffle_seed)
                                               for k in ("train_data", "harmful_data", "eval_data")
                                               if getattr(cfg, k) is not None)):
        if value is not None and not 0 <= value <= SEED_MAX:
            raise TasftError(f"{where}: must be in 0 .. {SEED_MAX}, got {value}")


def check_core(cfg: TrainConfig) -> None:
    """The checks of every run, whatever its method: finite numbers, ranges, data sources, output directory."""
    check_finite(cfg)
    if not cfg.output_dir.strip():
        raise TasftError("output_dir: must name a directory, got an empty string")
    positive(cfg, "", "max_length", "batch_size", "harmful_batch_size", "gradient_accumulation_steps", "max_steps",
             "logging_steps", "save_steps", "eval_batch_size", "harvest_max_new_tokens", "learning_rate",
             "save_total_limit")
    positive(cfg, "", "warmup_steps", "max_grad_norm", "weight_decay", zero=True)
    positive(cfg, "", "loss_chunk_size", allow_none=True)
    positive(cfg.guard, "guard.", "collapse_steps", allow_none=True)
    positive(cfg.guard, "guard.", "min_grad_norm", zero=True)
    if cfg.contrastive.enabled and cfg.harmful_data is None:
        raise TasftError("contrastive.enabled: the contrastive data option needs a harmful data set (D_h)")
    if cfg.contrastive.source not in ("auto", "generated"):
        raise TasftError(f"contrastive.source: must be auto or generated, got '{cfg.contrastive.source}'")
    positive(cfg.contrastive, "contrastive.", "max_new_tokens")
    for name in ("train_data", "harmful_data", "eval_data"):
        src = getattr(cfg, name)
        if src is None:
            continue
        if not 0 < src.heldout_fraction < 1:
            raise TasftError(f"{name}.heldout_fraction: must be in (0, 1), got {src.heldout_fraction}")
        positive(src, f"{name}.", "limit", allow_none=True)
    if cfg.precision == "bf16" and cfg.dtype == "float16" or cfg.precision == "fp16" and cfg.dtype == "bfloat16":
        raise TasftError(f"precision: {cfg.precision} autocast over {cfg.dtype} weights mixes two half formats "
                         "(store the weights as float32, or match the two)")
    if cfg.log_heldout_nll and cfg.eval_data is None:
        raise TasftError("log_heldout_nll: needs held-out D_u rows to measure (set eval_data)")
    if not isinstance(cfg.training_args, dict):
        raise TasftError(f"training_args: expected a mapping of TrainingArguments fields, got {cfg.training_args!r}")
    if cfg.training_args:
        check_training_args(cfg.training_args)
    if cfg.lora is not None:
        positive(cfg.lora, "lora.", "r", "alpha")
        if not 0 <= cfg.lora.dropout < 1:
            raise TasftError(f"lora.dropout: must be in [0, 1), got {cfg.lora.dropout}")
    check_sizes(cfg)
