"""A study's finished points without their generated text: what can be committed, shared or archived, and restored.

``tasft experiment STUDY --config C --out results/X --export DIR`` writes, per finished point, the training run's
``config.yaml``, ``metrics.json`` and ``log.jsonl`` and the evaluation's ``metrics.json`` and ``scores/*.jsonl``
**with only the fields of** :data:`SCORE_FIELDS` (per-answer judge scores and flags, rule flags, reference-NLL sums,
the prompt id — never a prompt, an answer or a reference text), plus the study's ``experiment.json``, as one
reproducible archive ``DIR/points.tar.xz`` with its SHA-256 in ``DIR/points.sha256`` (``sha256sum -c`` reads it) —
or, where ``DIR``'s parent keeps one manifest for all its studies (a ``SHA256SUMS`` file, as ``docs/results`` does),
as a line of that manifest. ``--restore DIR`` (or the archive's path) checks the archive and makes those points
finished in ``--out``: the runner neither retrains nor re-evaluates them, tables, paired differences and plots are
rebuilt from them, and sibling studies share them, as if they had run in place (no weights: they cannot be evaluated
again or resumed). Older exports — ``points.tar.gz``, or the same files as a plain folder — restore the same way.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path

from ..data.records import prompt_id
from ..errors import TasftError
from ..io_utils import json_text, jsonl_text, read_jsonl, write_bytes_atomic, write_text_atomic

#: the per-answer fields that are kept (everything a table, an interval or a paired test reads; no text)
SCORE_FIELDS = ("id", "suite", "kind", "role", "template", "seed", "harm_score", "harmful", "judges", "refusal_score",
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


ARCHIVE = "points.tar.xz"  # one archive per study: its finished points, text-free (xz: 2.7x smaller than gzip here)
OLD_ARCHIVES = ("points.tar.gz",)  # what earlier exports wrote; still restored
CHECKSUM = "points.sha256"  # the archive's SHA-256 in `sha256sum -c` form, beside it ...
MANIFEST = "SHA256SUMS"  # ... or one line of this manifest in the parent folder (one for a whole results tree)


def _points(out: Path) -> tuple[dict[str, bytes], int]:
    """The text-free files of study directory ``out``'s finished points, by path relative to it, and how many runs
    and evaluations they hold. A run counts once an evaluation of it is finished (its point's, or for a checkpoint
    series one of its steps'): a run whose evaluation never finished restores without weights to evaluate."""
    files: dict[str, bytes] = {"experiment.json": (out / "experiment.json").read_bytes()}
    count = 0
    for run in sorted((out / "runs").glob("*/metrics.json")):
        slug = run.parent.name
        if not (out / "evals" / slug / "metrics.json").is_file() and not any(
                (out / "evals").glob(f"{glob.escape(slug)}__step*/metrics.json")):
            continue
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


def tar_bytes(files: dict[str, bytes]) -> bytes:
    """A reproducible tar of ``files``: sorted members, no times, owners or modes of this machine (the same points
    give the same bytes, so a re-export changes nothing in git)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def tar_xz(files: dict[str, bytes]) -> bytes:
    """:func:`tar_bytes` compressed with xz at its strongest preset (deterministic: the same files, the same bytes;
    ``tar xJf`` unpacks it)."""
    return lzma.compress(tar_bytes(files), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                         preset=9 | lzma.PRESET_EXTREME)


def _manifest_entries(path: Path) -> dict[str, str]:
    """``{file name: SHA-256}`` of a ``sha256sum`` file (``HASH  NAME`` or ``HASH *NAME`` per line)."""
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition(" ")
        if name:
            entries[name.lstrip(" *")] = digest
    return entries


def record_checksum(archive: Path, data: bytes) -> Path:
    """Record ``archive``'s SHA-256: as a line of the parent folder's :data:`MANIFEST` when there is one (its other
    lines kept, all sorted by name), else as ``points.sha256`` beside it; returns the file written."""
    archive = Path(archive)
    digest = hashlib.sha256(data).hexdigest()
    manifest = archive.parent.parent / MANIFEST
    if manifest.is_file():
        entries = _manifest_entries(manifest)
        entries[f"{archive.parent.name}/{archive.name}"] = digest
        write_text_atomic(manifest, "".join(f"{entries[n]}  {n}\n" for n in sorted(entries)))
        return manifest
    write_text_atomic(archive.parent / CHECKSUM, f"{digest}  {archive.name}\n")
    return archive.parent / CHECKSUM


def expected_checksum(archive: Path) -> str:
    """The SHA-256 recorded for ``archive`` (see :func:`record_checksum`); a one-line error when none is."""
    archive = Path(archive)
    beside, manifest = archive.parent / CHECKSUM, archive.parent.parent / MANIFEST
    for path, key in ((beside, archive.name), (manifest, f"{archive.parent.name}/{archive.name}")):
        if path.is_file() and (digest := _manifest_entries(path).get(key)) is not None:
            return digest
    raise TasftError(f"{archive}: no checksum for it, neither in a {CHECKSUM} beside it nor in {manifest} "
                     "(nothing to verify it against)")


def check_export(out: Path, dest: Path) -> None:
    """A one-line error unless ``dest`` can take the export of study directory ``out`` (it lies outside it): checked
    before a grid starts, since its points are exported as they finish."""
    out, dest = Path(out), Path(dest)
    if dest.resolve() == out.resolve() or out.resolve() in dest.resolve().parents:
        raise TasftError(f"--export {dest}: choose a directory outside the study directory {out}")


def export_points(out: Path, dest: Path, unless: dict[str, bytes] | None = None) -> tuple[int, dict[str, bytes]]:
    """Write the finished points of study directory ``out`` (see the module docstring) as one archive,
    ``dest/points.tar.xz``, and its checksum (:func:`record_checksum`); returns how many runs and evaluations it
    holds, and the archived files. ``unless``: the files of an earlier export — when the finished points are still
    those, nothing is written (a grid exports after each point; a resumed point changes nothing).
    ``dest`` must not be inside ``out`` (nor ``out`` itself)."""
    out, dest = Path(out), Path(dest)
    if not (out / "experiment.json").is_file():
        raise TasftError(f"{out}: not a study directory (no experiment.json)")
    check_export(out, dest)
    files, count = _points(out)
    if files != unless:
        data = tar_xz(files)
        dest.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(dest / ARCHIVE, data)
        record_checksum(dest / ARCHIVE, data)
    return count, files


def read_archive(archive: Path) -> dict[str, bytes]:
    """The files of a points archive (``.tar.xz``, or an older export's ``.tar.gz``) after checking it against its
    recorded checksum (:func:`expected_checksum`); one-line errors for a missing or mismatched checksum and for a
    member that is not a plain file inside the study directory."""
    archive = Path(archive)
    expected = expected_checksum(archive)
    data = archive.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise TasftError(f"{archive}: its SHA-256 does not match the recorded one (a changed or damaged archive)")
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or Path(member.name).is_absolute() or ".." in parts or not parts:
                raise TasftError(f"{archive}: member {member.name!r} is not a plain file inside the study")
            files[member.name] = tar.extractfile(member).read()
    return files


def _archive_in(src: Path) -> Path | None:
    """The points archive ``src`` names: ``src`` itself when it is a file, else the newest-format archive in it."""
    if src.is_file():
        return src
    return next((src / name for name in (ARCHIVE, *OLD_ARCHIVES) if (src / name).is_file()), None)


def restore_points(src: Path, out: Path) -> int:
    """Make the exported points of ``src`` (an archive, or a folder holding one, checked against its recorded
    checksum; or an older export's plain copy of the files) finished points of study directory ``out``; returns how
    many files were written. A file already in
    ``out`` with other bytes is never overwritten (one-line error, nothing written)."""
    src, out = Path(src), Path(out)
    archive = _archive_in(src)
    if archive is not None:
        files = read_archive(archive)
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
