"""The TA-SFT trainer: a ``transformers.Trainer`` whose every step sees one D_u batch and one D_h batch.

The loop, optimiser, scheduler, checkpointing, resumption and logging integrations are the Trainer's own;
this subclass only changes the loss (``compute_loss``) and adds per-term logging.

The D_h batch of micro-step s on process r of W is a pure function of (s, r, W, seed): position
p = (s·W + r)·B_h + j of an endless stream made of seeded permutations of D_h, one per epoch. So D_h cycles,
every example is seen once per D_h epoch across processes, and a resumed run continues exactly.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from ..data.batches import Tokenized, collate
from ..io_utils import dumps, write_json_atomic, write_text_atomic
from ..objectives import fused, losses
from ..objectives.terms import HarmfulTerm
from .checkpoints import TiedWeightsLoadMixin
from .guard import DivergenceGuardMixin


def _pad_right(x: torch.Tensor, width: int, value) -> torch.Tensor:
    """(B, T) → (B, width), new columns filled with ``value``."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


TOTALS_FILE = "tasft_run_totals.json"  # in each checkpoint: whole-run tokens and loss sum (see run_totals)
TERM_FILE = "tasft_term.json"  # in each checkpoint of a run whose D_h term keeps a state (HarmfulTerm.state)
LAMBDA_FILE = "tasft_lambda.json"  # what checkpoints held before: a λ-budget run's λ and reference NLL (still read)


class HarmfulBatchSampler:
    """Deterministic cycling batches of D_h indices (see the module docstring for the formula)."""

    def __init__(self, size: int, batch_size: int, seed: int = 0):
        if size <= 0:
            raise ValueError("the harmful set is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            if len(self._perms) > 8:
                self._perms.clear()
            self._perms[epoch] = random.Random(self.seed * 1_000_003 + epoch).sample(range(self.size), self.size)
        return self._perms[epoch]

    def indices(self, micro_step: int, rank: int = 0, world_size: int = 1) -> list[int]:
        start = (micro_step * world_size + rank) * self.batch_size
        out = []
        for pos in range(start, start + self.batch_size):
            epoch, k = divmod(pos, self.size)
            out.append(self._perm(epoch)[k])
        return out


#: the mixins every trainer of a run carries, tasft's loop and a method's own trainer alike (handed to methods in
#: :class:`tasft.methods.TrainerInputs`: methods sit below training and never import it)
TRAINER_MIXINS: tuple[type, ...] = (DivergenceGuardMixin, TiedWeightsLoadMixin)


class MethodTrainer(DivergenceGuardMixin, TiedWeightsLoadMixin, Trainer):
    """L = NLL(D_u) + term(D_h): every method of tasft's own loop (sft and stl: no term; ta-sft: λ·penalty; npo,
    simnpo: their sequence-level losses — :mod:`tasft.objectives.terms`, built by :mod:`tasft.methods`).

    ``loss_chunk_size`` (rows per chunk, or None): training losses skip the full (B, T, V) logits — the model
    returns its final hidden states (logits of the last position only) and :mod:`tasft.objectives.fused`
    computes the NLL, and a term's token-level measure when it has a fused form, chunk by chunk with the LM-head
    weight. Same numbers, less memory; a term without a fused form (or with a reference model), evaluation and
    heads that are not a plain linear map keep the full-logits path.
    """

    def __init__(
        self,
        *args,
        term: HarmfulTerm | None,
        harmful: list[Tokenized] | None,
        harmful_batch_size: int,
        pad_id: int,
        harmful_seed: int = 0,
        loss_chunk_size: int | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.term = term
        self.harmful = harmful
        self.pad_id = pad_id
        self.sampler = (
            HarmfulBatchSampler(len(harmful), harmful_batch_size, harmful_seed) if harmful and term else None
        )
        self.chunk_size = loss_chunk_size
        self._fused_ok: bool | None = None
        # running sums stay on the device (no host sync per micro-step); converted when a record is logged
        self._sums: dict[str, torch.Tensor | float] = defaultdict(float)
        self._count = 0
        self._tokens_total = 0
        # whole-run totals (this invocation + what a resumed checkpoint had counted), saved with every checkpoint
        self._run_loss_sum: torch.Tensor | float = 0.0
        self._run_micro_steps = 0
        self._totals_offset = {"tokens": 0, "loss_sum": 0.0, "micro_steps": 0, "train_seconds": 0.0}
        self._train_started: float | None = None  # when this invocation's training loop began (train())
        self._last_step, self._micro = -1, 0
        # our losses are per-micro-batch means: let the Trainer divide by the accumulation steps
        self.model_accepts_loss_kwargs = False
        if term is not None and term.reference is not None:
            term.reference.to(self.args.device)

    @property
    def uses_harmful_term(self) -> bool:
        return self.term is not None and self.sampler is not None

    def _micro_step(self) -> int:
        step = self.state.global_step
        if step != self._last_step:
            self._last_step, self._micro = step, 0
        index = step * self.args.gradient_accumulation_steps + self._micro
        self._micro += 1
        return index

    def harmful_batch(self, micro_step: int) -> dict[str, torch.Tensor]:
        idx = self.sampler.indices(micro_step, self.args.process_index, self.args.world_size)
        return collate([self.harmful[i] for i in idx], self.pad_id, mask="content",
                       first_tokens=self.term.first_tokens, position_decay=self.term.position_decay,
                       token_weights=self.term.token_weights)

    def _fused(self, model) -> bool:
        """Whether training losses go through :mod:`tasft.objectives.fused` (``loss_chunk_size`` set and a
        plain linear head); evaluation always uses full logits."""
        if self.chunk_size is None or not model.training:
            return False
        if self._fused_ok is None:
            self._fused_ok = fused.supports_fused(model)
        return self._fused_ok

    def _fused_nll(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """NLL over the batch's loss-masked next-token positions, on the fused path."""
        hidden = fused.final_hidden_states(model, batch["input_ids"], batch["attention_mask"])
        h, tg, mk = losses.shift_for_causal_lm(hidden, batch["input_ids"], batch["loss_mask"])
        return fused.fused_linear_measure(
            fused.nll_chunk, h[mk], fused.lm_head_weight(model), tg[mk],
            chunk_size=self.chunk_size)

    def _joint_objective(self, model, inputs, harmful, fused_term) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L, NLL of the D_u rows, the term's measure on the D_h rows) from ONE forward over both batches stacked
        (right-padded to one width: right padding leaves the real tokens' positions and attention unchanged)
        and one fused head pass, so a TA-SFT step costs one model call and one ∂W buffer, like an SFT step on
        the same tokens."""
        measure_fn, coef, table = fused_term
        rows = inputs["input_ids"].shape[0]
        width = max(inputs["input_ids"].shape[1], harmful["input_ids"].shape[1])
        fill = {"input_ids": self.pad_id, "attention_mask": 0, "loss_mask": False}
        joint = {k: torch.cat([_pad_right(inputs[k], width, v), _pad_right(harmful[k], width, v)])
                 for k, v in fill.items()}
        hidden = fused.final_hidden_states(model, joint["input_ids"], joint["attention_mask"])
        h, tg, mk = losses.shift_for_causal_lm(hidden, joint["input_ids"], joint["loss_mask"])
        benign_rows = int(mk[:rows].sum())  # mask order is row-major: the D_u positions come first
        penalty = (measure_fn, int(mk.sum()) - benign_rows, coef)
        if "loss_weight" in harmful:  # the D_h rows' per-token weights, aligned and selected like their positions
            w = _pad_right(harmful["loss_weight"], width, 0.0)[:, 1:]
            penalty = (*penalty, w[mk[rows:]])
        segments = [(fused.nll_chunk, benign_rows, 1.0), penalty]
        loss, (nll, measure) = fused.fused_linear_objective(
            h[mk], fused.lm_head_weight(model), tg[mk], segments, table, chunk_size=self.chunk_size,
            constant=getattr(self.term, "constant", "tight"))
        return loss, nll, measure

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = loss = measure = None
        with_term = self.uses_harmful_term and model.training
        harmful_cpu = self.harmful_batch(self._micro_step()) if with_term else None
        harmful = {k: v.to(inputs["input_ids"].device, non_blocking=True) for k, v in harmful_cpu.items()} \
            if with_term else None
        on_fused_path = self._fused(model) and not return_outputs
        fused_term = self.term.fused(inputs["input_ids"].device) if with_term and on_fused_path else None
        if fused_term is not None:
            loss, nll, measure = self._joint_objective(model, inputs, harmful, fused_term)
        elif on_fused_path:
            nll = self._fused_nll(model, inputs)
        else:
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            lg, tg, mk = losses.shift_for_causal_lm(logits, inputs["input_ids"], inputs["loss_mask"])
            nll = losses.nll_from_logits(lg, tg, mk)
        tokens = inputs["attention_mask"].sum()
        if with_term:
            if loss is None:
                contribution, measure = self._term_plain(model, harmful)
                loss = nll + contribution
            tokens = tokens + int(harmful_cpu["attention_mask"].sum())
        else:
            loss = nll
        if model.training:
            self._sums["nll"] += nll.detach()
            if measure is not None:
                self._sums[self.term.log_key] += measure.detach()
            self._sums["total"] += loss.detach()
            self._count += 1
            self._tokens_total += tokens.detach()
            self._run_loss_sum += loss.detach()
            self._run_micro_steps += 1
        return (loss, {"logits": logits}) if return_outputs else loss

    def _term_plain(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The term on the full-logits path: (contribution to L, logged measure)."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        lg, tg, mk = losses.shift_for_causal_lm(logits, batch["input_ids"], batch["loss_mask"])
        ref = self.term.reference_logits(model, batch)
        weights = batch["loss_weight"][:, 1:] if "loss_weight" in batch else None
        return self.term.loss(lg, tg, mk, None if ref is None else ref[:, :-1], weights=weights)

    @property
    def tokens_processed(self) -> int:
        """Non-padding tokens that went through the model in training (D_u and D_h), this process, this invocation."""
        return int(self._tokens_total)

    def train(self, *args, **kwargs):
        """The Trainer's loop, timed: :meth:`run_totals` counts its seconds toward the whole run's."""
        self._train_started = time.perf_counter()
        return super().train(*args, **kwargs)

    def run_totals(self) -> dict:
        """Whole-run totals of this process — across a resume — as saved with each checkpoint: ``tokens``,
        ``loss_sum`` and ``micro_steps`` (their ratio: the mean training loss of the run), and ``train_seconds``
        (the training loops' time so far, a resumed run's earlier invocations included)."""
        now = 0.0 if self._train_started is None else time.perf_counter() - self._train_started
        return {"tokens": self._totals_offset["tokens"] + int(self._tokens_total),
                "loss_sum": self._totals_offset["loss_sum"] + float(self._run_loss_sum),
                "micro_steps": self._totals_offset["micro_steps"] + self._run_micro_steps,
                "train_seconds": self._totals_offset["train_seconds"] + now}

    def restore_run_totals(self, checkpoint: str | Path) -> None:
        """Continue the totals of ``checkpoint`` (a checkpoint written before totals were saved counts from 0)."""
        path = Path(checkpoint) / TOTALS_FILE
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            self._totals_offset = {k: saved.get(k, 0) for k in self._totals_offset}
        state = next((Path(checkpoint) / name for name in (TERM_FILE, LAMBDA_FILE)
                      if (Path(checkpoint) / name).is_file()), None)
        if self.term is not None and state is not None:  # the term goes on where it was (TA-SFT: λ)
            self.term.load_state(json.loads(state.read_text(encoding="utf-8")))

    def _save_rng_state(self, output_dir: str) -> None:
        """The Trainer saves the RNG state into every checkpoint before ``trainer_state.json``; the run totals go
        beside it, so a checkpoint that is complete has them."""
        super()._save_rng_state(output_dir)
        if self.is_world_process_zero():
            write_json_atomic(Path(output_dir) / TOTALS_FILE, self.run_totals())
            if self.term is not None and (state := self.term.state()) is not None:
                write_json_atomic(Path(output_dir) / TERM_FILE, state)

    @property
    def tasft_summary(self) -> dict:
        """What ``metrics.json`` adds about this run's loop: the term's summary (TA-SFT: the final λ when a
        controller moved it)."""
        return {} if self.term is None else self.term.summary()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.term is not None and "loss" in logs:
            logs.update(self.term.log_values())
        if self._count and "loss" in logs:
            for key, value in self._sums.items():
                logs[key] = round(float(value) / self._count, 6)
            self._sums.clear()
            self._count = 0
        super().log(logs, start_time)


class JsonlLogCallback(TrainerCallback):
    """Appends every log record (with its step) to ``<output_dir>/log.jsonl`` on the main process.

    At the start of training the file is cut back to the step training starts from: a run resumed from a checkpoint
    at step S keeps the records up to S (the steps after it are trained, and logged, again), and a run that starts
    at step 0 in a directory an abandoned attempt left a log in starts an empty log — never one that lists its steps
    twice."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines() if state.global_step > 0 else []:
            try:
                step = json.loads(line).get("step")
            except (json.JSONDecodeError, AttributeError):
                continue  # a torn last line
            if isinstance(step, int) and step <= state.global_step:
                kept.append(line + "\n")
        write_text_atomic(self.path, "".join(kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(dumps({"step": state.global_step, **logs}) + "\n")


def collate_train(batch: list[Tokenized], pad_id: int) -> dict[str, torch.Tensor]:
    """A D_u training batch: right-padded, loss on the response tokens."""
    return collate(batch, pad_id, mask="response")
