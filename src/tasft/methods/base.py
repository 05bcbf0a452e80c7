"""What a method is to tasft: its settings, checks, extra training records, trainer, and its lines in
``metrics.json`` and the model card. :class:`Method` holds the defaults (those of plain SFT)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..data.records import Record


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
    #: builds tasft's own loop from these inputs (the pipeline passes :func:`tasft.training.api.loop_trainer`)
    loop_trainer: Callable[[TrainerInputs], Any] | None = None
    #: the trainer mixins every trainer of a run carries (the pipeline passes the divergence guard and the tied-weights
    #: resume fix, :data:`tasft.training.trainer.TRAINER_MIXINS`): a method with a trainer of its own puts them first
    mixins: tuple[type, ...] = ()


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
    #: whether the method brings a trainer of its own (KTO: TRL's) instead of tasft's loop
    own_trainer: ClassVar[bool] = False
    #: DDP's search for parameters without a gradient (None: transformers' default); see training.args
    find_unused_parameters: ClassVar[bool | None] = False

    def check(self, cfg: TrainConfig) -> None:
        """One-line :class:`~tasft.errors.TasftError` for settings this method cannot run with."""

    def other_models(self, cfg: TrainConfig) -> list[str]:
        """Models the run loads besides ``cfg.model`` (checked loadable before the run writes anything)."""
        return []

    def input_paths(self, cfg: TrainConfig) -> dict[str, str]:
        """Paths the run reads besides its data sources (its settings' ``PATH_FIELDS`` and :meth:`other_models`),
        by the key that sets them: the run's output directory may neither hold nor lie inside any of them."""
        paths = {}
        if self.Settings is not None and cfg.method_settings is not None:
            for name in self.Settings.PATH_FIELDS:
                if isinstance(value := getattr(cfg.method_settings, name, None), str):
                    paths[f"{self.Settings.BLOCK}.{name}"] = value
        paths.update({f"the model {m}": m for m in self.other_models(cfg)})
        return paths

    def check_inputs(self, cfg: TrainConfig) -> None:
        """Files the run reads besides its data and models, checked before the run writes anything (one-line
        :class:`~tasft.errors.TasftError`); settings alone are :meth:`check`'s."""

    def extra_records(self, cfg: TrainConfig) -> tuple[list[Record], dict]:
        """Training pairs the method adds to D_u, and what ``metrics.json``'s data block says about them."""
        return [], {}

    def build_trainer(self, inputs: TrainerInputs):
        """A ``transformers.Trainer`` for the run: by default tasft's own loop with the method's D_h term — the
        TRL-style :class:`tasft.training.api.TASFTTrainer` the Python API gives, on the pipeline's data."""
        if inputs.loop_trainer is None:
            raise TypeError("TrainerInputs.loop_trainer is not set (tasft.training.api.loop_trainer builds the loop)")
        return inputs.loop_trainer(inputs)

    def harmful_term(self, inputs: TrainerInputs):
        """The D_h term of the loss (:class:`tasft.objectives.terms.HarmfulTerm`), or None."""
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
