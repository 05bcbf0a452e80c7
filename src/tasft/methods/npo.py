"""``method: npo`` — Negative Preference Optimization (Zhang et al. 2024) on D_h with SFT on D_u:
L = NLL(D_u) + (2/β)·mean_h log(1 + (π_θ(y_h|x_h) / π_ref(y_h|x_h))^β), sequence log-probabilities, π_ref the
frozen starting model (with LoRA: the base model, adapter disabled). :func:`tasft.objectives.sequence.npo_loss`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..objectives.terms import HarmfulTerm
from .base import Method


@dataclass
class NpoSettings:
    """``npo:`` — ``beta`` > 0 (open-unlearning's default 0.1)."""

    BLOCK: ClassVar[str] = "npo"
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ()

    beta: float = 0.1


class NpoTerm(HarmfulTerm):
    log_key = "npo"

    def __init__(self, beta: float, reference=None, adapter_model=None) -> None:
        super().__init__(reference)
        self.beta, self._adapter_model = beta, adapter_model

    @property
    def needs_reference(self) -> bool:
        return True

    def reference_logits(self, model, batch):
        if self.reference is not None:
            return super().reference_logits(model, batch)
        with torch.no_grad(), self._adapter_model.disable_adapter():  # LoRA: the base model is the reference
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def loss(self, logits, targets, mask, ref_logits, weights=None):  # sequence-level: no per-token weights
        from ..objectives.sequence import npo_loss, sequence_logprob

        logp, _ = sequence_logprob(logits, targets, mask)
        ref_logp, _ = sequence_logprob(ref_logits, targets, mask)
        value = npo_loss(logp, ref_logp, self.beta)
        return value, value.detach()


class Npo(Method):
    name = "npo"
    Settings = NpoSettings
    needs_harmful = True
    objective = "NLL(D_u) + (2/β)·mean_h log(1 + (π_θ(y_h|x_h)/π_ref(y_h|x_h))^β)"

    def check(self, cfg) -> None:
        from ..config_checks import positive

        positive(cfg.method_settings, "npo.", "beta")

    def harmful_term(self, inputs):
        model, beta = inputs.model, inputs.cfg.method_settings.beta
        if hasattr(model, "disable_adapter"):  # LoRA: the frozen base under the adapter is the starting model
            return NpoTerm(beta, adapter_model=model)
        return NpoTerm(beta, reference=copy.deepcopy(model).eval().requires_grad_(False))

    def summary(self, cfg) -> dict:
        return {"npo": {"beta": cfg.method_settings.beta}}

    def label(self, cfg) -> str:
        return f"npo β={cfg.method_settings.beta}"

    def describe(self, cfg, metrics) -> str:
        return (f"NPO: NLL(D_u) + (2/β)·mean log(1 + (π_θ/π_ref)^β) on D_h, β = {cfg.method_settings.beta}, "
                "π_ref = the starting model")
