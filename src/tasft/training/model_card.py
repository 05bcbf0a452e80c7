"""The model card (README.md) written into every run directory, with the run's own numbers."""

from __future__ import annotations

from ..config import TrainConfig


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _extra_pairs(data: dict) -> str:
    parts = [f"{data[k]} {label}" for k, label in (("stl_examples", "STL safety pairs"),
                                                    ("contrastive_pairs", "contrastive safe pairs")) if k in data]
    return f" (including {', '.join(parts)})" if parts else ""


def render_model_card(cfg: TrainConfig, metrics: dict) -> str:
    """Markdown: what was trained, on what, with which objective, and the before/after measurements."""
    from ..methods import get_method

    before, after = metrics.get("before", {}), metrics.get("after", {})
    objective = get_method(cfg.method).describe(cfg, metrics)
    if cfg.contrastive.enabled:
        objective += "; contrastive data: a safe response for every D_h prompt added to D_u"
    rows = [
        ("mean token log-prob of D_h responses", "harmful_logprob"),
        ("held-out D_u NLL", "heldout_nll"),
    ]
    table = "\n".join(
        f"| {label} | {_fmt(before.get(key))} | {_fmt(after.get(key))} |" for label, key in rows
    )
    data = metrics.get("data", {})
    adapter = f"LoRA adapter (r={cfg.lora.r}) on `{cfg.model}`" if cfg.lora else f"full fine-tune of `{cfg.model}`"
    return f"""---
library_name: transformers
tags: [tasft, safety, ta-sft]
base_model: {cfg.model}
---
# {cfg.output_dir}

Trained with tasft — {adapter}.

- **Objective**: {objective}
- **Data**: D_u = {data.get('train_records', '–')} pairs from `{cfg.train_data.path}`{_extra_pairs(data)};
  D_h = {data.get('harmful_records', '–')} harmful responses from
  `{cfg.harmful_data.path if cfg.harmful_data else '–'}`; held-out = {data.get('eval_records', '–')} pairs
- **Steps**: {metrics.get('steps')} (batch {cfg.batch_size} D_u + {cfg.harmful_batch_size} D_h, lr {cfg.learning_rate},
  max length {cfg.max_length}, seed {cfg.seed})
- **Time**: {metrics.get('train_seconds')} s training, {metrics.get('tokens_per_second')} tokens/s

| measurement | before | after |
|---|---|---|
{table}

Safety note: the harmful set contains unsafe text; this model is a research artefact. Lower likelihood of
known harmful responses is not by itself evidence of safe behaviour on unseen prompts — evaluate it.
"""
