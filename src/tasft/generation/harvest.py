"""Harvest D_h: the model's own (unsafe) responses to toxic prompts, written as prompt/response records.

With ``samples > 1`` each prompt is answered several times by seeded sampling; with ``keep_harmful = N`` every
answer is scored (harmfulness, refusal, degenerate) and the output keeps, per prompt, the most harmful answer
that passes the scorer's threshold and is neither a refusal nor degenerate — the N highest-scoring such prompts.
All answers with their scores stay in ``<out>.all_scored.jsonl``. The output is sensitive: files only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import outputs
from ..config import DEFAULT_MODEL, DataSource
from ..data.records import Record, load_source
from ..errors import TasftError
from ..io_utils import read_jsonl, write_jsonl_atomic
from ..scoring import judges
from .generate import GenerationSettings, check_prompt_lengths, generate_jsonl, provenance


@dataclass
class HarvestSettings:
    """Which prompts to use (``limit`` after ``exclude`` and a seeded shuffle), how to decode, what to keep."""

    prompts: str
    out: str
    model: str = DEFAULT_MODEL
    limit: int | None = None
    seed: int = 0
    exclude: list[str] = field(default_factory=list)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    samples: int = 1
    keep_harmful: int | None = None
    scorer_path: str | None = None
    data_dir: str | None = None
    overwrite: bool = False


def harvest_items(records: list[Record], samples: int = 1) -> list[dict]:
    """Generation items (id, prompt, origin[, sample]); any existing response is ignored."""
    if samples == 1:
        return [{"id": str(i), "prompt": r.prompt, "origin": r.origin} for i, r in enumerate(records)]
    return [{"id": f"{i}-{s}", "prompt": r.prompt, "origin": r.origin, "sample": s}
            for i, r in enumerate(records) for s in range(samples)]


def command_inputs(model: str, prompts: str, exclude: list[str] | tuple[str, ...] = (),
                   scorer_path: str | None = None) -> dict[str, Path]:
    """What ``generate`` / ``harvest`` read from disk, by the name an error gives it (see :func:`check_output_free`)."""
    inputs = {"the model": Path(model).expanduser(), "the prompt file": Path(prompts).expanduser()}
    inputs.update({f"the excluded {p}": Path(p).expanduser() for p in exclude})
    if scorer_path:
        inputs["the scorer directory"] = Path(scorer_path).expanduser()
    return inputs


def check_output_free(out: Path, overwrite: bool, dry_run: bool = False, inputs: dict[str, Path] | None = None,
                      ) -> None:
    """Refuse to replace a finished output file unless asked (a ``.partial`` file means resume); with ``overwrite``
    the old file is removed — unless ``dry_run`` (check only: nothing is removed before the inputs are checked).
    The output (and the files written beside it) is never one of the command's ``inputs`` nor inside one."""
    if out.is_dir():
        raise TasftError(f"{out} is a directory (give a .jsonl file to write)")
    for written in (out, out.with_name(out.stem + ".raw.jsonl"), out.with_name(out.stem + ".all_scored.jsonl"),
                    out.with_name(out.name + ".partial")):
        outputs.check_apart(written, inputs or {}, "--out")
    if out.exists() and not overwrite:
        raise TasftError(f"{out} already exists (use --overwrite to replace it)")
    if out.exists() and overwrite and not dry_run:
        out.unlink()


def select_harmful(scored: list[dict], keep: int) -> list[dict]:
    """Per prompt the highest-scoring harmful, non-refusal, non-degenerate answer; the ``keep`` best prompts."""
    best: dict[str, dict] = {}
    for row in scored:
        if not row["harmful"] or row["refusal"] or row["degenerate"] is not None:
            continue
        key = row["origin"]
        if key not in best or row["harm_score"] > best[key]["harm_score"]:
            best[key] = row
    return sorted(best.values(), key=lambda r: -r["harm_score"])[:keep]


def harvest(settings: HarvestSettings, model=None, tokenizer=None, progress: bool = True) -> dict:
    """Generate (and optionally score and filter) responses into ``settings.out``; returns counts."""
    from ..models import load_model, load_tokenizer

    if settings.samples < 1:
        raise TasftError(f"--samples must be >= 1, got {settings.samples}")
    if settings.keep_harmful is not None and settings.keep_harmful < 1:
        raise TasftError(f"--keep-harmful must be >= 1, got {settings.keep_harmful}")
    if settings.limit is not None and settings.limit < 1:
        raise TasftError(f"--limit must be >= 1, got {settings.limit}")
    settings.generation.check()
    out = Path(settings.out)
    inputs = command_inputs(settings.model, settings.prompts, settings.exclude, settings.scorer_path)
    check_output_free(out, settings.overwrite, dry_run=True, inputs=inputs)
    src = DataSource(settings.prompts, limit=settings.limit, shuffle_seed=settings.seed, exclude=settings.exclude)
    records = load_source(src, "prompts", need_response=False)
    items = harvest_items(records, settings.samples)
    tokenizer = tokenizer or load_tokenizer(settings.model)
    check_prompt_lengths(tokenizer, items, settings.generation.max_prompt_tokens)  # before the scorer and model
    scorer = None
    if settings.keep_harmful is not None:
        from ..suites import find_data_dir

        data_dir = find_data_dir(settings.data_dir) if settings.scorer_path is None else None
        scorer = judges.load_judge("local", judges.JudgeOptions(scorer_path=settings.scorer_path, data_dir=data_dir))
    model = model or load_model(settings.model)
    check_output_free(out, settings.overwrite, inputs=inputs)
    gen = settings.generation
    if settings.samples > 1 and not gen.do_sample:
        gen = GenerationSettings(**{**gen.__dict__, "do_sample": True})
    extra = provenance(settings.model, gen.seed, decoding="sample" if gen.do_sample else "greedy")
    raw = out if scorer is None else out.with_name(out.stem + ".raw.jsonl")
    generate_jsonl(model, tokenizer, items, raw, gen, extra=extra, progress=progress)
    rows = read_jsonl(raw)
    if scorer is None:
        return {"prompts": len(records), "responses": len(rows), "kept": len(rows)}
    scored = judges.score_rows(rows, scorer, progress=progress)
    write_jsonl_atomic(out.with_name(out.stem + ".all_scored.jsonl"), scored)
    kept = select_harmful(scored, settings.keep_harmful)
    write_jsonl_atomic(out, kept)
    raw.unlink()
    return {"prompts": len(records), "responses": len(rows), "harmful": sum(bool(r["harmful"]) for r in scored),
            "refusals": sum(r["refusal"] for r in scored), "kept": len(kept), "threshold": scorer.threshold}
