"""Labels written by reading: a blind sheet of harm-suite answers, the labels joined back to their prompts and
models (no text), and how far a judge agrees with them.

``tasft labels sample EVAL... --n N --seed S --out SHEET`` draws N harm-suite answers, evenly across the evaluation
directories (each one model point) and seeded, shuffles them and writes

* ``SHEET/answers_to_label.jsonl`` — item number, prompt, answer: **harmful text**, for the reader's eyes only;
* ``SHEET/key.csv`` — item → prompt id, model point, suite (the reader does not open it: the labels stay blind);
* ``SHEET/labels.csv`` — ``item,class`` with the class column empty, for the reader to fill in.

``tasft labels join SHEET --out LABELS.csv`` checks every item has one class of :data:`ANSWER_CLASSES` and writes
``prompt_id,model_point,class`` — what is committed (a prompt id is a hash; no prompt, no answer).
``tasft labels agree LABELS.csv EVAL...`` compares the classes, harmful flags and refusal flags the evaluations
assigned with the labels: Cohen's κ, and each class's precision and recall, overall and per model point.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

from ..data.records import prompt_id
from ..errors import TasftError
from ..io_utils import read_json_object, read_jsonl, write_jsonl_atomic, write_text_atomic
from ..scoring.answer_class import CLASSES
from ..suites import HARM_SUITES, in_role, recorded_roles

ANSWER_CLASSES = CLASSES  # the registry lives with the classifier (tasft.scoring.answer_class)

SHEET_ANSWERS, SHEET_KEY, SHEET_LABELS = "answers_to_label.jsonl", "key.csv", "labels.csv"


def model_point(eval_dir: Path) -> str:
    """A model point's name: the starting model the evaluated model was trained from (the evaluated model itself
    when it was not trained by tasft) and the evaluation directory, e.g. ``smollm2-135m-instruct/sft__xNone__seed0``.
    The run is looked up where the evaluation recorded it (relative paths: from the evaluation's parent folders)."""
    eval_dir = Path(eval_dir)
    model = str(read_json_object(eval_dir / "metrics.json").get("model") or "model")
    base = model
    for place in (Path(model), *(parent / model for parent in eval_dir.resolve().parents)):
        run = read_json_object(place / "metrics.json")
        if run.get("model"):
            base = str(run["model"])
            break
    return f"{Path(base).name}/{eval_dir.name}"


def _answers(eval_dir: Path) -> list[dict]:
    """The harm-suite answers of an evaluation directory (from its ``generations/``; text): the named harm suites',
    then those of prompt files declared ``harm:FILE``."""
    suites = read_json_object(eval_dir / "metrics.json").get("suites")
    roles = recorded_roles(suites) if isinstance(suites, dict) else dict.fromkeys(HARM_SUITES, "harm")
    rows = []
    for suite in in_role(roles, "harm"):
        path = eval_dir / "generations" / f"{suite}.jsonl"
        if path.is_file():
            rows += [{**r, "suite": suite} for r in read_jsonl(path)]
    return rows


def sample_sheet(evals: list[str | Path], n: int, seed: int, out: str | Path, parts: int = 1) -> dict:
    """Write a blind labelling sheet of ``n`` harm-suite answers (see the module docstring); returns counts. With
    ``parts`` > 1 the shuffled items are split into ``out/part-1`` .. ``part-K``, each a sheet of its own (one per
    reader)."""
    if n < 1:
        raise TasftError(f"--n: must be >= 1, got {n}")
    if parts < 1:
        raise TasftError(f"--parts: must be >= 1, got {parts}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise TasftError(f"--out {out} already exists and is not empty (a sheet is never overwritten)")
    pools = []
    for directory in map(Path, evals):
        rows = _answers(directory)
        if not rows:
            raise TasftError(f"{directory}: no harm-suite answers (generations/) to label")
        pools.append((model_point(directory), rows))
    names = [name for name, _ in pools]
    if len(set(names)) != len(names):
        raise TasftError("two evaluations have the same model point name: give directories with distinct names")
    rng = random.Random(seed)
    share, extra = divmod(n, len(pools))
    drawn = []
    for i, (name, rows) in enumerate(pools):
        want = min(len(rows), share + (i < extra))
        drawn += [(name, row) for row in rng.sample(rows, want)]
    rng.shuffle(drawn)
    size = -(-len(drawn) // parts)
    for k in range(parts):
        chunk = drawn[k * size : (k + 1) * size]
        _write_sheet(out if parts == 1 else out / f"part-{k + 1}", chunk, first=k * size + 1)
    return {"items": len(drawn), "points": dict(Counter(name for name, _ in drawn))}


def _write_sheet(out: Path, drawn: list[tuple[str, dict]], first: int = 1) -> None:
    items, key = [], ["item,prompt_id,model_point,suite"]
    for item, (name, row) in enumerate(drawn, first):
        prompt = row.get("request") if isinstance(row.get("request"), str) else row["prompt"]
        items.append({"item": item, "prompt": prompt, "answer": row["response"]})
        key.append(f"{item},{prompt_id(prompt)},{name},{row['suite']}")
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / SHEET_ANSWERS, items)
    write_text_atomic(out / SHEET_KEY, "\n".join(key) + "\n")
    write_text_atomic(out / SHEET_LABELS, "item,class\n" + "".join(f"{i['item']},\n" for i in items))


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise TasftError(f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})") from None
    if rows and not set(columns) <= set(rows[0]):
        raise TasftError(f"{path}: expected the columns {', '.join(columns)}")
    return rows


def join_labels(sheets: str | Path | list, out: str | Path) -> dict:
    """``prompt_id,model_point,class`` from filled-in sheets (every item one known class); returns the counts."""
    lines = ["prompt_id,model_point,class"]
    for sheet in [sheets] if isinstance(sheets, (str, Path)) else sheets:
        lines += _sheet_lines(Path(sheet))
    write_text_atomic(Path(out), "\n".join(lines) + "\n")
    return dict(Counter(line.rsplit(",", 1)[1] for line in lines[1:]))


def _sheet_lines(sheet: Path) -> list[str]:
    key = {r["item"]: r for r in _read_csv(sheet / SHEET_KEY, ("item", "prompt_id", "model_point"))}
    labels = _read_csv(sheet / SHEET_LABELS, ("item", "class"))
    lines = []
    for number, row in enumerate(labels, 2):
        label = (row.get("class") or "").strip()
        if label not in ANSWER_CLASSES:
            raise TasftError(f"{sheet / SHEET_LABELS}:{number}: item {row.get('item')}: class {label!r} is not one of "
                             f"{', '.join(ANSWER_CLASSES)}")
        if row["item"] not in key:
            raise TasftError(f"{sheet / SHEET_LABELS}:{number}: item {row['item']} is not in {SHEET_KEY}")
        k = key[row["item"]]
        lines.append(f"{k['prompt_id']},{k['model_point']},{label}")
    if len(labels) != len(key):
        raise TasftError(f"{sheet / SHEET_LABELS}: {len(labels)} labels for {len(key)} items")
    return lines


def compare_readers(first: str | Path, second: str | Path) -> dict:
    """Two readers' labels of the same answers (joined files): on the answers both labelled, Cohen's κ of the five
    classes and of harmful vs not, and the share where they agree."""
    a, b = read_labels(first), read_labels(second)
    common = sorted(set(a) & set(b))
    if not common:
        raise TasftError(f"{first} and {second} share no labelled answer")
    x, y = [a[k] for k in common], [b[k] for k in common]
    return {"n": len(common), "agreement": sum(p == q for p, q in zip(x, y)) / len(common),
            "kappa": cohen_kappa(x, y),
            "harmful_kappa": cohen_kappa([p == "harmful" for p in x], [q == "harmful" for q in y])}


def read_labels(path: str | Path) -> dict[tuple[str, str], str]:
    """``{(prompt_id, model_point): class}`` of a joined label file."""
    rows = _read_csv(Path(path), ("prompt_id", "model_point", "class"))
    out = {}
    for number, row in enumerate(rows, 2):
        if row["class"] not in ANSWER_CLASSES:
            raise TasftError(f"{path}:{number}: class {row['class']!r} is not one of {', '.join(ANSWER_CLASSES)}")
        out[(row["prompt_id"], row["model_point"])] = row["class"]
    return out


def cohen_kappa(a: list, b: list) -> float | None:
    """Cohen's κ = (p_o − p_e) / (1 − p_e) of two label lists (p_e from their marginals); None if undefined."""
    if not a or len(a) != len(b):
        return None
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / n**2
    return None if p_e >= 1 else (p_o - p_e) / (1 - p_e)


def per_class(truth: list[str], predicted: list[str], classes=tuple(ANSWER_CLASSES)) -> dict[str, dict]:
    """Each class's precision, recall and support (None where a ratio has no denominator)."""
    out = {}
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(truth, predicted))
        called, real = sum(p == c for p in predicted), sum(t == c for t in truth)
        out[c] = {"precision": tp / called if called else None, "recall": tp / real if real else None,
                  "support": real}
    return out
