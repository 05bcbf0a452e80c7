"""λ by constraint (``ta_sft.lambda_budget``): the user gives ε, the allowed relative rise of the held-out D_u NLL,
instead of sweeping λ.

TA-SFT asks for as much penalty as the ordinary data allow: maximise the penalty subject to
g(θ) = NLL_held-out(θ) / NLL_ref − 1 − ε ≤ 0. With μ = 1/λ the Lagrangian's multiplier of that constraint, one step
of dual ascent on log μ every ``logging_steps`` optimizer steps is

    λ ← clip(λ · exp(−η · g(θ)), λ₀ / 1000, 1000 · λ₀)

(η = ``lambda_step``): the held-out NLL over budget shrinks λ, under budget grows it. NLL_ref is
``lambda_reference_nll`` when given, else the NLL on the same rows of ``lambda_reference_model`` (e.g. plain SFT's
run directory: the issue's "within ε of plain SFT") when given, measured before the first step — else, with
``lambda_reference_run``, **a curve**: NLL_ref(t) is that run's NLL on the same rows after *its* step t
(:class:`HeldoutNllLog` wrote it: plain SFT trained with ``log_heldout_nll: true``), so a run is compared with SFT
at the same point of training rather than with SFT's final NLL, which it cannot reach in its first steps — else
the starting model's, measured before the first step. The held-out batch is the *last* :data:`HELDOUT_ROWS` rows of
``eval_data``, measured in eval mode without gradients. Last, because the evaluation's quality suite takes the first
rows of the same AlpacaEval held-out split (the ``full`` spec: 100 of its 155 pairs): λ is never steered by the
answers its reference NLL is judged on.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..config import MEASURE_BATCH_SIZE
from ..data.batches import Tokenized, collate
from ..objectives import losses

HELDOUT_ROWS = 16
CLIP = 1000.0
HELDOUT_FILE = "heldout_nll.json"  # a log_heldout_nll run's curve: {"rows": fingerprint, "steps": {"5": nll, ...}}


def dual_update(lam: float, nll: float, reference: float, budget: float, step: float, lam0: float) -> float:
    """λ · exp(−η · (NLL / NLL_ref − 1 − ε)), clipped to [λ₀ / 1000, 1000 · λ₀] (see the module docstring)."""
    g = nll / reference - 1.0 - budget
    return min(max(lam * math.exp(-step * g), lam0 / CLIP), lam0 * CLIP)


@torch.no_grad()
def heldout_nll(model, rows: list[Tokenized], pad_id: int, batch_size: int = MEASURE_BATCH_SIZE) -> float:
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


def rows_fingerprint(rows: list[Tokenized]) -> str:
    """A hash of the held-out rows' token ids and prompt/response split: two runs measured the same rows iff equal."""
    text = json.dumps([[list(r.input_ids), r.prompt_len, r.response_len] for r in rows])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def controller_rows(heldout: list[Tokenized]) -> list[Tokenized]:
    """The rows the controller measures: the last :data:`HELDOUT_ROWS` held-out rows (see the module docstring)."""
    return heldout[-HELDOUT_ROWS:]


def reference_curve_file(run: str) -> Path:
    """``run``'s :data:`HELDOUT_FILE`, or a one-line error saying how to make it."""
    from ..errors import TasftError

    path = Path(run) / HELDOUT_FILE
    if not path.is_file():
        raise TasftError(f"ta_sft.lambda_reference_run: {path} not found (train the reference with "
                         "log_heldout_nll: true)")
    return path


def read_reference_curve(run: str, rows: list[Tokenized], logging_steps: int, max_steps: int) -> dict[int, float]:
    """``run``'s :data:`HELDOUT_FILE` as {step: NLL}; a one-line error unless it measured these ``rows`` at every
    logging step up to ``max_steps``."""
    from ..errors import TasftError

    path = reference_curve_file(run)
    what = "ta_sft.lambda_reference_run"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        curve = {int(k): float(v) for k, v in saved["steps"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise TasftError(f"{what}: {path} is not a held-out NLL curve tasft wrote") from None
    if saved.get("rows") != rows_fingerprint(rows):
        raise TasftError(f"{what}: {run} measured other held-out rows (its eval_data, max_length or tokenizer "
                         "differ from this run's)")
    missing = [t for t in range(logging_steps, max_steps + 1, logging_steps) if t not in curve]
    if missing:
        raise TasftError(f"{what}: {run} has no held-out NLL at step {missing[0]} ({len(missing)} of this run's "
                         f"logging steps missing: it must run at least {max_steps} steps with logging_steps "
                         f"{logging_steps})")
    return curve


def _logging_every(args, state) -> int:
    """The Trainer's logging interval in steps."""
    return max(int(state.logging_steps or args.logging_steps), 1)


def _logging_step(args, state) -> bool:
    return state.global_step % _logging_every(args, state) == 0


class HeldoutNllLog(TrainerCallback):
    """``log_heldout_nll: true``: the held-out NLL on the controller's rows after step 0 and every logging step,
    written to ``path`` (:data:`HELDOUT_FILE`) on the main process; a resumed run keeps the steps up to its
    checkpoint and measures the rest again."""

    def __init__(self, heldout: list[Tokenized], pad_id: int, path: str | Path) -> None:
        self.rows, self.pad_id, self.path = controller_rows(heldout), pad_id, Path(path)
        self.steps: dict[str, float] = {}

    def _write(self) -> None:
        from ..io_utils import write_json_atomic

        write_json_atomic(self.path, {"rows": rows_fingerprint(self.rows), "steps": self.steps})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if state.global_step > 0 and self.path.is_file():
            kept = json.loads(self.path.read_text(encoding="utf-8")).get("steps", {})
            self.steps = {k: v for k, v in kept.items() if int(k) <= state.global_step}
        if state.global_step == 0:
            self.steps = {"0": heldout_nll(model, self.rows, self.pad_id)}
        self._write()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and _logging_step(args, state):
            self.steps[str(state.global_step)] = heldout_nll(model, self.rows, self.pad_id)
            self._write()


class LambdaController(TrainerCallback):
    """Adapts ``term.lam`` by :func:`dual_update` every ``logging_steps`` steps; ``last`` holds what it measured."""

    def __init__(self, term, heldout: list[Tokenized], pad_id: int, budget: float, step: float,
                 reference: float | None = None, reference_model: str | None = None,
                 reference_run: str | None = None) -> None:
        if not heldout:
            raise ValueError("the λ controller needs held-out rows")
        self.term, self.rows, self.pad_id = term, controller_rows(heldout), pad_id  # outside the evaluation's
        self.budget, self.step, self.reference, self.lam0 = budget, step, reference, term.lam
        self.reference_model, self.reference_run = reference_model, reference_run
        self.curve: dict[int, float] | None = None
        self.last: dict[str, float] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.reference_run is not None:  # NLL_ref(t): the reference run's after its step t
            self.curve = read_reference_curve(self.reference_run, self.rows, _logging_every(args, state),
                                              state.max_steps)
            self.reference = self.curve.get(state.global_step, self.curve[min(self.curve)])
        if self.reference is None and self.reference_model is not None:
            self.reference = reference_model_nll(self.reference_model, model, self.rows, self.pad_id)
        if self.reference is None:  # the starting model's (a resumed run restores it from its checkpoint)
            self.reference = heldout_nll(model, self.rows, self.pad_id)
        self.last = {"heldout_nll": self.reference, "lambda": self.term.lam}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not _logging_step(args, state):  # the Trainer's log steps
            return
        if self.curve is not None:
            self.reference = self.curve[state.global_step]
        nll = heldout_nll(model, self.rows, self.pad_id)
        self.term.lam = dual_update(self.term.lam, nll, self.reference, self.budget, self.step, self.lam0)
        self.last = {"heldout_nll": nll, "lambda": self.term.lam}
