"""Stop a diverging run before a bad step reaches the weights, a checkpoint or the final model.

A mixin for any ``transformers.Trainer`` (tasft's own and TRL's KTO trainer). Per optimiser step:

* **non-finite loss** — every micro-step's loss is checked after its backward pass, before the optimiser step;
* **non-finite gradient norm** — the pre-clipping norm the Trainer computes anyway (no extra pass over the
  gradients), checked before the optimiser step;
* **collapse** — the gradient norm stays ≤ ``guard.min_grad_norm`` for ``guard.collapse_steps`` consecutive
  steps: the model has stopped learning anything, e.g. ``learning_rate=1e3`` saturates SmolLM2-135M after one step
  into a uniform guess (D_u NLL = ln|V| = 10.80, gradient norm exactly 0 from step 2 on);
* **non-finite weights** — every checkpoint and the final model are checked before they are written.

On any of these the run stops with :class:`TrainingDiverged` (one line, exit code 3). What stays on disk: every
checkpoint saved before the trouble began; checkpoints saved during a collapse (weights finite but already
collapsed) are renamed ``diverged-checkpoint-N`` — kept for inspection, never picked by ``--resume``.
Non-finite weights are never written at all.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch

from ..errors import TasftError


class TrainingDiverged(TasftError):
    """A training run stopped by the divergence guard."""

    exit_code = 3


def nonfinite_parameter(model) -> str | None:
    """The name of the first parameter holding a NaN or ±inf, or None."""
    for name, param in model.named_parameters():
        if not torch.isfinite(param.detach()).all():
            return name
    return None


#: the Trainer methods the guard wraps (private in transformers 5.x): checked at import, so that a transformers
#: release that renames one fails loudly instead of silently training unguarded
GUARDED_METHODS = ("training_step", "_get_grad_norm", "_save_checkpoint")


def _check_trainer_api() -> None:
    import inspect

    import transformers
    from transformers import Trainer, trainer

    missing = [name for name in GUARDED_METHODS if not hasattr(Trainer, name)]
    if missing or "self._get_grad_norm(" not in inspect.getsource(trainer):
        names = ", ".join(missing or ["_get_grad_norm (called by the training loop)"])
        raise ImportError(f"tasft's divergence guard needs transformers' Trainer.{names}, as in transformers 5.24; "
                          f"this is transformers {transformers.__version__}")


_check_trainer_api()


class DivergenceGuardMixin:
    """Put before the Trainer class: ``class T(DivergenceGuardMixin, Trainer)``; configure with :meth:`set_guard`."""

    _guard_collapse_steps: int | None = 3
    _guard_min_grad_norm: float = 0.0
    _guard_streak: int = 0
    _guard_streak_start: int | None = None

    def set_guard(self, collapse_steps: int | None, min_grad_norm: float) -> None:
        self._guard_collapse_steps, self._guard_min_grad_norm = collapse_steps, min_grad_norm

    def divergence_error(self, step: int, what: str, collapsed_from: int | None = None) -> TrainingDiverged:
        self._close_progress_bars()
        out = Path(self.args.output_dir)
        moved = []
        if collapsed_from is not None and self.is_world_process_zero():
            for ckpt in out.glob("checkpoint-*"):
                tail = ckpt.name.split("-", 1)[1]
                if tail.isdigit() and int(tail) >= collapsed_from:
                    target, k = ckpt.with_name(f"diverged-{ckpt.name}"), 1
                    while target.exists():  # an earlier attempt's, kept across its restart
                        k += 1
                        target = ckpt.with_name(f"diverged-{ckpt.name}.{k}")
                    shutil.move(str(ckpt), str(target))
                    moved.append(ckpt.name)
        from .checkpoints import last_checkpoint

        last = last_checkpoint(out)
        keep = (f"last good checkpoint: {last} (--resume continues from it)" if last
                else "no checkpoint was saved before it")
        if moved:
            keep += f"; {len(moved)} collapsed checkpoint(s) renamed diverged-checkpoint-N"
        return TrainingDiverged(f"training diverged at step {step}: {what} (learning_rate "
                                f"{self.args.learning_rate:g}); no final model written; {keep}")

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        # one process alone: with several, a rank whose local loss is NaN would stop while the others wait in the
        # next all-reduce; the NaN reaches every rank's gradient norm (computed after the all-reduce) instead
        if self.args.world_size == 1 and not torch.isfinite(loss.detach()).all():
            value = float(loss.detach().float().mean())
            raise self.divergence_error(self.state.global_step + 1, f"the loss is {value}")
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        value = float(norm) if norm is not None else None
        step = self.state.global_step + 1
        if value is None:
            return norm
        if not math.isfinite(value):
            raise self.divergence_error(step, f"the gradient norm is {value}")
        if self._guard_collapse_steps is not None and value <= self._guard_min_grad_norm:
            if self._guard_streak == 0:
                self._guard_streak_start = step
            self._guard_streak += 1
            if self._guard_streak >= self._guard_collapse_steps:
                # the weights that first gave no gradient came out of the step before the streak began
                raise self.divergence_error(step, f"collapsed: gradient norm {value:g} <= guard.min_grad_norm for "
                                           f"{self._guard_streak} steps since step {self._guard_streak_start}",
                                     collapsed_from=self._guard_streak_start - 1)
        else:
            self._guard_streak = 0
        return norm

    def _close_progress_bars(self) -> None:
        """Close the training bar, so that an error raised now is the last line, not a progress bar."""
        for callback in self.callback_handler.callbacks:
            if getattr(callback, "training_bar", None) is not None:
                callback.training_bar.close()
                callback.training_bar = None

    def _save_checkpoint(self, model, trial):
        bad = nonfinite_parameter(self.model)
        if bad is not None:
            raise self.divergence_error(self.state.global_step, f"parameter {bad} is not finite")
        try:
            return super()._save_checkpoint(model, trial)
        except Exception as exc:  # torch, safetensors and json each fail in their own way on a full disk
            from .checkpoints import disk_full_error, no_space

            out = Path(self.args.output_dir)
            if not self.is_world_process_zero() or not no_space(exc, out):
                raise
            self._close_progress_bars()
            raise disk_full_error(out, f"checkpoint-{self.state.global_step}") from None
