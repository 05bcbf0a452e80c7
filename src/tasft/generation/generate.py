"""Batched generation (left-padded, greedy by default, seedable sampling) with resumable JSONL output.

A JSONL run writes to ``OUT.partial`` batch by batch and renames it to ``OUT`` when every prompt is done;
re-running the same command continues from ``OUT.partial``, skipping the ids already written. Generated
text goes to files only, never to stdout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import GenerationSettings  # noqa: F401  (defined with the other settings; re-exported)
from ..data.batches import prompt_ids
from ..data.records import Prompt
from ..errors import TasftError
from ..io_utils import dumps


def _encode_prompts(tokenizer, prompts: list[Prompt], limit: int, origins: list[str] | None) -> list[list[int]]:
    encoded = []
    for i, prompt in enumerate(prompts):
        ids = prompt_ids(tokenizer, prompt)  # BOS where training puts it (a template-less base model)
        if len(ids) > limit:
            where = origins[i] if origins else f"prompt {i + 1}"
            raise TasftError(f"{where}: prompt is longer than max_prompt_tokens={limit} ({len(ids)} tokens)")
        encoded.append(ids)
    return encoded


def check_prompt_lengths(tokenizer, items: list[dict], limit: int) -> None:
    """Raise the one-line "prompt is longer than max_prompt_tokens" error for ``{"id", "prompt"}`` items now,
    before a model is loaded (generation would find it only when it reaches that prompt)."""
    _encode_prompts(tokenizer, [it["prompt"] for it in items], limit, [str(it.get("origin", it["id"])) for it in items])


def finished(items: list[dict], out: str | os.PathLike) -> bool:
    """Whether ``out`` is complete: every one of ``items`` answered **and** the final file written. A ``.partial``
    file that holds every answer is not finished — the pass that wrote it stopped before renaming it — and the next
    :func:`generate_files` over it writes it out without generating anything."""
    out = Path(out)
    return _complete(items, out, _answered(out))


def _answered(out: Path) -> dict[str, dict]:
    """The answers already written for ``out``: its ``.partial`` file's while one exists, else the final file's."""
    partial = out.with_name(out.name + ".partial")
    return _read_done(partial) if partial.exists() else _read_done(out)


def _complete(items: list[dict], out: Path, done: dict[str, dict]) -> bool:
    return out.exists() and all(str(it["id"]) in done for it in items)


@torch.no_grad()
def generate_batch(
    model, tokenizer, encoded: list[list[int]], settings: GenerationSettings, seed: int, decode: bool = True
) -> list:
    """Generate one left-padded batch from token ids; returns the decoded new text of each row
    (or, with ``decode=False``, the new token ids up to and including the first end-of-turn token).
    Greedy decoding runs :func:`tasft.generation.decode.greedy_decode` (the same tokens as ``model.generate``,
    faster); sampling runs ``model.generate``."""
    pad = tokenizer.pad_token_id
    if not settings.do_sample:
        from .decode import greedy_decode

        rows = greedy_decode(model, tokenizer, encoded, settings.max_new_tokens)
        if not decode:
            return rows
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]
    width = max(len(ids) for ids in encoded)
    device = next(model.parameters()).device
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, ids in enumerate(encoded):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention[i, width - len(ids) :] = 1
    kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "pad_token_id": pad}
    torch.manual_seed(seed)
    kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
    out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
    new = out[:, width:]
    if not decode:
        rows = []
        for row in new.tolist():
            cut = [i for i, t in enumerate(row) if t in (pad, tokenizer.eos_token_id)]
            rows.append(row[: cut[0] + 1] if cut else row)
        return rows
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]


def _generate_in_order(
    model, tokenizer, encoded: list[list[int]], settings: GenerationSettings, ids: list[str], bar
):
    """Yield (index, text) batch by batch, shortest prompts first (less padding); seeds depend on the ids."""
    from . import workers

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches = [order[start : start + settings.batch_size] for start in range(0, len(order), settings.batch_size)]
    seeds = [settings.seed + hash_id(ids[idx[0]]) for idx in batches]
    was_training = model.training
    model.eval()
    n_workers = min(settings.workers, len(batches))
    on_cpu = next(model.parameters()).device.type == "cpu"
    try:
        if n_workers > 1 and on_cpu and workers.available():
            for batch in workers.generate_parallel(generate_batch, model, tokenizer, encoded, settings, batches, seeds,
                                                   n_workers):
                yield batch
                bar.update(len(batch))
            return
        for idx, seed in zip(batches, seeds):
            texts = generate_batch(model, tokenizer, [encoded[i] for i in idx], settings, seed)
            yield list(zip(idx, texts))
            bar.update(len(idx))
    finally:
        model.train(was_training)


def generate_texts(
    model, tokenizer, prompts: list[Prompt], settings: GenerationSettings, progress: bool = True,
    origins: list[str] | None = None,
) -> list[str]:
    """Responses for ``prompts``, in order."""
    settings.check()
    encoded = _encode_prompts(tokenizer, prompts, settings.max_prompt_tokens, origins)
    out: list[str] = [""] * len(encoded)
    with tqdm(total=len(encoded), desc="generate", unit="prompt", disable=not progress) as bar:
        ids = [str(i) for i in range(len(encoded))]
        for batch in _generate_in_order(model, tokenizer, encoded, settings, ids, bar):
            for i, text in batch:
                out[i] = text
    return out


def _read_done(path: Path) -> dict[str, dict]:
    """Records already written to a partial JSONL file (a torn last line is ignored)."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "id" in rec:
            done[str(rec["id"])] = rec
    return done


def provenance(model: str, seed: int, **more) -> dict:
    """What each generated row records about how it was made: the model's name, its weights' fingerprint when it
    is a local directory (:func:`tasft.models.model_fingerprint`: a model retrained in the same place differs), the
    seed, and ``more``; a resume must match it (:func:`_check_resumable`)."""
    from ..models import model_fingerprint

    row = {"model": model, "seed": seed, **more}
    if (fingerprint := model_fingerprint(model)) is not None:
        row["model_fingerprint"] = fingerprint
    return row


def _check_resumable(done: dict[str, dict], extra: dict, out: Path, items: list[dict] | None = None) -> None:
    """Answers already in ``out`` are kept only if they were generated as this run generates (the same ``extra``:
    model, its weights' fingerprint, seed, decoding) and for the same prompt text as ``items`` give under their
    ids now; otherwise a one-line error — never a file that mixes two models' answers, nor an answer to a prompt
    that has since changed. Keys an older file lacks are not checked."""
    for key, value in extra.items():
        stale = [row for row in done.values() if key in row and row[key] != value]
        if stale:
            why = " (the model was retrained or replaced since)" if key == "model_fingerprint" else ""
            raise TasftError(f"{out}: {len(stale)} answers in it were generated with {key}={stale[0][key]!r}, this "
                             f"run has {value!r}{why} (use another output, or --overwrite)")
    changed = [it for it in items or () if str(it["id"]) in done and done[str(it["id"])].get("prompt") != it["prompt"]]
    if changed:
        raise TasftError(f"{out}: {len(changed)} answers in it were generated for other prompt text under the same "
                         f"ids (first: {changed[0]['id']}; the prompt file changed since) (use another output, or "
                         "--overwrite)")


def check_answers(items: list[dict], out: str | os.PathLike, extra: dict) -> None:
    """The one-line error why the answers already written for ``out`` (final or ``.partial``) cannot be reused for
    ``items`` by a run whose rows carry ``extra`` (:func:`_check_resumable`); nothing when there are none. Run it
    before reusing a finished file as well as before resuming one."""
    out = Path(out)
    if out.is_dir():
        raise TasftError(f"{out} is a directory (give a .jsonl file to write)")
    _check_resumable(_answered(out), extra, out, items)


def generate_jsonl(
    model, tokenizer, items: list[dict], out: str | os.PathLike, settings: GenerationSettings,
    extra: dict | None = None, progress: bool = True,
) -> Path:
    """Generate a response for each ``{"id", "prompt", ...}`` item into JSONL ``out``, resumably.

    Each output line is the item plus ``response`` and ``extra`` (e.g. model name and seed).
    """
    return generate_files(model, tokenizer, [(items, out)], settings, extra=extra, progress=progress)[0]


@dataclass
class _Job:
    """One output file of a generation pass: its items, what is already written, and what is left."""

    items: list[dict]
    out: Path
    done: dict[str, dict]
    todo: list[dict]
    finished: bool  # every item answered and the final file written: nothing to do

    @property
    def partial(self) -> Path:
        return self.out.with_name(self.out.name + ".partial")


def _open_job(items: list[dict], out: str | os.PathLike, extra: dict) -> _Job:
    out = Path(out)
    if out.is_dir():
        raise TasftError(f"{out} is a directory (give a .jsonl file to write)")
    done = _answered(out)
    _check_resumable(done, extra, out, items)
    complete = _complete(items, out, done)
    return _Job(items, out, done, [] if complete else [it for it in items if str(it["id"]) not in done], complete)


def generate_files(
    model, tokenizer, jobs: list[tuple[list[dict], str | os.PathLike]], settings: GenerationSettings,
    extra: dict | None = None, progress: bool = True,
) -> list[Path]:
    """:func:`generate_jsonl` for several ``(items, out)`` pairs in **one** pass: every pending prompt of every file
    is sorted by length into the same batches (full batches and, with ``workers``, balanced work instead of one
    short last batch per file), and each answer goes to its own file. Greedy answers do not depend on the batching
    (``tests/test_decode.py``); a sampled answer's seed is its batch's, so with several files it depends on which
    prompts share its batch. Resumable per file, as :func:`generate_jsonl`."""
    settings.check()
    extra = extra or {}
    opened = [_open_job(items, out, extra) for items, out in jobs]  # every file checked before any is written
    todo = [(k, it) for k, job in enumerate(opened) for it in job.todo]
    encoded = _encode_prompts(tokenizer, [it["prompt"] for _, it in todo], settings.max_prompt_tokens,
                              [str(it.get("origin", it["id"])) for _, it in todo])
    for job in opened:
        if job.done and job.todo:
            tqdm.write(f"resuming {job.out}: {len(job.done)} of {len(job.items)} already generated")
    handles = {}
    try:
        for k, job in enumerate(opened):
            if job.finished:
                continue
            job.out.parent.mkdir(parents=True, exist_ok=True)
            # rewrite the good lines so a torn last line cannot corrupt the file
            with job.partial.open("w", encoding="utf-8") as fh:
                for rec in job.done.values():
                    fh.write(dumps(rec, ensure_ascii=False) + "\n")
            handles[k] = job.partial.open("a", encoding="utf-8")
        # seeds hang on the first id of each batch: a file's own ids alone keep one-file runs as they always were
        ids = [str(it["id"]) if len(opened) == 1 else f"{k}:{it['id']}" for k, it in todo]
        total, initial = sum(len(j.items) for j in opened), sum(len(j.items) - len(j.todo) for j in opened)
        with tqdm(total=total, initial=initial, desc="generate", unit="prompt", disable=not progress) as bar:
            for batch in _generate_in_order(model, tokenizer, encoded, settings, ids, bar):
                touched = set()
                for i, text in batch:
                    k, item = todo[i]
                    handles[k].write(dumps({**item, "response": text, **extra}, ensure_ascii=False) + "\n")
                    touched.add(k)
                for k in touched:
                    handles[k].flush()
    finally:
        for fh in handles.values():
            fh.close()
    for job in opened:
        if not job.finished:  # restore the input order in the final file
            final = _read_done(job.partial)
            lines = [dumps(final[str(it["id"])], ensure_ascii=False) for it in job.items]
            job.partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
            os.replace(job.partial, job.out)
    return [job.out for job in opened]


def hash_id(value: Any) -> int:
    """A stable small integer from an id (Python's ``hash`` is salted per process)."""
    import zlib

    return zlib.crc32(str(value).encode("utf-8"))
