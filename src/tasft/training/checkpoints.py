"""Checkpoints of a run: which are complete, the newest one to resume from, and resuming at ``max_steps``."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def _file_problem(path: Path) -> str | None:
    """Why one file of a checkpoint cannot be read back whole, or None: a safetensors file shorter than its header
    says, a torch pickle (``.pt``/``.pth``/``.bin``: a zip archive) whose archive does not open, a JSON file that
    does not parse. Only headers and the zip directory are read, not the tensors."""
    import zipfile

    try:
        if path.suffix == ".safetensors":
            size = path.stat().st_size
            with path.open("rb") as fh:
                head = fh.read(8)
                length = int.from_bytes(head, "little") if len(head) == 8 else -1
                if length <= 0 or 8 + length > size:
                    return f"{path.name} is cut short (no whole header)"
                header = json.loads(fh.read(length))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + length + end != size:
                return f"{path.name} holds {size} bytes, its header promises {8 + length + end}"
        elif path.suffix in (".pt", ".pth", ".bin"):
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile):
        return f"{path.name} does not read back whole"
    return None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a ``checkpoint-N`` directory cannot be resumed from, or None when it is whole: the Trainer writes
    ``trainer_state.json`` after the weights, optimizer, scheduler and RNG state, so a readable one with step N
    comes first; then every file must read back whole (:func:`_file_problem`: a disk that filled up, or a copy cut
    short, leaves a torn file under an intact ``trainer_state.json``)."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no readable trainer_state.json"
    if not isinstance(state, dict) or str(state.get("global_step")) != checkpoint.name.rsplit("-", 1)[-1]:
        return "its trainer_state.json is of another step"
    for path in sorted(checkpoint.iterdir()):
        if path.is_file() and (problem := _file_problem(path)) is not None:
            return problem
    return None


def checkpoint_complete(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` was written whole (:func:`checkpoint_problem`)."""
    return checkpoint_problem(Path(checkpoint)) is None


TORN_PREFIX = "torn-"  # a checkpoint set aside as torn: torn-checkpoint-N (no longer matched by checkpoint-*)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def set_aside(checkpoint: Path, why: str, room_needed: int = 0) -> None:
    """Rename a torn checkpoint ``torn-checkpoint-N`` (kept for inspection, never resumed from) with a note — or,
    when the disk has less than ``room_needed`` bytes free (a resumed run must be able to save its next
    checkpoint), delete it, which is what makes room after a disk filled up."""
    if room_needed and shutil.disk_usage(checkpoint.parent).free < room_needed:
        shutil.rmtree(checkpoint, ignore_errors=True)
        log.warning("skipping %s: it was not completely written (%s); removed to make room (the disk is nearly "
                    "full)", checkpoint, why)
        return
    target = checkpoint.with_name(TORN_PREFIX + checkpoint.name)
    k = 1
    while target.exists():
        k += 1
        target = checkpoint.with_name(f"{TORN_PREFIX}{checkpoint.name}.{k}")
    checkpoint.rename(target)
    log.warning("skipping %s: it was not completely written (%s); set aside as %s", checkpoint, why, target.name)


def _numbered(path: Path) -> list[Path]:
    """``checkpoint-N`` directories of ``path``, newest first."""
    return sorted((p for p in path.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()),
                  key=lambda p: int(p.name.split("-", 1)[1]), reverse=True)


def last_checkpoint(path: Path, drop_incomplete: bool = False) -> str | None:
    """The newest whole ``checkpoint-N`` in ``path`` (:func:`checkpoint_problem`); with ``drop_incomplete`` (the
    process that owns the run, when resuming, before it writes anything), newer torn ones — a run killed, or a disk
    filled, while writing one — are set aside, each with a note (:func:`set_aside`; removed instead when the disk
    lacks the room for the next checkpoint, and so are torn ones set aside earlier)."""
    if not path.is_dir():
        return None
    found = _numbered(path)
    good = next((c for c in found if checkpoint_problem(c) is None), None)
    if drop_incomplete:
        room = 2 * _size(good) if good is not None else 0
        for ckpt in found:
            if ckpt == good:
                break
            set_aside(ckpt, checkpoint_problem(ckpt) or "torn", room)
        if room and shutil.disk_usage(path).free < room:
            for torn in path.glob(f"{TORN_PREFIX}checkpoint-*"):
                shutil.rmtree(torn, ignore_errors=True)
                log.warning("removed %s (set aside earlier as torn) to make room: the disk is nearly full", torn)
    return str(good) if good is not None else None


#: a write that failed with less than this free on its device failed for lack of room: torch's writer reports a
#: full disk as "basic_ios::clear: iostream error", with no errno to tell it from any other failure
NEARLY_FULL_BYTES = 16 * 2**20


def no_space(exc: BaseException, path: Path | None = None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk: ``ENOSPC``, the words torch's and safetensors' writers
    use for it, or any write failure in ``path`` on a device with less than :data:`NEARLY_FULL_BYTES` free."""
    import errno

    if path is not None:
        try:
            if shutil.disk_usage(path).free < NEARLY_FULL_BYTES:
                return True
        except OSError:
            pass
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        text = str(exc)
        if "No space left on device" in text or "StorageFull" in text or "file write failed" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def disk_full_error(path: Path, what: str):
    """The one-line error for a full disk while writing ``what`` in run ``path``: torn checkpoints are removed now
    (they cannot be resumed from, and the room is needed), the last whole checkpoint is kept and named."""
    from ..errors import TasftError

    removed = []
    for ckpt in _numbered(path):
        if checkpoint_problem(ckpt) is None:
            break
        shutil.rmtree(ckpt, ignore_errors=True)
        removed.append(ckpt.name)
    good = last_checkpoint(path)
    gone = f"; removed the partial {', '.join(removed)}" if removed else ""
    keep = f"the last good checkpoint is {good}" if good else "no checkpoint was saved before it"
    return TasftError(f"no space left on device while saving {what} in {path}{gone}; {keep} (free space, then run "
                      "the same command with --resume)")


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
