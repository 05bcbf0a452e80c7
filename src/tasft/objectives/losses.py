"""Semantic EMD penalties and their baselines — pure tensor functions, no model calls.

Notation: V the vocabulary, e_w the embedding of token w, ê_w = e_w / ‖e_w‖, and the semantic cost

    d_c(w, w') = 1 − ê_w·ê_w' = ½‖ê_w − ê_w'‖²   (ê unit vectors),

so every transport cost lies in [0, 2]. For a distribution P over V, its mean embedding is
m_P = Σ_w P(w) ê_w.

Training forms take ``logits`` (B, T, V), aligned ``targets`` (B, T) (the harmful token at each position)
and a boolean ``mask`` (B, T); only masked positions are computed, so the rest contribute nothing, and
the result is the mean over masked positions. Each returns the (non-negative) *measure*; how it enters the
loss is the penalty's sign in :data:`tasft.objectives.PENALTIES`: L = NLL(D_u) + sign · λ · measure(D_h).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Constant = Literal["paper", "tight"]

# ----------------------------------------------------------------------------------------- basics
def normalize_embeddings(embeddings: torch.Tensor) -> torch.Tensor:
    """ê_w = e_w / ‖e_w‖ for each row of a (V, d) table, in fp32."""
    return F.normalize(embeddings.float(), dim=-1)


def semantic_cost_matrix(normalized: torch.Tensor) -> torch.Tensor:
    """The (V, V) cost matrix C[w, w'] = 1 − ê_w·ê_w' (clamped at 0 against rounding). Small V only."""
    return (1.0 - normalized @ normalized.T).clamp_min(0.0)


def mean_embedding(p: torch.Tensor, normalized: torch.Tensor) -> torch.Tensor:
    """m_P = Σ_w P(w) ê_w for each row of ``p`` (..., V); returns (..., d) in the wider of the two dtypes."""
    dtype = torch.promote_types(p.dtype, normalized.dtype)
    return p.to(dtype) @ normalized.to(dtype)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_i mask_i · v_i / max(1, Σ_i mask_i); masked-out entries contribute neither value nor gradient."""
    mask = mask.to(torch.bool)
    picked = values[mask]
    if picked.numel() == 0:
        return values.sum() * 0.0
    return picked.mean()


def _normalized_like(embeddings: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """ê in float64 when ``p`` is float64 (verification), else fp32, on ``p``'s device."""
    dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
    return F.normalize(embeddings.to(device=p.device, dtype=dtype), dim=-1)


def _is_index(q: torch.Tensor) -> bool:
    return not torch.is_floating_point(q)


def _onehot_index(q: torch.Tensor) -> torch.Tensor | None:
    """Row indices if every row of ``q`` is one-hot, else None."""
    top, idx = q.max(dim=-1)
    if torch.allclose(top, torch.ones_like(top), atol=1e-12, rtol=0) and torch.allclose(
        q.sum(-1), top, atol=1e-12, rtol=0
    ):
        return idx
    return None


# ----------------------------------------------------------------------------------- exact EMD
def emd_onehot(p: torch.Tensor, target: torch.Tensor, normalized: torch.Tensor) -> torch.Tensor:
    """Exact EMD(P, δ_y; d_c) = Σ_w P(w)(1 − ê_w·ê_y) = 1 − m_P·ê_y (all mass moves to y; no V×V matrix).

    ``p`` (..., V) probabilities, ``target`` (...) token ids, ``normalized`` the (V, d) table ê. The value
    is clamped to [0, 2] against rounding with a straight-through gradient (the gradient never vanishes).
    """
    value = 1.0 - (mean_embedding(p, normalized) * normalized[target]).sum(-1)
    return value + (value.clamp(0.0, 2.0) - value).detach()


def _emd_exact_rows(p: torch.Tensor, q: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    import ot  # POT: exact network-simplex solver; torch backend keeps gradients (dual potentials)

    out = []
    for a, b in zip(p, q):
        a64 = a.double() / a.double().sum()
        b64 = b.double() / b.double().sum()
        out.append(ot.emd2(a64, b64, cost, numItermax=1_000_000))
    return torch.stack(out).to(p.dtype)


def emd(p: torch.Tensor, q: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Exact EMD(P, Q; d_c) = min_{π ∈ Π(P,Q)} Σ_{w,w'} π(w,w') (1 − ê_w·ê_w'), one value per row.

    ``p``, ``q``: (..., V) probability tensors (``q`` may also be integer token ids, shape (...)).
    ``embeddings``: the raw (V, d) token embeddings (normalised here). When ``q`` is one-hot the closed form
    1 − m_P·ê_y is used; otherwise each row is an exact transport problem solved by POT (``ot.emd2``), which
    builds the V×V cost matrix — meant for small V or a restricted support (see :func:`emd_topk`).
    """
    normalized = _normalized_like(embeddings, p)
    if _is_index(q):
        return emd_onehot(p, q, normalized)
    idx = _onehot_index(q)
    if idx is not None:
        return emd_onehot(p, idx, normalized)
    shape = p.shape[:-1]
    cost = semantic_cost_matrix(normalized.double())
    flat = _emd_exact_rows(p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1]), cost)
    return flat.reshape(shape)


def emd_topk(p: torch.Tensor, q: torch.Tensor, normalized: torch.Tensor, k: int) -> torch.Tensor:
    """EMD restricted to a small support: S = top-k(P) ∪ top-k(Q) per row, both renormalised on S.

    An approximation of :func:`emd` for soft targets at full vocabulary size (exact when P and Q put all
    their mass on S). Cost per row: one |S|×|S| transport problem, |S| ≤ 2k.
    """
    rows = []
    k = min(k, p.shape[-1])
    for a, b in zip(p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1])):
        support = torch.unique(torch.cat([a.topk(k).indices, b.topk(k).indices]))
        sub = normalized[support]
        rows.append(_emd_exact_rows(a[support][None], b[support][None], semantic_cost_matrix(sub.double()))[0])
    return torch.stack(rows).reshape(p.shape[:-1])


# ------------------------------------------------------------------------------------ lower bound
def bound_constant(constant: Constant, vocab_size: int) -> float:
    """c = 1/(2|V|²) ("paper", Proposition 1) or c = ½ ("tight": d_c = ½‖ê−ê'‖² and Jensen)."""
    if constant == "paper":
        return 1.0 / (2.0 * vocab_size**2)
    if constant == "tight":
        return 0.5
    raise ValueError(f"unknown bound constant {constant!r} (choose paper or tight)")


def emd_lower_bound(
    p: torch.Tensor, q: torch.Tensor, embeddings: torch.Tensor, constant: Constant = "paper"
) -> torch.Tensor:
    """c·‖m_P − m_Q‖² ≤ EMD(P, Q; d_c), one value per row; O(V·d) per row, no transport problem.

    Why it is a bound: for any coupling π, EMD = ½ E_π‖ê_X − ê_Y‖² ≥ ½‖E ê_X − E ê_Y‖² = ½‖m_P − m_Q‖²
    (Jensen), and the paper's c = 1/(2|V|²) ≤ ½. ``q`` may be (..., V) probabilities or (...) token ids.
    """
    normalized = _normalized_like(embeddings, p)
    m_q = normalized[q] if _is_index(q) else mean_embedding(q, normalized)
    c = bound_constant(constant, normalized.shape[0])
    return c * (mean_embedding(p, normalized) - m_q).pow(2).sum(-1)


# ---------------------------------------------------------------------------------- training forms
def _select(logits: torch.Tensor, mask: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mask = mask.to(torch.bool)
    return [logits[mask].float(), *[o[mask] for o in others]]


def _reduce(values: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The mean of the per-position ``values`` (the masked positions, in order): plain, or with ``weights`` (B, T)
    the weighted mean Σ_t w_t v_t / Σ_t w_t (e.g. :func:`tasft.data.position_weights`)."""
    if weights is None:
        return values.mean()
    w = weights[mask.to(torch.bool)].to(values.dtype)
    return (values * w).sum() / w.sum().clamp_min(torch.finfo(values.dtype).tiny)


#: soft targets: exact transport on the top-k tokens of P and Q (ta_sft.soft_top_k's default)
SOFT_TOP_K = 64


def emd_from_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    normalized: torch.Tensor,
    ref_logits: torch.Tensor | None = None,
    soft_top_k: int = SOFT_TOP_K,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over masked positions t of EMD(P_t, Q_t; d_c), P_t = softmax(logits_t) (``weights``: weighted mean).

    One-hot target (default): EMD = 1 − m_{P_t}·ê_{y_t}. Soft target (``ref_logits`` given): Q_t =
    softmax(ref_logits_t), EMD solved exactly on the top-k support (:func:`emd_topk`).
    """
    if ref_logits is None:
        sel, y = _select(logits, mask, targets)
        if sel.shape[0] == 0:
            return logits.sum() * 0.0
        return _reduce(emd_onehot(sel.softmax(-1), y, normalized), mask, weights)
    sel, ref = _select(logits, mask, ref_logits)
    if sel.shape[0] == 0:
        return logits.sum() * 0.0
    return _reduce(emd_topk(sel.softmax(-1), ref.float().softmax(-1), normalized, soft_top_k), mask, weights)


def emd_lb_from_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    normalized: torch.Tensor,
    constant: Constant = "tight",
    ref_logits: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over masked t of c·‖m_{P_t} − m_{Q_t}‖², m_{Q_t} = ê_{y_t} (one-hot) or Σ_w Q_t(w) ê_w (soft)
    (``weights``: weighted mean)."""
    sel, y = _select(logits, mask, targets)
    if sel.shape[0] == 0:
        return logits.sum() * 0.0
    m_p = mean_embedding(sel.softmax(-1), normalized)
    if ref_logits is None:
        m_q = normalized[y]
    else:
        m_q = mean_embedding(ref_logits[mask.to(torch.bool)].float().softmax(-1), normalized)
    c = bound_constant(constant, normalized.shape[0])
    return _reduce(c * (m_p - m_q).pow(2).sum(-1), mask, weights)


def log_one_minus_prob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log(1 − P(y)) = logsumexp_{w≠y} z_w − logsumexp_w z_w: exact, stable even when P(y) → 1."""
    others = logits.scatter(-1, targets.unsqueeze(-1), float("-inf"))
    return torch.logsumexp(others, dim=-1) - torch.logsumexp(logits, dim=-1)


def nlcl_from_logits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """Unlikelihood: mean over masked t of −log(1 − P_t(y_t)) (computed by :func:`log_one_minus_prob`)."""
    sel, y = _select(logits, mask, targets)
    if sel.shape[0] == 0:
        return logits.sum() * 0.0
    return _reduce(-log_one_minus_prob(sel, y), mask, weights)


def kl_excluding_target(logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """Trust region: mean over masked t of KL(Q̃_t ‖ P̃_t), the reference's and the model's next-token distributions
    with the harmful token's own mass removed and renormalised,

        P̃_t(w) = P_t(w) / (1 − P_t(y_t)) for w ≠ y_t,   KL(Q̃ ‖ P̃) = Σ_{w≠y} Q̃(w) (log Q̃(w) − log P̃(w)),

    so the mass the penalty pushes off y_t goes where the frozen starting model already found the text plausible
    (log P̃ = log-softmax of the logits with z_y = −∞)."""
    sel, ref, y = _select(logits, mask, ref_logits, targets)
    if sel.shape[0] == 0:
        return logits.sum() * 0.0
    rows = torch.arange(sel.shape[0], device=sel.device)
    log_p = sel.index_put((rows, y), torch.tensor(float("-inf"), device=sel.device)).log_softmax(-1)
    log_q = ref.float().index_put((rows, y), torch.tensor(float("-inf"), device=sel.device)).log_softmax(-1)
    q = log_q.exp()
    terms = torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q))  # the excluded token contributes 0
    return _reduce(terms.sum(-1), mask, weights)


def nll_from_logits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over masked t of −log P_t(y_t) (the SFT loss; for ``ga`` it is pushed up, unbounded)."""
    sel, y = _select(logits, mask, targets)
    if sel.shape[0] == 0:
        return logits.sum() * 0.0
    if weights is None:
        return F.cross_entropy(sel, y)
    return _reduce(F.cross_entropy(sel, y, reduction="none"), mask, weights)


def shift_for_causal_lm(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align next-token predictions: logits[:, :-1] predict input_ids[:, 1:], masked by loss_mask[:, 1:]."""
    return logits[:, :-1], input_ids[:, 1:], loss_mask[:, 1:].to(torch.bool)


__all__ = [
    "bound_constant",
    "emd",
    "emd_from_logits",
    "emd_lb_from_logits",
    "emd_lower_bound",
    "emd_onehot",
    "emd_topk",
    "log_one_minus_prob",
    "masked_mean",
    "mean_embedding",
    "nlcl_from_logits",
    "nll_from_logits",
    "normalize_embeddings",
    "semantic_cost_matrix",
    "shift_for_causal_lm",
]

_ = np  # numpy is POT's default backend; imported here so a missing install fails early
