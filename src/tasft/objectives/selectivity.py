"""Selectivity: how specific a token is to harmful text, computed once before training, as a per-token penalty weight.

The plain penalty pushes on every token of a harmful answer, the ordinary ones ("Sure", "the", "Step 1") as much as
the harmful ones, and so teaches the model to avoid ordinary language. The rule here (``log-odds``) weighs token w
by how much more often it occurs in the harmful answers D_h than in the ordinary answers D_u:

    f_h(w) = (c_h(w) + α) / (N_h + α·V),   f_u(w) = (c_u(w) + α) / (N_u + α·V)   (add-α smoothed frequencies),
    r(w) = log f_h(w) − log f_u(w),        s(w) = max(0, r(w)) / max_w' max(0, r(w'))  ∈ [0, 1],

with c the token counts over the penalised (response) tokens, N their totals and V the vocabulary: a token no more
frequent in D_h than in D_u gets weight 0, the most D_h-specific one weight 1. The penalty at position t is then
weighted by s(y_t) (times the position weight, when one is set).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

ALPHA = 1.0


def token_counts(sequences: Iterable[list[int]], vocab_size: int) -> torch.Tensor:
    """(V,) float64 counts of the token ids in ``sequences``."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for ids in sequences:
        if ids:
            counts += torch.bincount(torch.tensor(ids), minlength=vocab_size)[:vocab_size].double()
    return counts


def log_odds_weights(harmful: torch.Tensor, benign: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """s(w) of the module docstring from the (V,) token counts of D_h and D_u; float32."""
    v = harmful.numel()
    f_h = (harmful + alpha) / (harmful.sum() + alpha * v)
    f_u = (benign + alpha) / (benign.sum() + alpha * v)
    r = (f_h.log() - f_u.log()).clamp_min(0.0)
    top = r.max()
    return (r / top if top > 0 else r).float()
