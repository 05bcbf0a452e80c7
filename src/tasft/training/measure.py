"""Teacher-forced likelihood measurements used before and after training.

``mean_token_logprob`` = Σ_{masked t} log P_θ(y_t | y_<t, x) / #masked tokens, over a whole data set
(token-weighted). On D_h it shows how far the model moved off its harmful responses; its negation on a
held-out D_u split is the held-out NLL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import Tokenized, collate


@torch.no_grad()
def mean_token_logprob(
    model, examples: list[Tokenized], pad_id: int, mask: str = "response", batch_size: int = 8,
    progress: bool = True, desc: str = "measure",
) -> float:
    """Token-weighted mean log-probability of the masked tokens (``mask`` as in :func:`collate`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        batch = collate([examples[i] for i in order[start : start + batch_size]], pad_id, mask=mask)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits, targets, keep = logits[:, :-1], batch["input_ids"][:, 1:], batch["loss_mask"][:, 1:]
        picked = logits[keep].float()
        total += float(-F.cross_entropy(picked, targets[keep], reduction="sum"))
        count += int(keep.sum())
    model.train(was_training)
    return total / max(count, 1)
