"""Sequence-level objectives on the harmful answers (NPO, SimNPO) — pure tensor functions, no model calls.

Notation: for a harmful pair (x_h, y_h) with masked response tokens t, log π(y_h | x_h) = Σ_t log P_t(y_t) (the
sequence log-probability under teacher forcing) and |y_h| its number of tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_logprob(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(y|x), |y|) per row: Σ_t mask_t · log softmax(logits_t)[y_t] and Σ_t mask_t, from aligned
    ``logits`` (B, T, V), ``targets`` (B, T) and ``mask`` (B, T); computed in fp32."""
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = mask.to(logp.dtype)
    return (logp * mask).sum(-1), mask.sum(-1)


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al. 2024): (2/β)·mean_h log(1 + (π_θ(y_h|x_h) / π_ref(y_h|x_h))^β)
    = (2/β)·mean_h softplus(β·(log π_θ − log π_ref)), computed stably as the softplus."""
    return (2.0 / beta) * F.softplus(beta * (logp - ref_logp)).mean()


def simnpo_loss(logp: torch.Tensor, lengths: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimNPO (Fan et al. 2024): −(2/β)·mean_h log σ(−β·log π_θ(y_h|x_h)/|y_h| − γ)
    = (2/β)·mean_h softplus(β·log π_θ/|y_h| + γ) (no reference model; rows with no token count |y_h| = 1)."""
    return (2.0 / beta) * F.softplus(beta * logp / lengths.clamp_min(1.0) + gamma).mean()


__all__ = ["npo_loss", "sequence_logprob", "simnpo_loss"]
