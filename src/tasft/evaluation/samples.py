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
    """The page: per suite, K sampled prompts (the same ids for every run), each a closed ``<details>`` whose summary
    shows only the prompt id and each run's flags; opened, the prompt once and every run's answer side by side."""
    suites: dict[str, None] = {}
    for _, by_suite in runs:
        suites.update(dict.fromkeys(by_suite or {}))
    missing = [label for label, by_suite in runs if not by_suite]
    body = [f"<p>No scores/ files in: {html.escape(', '.join(missing))}.</p>"] if missing else []
    for suite in suites:
        rows = {label: {str(r["id"]): r for r in (by_suite or {}).get(suite, [])} for label, by_suite in runs}
        first = next((r for r in rows.values() if r), {})
        if not first:
            continue
        picked = sample_rows(list(first.values()), k, seed, suite)
        body.append(f"<h2>{html.escape(suite)} ({len(picked)} of {len(first)} prompts)</h2>")
        for row in picked:
            rid = str(row["id"])
            flags = "; ".join(f"{label}: {_flags(r[rid]) if rid in r else 'not answered'}" for label, r in rows.items())
            cells = "".join(
                f"<div class='answer'><p><b>{html.escape(label)}</b> — {html.escape(_flags(r[rid]))}</p>"
                f"<pre>{html.escape(str(r[rid].get('response', '')))}</pre></div>" if rid in r else
                f"<div class='answer'><p><b>{html.escape(label)}</b> — not answered</p></div>"
                for label, r in rows.items())
            body.append(
                f"<details><summary>{html.escape(rid)} — {html.escape(flags)} "
                "<em>(content warning: may contain harmful text; click to open)</em></summary>"
                f"<p><b>Prompt</b></p><pre>{html.escape(_prompt_text(row['prompt']))}</pre>"
                f"<div class='answers'>{cells}</div></details>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tasft sampled answers</title>"
            "<style>body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}pre{background:#f6f6f6;"
            "padding:.6em;white-space:pre-wrap}details{margin:.4em 0;border-bottom:1px solid #ddd}"
            ".answers{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:.8em}"
            "</style></head><body>"
            "<h1>Sampled answers</h1><p><b>Content warning.</b> These are model answers to toxic prompts. Each prompt "
            f"is collapsed; the sample (seed {seed}, {k} per suite) draws the same prompt ids for every run, and "
            "each opened prompt shows every run's answer to it side by side.</p>"
            + "\n".join(body) + "</body></html>\n")


def write_samples(out: Path, runs: list[tuple[str, dict[str, Rows] | None]], k: int, seed: int = SEED) -> Path:
    path = out / "samples.html"
    write_text_atomic(path, samples_html(runs, k, seed))
    return path
