"""Teacher-forced likelihood measurements used before and after training.

``mean_token_logprob`` = Σ_{masked t} log P_θ(y_t | y_<t, x) / #masked tokens, over a whole data set
(token-weighted). On D_h it shows how far the model moved off its harmful responses; its negation on a
held-out D_u split is the held-out NLL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.batches import Tokenized, collate


@torch.no_grad()
def token_logprob_sums(
    model, examples: list[Tokenized], pad_id: int, mask: str = "response", batch_size: int = 8,
    progress: bool = True, desc: str = "measure",
) -> list[tuple[float, int]]:
    """Per example, in input order: (Σ_{masked t} log P_θ(y_t | y_<t, x), #masked tokens)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = [(0.0, 0)] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        batch = collate([examples[i] for i in idx], pad_id, mask=mask)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits, targets, keep = logits[:, :-1], batch["input_ids"][:, 1:], batch["loss_mask"][:, 1:]
        token_lp = -F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        sums, counts = (token_lp * keep).sum(1).tolist(), keep.sum(1).tolist()
        for j, i in enumerate(idx):
            out[i] = (float(sums[j]), int(counts[j]))
    model.train(was_training)
    return out


def mean_token_logprob(
    model, examples: list[Tokenized], pad_id: int, mask: str = "response", batch_size: int = 8,
    progress: bool = True, desc: str = "measure",
) -> float:
    """Token-weighted mean log-probability of the masked tokens (``mask`` as in :func:`collate`)."""
    sums = token_logprob_sums(model, examples, pad_id, mask, batch_size, progress, desc)
    return sum(s for s, _ in sums) / max(sum(n for _, n in sums), 1)
