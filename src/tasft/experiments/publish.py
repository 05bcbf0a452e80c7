"""A study's finished points without their generated text: what can be committed, shared or archived, and restored.

``tasft experiment STUDY --config C --out results/X --export DIR`` writes, per finished point, the training run's
``config.yaml``, ``metrics.json`` and ``log.jsonl`` and the evaluation's ``metrics.json`` and ``scores/*.jsonl``
**with only the fields of** :data:`SCORE_FIELDS` (per-answer judge scores and flags, rule flags, reference-NLL sums,
the prompt id — never a prompt, an answer or a reference text), plus the study's ``experiment.json``, as one
reproducible archive ``DIR/points.tar.gz`` with its SHA-256 in ``DIR/points.sha256`` (``sha256sum -c`` reads it).
``--restore DIR`` checks the archive and makes those points finished in ``--out``: the runner neither retrains
nor re-evaluates them, tables, paired differences and plots are rebuilt from them, and sibling studies share them,
as if they had run in place (no weights: they cannot be evaluated again or resumed). An older export — the same
files as a plain folder — restores the same way.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from ..data.records import prompt_id
from ..errors import TasftError
from ..io_utils import json_text, jsonl_text, read_jsonl, write_bytes_atomic, write_text_atomic

#: the per-answer fields that are kept (everything a table, an interval or a paired test reads; no text)
SCORE_FIELDS = ("id", "suite", "kind", "template", "seed", "harm_score", "harmful", "judges", "refusal_score",
                "refusal", "non_english", "degenerate", "answer_class", "ref_nll_sum", "ref_nll_tokens")
RUN_FILES = ("config.yaml", "metrics.json", "log.jsonl", "inputs.json")  # inputs.json: the SHA-256 of each input


def text_free(row: dict) -> dict:
    """A score row reduced to :data:`SCORE_FIELDS`, with the prompt's id (a hash) in place of its text; a row that
    is already text-free (a restored point exported again) keeps the id it carries."""
    out = {k: row[k] for k in SCORE_FIELDS if k in row}
    prompt = row.get("request") if isinstance(row.get("request"), str) else row.get("prompt")
    if isinstance(prompt, str):
        out["prompt_id"] = prompt_id(prompt)
    elif isinstance(row.get("prompt_id"), str):
        out["prompt_id"] = row["prompt_id"]
    return out


ARCHIVE = "points.tar.gz"  # one archive per study: its finished points, text-free
CHECKSUM = "points.sha256"  # the archive's SHA-256 in `sha256sum -c` form


def _points(out: Path) -> tuple[dict[str, bytes], int]:
    """The text-free files of study directory ``out``'s finished points, by path relative to it, and how many runs
    and evaluations they hold."""
    files: dict[str, bytes] = {"experiment.json": (out / "experiment.json").read_bytes()}
    count = 0
    for run in sorted((out / "runs").glob("*/metrics.json")):
        for name in RUN_FILES:
            if (run.parent / name).is_file():
                files[f"runs/{run.parent.name}/{name}"] = (run.parent / name).read_bytes()
        count += 1
    for evaluation in sorted((out / "evals").glob("*/metrics.json")):
        metrics = json.loads(evaluation.read_text(encoding="utf-8"))
        files[f"evals/{evaluation.parent.name}/metrics.json"] = json_text(metrics).encode("utf-8")
        for scores in sorted((evaluation.parent / "scores").glob("*.jsonl")):
            files[f"evals/{evaluation.parent.name}/scores/{scores.name}"] = jsonl_text(
                [text_free(r) for r in read_jsonl(scores)]).encode("utf-8")
        count += 1
    return files, count


def _tar_gz(files: dict[str, bytes]) -> bytes:
    """A reproducible .tar.gz of ``files``: sorted members, no times, owners or modes of this machine (the same
    points give the same bytes, so a re-export changes nothing in git)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def export_points(out: Path, dest: Path) -> int:
    """Write the finished points of study directory ``out`` (see the module docstring) as one archive,
    ``dest/points.tar.gz``, and its checksum ``dest/points.sha256``; returns how many runs and evaluations it holds.
    ``dest`` must not be inside ``out`` (nor ``out`` itself)."""
    out, dest = Path(out), Path(dest)
    if not (out / "experiment.json").is_file():
        raise TasftError(f"{out}: not a study directory (no experiment.json)")
    if dest.resolve() == out.resolve() or out.resolve() in dest.resolve().parents:
        raise TasftError(f"--export {dest}: choose a directory outside the study directory {out}")
    files, count = _points(out)
    data = _tar_gz(files)
    dest.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(dest / ARCHIVE, data)
    write_text_atomic(dest / CHECKSUM, f"{hashlib.sha256(data).hexdigest()}  {ARCHIVE}\n")
    return count


def _archived(src: Path) -> dict[str, bytes]:
    """The files of ``src/points.tar.gz`` after checking it against ``src/points.sha256``; one-line errors for a
    missing or mismatched checksum and for a member that is not a plain file inside the study directory."""
    archive, checksum = src / ARCHIVE, src / CHECKSUM
    if not checksum.is_file():
        raise TasftError(f"{src}: {ARCHIVE} has no {CHECKSUM} beside it (nothing to verify it against)")
    expected = checksum.read_text(encoding="utf-8").split()[:1]
    data = archive.read_bytes()
    if [hashlib.sha256(data).hexdigest()] != expected:
        raise TasftError(f"{archive}: its SHA-256 does not match {CHECKSUM} (a changed or damaged archive)")
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or Path(member.name).is_absolute() or ".." in parts or not parts:
                raise TasftError(f"{archive}: member {member.name!r} is not a plain file inside the study")
            files[member.name] = tar.extractfile(member).read()
    return files


def restore_points(src: Path, out: Path) -> int:
    """Make the exported points of ``src`` (an archive and its checksum, or an older export's plain copy of the
    files) finished points of study directory ``out``; returns how many files were written. A file already in
    ``out`` with other bytes is never overwritten (one-line error, nothing written)."""
    src, out = Path(src), Path(out)
    if (src / ARCHIVE).is_file():
        files = _archived(src)
    elif (src / "experiment.json").is_file():
        files = {str(p.relative_to(src)): p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()}
    else:
        raise TasftError(f"--restore {src}: no {ARCHIVE} (nor an exported study's experiment.json) there")
    clash = next((name for name, data in files.items()
                  if (out / name).is_file() and (out / name).read_bytes() != data), None)
    if clash is not None:
        raise TasftError(f"--restore: {out / clash} exists with other contents (restore into a new --out, or move "
                         "it away)")
    written = 0
    for name, data in files.items():
        if not (out / name).is_file():
            write_bytes_atomic(out / name, data)
            written += 1
    return written
