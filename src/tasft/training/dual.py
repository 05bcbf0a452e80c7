"""λ by constraint (``ta_sft.lambda_budget``): the user gives ε, the allowed relative rise of the held-out D_u NLL,
instead of sweeping λ.

TA-SFT asks for as much penalty as the ordinary data allow: maximise the penalty subject to
g(θ) = NLL_held-out(θ) / NLL_ref − 1 − ε ≤ 0. With μ = 1/λ the Lagrangian's multiplier of that constraint, one step
of dual ascent on log μ every ``logging_steps`` optimizer steps is

    λ ← clip(λ · exp(−η · g(θ)), λ₀ / 1000, 1000 · λ₀)

(η = ``lambda_step``): the held-out NLL over budget shrinks λ, under budget grows it. NLL_ref is
``lambda_reference_nll`` when given, else the NLL on the same rows of ``lambda_reference_model`` (e.g. plain SFT's
run directory: the issue's "within ε of plain SFT") when given, else the starting model's, measured before the
first step; the held-out batch is the *last* :data:`HELDOUT_ROWS` rows of
``eval_data``, measured in eval mode without gradients. Last, because the evaluation's quality suite takes the first
rows of the same AlpacaEval held-out split (the ``full`` spec: 100 of its 155 pairs): λ is never steered by the
answers its reference NLL is judged on.
"""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback

from ..data.batches import Tokenized, collate
from ..objectives import losses

HELDOUT_ROWS = 16
CLIP = 1000.0


def dual_update(lam: float, nll: float, reference: float, budget: float, step: float, lam0: float) -> float:
    """λ · exp(−η · (NLL / NLL_ref − 1 − ε)), clipped to [λ₀ / 1000, 1000 · λ₀] (see the module docstring)."""
    g = nll / reference - 1.0 - budget
    return min(max(lam * math.exp(-step * g), lam0 / CLIP), lam0 * CLIP)


@torch.no_grad()
def heldout_nll(model, rows: list[Tokenized], pad_id: int, batch_size: int = 8) -> float:
    """Token-weighted NLL of ``rows`` (their response tokens) under ``model``, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for start in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[start:start + batch_size], pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            lg, tg, mk = losses.shift_for_causal_lm(logits, batch["input_ids"], batch["loss_mask"])
            n = int(mk.sum())
            total += float(losses.nll_from_logits(lg, tg, mk)) * n
            count += n
    finally:
        model.train(was_training)
    return total / max(count, 1)


def reference_model_nll(name: str, model, rows: list[Tokenized], pad_id: int) -> float:
    """:func:`heldout_nll` of ``rows`` under the model ``name`` (loaded for this, then freed), on ``model``'s device;
    its vocabulary must be ``model``'s — the rows are token ids of the run's tokenizer."""
    from ..errors import TasftError
    from ..models import load_model

    other = load_model(name).to(next(model.parameters()).device)
    try:
        mine, theirs = model.get_input_embeddings().weight.shape[0], other.get_input_embeddings().weight.shape[0]
        if mine != theirs:
            raise TasftError(f"ta_sft.lambda_reference_model: {name} has a vocabulary of {theirs} tokens, the model "
                             f"being trained {mine}: the reference must share the run's tokenizer")
        return heldout_nll(other, rows, pad_id)
    finally:
        del other


class LambdaController(TrainerCallback):
    """Adapts ``term.lam`` by :func:`dual_update` every ``logging_steps`` steps; ``last`` holds what it measured."""

    def __init__(self, term, heldout: list[Tokenized], pad_id: int, budget: float, step: float,
                 reference: float | None = None, reference_model: str | None = None) -> None:
        if not heldout:
            raise ValueError("the λ controller needs held-out rows")
        self.term, self.rows, self.pad_id = term, heldout[-HELDOUT_ROWS:], pad_id  # outside the evaluation's
        self.budget, self.step, self.reference, self.lam0 = budget, step, reference, term.lam
        self.reference_model = reference_model
        self.last: dict[str, float] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.reference is None and self.reference_model is not None:
            self.reference = reference_model_nll(self.reference_model, model, self.rows, self.pad_id)
        if self.reference is None:  # the starting model's (a resumed run restores it from its checkpoint)
            self.reference = heldout_nll(model, self.rows, self.pad_id)
        self.last = {"heldout_nll": self.reference, "lambda": self.term.lam}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % max(int(state.logging_steps or args.logging_steps), 1):  # the Trainer's log steps
            return
        nll = heldout_nll(model, self.rows, self.pad_id)
        self.term.lam = dual_update(self.term.lam, nll, self.reference, self.budget, self.step, self.lam0)
        self.last = {"heldout_nll": nll, "lambda": self.term.lam}
