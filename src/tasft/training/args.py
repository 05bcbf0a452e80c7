"""The ``TrainingArguments`` every method shares (a method adds its own on top, e.g. KTO's)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import TrainConfig
from ..methods import get_method

#: config attributes that mark a mixture-of-experts model (experts a step does not route to get no gradient)
MOE_CONFIG_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def find_unused_parameters(cfg: TrainConfig, model) -> bool | None:
    """DDP's per-step search of the autograd graph for parameters without a gradient: ``cfg`` wins when set;
    otherwise the method's setting (off for tasft's own loop on dense models: its losses reach every trainable
    parameter every step) and transformers' default (None) for mixture-of-experts models."""
    if cfg.ddp_find_unused_parameters is not None:
        return cfg.ddp_find_unused_parameters
    config = getattr(model, "config", None)
    if any(getattr(config, key, None) for key in MOE_CONFIG_KEYS):
        return None
    return get_method(cfg.method).find_unused_parameters


def check_precision(cfg: TrainConfig) -> None:
    """A precision this machine cannot run is a one-line error (checked before a run writes anything)."""
    if cfg.precision == "fp16" and not torch.cuda.is_available():
        from ..errors import TasftError

        raise TasftError("precision: fp16 autocast needs a CUDA GPU (use bf16 on CPU, or fp32)")


def training_kwargs(cfg: TrainConfig, out_dir: Path, model) -> dict:
    """``TrainingArguments`` keywords shared by every method (KTO adds its own on top): tasft's settings, then
    the ``training_args:`` block."""
    check_precision(cfg)
    report_to = [r for r in cfg.report_to if r != "none"]
    if "tensorboard" in report_to:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            report_to.remove("tensorboard")
    return dict(
        output_dir=str(out_dir),
        max_steps=cfg.max_steps,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=report_to or "none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        bf16=cfg.precision == "bf16",
        fp16=cfg.precision == "fp16",
        ddp_find_unused_parameters=find_unused_parameters(cfg, model),
        # bf16 autocast without a GPU: the Trainer wants to be told that the CPU is meant
        **({"use_cpu": True} if cfg.precision == "bf16" and not torch.cuda.is_available() else {}),
    ) | dict(cfg.training_args)


