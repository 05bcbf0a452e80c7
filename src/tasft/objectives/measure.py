"""Teacher-forced likelihood measurements used before and after training.

``mean_token_logprob`` = Σ_{masked t} log P_θ(y_t | y_<t, x) / #masked tokens, over a whole data set
(token-weighted). On D_h it shows how far the model moved off its harmful responses; its negation on a
held-out D_u split is the held-out NLL.

Where the model allows it (:func:`tasft.objectives.fused.supports_fused`), log P_θ(y_t | ·) = z_y − lse(z) is
computed from the final hidden states of the masked positions only, ``chunk`` rows of logits z = h Wᵀ at a time —
never the (B, T, V) logits of every position (prompt and padding included), which for a 262k vocabulary are GBs per
batch; otherwise from the model's full logits. Both give the same numbers to float rounding (tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import MEASURE_BATCH_SIZE
from ..data.batches import Tokenized, collate
from . import fused

CHUNK_ROWS = fused.DEFAULT_CHUNK_SIZE


@torch.no_grad()
def token_logprob_sums(
    model, examples: list[Tokenized], pad_id: int, mask: str = "response", batch_size: int = MEASURE_BATCH_SIZE,
    progress: bool = True, desc: str = "measure",
) -> list[tuple[float, int]]:
    """Per example, in input order: (Σ_{masked t} log P_θ(y_t | y_<t, x), #masked tokens)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = [(0.0, 0)] * len(examples)
    use_fused = fused.supports_fused(model)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        batch = collate([examples[i] for i in idx], pad_id, mask=mask)
        batch = {k: v.to(device) for k, v in batch.items()}
        if use_fused:
            sums_t, counts_t = _masked_logprob_sums(model, batch)
        else:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits, targets, keep = logits[:, :-1], batch["input_ids"][:, 1:], batch["loss_mask"][:, 1:]
            token_lp = -F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
            sums_t, counts_t = (token_lp * keep).sum(1), keep.sum(1)
        sums, counts = sums_t.tolist(), counts_t.tolist()
        for j, i in enumerate(idx):
            out[i] = (float(sums[j]), int(counts[j]))
    model.train(was_training)
    return out


def _masked_logprob_sums(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``batch``: Σ over its masked next-token positions of z_y − lse(z), and their count, from the
    final hidden states of those positions (:data:`CHUNK_ROWS` rows of logits at a time)."""
    hidden = fused.final_hidden_states(model, batch["input_ids"], batch["attention_mask"])[:, :-1]
    targets, keep = batch["input_ids"][:, 1:], batch["loss_mask"][:, 1:].bool()
    rows = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)[keep]
    h, y = hidden[keep], targets[keep]
    weight = fused.lm_head_weight(model)
    logprob = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    for start in range(0, h.shape[0], CHUNK_ROWS):
        z = (h[start:start + CHUNK_ROWS] @ weight.T).float()  # the head's own dtype, then fp32 as the plain path
        value, _ = fused.nll_chunk(z, y[start:start + CHUNK_ROWS], None, 0.0, False)
        logprob[start:start + CHUNK_ROWS] = -value
    sums = torch.zeros(keep.shape[0], dtype=torch.float32, device=h.device).index_add_(0, rows, logprob)
    return sums, keep.sum(1)


def mean_token_logprob(
    model, examples: list[Tokenized], pad_id: int, mask: str = "response", batch_size: int = MEASURE_BATCH_SIZE,
    progress: bool = True, desc: str = "measure",
) -> float:
    """Token-weighted mean log-probability of the masked tokens (``mask`` as in :func:`collate`)."""
    sums = token_logprob_sums(model, examples, pad_id, mask, batch_size, progress, desc)
    return sum(s for s, _ in sums) / max(sum(n for _, n in sums), 1)
