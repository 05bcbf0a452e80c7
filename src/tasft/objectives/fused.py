"""Chunked, fused LM-head + measure: the penalties and the NLL without a (tokens × V) probability tensor.

The plain path (:mod:`tasft.losses`) takes full logits (B, T, V), so the step holds fp32 logits, softmax
and their gradients for every token at once. Here the inputs are the final hidden states of the N selected
(masked) positions, h (N, d), and the LM-head weight W (V, d); the logits z = h Wᵀ exist for one chunk of
``chunk_size`` rows at a time. As in fused linear cross-entropy kernels, the gradient of the (scalar) mean is
computed in the same pass — per chunk, ∂/∂z in closed form, then ∂h = (∂z) W and ∂W += (∂z)ᵀ h — and
``backward`` only scales the stored ∂h (N, d) and ∂W (V, d) by the incoming scalar. So the forward does
the work of forward *and* backward, nothing is recomputed, and the live memory is one chunk plus ∂W.

Per row (p = softmax(z), y the target token, ê the (V, d) normalised table, s = ê ê_y ∈ R^V):

    nll     value = lse(z) − z_y                   ∂z = p − δ_y
    nlcl    value = lse(z) − lse_{w≠y}(z)          ∂z = p − q,  q = softmax(z with z_y = −∞)
    emd     value = 1 − p·s   (clamped to [0, 2], straight-through, as :func:`tasft.losses.emd_onehot`)
                                                   ∂z = −p ⊙ (s − p·s)
    emd_lb  value = c‖m − ê_y‖², m = p ê           ∂z = p ⊙ (g − p·g),  g = 2c (m − ê_y) êᵀ,
                                                   and p·g = 2c (m − ê_y)·m needs no extra V-sized product

Each returns the mean over the N rows, the same number as the plain ``*_from_logits`` function on the
same positions (tests: values and gradients within 1e-5 in fp32). Soft targets (a reference model's
distribution) are not covered: they keep the plain path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from .losses import bound_constant

#: Default rows per chunk: one chunk of fp32 logits is 256·V·4 bytes (50 MB at V = 49,152) — small next to a
#: training step's activations, while each chunk product (256 × d × V) is still large enough to run at full
#: matmul speed on CPU and GPU. Set ``loss_chunk_size: null`` to use the plain full-logits path.
DEFAULT_CHUNK_SIZE = 256

#: A chunk function: (z (n, V) fp32 logits, y (n,) targets, ê table or None, bound constant c, need_grad) →
#: (the measure of each of the n rows (n,), ∂(Σ rows)/∂z (n, V) — row i's gradient in row i — or None).
#: It may overwrite ``z``.
ChunkFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", float, bool],
                   tuple[torch.Tensor, "torch.Tensor | None"]]


def _rows(z: torch.Tensor) -> torch.Tensor:
    return torch.arange(z.shape[0], device=z.device)


def nll_chunk(z, y, normalized, c, need_grad):
    """nll: value = lse(z) − z_y, ∂z = p − δ_y (also ``ga``'s measure, the harmful NLL)."""
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    rows = _rows(z)
    value = lse.squeeze(-1) - z[rows, y]
    if not need_grad:
        return value, None
    p = z.sub_(lse).exp_()  # z is not needed any more: p takes its memory
    p[rows, y] -= 1.0
    return value, p


def nlcl_chunk(z, y, normalized, c, need_grad):
    """nlcl: value = lse(z) − lse_{w≠y}(z), ∂z = p − q with q = softmax(z with z_y = −∞)."""
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    others = z.clone()
    others[_rows(z), y] = float("-inf")
    lse_others = torch.logsumexp(others, dim=-1, keepdim=True)
    value = (lse - lse_others).squeeze(-1)
    if not need_grad:
        return value, None
    q = others.sub_(lse_others).exp_()
    return value, z.sub_(lse).exp_().sub_(q)


def _needs_table(normalized, name: str) -> torch.Tensor:
    if normalized is None:
        raise ValueError(f"measure {name!r} needs the normalised embedding table")
    return normalized


def emd_chunk(z, y, normalized, c, need_grad):
    """emd (one-hot target): value = 1 − p·s clamped to [0, 2] (s = ê ê_y), ∂z = −p ⊙ (s − p·s)."""
    normalized = _needs_table(normalized, "emd")
    p = z.sub_(torch.logsumexp(z, dim=-1, keepdim=True)).exp_()
    s = normalized[y] @ normalized.T  # (n, V): ê_w·ê_y
    ps = torch.bmm(p.unsqueeze(1), s.unsqueeze(2)).squeeze(-1)  # (n, 1) = p·s, no (n, V) product
    value = (1.0 - ps).clamp(0.0, 2.0).squeeze(-1)
    if not need_grad:
        return value, None
    return value, s.sub_(ps).mul_(p).neg_()


def emd_lb_chunk(z, y, normalized, c, need_grad):
    """emd_lb: value = c‖m − ê_y‖² (m = p ê), ∂z = p ⊙ (g − p·g), g = 2c (m − ê_y) êᵀ, p·g = 2c (m − ê_y)·m."""
    normalized = _needs_table(normalized, "emd_lb")
    p = z.sub_(torch.logsumexp(z, dim=-1, keepdim=True)).exp_()
    m = p @ normalized  # (n, d)
    r = m - normalized[y]
    value = c * r.pow(2).sum(-1)
    if not need_grad:
        return value, None
    g_m = (2.0 * c) * r  # (n, d)
    g = g_m @ normalized.T  # (n, V)
    pg = (g_m * m).sum(-1, keepdim=True)
    return value, g.sub_(pg).mul_(p)


#: (chunk function, rows, coefficient) or (chunk function, rows, coefficient, row weights (rows,)): a segment's
#: measure is the mean of its rows' values, or with weights Σ_i w_i v_i / Σ_i w_i
Segment = tuple


class _FusedLinearObjective(torch.autograd.Function):
    """Σ_k coef_k · (weighted) mean_{i ∈ segment k} measure_k(softmax(h_i Wᵀ), y_i), chunk by chunk, gradients in
    the forward pass into ONE ∂W buffer for all segments; the per-segment means are returned detached."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, normalized, segments, chunk_size, c, grad_enabled):
        need_h = grad_enabled and ctx.needs_input_grad[0]
        need_w = grad_enabled and ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        means, first = [], 0
        for segment in segments:
            measure, rows, coef = segment[:3]
            w = segment[3].to(device=hidden.device, dtype=torch.float32) if len(segment) > 3 else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            norm = float(w.sum()) if w is not None else float(rows)
            scale = coef / norm if rows and norm > 0 else 0.0
            for start in range(first, first + rows, chunk_size):
                stop = min(start + chunk_size, first + rows)
                h = hidden[start:stop]
                z = (h @ weight.T).float()
                value, dz = measure(z, targets[start:stop], normalized, c, need_h or need_w)
                del z
                row_w = None if w is None else w[start - first : stop - first]
                total += value.sum() if row_w is None else (value * row_w).sum()
                if dz is not None:
                    dz = dz.mul_(scale) if row_w is None else dz.mul_(row_w[:, None] * scale)
                    if need_h:
                        grad_h[start:stop] = (dz.to(weight.dtype) @ weight).to(hidden.dtype)
                    if need_w:
                        grad_w.addmm_(dz.T, h.float())
                    del dz
            mean = total / norm if norm > 0 else total
            loss += coef * mean
            means.append(mean)
            first += rows
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(*means)
        return (loss, *means)

    @staticmethod
    def backward(ctx, grad_out, *_):
        # scaled in place: a second (V, d) buffer would double the memory this function exists to save
        # (so, like fused cross-entropy kernels, it supports one backward per forward: no retain_graph reuse)
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h.mul_(grad_out.to(grad_h.dtype)) if grad_h is not None else None
        gw = grad_w.mul_(grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None, None, None, None


def fused_linear_objective(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    segments: list[Segment],
    normalized: torch.Tensor | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    constant: str = "tight",
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """L = Σ_k coef_k · M_k, M_k = mean over the rows of segment k of measure_k at P_i = softmax(hidden_i Wᵀ)
    (a segment with row weights w: M_k = Σ_i w_i measure_k(P_i) / Σ_i w_i).

    ``segments`` [(chunk function, rows, coef), ...] — :func:`nll_chunk` or a penalty's
    ``tasft.objectives.PENALTIES[name].fused`` — split the N rows of ``hidden`` / ``targets`` in order (rows sum to
    N). Returns L (differentiable) and the detached M_k. All segments accumulate into one ∂W (V, d) buffer, so
    an NLL segment plus a penalty segment cost one such buffer, like the NLL alone — on CPU every fresh
    (V, d) buffer is a new mapping whose pages fault in. Other arguments as :func:`fused_linear_measure`.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    covered = sum(seg[1] for seg in segments)
    if covered != hidden.shape[0]:
        raise ValueError(f"segments cover {covered} rows, hidden has {hidden.shape[0]}")
    if normalized is not None:
        normalized = normalized.to(device=hidden.device, dtype=torch.float32)
    c = bound_constant(constant, weight.shape[0])
    loss, *means = _FusedLinearObjective.apply(
        hidden, weight, targets, normalized, tuple(segments), int(chunk_size), c, torch.is_grad_enabled()
    )
    return loss, means


def fused_linear_measure(
    measure: ChunkFn,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    normalized: torch.Tensor | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    constant: str = "tight",
) -> torch.Tensor:
    """Mean over rows i of ``measure`` (a chunk function) at P_i = softmax(hidden_i · weightᵀ) and target ``targets_i``.

    ``hidden`` (N, d): final hidden states of the selected positions; ``weight`` (V, d): the LM-head weight;
    ``targets`` (N,) token ids; ``normalized`` (V, d) the ê table (needed for ``emd`` / ``emd_lb``);
    ``constant`` the bound constant of ``emd_lb`` ("tight" ½ or "paper" 1/(2|V|²)). No (N, V) tensor beyond
    one chunk of ``chunk_size`` rows is alive at once, in forward or backward. With no rows the result is a
    zero that still depends on the inputs (so backward runs and gives zero gradients).
    """
    loss, _ = fused_linear_objective(hidden, weight, targets, [(measure, hidden.shape[0], 1.0)], normalized,
                                     chunk_size=chunk_size, constant=constant)
    return loss


# ------------------------------------------------------------------------------------ model helpers
def _base_model(model):
    """The transformers model under DDP / PEFT wrappers."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def _sharded(model, weight: torch.Tensor) -> bool:
    """FSDP / DeepSpeed ZeRO-3 hold parameters sharded outside the model's forward."""
    for wrapper in (model, getattr(model, "module", None)):
        if any(key in type(wrapper).__name__ for key in ("FullyShard", "FSDP")):
            return True
    return hasattr(weight, "ds_id") or type(weight).__name__ == "DTensor" or weight.numel() == 0


def supports_fused(model) -> bool:
    """True when logits are exactly ``hidden_states[-1] @ W.T`` (a bias-free linear head, no soft-capping or
    logit scaling), W is whole outside the forward (not FSDP / ZeRO-3 sharded) and the forward takes
    ``logits_to_keep``; otherwise the trainer keeps the plain path."""
    base = _base_model(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if type(head) is not nn.Linear or head.bias is not None or _sharded(model, head.weight):
        return False
    config = getattr(base, "config", None)
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale"):
        if getattr(config, attr, None) not in (None, 1, 1.0):
            return False
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def lm_head_weight(model) -> torch.Tensor:
    return _base_model(model).get_output_embeddings().weight


def final_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d) final (post-norm) hidden states, through ``model`` (so DDP / PEFT hooks run), computing the
    logits of the last position only."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1]


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "emd_chunk",
    "emd_lb_chunk",
    "final_hidden_states",
    "fused_linear_measure",
    "fused_linear_objective",
    "lm_head_weight",
    "nlcl_chunk",
    "nll_chunk",
    "supports_fused",
]
