"""``method: simnpo`` — SimNPO (Fan et al. 2024), NPO without a reference model, length-normalised:
L = NLL(D_u) − (2/β)·mean_h log σ(−β·log π_θ(y_h|x_h)/|y_h| − γ). :func:`tasft.objectives.sequence.simnpo_loss`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..objectives.terms import HarmfulTerm
from .base import Method


@dataclass
class SimNpoSettings:
    """``simnpo:`` — ``beta`` > 0 and the margin ``gamma`` ≥ 0 (open-unlearning's defaults 4.5 and 0)."""

    BLOCK: ClassVar[str] = "simnpo"
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ()

    beta: float = 4.5
    gamma: float = 0.0


class SimNpoTerm(HarmfulTerm):
    log_key = "simnpo"

    def __init__(self, beta: float, gamma: float) -> None:
        super().__init__(None)
        self.beta, self.gamma = beta, gamma

    def loss(self, logits, targets, mask, ref_logits, weights=None):  # sequence-level: no per-token weights
        from ..objectives.sequence import sequence_logprob, simnpo_loss

        logp, lengths = sequence_logprob(logits, targets, mask)
        value = simnpo_loss(logp, lengths, self.beta, self.gamma)
        return value, value.detach()


class SimNpo(Method):
    name = "simnpo"
    Settings = SimNpoSettings
    needs_harmful = True
    objective = "NLL(D_u) − (2/β)·mean_h log σ(−β·log π_θ(y_h|x_h)/|y_h| − γ)"

    def check(self, cfg) -> None:
        from ..config_checks import positive

        positive(cfg.method_settings, "simnpo.", "beta")
        positive(cfg.method_settings, "simnpo.", "gamma", zero=True)

    def harmful_term(self, inputs):
        return SimNpoTerm(inputs.cfg.method_settings.beta, inputs.cfg.method_settings.gamma)

    def summary(self, cfg) -> dict:
        return {"simnpo": {"beta": cfg.method_settings.beta, "gamma": cfg.method_settings.gamma}}

    def label(self, cfg) -> str:
        return f"simnpo β={cfg.method_settings.beta}"

    def describe(self, cfg, metrics) -> str:
        s = cfg.method_settings
        return f"SimNPO: NLL(D_u) − (2/β)·mean log σ(−β·log π_θ/|y| − γ) on D_h, β = {s.beta}, γ = {s.gamma}"
