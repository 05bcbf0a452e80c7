"""The D_h term of a training objective, as the trainer sees it: L = NLL(D_u) + term(D_h).

A method that trains on harmful data (TA-SFT's penalties, NPO, SimNPO) gives the trainer one :class:`HarmfulTerm`.
The trainer owns the batches, the forward passes and the bookkeeping; the term owns the formula:

- :meth:`HarmfulTerm.loss` — the plain path: from the D_h logits (and a frozen reference model's, when the term
  has one) → (its contribution to L, the measure that is logged);
- :meth:`HarmfulTerm.fused` — optionally a token-level measure the fused LM-head path computes in the same pass as
  the D_u NLL: (chunk function, coefficient, embedding table) with contribution = coefficient · mean measure.
"""

from __future__ import annotations

import torch

from .fused import ChunkFn


class HarmfulTerm:
    """Base class: no fused form, no reference model, every harmful response token counted."""

    #: key of the logged measure (in log.jsonl, TensorBoard)
    log_key: str = "harmful_term"
    #: penalise only the first N response tokens of each D_h answer (None: all of them)
    first_tokens: int | None = None
    #: weigh the t-th penalised token by exp(−t/τ) (τ = this, in tokens; None: every token alike)
    position_decay: float | None = None
    #: (V,) weight of each token id at the penalised positions (None: every token alike)
    token_weights: torch.Tensor | None = None

    def __init__(self, reference: torch.nn.Module | None = None) -> None:
        #: a frozen copy of the starting model whose logits the term needs, or None
        self.reference = reference

    @property
    def needs_reference(self) -> bool:
        return self.reference is not None

    def callbacks(self) -> list:
        """Trainer callbacks the term needs while training (TA-SFT's λ controller); the trainer adds them."""
        return []

    def state(self) -> dict | None:
        """What each checkpoint keeps so that a resumed run's term goes on where it was (None: nothing)."""
        return None

    def load_state(self, state: dict) -> None:
        """Take back a checkpoint's :meth:`state`."""

    def log_values(self) -> dict[str, float]:
        """Values added to each training log line, beside the term's measure."""
        return {}

    def summary(self) -> dict:
        """What ``metrics.json`` adds about the term at the end of the run."""
        return {}

    def fused(self, device: torch.device) -> tuple[ChunkFn, float, torch.Tensor | None] | None:
        """(chunk function, coefficient, embedding table on ``device``) for the fused path, or None."""
        return None

    def reference_logits(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The reference model's logits on the batch (no gradient), or None."""
        if self.reference is None:
            return None
        with torch.no_grad():
            return self.reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
             ref_logits: torch.Tensor | None, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(contribution to L, logged measure) from next-token-aligned ``logits`` (B, T, V), ``targets`` (B, T),
        ``mask`` (B, T) of the penalised tokens, the reference's aligned logits and, when the term sets
        ``position_decay``, the aligned per-token ``weights`` (B, T)."""
        raise NotImplementedError
