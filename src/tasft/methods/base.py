"""What a method is to tasft: its settings, checks, extra training records, trainer, and its lines in
``metrics.json`` and the model card. :class:`Method` holds the defaults (those of plain SFT)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..data import Record


@dataclass
class TrainerInputs:
    """Everything a method needs to build its trainer (the pipeline has loaded it all)."""

    cfg: TrainConfig
    model: Any
    tokenizer: Any
    data: Any  # tasft.training.pipeline.Datasets
    args: dict  # TrainingArguments keywords shared by every method (tasft.training.args)
    callbacks: list
    out_dir: Path


class Method:
    """A training method. Subclasses set the class attributes and override what differs from SFT."""

    #: the value of ``method:`` in a config
    name: ClassVar[str]
    #: its settings dataclass (with a ``BLOCK`` class attribute, the YAML key), or None
    Settings: ClassVar[type | None] = None
    #: whether training uses D_h (else D_h, when given, is only measured)
    needs_harmful: ClassVar[bool] = False
    #: the objective in one line (README method table, ``tasft train --help``)
    objective: ClassVar[str] = ""
    #: DDP's search for parameters without a gradient (None: transformers' default); see training.args
    find_unused_parameters: ClassVar[bool | None] = False

    def check(self, cfg: TrainConfig) -> None:
        """One-line :class:`~tasft.errors.TasftError` for settings this method cannot run with."""

    def extra_records(self, cfg: TrainConfig) -> tuple[list[Record], dict]:
        """Training pairs the method adds to D_u, and what ``metrics.json``'s data block says about them."""
        return [], {}

    def build_trainer(self, inputs: TrainerInputs):
        """A ``transformers.Trainer`` for the run: by default tasft's own loop with the method's D_h term."""
        from transformers import TrainingArguments

        from ..training.trainer import TasftTrainer, collate_train

        cfg, tok = inputs.cfg, inputs.tokenizer
        pad_id = tok.pad_token_id
        term = self.harmful_term(inputs)
        args = TrainingArguments(**inputs.args, per_device_train_batch_size=cfg.batch_size)
        return TasftTrainer(
            model=inputs.model, args=args, train_dataset=inputs.data.train,
            data_collator=lambda batch: collate_train(batch, pad_id), processing_class=tok,
            callbacks=inputs.callbacks, term=term, harmful=inputs.data.harmful if term else None,
            harmful_batch_size=cfg.harmful_batch_size, pad_id=pad_id, harmful_seed=cfg.seed,
            loss_chunk_size=cfg.loss_chunk_size,
        )

    def harmful_term(self, inputs: TrainerInputs):
        """The D_h term of the loss (:class:`tasft.training.terms.HarmfulTerm`), or None."""
        return None

    def summary(self, cfg: TrainConfig) -> dict:
        """The method's own lines in ``metrics.json`` (its settings, as resolved)."""
        return {}

    def label(self, cfg: TrainConfig) -> str:
        """A short name for tables and plots, e.g. ``ta-sft emd λ=1.0``."""
        return self.name

    def describe(self, cfg: TrainConfig, metrics: dict) -> str:
        """The objective sentence of the model card."""
        return self.objective

    def totals(self, trainer, result) -> tuple[int | None, int | None, float]:
        """(whole-run training tokens, this invocation's tokens, mean training loss over the whole run)."""
        totals = trainer.run_totals()
        mean = totals["loss_sum"] / totals["micro_steps"] if totals["micro_steps"] else float(result.training_loss)
        return totals["tokens"], trainer.tokens_processed, mean
