"""``method: kto`` — TRL's ``KTOTrainer`` on the same data: D_u (and any contrastive pairs) desirable, D_h
undesirable, the starting model as reference. tasft only builds the data set and the arguments; the loss,
the KL estimate and the optimisation are TRL's.

KTO needs sequential sampling (TRL pairs each completion with its batch neighbour's prompt for the KL term),
so the order is fixed here: a stream of seeded permutations of the examples, long enough for every step.
Class weights left unset are chosen as TRL's guidance asks: desirable_weight·n_d = undesirable_weight·n_u
(the smaller class is up-weighted, the other weight is 1).
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import ClassVar

from ..data.batches import chat_messages, format_prompt
from ..data.records import Record
from ..errors import TasftError
from .base import Method, TrainerInputs


@dataclass
class KtoSettings:
    """``kto:`` — ``beta`` and the class weights; a weight left null is set so that
    desirable_weight·n_desirable = undesirable_weight·n_undesirable."""

    BLOCK: ClassVar[str] = "kto"
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ()

    beta: float = 0.1
    desirable_weight: float | None = None
    undesirable_weight: float | None = None


def class_weights(settings: KtoSettings, n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable, undesirable) weights: explicit values win; otherwise w_d·n_d = w_u·n_u with the larger class at 1."""
    w_d, w_u = settings.desirable_weight, settings.undesirable_weight
    if w_d is None and w_u is None:
        if n_desirable >= n_undesirable:
            return 1.0, n_desirable / n_undesirable
        return n_undesirable / n_desirable, 1.0
    if w_d is None:
        return w_u * n_undesirable / n_desirable, w_u
    if w_u is None:
        return w_d, w_d * n_desirable / n_undesirable
    return w_d, w_u


def _example(tokenizer, record: Record, label: bool) -> dict:
    """TRL's conversational format when the tokenizer has a chat template (TRL renders it), else plain text."""
    if getattr(tokenizer, "chat_template", None):
        return {"prompt": chat_messages(record.prompt),
                "completion": [{"role": "assistant", "content": record.response}], "label": label}
    return {"prompt": format_prompt(tokenizer, record.prompt), "completion": record.response, "label": label}


def kto_stream(examples: list[dict], total: int, seed: int) -> list[dict]:
    """``total`` examples (rounded up to whole passes) as consecutive seeded permutations of ``examples``."""
    passes = max(1, math.ceil(total / len(examples)))
    out: list[dict] = []
    for epoch in range(passes):
        order = random.Random(seed * 1_000_003 + epoch).sample(range(len(examples)), len(examples))
        out += [examples[i] for i in order]
    return out


def build_kto_trainer(inputs: TrainerInputs):
    """A ``trl.KTOTrainer`` over D_u (desirable) and D_h (undesirable) with the run's training arguments; what
    metrics.json says of it is the trainer's ``tasft_summary``."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    GuardedKTOTrainer = type("GuardedKTOTrainer", (*inputs.mixins, KTOTrainer),  # noqa: N806 - a class
                             {"__doc__": "TRL's KTO trainer with the run's mixins (the divergence guard first)."})

    cfg, settings, model, tokenizer = inputs.cfg, inputs.cfg.method_settings, inputs.model, inputs.tokenizer
    desirable, undesirable = inputs.data.train_records, inputs.data.harmful_records
    w_d, w_u = class_weights(settings, len(desirable), len(undesirable))
    batch = cfg.batch_size + cfg.harmful_batch_size
    args = KTOConfig(
        **inputs.args,
        per_device_train_batch_size=batch,
        beta=settings.beta,
        desirable_weight=w_d,
        undesirable_weight=w_u,
        max_length=cfg.max_length,
        activation_checkpointing=False,
        disable_dropout=True,
    )
    examples = [_example(tokenizer, r, True) for r in desirable] + [_example(tokenizer, r, False) for r in undesirable]
    total = cfg.max_steps * batch * cfg.gradient_accumulation_steps * args.world_size
    dataset = Dataset.from_list(kto_stream(examples, total, cfg.seed))
    is_peft = hasattr(model, "peft_config")
    ref_model = None if is_peft else copy.deepcopy(model).eval().requires_grad_(False)
    trainer = GuardedKTOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                                processing_class=tokenizer, callbacks=inputs.callbacks)
    trainer.tasft_summary = {"kto": {"desirable": len(desirable), "undesirable": len(undesirable),
                                     "desirable_weight": round(w_d, 4), "undesirable_weight": round(w_u, 4),
                                     "beta": settings.beta}}
    return trainer


def tokens_seen(trainer) -> int | None:
    """Training tokens TRL counted (its ``num_tokens`` log), or None if it logged none."""
    for record in reversed(trainer.state.log_history):
        if "num_tokens" in record:
            return int(record["num_tokens"])
    return None


class Kto(Method):
    name = "kto"
    own_trainer = True  # TRL's KTOTrainer
    Settings = KtoSettings
    needs_harmful = True
    objective = "TRL's KTO loss: D_u desirable, D_h undesirable, reference = the starting model"
    find_unused_parameters = None  # TRL's model call: transformers' default

    def check(self, cfg) -> None:
        from ..config_checks import positive

        positive(cfg.method_settings, "kto.", "beta")
        positive(cfg.method_settings, "kto.", "desirable_weight", "undesirable_weight", allow_none=True)
        if cfg.batch_size + cfg.harmful_batch_size < 2:
            raise TasftError("batch_size: kto needs at least 2 examples per batch (batch_size + harmful_batch_size)")

    def build_trainer(self, inputs: TrainerInputs):
        return build_kto_trainer(inputs)

    def label(self, cfg) -> str:
        return f"kto β={cfg.method_settings.beta}"

    def describe(self, cfg, metrics) -> str:
        kto = metrics.get("kto", {})
        return (f"KTO (TRL): D_u desirable, D_h undesirable, β = {cfg.method_settings.beta}, weights "
                f"{kto.get('desirable_weight')} / {kto.get('undesirable_weight')}, reference = the starting model")

    def totals(self, trainer, result):
        """TRL counts tokens over the whole run; the loss: the mean of every logged one (TRL's own loop)."""
        tokens = tokens_seen(trainer)
        logged = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        return tokens, tokens, sum(logged) / len(logged) if logged else float(result.training_loss)
