"""Checkpoints of a run: which are complete, the newest one to resume from, and resuming at ``max_steps``."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def checkpoint_complete(checkpoint: Path) -> bool:
    """Whether a ``checkpoint-N`` directory was written to the end: the Trainer writes ``trainer_state.json``
    after the weights, optimizer, scheduler and RNG state, so a readable one with step N marks a whole checkpoint."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return str(state.get("global_step")) == checkpoint.name.rsplit("-", 1)[-1]


def last_checkpoint(path: Path, drop_incomplete: bool = False) -> str | None:
    """The newest complete ``checkpoint-N`` in ``path``; with ``drop_incomplete`` (the process that owns the
    run, when resuming), newer torn ones — a run killed while writing one — are removed, each with a note."""
    if not path.is_dir():
        return None
    found = sorted((p for p in path.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()),
                   key=lambda p: int(p.name.split("-", 1)[1]), reverse=True)
    for ckpt in found:
        if checkpoint_complete(ckpt):
            return str(ckpt)
        if drop_incomplete:
            log.warning("skipping %s: it was not completely written (interrupted while saving); removed", ckpt)
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def checkpoint_step(checkpoint: str) -> int:
    state = Path(checkpoint) / "trainer_state.json"
    return int(json.loads(state.read_text(encoding="utf-8")).get("global_step", 0)) if state.exists() else 0


def run_training(trainer, checkpoint: str | None, max_steps: int):
    """``trainer.train``, resuming from ``checkpoint``, except when the checkpoint already reached ``max_steps``:
    transformers' loop would then run one more step before it checks the limit, so the checkpoint's weights
    and state are loaded instead (training loss: the mean of its logged losses)."""
    if checkpoint is None or checkpoint_step(checkpoint) < max_steps:
        return trainer.train(resume_from_checkpoint=checkpoint)
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    if trainer.state.global_step > max_steps:
        log.warning("%s is at step %d, past max_steps %d: kept as the final model", checkpoint,
                    trainer.state.global_step, max_steps)
    logged = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return TrainOutput(trainer.state.global_step, sum(logged) / len(logged) if logged else float("nan"), {})


def tied_parameter_names(model) -> set[str]:
    """Names of parameters that share their tensor with another name (tied input/output embeddings)."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return {n for names in groups.values() if len(names) > 1 for n in names}


class TiedWeightsLoadMixin:
    """Resume without transformers' false alarm "missing keys in the checkpoint: ['lm_head.weight']": a model with
    tied embeddings saves the shared tensor once, and loading it fills both names (weights resume bit-identical)."""

    def _issue_warnings_after_load(self, load_result):
        tied = tied_parameter_names(self.model)
        missing = [k for k in getattr(load_result, "missing_keys", []) if k not in tied]
        if hasattr(load_result, "_replace"):
            load_result = load_result._replace(missing_keys=missing)
        return super()._issue_warnings_after_load(load_result)
