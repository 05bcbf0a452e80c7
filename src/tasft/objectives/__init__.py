"""The objectives: pure tensor functions (:mod:`.losses` plain, :mod:`.fused` chunked through the LM head) and the
one registry of TA-SFT penalties, read by config validation, the plain loss and the fused path alike.

A penalty is a non-negative *measure* on the harmful tokens of D_h; it enters the loss with its ``sign``:

    L = NLL(D_u) + sign · λ · measure(D_h)

(distances and the harmful NLL are pushed up, sign −1; unlikelihood is pushed down, sign +1). A new penalty is one
entry here: its plain function (full logits) and, if it has one, its chunk function for the fused path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import fused, losses


@dataclass(frozen=True)
class PenaltyInputs:
    """What a plain penalty may need besides logits, targets and mask."""

    normalized: torch.Tensor | None = None  # ê, the (V, d) normalised embedding table
    constant: str = "tight"  # emd_lb's bound constant
    ref_logits: torch.Tensor | None = None  # soft targets: the frozen starting model's logits
    soft_top_k: int = losses.SOFT_TOP_K
    weights: torch.Tensor | None = None  # per-position weights (B, T): the measure is their weighted mean


@dataclass(frozen=True)
class Penalty:
    """One penalty: its ``sign`` in the loss, whether it needs the embedding table or accepts soft targets, its plain
    function ``(logits, targets, mask, PenaltyInputs) -> measure`` and its fused chunk function (or None)."""

    name: str
    sign: float
    needs_embeddings: bool
    soft_targets: bool
    plain: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, PenaltyInputs], torch.Tensor]
    fused: fused.ChunkFn | None
    formula: str


PENALTIES: dict[str, Penalty] = {p.name: p for p in (
    Penalty("emd", -1.0, True, True,
            lambda lg, y, m, x: losses.emd_from_logits(lg, y, m, x.normalized, x.ref_logits, x.soft_top_k,
                                                       x.weights),
            fused.emd_chunk, "exact EMD(P_t, Q_t; d_c); one-hot: 1 − m_P·ê_y"),
    Penalty("emd_lb", -1.0, True, True,
            lambda lg, y, m, x: losses.emd_lb_from_logits(lg, y, m, x.normalized, x.constant, x.ref_logits,
                                                          x.weights),
            fused.emd_lb_chunk, "c·‖m_P − m_Q‖², c = ½ (tight) or 1/(2|V|²) (paper)"),
    Penalty("nlcl", 1.0, False, False, lambda lg, y, m, x: losses.nlcl_from_logits(lg, y, m, x.weights),
            fused.nlcl_chunk, "−log(1 − P_t(y)), as logsumexp over w ≠ y minus logsumexp"),
    Penalty("ga", -1.0, False, False, lambda lg, y, m, x: losses.nll_from_logits(lg, y, m, x.weights),
            fused.nll_chunk, "−log P_t(y), the harmful NLL (unbounded: a known-bad baseline)"),
)}


def penalty(name: str) -> Penalty:
    """The registered penalty ``name``; a ValueError naming the choices otherwise."""
    if name not in PENALTIES:
        raise ValueError(f"unknown penalty {name!r} (choose from {', '.join(PENALTIES)})")
    return PENALTIES[name]


def penalty_from_logits(name: str, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                        normalized: torch.Tensor | None = None, *, constant: str = "tight",
                        ref_logits: torch.Tensor | None = None, soft_top_k: int = losses.SOFT_TOP_K,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """The measure of penalty ``name`` over the masked positions (plain, full-logits path); with ``weights``
    (B, T) their weighted mean."""
    entry = penalty(name)
    if entry.needs_embeddings and normalized is None:
        raise ValueError(f"penalty {name!r} needs the normalised embedding table")
    return entry.plain(logits, targets, mask, PenaltyInputs(normalized, constant, ref_logits, soft_top_k, weights))


def objective(nll: torch.Tensor, measure: torch.Tensor, name: str, lam: float) -> torch.Tensor:
    """L = NLL(D_u) + sign·λ·measure: −λ·EMD for the distances and GA, +λ·NLCL for unlikelihood."""
    return nll + penalty(name).sign * lam * measure


__all__ = ["PENALTIES", "Penalty", "PenaltyInputs", "objective", "penalty", "penalty_from_logits"]
