"""``method: ta-sft`` — Toxicity-Avoiding SFT: L = NLL(D_u) + sign·λ·penalty(D_h), the penalty one of
:data:`tasft.objectives.PENALTIES` averaged over the harmful response tokens (sign −1 for the distances and
gradient ascent, +1 for unlikelihood), with the one-hot target of the harmful token or, ``target: soft``, the
frozen starting model's distribution at that position; optionally position-weighted and with a trust region
(μ·KL to the starting model without the harmful token: :class:`TaSftSettings`)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch

from ..errors import TasftError
from ..objectives import PENALTIES
from ..objectives.losses import SOFT_TOP_K
from ..objectives.terms import HarmfulTerm
from .base import Method


@dataclass
class TaSftSettings:
    """``ta_sft:`` — ``penalty`` (a registered one), its weight ``lambda`` ≥ 0, ``bound_constant`` of ``emd_lb``
    (``tight`` ½ or the paper's 1/(2|V|²)), ``target`` (``onehot`` / ``soft``), ``soft_top_k`` (support of the soft
    transport), ``embedding_source`` of the cost (the starting model's ``input`` or ``output`` embeddings) and
    ``penalty_first_tokens`` (penalise only the first N tokens of each harmful answer; null: all) and
    ``penalty_position_decay`` τ (weigh the t-th penalised token by w_t = exp(−t/τ), the penalty then the weighted
    mean Σ w_t m_t / Σ w_t — heavier on an answer's first tokens, after Qi et al. 2024; null: every token alike) and
    ``penalty_selectivity`` (``log-odds``: weigh each harmful token by how much more frequent it is in D_h than
    in D_u, :mod:`tasft.objectives.selectivity`, so ordinary tokens get ~0 weight; ``none``: all alike) and
    ``trust_region`` μ ≥ 0 (adds μ·KL(Q̃ ‖ P̃) on the D_h positions, the frozen starting model's and the model's
    distributions without the harmful token — :func:`tasft.objectives.losses.kl_excluding_target` — so the mass
    pushed off a harmful token goes where the starting model already found the text plausible; 0: off) and
    ``lambda_budget`` ε (λ by constraint: ``lambda`` is only where λ starts, then dual ascent keeps the held-out
    D_u NLL within (1 + ε)· ``lambda_reference_nll`` — or the NLL on the same rows of ``lambda_reference_model``, a
    model such as plain SFT's run directory, measured once before the first step, or, step by step, the curve that
    ``lambda_reference_run`` (a run trained with ``log_heldout_nll: true``, e.g. plain SFT) measured on those rows
    after each of its steps; none: the starting model's — with step ``lambda_step`` η, :mod:`tasft.methods.dual`;
    needs ``eval_data``; null: λ fixed)."""

    BLOCK: ClassVar[str] = "ta_sft"
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ()

    penalty: str = "emd"
    lambda_: float = 1.0
    bound_constant: Literal["paper", "tight"] = "tight"
    target: Literal["onehot", "soft"] = "onehot"
    soft_top_k: int = SOFT_TOP_K
    embedding_source: Literal["input", "output"] = "input"
    penalty_first_tokens: int | None = None
    penalty_position_decay: float | None = None
    penalty_selectivity: Literal["none", "log-odds"] = "none"
    trust_region: float = 0.0
    lambda_budget: float | None = None
    lambda_reference_nll: float | None = None
    lambda_reference_model: str | None = None
    lambda_reference_run: str | None = None
    lambda_step: float = 20.0


class PenaltyTerm(HarmfulTerm):
    """λ·sign·penalty(D_h): the registered penalty's plain function, or its chunk function on the fused path."""

    def __init__(self, settings: TaSftSettings, normalized: torch.Tensor | None, reference=None,
                 token_weights: torch.Tensor | None = None) -> None:
        from .. import objectives

        super().__init__(reference)
        self.settings, self.entry = settings, objectives.penalty(settings.penalty)
        self.log_key = f"penalty_{settings.penalty}"
        self.first_tokens = settings.penalty_first_tokens
        self.position_decay = settings.penalty_position_decay
        self.token_weights = token_weights
        self.constant = settings.bound_constant
        self.lam = settings.lambda_  # the weight now (moved by a λ controller when the run has one)
        self.controller = None  # ta_sft.lambda_budget's LambdaController (tasft.methods.dual), set by harmful_term
        self._table_cpu, self._table = normalized, None

    def callbacks(self) -> list:
        return [] if self.controller is None else [self.controller]

    def state(self) -> dict | None:
        """λ and the reference NLL it is steered towards, when a controller moves it."""
        return None if self.controller is None else {"lambda": self.lam, "reference_nll": self.controller.reference}

    def load_state(self, state: dict) -> None:
        if self.controller is not None:
            self.lam, self.controller.reference = state["lambda"], state["reference_nll"]

    def log_values(self) -> dict[str, float]:
        return {} if self.controller is None else dict(self.controller.last)  # λ and the NLL it was set from

    def summary(self) -> dict:
        return {} if self.controller is None else {"lambda_final": self.lam}

    def _on(self, device) -> torch.Tensor | None:
        if self._table is None and self._table_cpu is not None:
            self._table = self._table_cpu.to(device)
        return self._table

    def fused(self, device):
        if self.entry.fused is None or self.reference is not None:
            return None
        return self.entry.fused, self.entry.sign * self.lam, self._on(device)

    def loss(self, logits, targets, mask, ref_logits, weights=None):
        from .. import objectives
        from ..objectives import losses

        s = self.settings
        measure = objectives.penalty_from_logits(s.penalty, logits, targets, mask, self._on(logits.device),
                                                 constant=s.bound_constant,
                                                 ref_logits=ref_logits if s.target == "soft" else None,
                                                 soft_top_k=s.soft_top_k, weights=weights)
        contribution = self.entry.sign * self.lam * measure
        if s.trust_region > 0:
            contribution = contribution + s.trust_region * losses.kl_excluding_target(
                logits, ref_logits, targets, mask, weights)
        return contribution, measure


class TaSft(Method):
    name = "ta-sft"
    Settings = TaSftSettings
    needs_harmful = True
    objective = ("NLL(D_u) + sign·λ·penalty(D_h) [+ μ·KL(Q̃‖P̃) off the harmful token] "
                 f"(penalty: {', '.join(PENALTIES)})")

    def check(self, cfg) -> None:
        from .. import objectives
        from ..config_checks import positive

        s = cfg.method_settings
        if s.penalty not in objectives.PENALTIES:
            raise TasftError(f"ta_sft.penalty: unknown penalty '{s.penalty}' "
                             f"(choose from {', '.join(objectives.PENALTIES)})")
        positive(s, "ta_sft.", "lambda_", "trust_region", zero=True)
        positive(s, "ta_sft.", "soft_top_k")
        positive(s, "ta_sft.", "penalty_first_tokens", "penalty_position_decay", allow_none=True)
        positive(s, "ta_sft.", "lambda_budget", allow_none=True, zero=True)
        positive(s, "ta_sft.", "lambda_reference_nll", allow_none=True)
        positive(s, "ta_sft.", "lambda_step")
        if s.lambda_budget is not None and s.lambda_ == 0:
            raise TasftError("ta_sft.lambda_budget: λ starts at ta_sft.lambda, which must then be > 0")
        references = [k for k in ("lambda_reference_nll", "lambda_reference_model", "lambda_reference_run")
                      if getattr(s, k) is not None]
        if references and s.lambda_budget is None:
            raise TasftError(f"ta_sft.{references[0]}: only used with ta_sft.lambda_budget (set it, or drop the "
                             "reference)")
        if len(references) > 1:
            raise TasftError(f"ta_sft.{references[0]} and ta_sft.{references[1]}: give one reference, not both")
        if s.target == "soft" and not objectives.PENALTIES[s.penalty].soft_targets:
            soft = ", ".join(n for n, p in objectives.PENALTIES.items() if p.soft_targets)
            raise TasftError(f"ta_sft.target: soft targets apply to {soft}, not to penalty '{s.penalty}'")

    def other_models(self, cfg) -> list[str]:
        reference = cfg.method_settings.lambda_reference_model
        return [reference] if reference is not None else []

    def input_paths(self, cfg) -> dict[str, str]:
        paths = super().input_paths(cfg)
        s = cfg.method_settings
        if s.lambda_reference_model is not None:
            paths = {k: v for k, v in paths.items() if v != s.lambda_reference_model}
            paths["ta_sft.lambda_reference_model"] = s.lambda_reference_model
        if s.lambda_reference_run is not None:
            paths["ta_sft.lambda_reference_run"] = s.lambda_reference_run
        return paths

    def check_inputs(self, cfg) -> None:
        from .dual import reference_curve_file

        if cfg.method_settings.lambda_reference_run is not None:
            reference_curve_file(cfg.method_settings.lambda_reference_run)

    def harmful_term(self, inputs):
        from .. import objectives
        from ..models import token_embeddings
        from ..objectives import losses

        s = inputs.cfg.method_settings
        if s.lambda_ == 0:
            return None  # λ = 0 is SFT with D_h measured: no D_h forward at all
        entry = objectives.penalty(s.penalty)
        table = losses.normalize_embeddings(token_embeddings(inputs.model, s.embedding_source)) \
            if entry.needs_embeddings else None
        needs_reference = s.target == "soft" or s.trust_region > 0  # a frozen copy of the starting model
        reference = copy.deepcopy(inputs.model).eval().requires_grad_(False) if needs_reference else None
        weights = None
        if s.penalty_selectivity == "log-odds":
            from ..objectives.selectivity import log_odds_weights, token_counts

            vocab = inputs.model.get_output_embeddings().weight.shape[0]

            def responses(rows):
                return (t.input_ids[t.prompt_len : t.prompt_len + t.response_len] for t in rows)

            weights = log_odds_weights(token_counts(responses(inputs.data.harmful), vocab),
                                       token_counts(responses(inputs.data.train), vocab))
        term = PenaltyTerm(s, table, reference, weights)
        if s.lambda_budget is not None:
            from .dual import LambdaController

            if not inputs.data.eval:
                raise TasftError("ta_sft.lambda_budget needs held-out D_u rows to measure (set eval_data)")
            term.controller = LambdaController(term, inputs.data.eval, inputs.tokenizer.pad_token_id,
                                               s.lambda_budget, s.lambda_step, s.lambda_reference_nll,
                                               reference_model=s.lambda_reference_model,
                                               reference_run=s.lambda_reference_run)
        return term

    def summary(self, cfg) -> dict:
        s = cfg.method_settings
        return {"penalty": s.penalty, "lambda": s.lambda_, "bound_constant": s.bound_constant, "target": s.target,
                "penalty_first_tokens": s.penalty_first_tokens, "penalty_position_decay": s.penalty_position_decay,
                "penalty_selectivity": s.penalty_selectivity, "trust_region": s.trust_region,
                "lambda_budget": s.lambda_budget, "lambda_reference_model": s.lambda_reference_model,
                "lambda_reference_run": s.lambda_reference_run}

    def label(self, cfg) -> str:
        """``ta-sft <penalty> λ=<λ>`` and every other setting that is not its default (the variants of one penalty
        and λ must not print the same label): ``trust_region=1.0``, ``lambda_reference_run=sft_curve`` …"""
        s, default = cfg.method_settings, TaSftSettings()
        extra = []
        for f in dataclasses.fields(s):
            value = getattr(s, f.name)
            if f.name in ("penalty", "lambda_") or value == getattr(default, f.name):
                continue
            shown = Path(value).name if isinstance(value, str) and f.name.startswith("lambda_reference") else value
            extra.append(f"{f.name}={shown}")
        return " ".join([f"ta-sft {s.penalty} λ={s.lambda_}", *extra])

    def describe(self, cfg, metrics) -> str:
        from .. import objectives

        s = cfg.method_settings
        sign = "+" if objectives.PENALTIES[s.penalty].sign > 0 else "−"
        text = f"TA-SFT: NLL(D_u) {sign} λ·{s.penalty}(D_h), λ = {s.lambda_}, target = {s.target}"
        text += f", bound constant = {s.bound_constant}" if s.penalty == "emd_lb" else ""
        text += f", position weights exp(−t/{s.penalty_position_decay:g})" if s.penalty_position_decay else ""
        text += ", token weights by log-odds selectivity" if s.penalty_selectivity != "none" else ""
        text += f", trust region μ = {s.trust_region:g}" if s.trust_region else ""
        if s.lambda_budget is not None:
            text += (f", λ by dual ascent (start {s.lambda_:g}, held-out NLL within +{s.lambda_budget:.0%}; "
                     f"final λ = {metrics.get('lambda_final', float('nan')):.3g})")
        return text
