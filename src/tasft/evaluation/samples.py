"""``tasft report --samples K``: a seeded sample of K answers per run and suite on its own HTML page
(``samples.html``), every prompt and answer collapsed behind a content warning — researchers decide by reading,
and nothing of it reaches stdout."""

from __future__ import annotations

import html
import random
from pathlib import Path

from ..io_utils import write_text_atomic

Rows = list[dict]
SEED = 0


def sample_rows(rows: Rows, k: int, seed: int = SEED, salt: str = "") -> Rows:
    """K rows drawn without replacement, reproducibly for (seed, salt), in their original order; the same prompts
    for every run that has them, since the draw depends on the ids only."""
    ids = sorted(str(r["id"]) for r in rows)
    chosen = set(random.Random(f"{seed}:{salt}").sample(ids, min(k, len(ids))))
    return [r for r in rows if str(r["id"]) in chosen]


def _flags(row: dict) -> str:
    parts = []
    if row.get("harm_score") is not None:
        parts.append(f"harm {row['harm_score']:.2f}" + (" FLAGGED" if row.get("harmful") else ""))
    if row.get("refusal"):
        parts.append("refusal")
    if row.get("degenerate"):
        parts.append(f"degenerate ({row['degenerate']})")
    if row.get("non_english"):
        parts.append("non-English")
    return ", ".join(parts) or "no flag"


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt)


def samples_html(runs: list[tuple[str, dict[str, Rows] | None]], k: int, seed: int = SEED) -> str:
    """The page: per run and suite, K sampled answers, each a closed ``<details>`` whose summary shows only the
    prompt id and the flags."""
    body = []
    for label, by_suite in runs:
        body.append(f"<h2>{html.escape(label)}</h2>")
        if not by_suite:
            body.append("<p>No scores/ files in this run.</p>")
            continue
        for suite, rows in by_suite.items():
            picked = sample_rows(rows, k, seed, suite)
            body.append(f"<h3>{html.escape(suite)} ({len(picked)} of {len(rows)})</h3>")
            for r in picked:
                body.append(
                    f"<details><summary>{html.escape(str(r['id']))} — {html.escape(_flags(r))} "
                    "<em>(content warning: may contain harmful text; click to open)</em></summary>"
                    f"<p><b>Prompt</b></p><pre>{html.escape(_prompt_text(r['prompt']))}</pre>"
                    f"<p><b>Answer</b></p><pre>{html.escape(str(r.get('response', '')))}</pre></details>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tasft sampled answers</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}pre{background:#f6f6f6;"
            "padding:.6em;white-space:pre-wrap}details{margin:.3em 0}</style></head><body>"
            "<h1>Sampled answers</h1><p><b>Content warning.</b> These are model answers to toxic prompts. Each is "
            f"collapsed; the sample (seed {seed}, {k} per suite) draws the same prompt ids for every run.</p>"
            + "\n".join(body) + "</body></html>\n")


def write_samples(out: Path, runs: list[tuple[str, dict[str, Rows] | None]], k: int, seed: int = SEED) -> Path:
    path = out / "samples.html"
    write_text_atomic(path, samples_html(runs, k, seed))
    return path
