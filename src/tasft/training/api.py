"""The TRL-style Python API: :class:`TASFTConfig` (``TrainingArguments`` plus the method's settings) and
:class:`TASFTTrainer` (``Trainer(model, args, train_dataset, harmful_dataset, processing_class=…)``).

Datasets come in TRL's standard formats — ``prompt``/``completion`` text, conversational ``prompt``/``completion``
message lists, or ``messages`` whose last turn is the assistant's — as a ``datasets.Dataset`` or a list of dicts
(every format :func:`tasft.data.parse_record` reads). ``tasft train`` and :func:`tasft.train` build the same
trainer from a YAML config (:meth:`tasft.methods.base.Method.build_trainer`), so one class runs both.

Example (runs offline on the built-in default model)::

    from datasets import Dataset
    from tasft import TASFTConfig, TASFTTrainer
    from tasft.models import load_model, load_tokenizer

    model, tok = load_model("smollm2-135m-instruct"), load_tokenizer("smollm2-135m-instruct")
    benign = Dataset.from_list([{"prompt": "Name a prime number.", "completion": "Seven is prime."}] * 8)
    harmful = Dataset.from_list([{"messages": [{"role": "user", "content": "..."},
                                               {"role": "assistant", "content": "..."}]}] * 4)
    args = TASFTConfig(output_dir="runs/api", method="ta-sft", method_args={"penalty": "emd", "lambda": 1.0},
                       max_steps=2, per_device_train_batch_size=2, harmful_batch_size=2, report_to="none")
    TASFTTrainer(model, args, train_dataset=benign, harmful_dataset=harmful, processing_class=tok).train()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from transformers import TrainingArguments

from ..config import TrainConfig, from_dict, to_dict
from ..data.batches import Tokenized, tokenize_records
from ..data.records import Record, parse_record
from ..errors import TasftError
from ..methods import METHODS, TrainerInputs, get_method
from .trainer import MethodTrainer, collate_train


def loop_methods() -> list[str]:
    """The methods that run in tasft's own loop (every one but those with a trainer of their own, e.g. KTO's)."""
    return [name for name, m in METHODS.items() if not m.own_trainer]


@dataclass
class TASFTConfig(TrainingArguments):
    """``TrainingArguments`` plus what tasft adds: ``method`` (a registered method of tasft's own loop),
    ``method_args`` (its settings, the keys of its YAML block, e.g. ``{"penalty": "emd", "lambda": 1.0}`` for
    ``ta-sft``), ``harmful_batch_size`` (D_h rows per micro-step), ``max_length`` (tokens per pair, the response
    truncated to fit) and ``loss_chunk_size`` (rows per chunk of the fused losses; None: full logits)."""

    method: str = TrainConfig.method  # each default is TrainConfig's (one default per setting)
    method_args: dict | None = None
    harmful_batch_size: int = TrainConfig.harmful_batch_size
    max_length: int = TrainConfig.max_length
    loss_chunk_size: int | None = TrainConfig.loss_chunk_size
    data_dir: str | None = None
    remove_unused_columns: bool = False  # the batches are tasft's own, not model keywords

    def __post_init__(self) -> None:
        import torch

        super().__post_init__()
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # nothing to pin to
        self.train_config()  # bad settings fail here, in one line

    def train_config(self, model: str = "") -> TrainConfig:
        """The equivalent :class:`TrainConfig` (the method's settings resolved and checked)."""
        if self.method_args is not None and not isinstance(self.method_args, dict):
            raise TasftError(f"TASFTConfig.method_args: a mapping of the method's settings, got "
                             f"{type(self.method_args).__name__}")
        if self.method not in METHODS:
            raise TasftError(f"TASFTConfig.method: unknown method '{self.method}' (choose from {', '.join(METHODS)})")
        if self.method not in loop_methods():
            raise TasftError(f"TASFTConfig.method: '{self.method}' has a trainer of its own (use `tasft train` "
                             f"with method: {self.method}); this API runs {', '.join(loop_methods())}")
        method = get_method(self.method)
        if method.Settings is None and self.method_args:
            raise TasftError(f"TASFTConfig.method_args: method {self.method} has no settings")
        settings = from_dict(method.Settings, dict(self.method_args or {}), where="method_args") \
            if method.Settings is not None else None
        sizes = (("harmful_batch_size", self.harmful_batch_size, 1), ("max_length", self.max_length, 2),
                 ("loss_chunk_size", self.loss_chunk_size, 1))
        for name, value, least in sizes:
            if (value is not None or name != "loss_chunk_size") and (not isinstance(value, int) or value < least):
                raise TasftError(f"TASFTConfig.{name}: an integer ≥ {least}, got {value!r}")
        cfg = TrainConfig(model=model, method=self.method, method_settings=settings, max_length=self.max_length,
                          batch_size=self.per_device_train_batch_size, harmful_batch_size=self.harmful_batch_size,
                          loss_chunk_size=self.loss_chunk_size, seed=self.seed, harmful_data=None,
                          data_dir=self.data_dir)
        method.check(cfg)
        return cfg


def as_tokenized(dataset: Iterable | None, tokenizer, max_length: int, name: str) -> list[Tokenized] | None:
    """A dataset (``datasets.Dataset``, list of dicts, or already tokenised pairs) as tokenised pairs; every row
    needs a response."""
    if dataset is None:
        return None
    rows = list(dataset)
    if _tokenized(rows):
        return rows
    if not rows:
        raise TasftError(f"{name} is empty")
    records: list[Record] = [parse_record(dict(row) if not isinstance(row, str) else row, f"{name}[{i}]")
                             for i, row in enumerate(rows)]
    missing = next((r.origin for r in records if r.response is None), None)
    if missing is not None:
        raise TasftError(f"{missing}: no response (a {name} row needs its completion; harvest D_h answers first "
                         f"with tasft.harvest)")
    return tokenize_records(tokenizer, records, max_length)[0]


def _tokenized(rows: Iterable) -> bool:
    return isinstance(rows, list) and bool(rows) and all(isinstance(r, Tokenized) for r in rows)


class TASFTTrainer(MethodTrainer):
    """A ``transformers.Trainer`` for every method of tasft's loop: L = NLL(train_dataset) + the method's term on
    ``harmful_dataset`` (TA-SFT: λ·sign·penalty; NPO, SimNPO: their sequence losses; SFT: none).

    ``model`` is a model or a name (an alias such as ``smollm2-135m-instruct``, a hub id or a path);
    ``processing_class`` its tokenizer (loaded from the name when omitted); ``peft_config`` a PEFT config to wrap
    the model with (as TRL's trainers take it); ``eval_dataset`` held-out D_u pairs (what ``ta_sft.lambda_budget``
    measures); other keywords go to ``transformers.Trainer``.
    """

    def __init__(self, model: Any, args: TASFTConfig | None = None, train_dataset: Iterable | None = None,
                 harmful_dataset: Iterable | None = None, processing_class: Any = None, callbacks: list | None = None,
                 peft_config: Any = None, eval_dataset: Iterable | None = None, **kwargs) -> None:
        from ..models import load_model, load_tokenizer

        name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
        if isinstance(model, str):
            model = load_model(model)
        if processing_class is None:
            if not name:
                raise TasftError("TASFTTrainer: pass processing_class (the model's tokenizer)")
            processing_class = load_tokenizer(name)
        if processing_class.pad_token_id is None:
            processing_class.pad_token = processing_class.eos_token
        args = args if args is not None else TASFTConfig(output_dir="tasft-output", report_to="none")
        if not isinstance(args, TASFTConfig):
            args = TASFTConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments)
                                  if f.init})
        cfg = args.train_config(name)
        if train_dataset is None:
            raise TasftError("TASFTTrainer: train_dataset is required (D_u, the ordinary instruction data)")
        method = get_method(args.method)
        train = as_tokenized(train_dataset, processing_class, args.max_length, "train_dataset")
        if not _tokenized(train_dataset):  # from `tasft train` D_u already holds them
            extra, _ = method.extra_records(cfg)  # e.g. STL's refusal examples
            train += tokenize_records(processing_class, extra, args.max_length)[0] if extra else []
        harmful = as_tokenized(harmful_dataset, processing_class, args.max_length, "harmful_dataset")
        heldout = as_tokenized(eval_dataset, processing_class, args.max_length, "eval_dataset")
        if method.needs_harmful and harmful is None:
            raise TasftError(f"TASFTTrainer: method {args.method} needs harmful_dataset (D_h, harmful responses)")
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        from .datasets import Datasets

        data = Datasets(train=train, harmful=harmful, eval=heldout, stats={}, train_records=[], harmful_records=None)
        term = method.harmful_term(TrainerInputs(cfg, model, processing_class, data, {}, callbacks or [], None))
        pad_id = processing_class.pad_token_id
        super().__init__(model=model, args=args, train_dataset=train, processing_class=processing_class,
                         data_collator=lambda batch: collate_train(batch, pad_id), callbacks=callbacks,
                         term=term, harmful=harmful if term else None, harmful_batch_size=args.harmful_batch_size,
                         pad_id=pad_id, harmful_seed=args.seed, loss_chunk_size=args.loss_chunk_size,
                         eval_dataset=heldout, **kwargs)
        for callback in term.callbacks() if term is not None else []:
            self.add_callback(callback)


def loop_trainer(inputs: TrainerInputs) -> TASFTTrainer:
    """tasft's own loop for a YAML run (:meth:`tasft.methods.base.Method.build_trainer`): a TASFTTrainer on the
    pipeline's tokenised data."""
    method = get_method(inputs.cfg.method)
    return TASFTTrainer(inputs.model, config_from(inputs.cfg, inputs.args), train_dataset=inputs.data.train,
                        harmful_dataset=inputs.data.harmful if method.needs_harmful else None,
                        processing_class=inputs.tokenizer, callbacks=inputs.callbacks, eval_dataset=inputs.data.eval)


def config_from(cfg: TrainConfig, training_kwargs: dict) -> TASFTConfig:
    """The :class:`TASFTConfig` of a YAML run: its ``TrainingArguments`` keywords plus the method's settings."""
    block = to_dict(cfg.method_settings) if cfg.method_settings is not None else None
    return TASFTConfig(**training_kwargs, per_device_train_batch_size=cfg.batch_size, method=cfg.method,
                       method_args=block, harmful_batch_size=cfg.harmful_batch_size, max_length=cfg.max_length,
                       loss_chunk_size=cfg.loss_chunk_size)

