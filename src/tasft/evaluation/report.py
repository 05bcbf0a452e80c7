"""Reports: markdown tables, one PNG bar chart per metric group, and one static HTML page with them embedded.

``tasft report RUN [RUN ...] --out DIR`` reads each RUN's ``metrics.json`` (an evaluation directory) and
compares them side by side: every number with its 95% interval (error bars on the plots), the judges' agreement
and validation, with ``--reference RUN`` each run's paired difference to that run, and with ``--samples K`` a page
of sampled answers (:mod:`.samples`). Plots use matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path

from .. import outputs
from ..errors import TasftError
from ..io_utils import write_text_atomic
from ..plotting import pyplot, save_figure
from ..scoring.answer_class import trust_note
from . import compare, samples, uncertainty

# metric groups: (title, PNG file stem, [(label, key in metrics["summary"])])
GROUPS = [
    ("Harmfulness (mean over the harm suites evaluated)", "harm", [
        ("harmful rate", "harm_suites_harmful_rate"), ("mean harmfulness", "harm_suites_mean_harmfulness"),
        ("refusal rate", "harm_suites_refusal_rate")]),
    ("Safety counted honestly", "safety", [
        ("safe rate (not harmful, not degenerate)", "harm_suites_safe_rate"),
        ("degenerate rate", "harm_suites_degenerate_rate")]),
    ("Over-refusal and language", "refusal", [
        ("over-refusal (xstest-safe)", "over_refusal"), ("non-English rate", "non_english_rate")]),
    ("Quality (alpaca)", "quality", [
        ("reference NLL", "reference_nll"), ("reference similarity", "reference_similarity"),
        ("3-gram repetition", "repetition_3gram")]),
]
SUITE_COLUMNS = [("n", "n"), ("harmful", "harmful_rate"), ("mean harm", "mean_harmfulness"), ("safe", "safe_rate"),
                 ("refusal", "refusal_rate"), ("degenerate", "degenerate_rate"), ("non-English", "non_english_rate"),
                 ("words", "mean_length_words")]


#: what an evaluation does not copy from its run's metrics.json: the bulky measurements and provenance that stay in
#: the run's own file — everything else (the method, its label, whatever settings its summary writes, steps, seed,
#: time) is the training summary, so a new method's settings reach the reports without a list to update
TRAINING_DROP = frozenset({"before", "after", "inputs", "model", "model_fingerprint", "resumed_from", "train_tokens",
                           "tokens_per_second", "final_train_loss", "peak_rss_bytes"})


def training_summary(model: str) -> dict | None:
    """The training run behind an evaluated model (``<model>/metrics.json`` of a tasft run), or None."""
    f = Path(model) / "metrics.json"
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if "method" not in data:
        return None
    return {k: v for k, v in data.items() if k not in TRAINING_DROP}


def _method_label(training: dict | None) -> str:
    if not training:
        return "(not trained by tasft)"
    if training.get("label"):  # written by the method itself (runs since the method registry)
        return training["label"] + (" + contrastive" if training.get("contrastive") else "")
    label = training["method"]
    if training.get("penalty"):
        label += f" {training['penalty']} λ={training.get('lambda')}"
    if training.get("stl"):
        label += f" N={training['stl'].get('examples')}"
    if training.get("contrastive"):
        label += " + contrastive"
    return label


def methods_table(runs: list[tuple[str, dict]]) -> str:
    """One row per evaluated model: method, training time, and the headline safety/quality numbers."""
    header = ["run", "method", "harmful rate (harm suites)", "safe rate", "over-refusal", "reference NLL",
              "non-English", "degenerate (harm suites)", "train wall s", "eval wall s"]
    rows = []
    for label, data in runs:
        training = data.get("training") or training_summary(data["model"])
        summary = data["summary"]
        rows.append([label, _method_label(training),
                     *(compare.fmt(summary.get(k), compare.interval(data, k))
                       for k in ("harm_suites_harmful_rate", "harm_suites_safe_rate", "over_refusal", "reference_nll",
                                 "non_english_rate", "harm_suites_degenerate_rate")),
                     _seconds(training.get("wall_seconds") if training else None), _seconds(_eval_seconds(data))])
    return _table(header, rows)


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _eval_seconds(data: dict) -> float | None:
    """Generation time of every suite (kept across resumes) plus scoring; older files: the wall time."""
    if "scoring_seconds" in data:
        return round(sum(data.get("generation_seconds", {}).values()) + data["scoring_seconds"], 1)
    return data.get("wall_seconds")


def _number(value) -> float:
    """A metric for plotting: a missing or null value (JSON has no NaN) is NaN."""
    return float("nan") if value is None else float(value)


def _fmt(value) -> str:
    if value is None or isinstance(value, float) and math.isnan(value):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_single_markdown(metrics: dict) -> str:
    """One evaluation: per-suite table, quality block and headline numbers."""
    rows = [[name, m.get("kind", ""), *(compare.fmt(m.get(k), compare.interval(metrics, k, name))
                                        for _, k in SUITE_COLUMNS)]
            for name, m in metrics["suites"].items()]
    parts = [f"# Evaluation of `{metrics['model']}`", "",
             f"Harmfulness scorer: `{metrics['harm_scorer']}` (threshold {_fmt(metrics.get('harm_threshold'))}); "
             f"limit per suite: {metrics.get('limit') or 'none'}; wall time {metrics.get('wall_seconds')} s. "
             "A degenerate answer (empty, a word or two, repetitive, an echo of the prompt) is never counted safe.",
             "Brackets: 95% bootstrap interval over prompts.", *([note] if (note := trust_note()) else []),
             "", _table(["suite", "kind", *(c for c, _ in SUITE_COLUMNS)], rows), "", "## Summary", "",
             _table(["metric", "value [95% interval]"],
                    [[k, compare.fmt(v, compare.interval(metrics, k))] for k, v in metrics["summary"].items()])]
    agreement = compare.agreement_table([("this run", metrics)])
    if agreement:
        parts += ["", "## Judges", "", "Harm-suite answers split by the judge's flag and the rule view "
                  "(shares of all answers).", "", agreement, "", *compare.validation_lines([("this run", metrics)])]
    if several := compare.judges_table([("this run", metrics)]):
        parts += ["", "Every judge of `--harm-scorer` on the harm suites, against the first:", "", several]
    attacks = compare.attack_table([("this run", metrics)])
    if attacks:
        parts += ["", "## Jailbreak templates", "", ATTACK_NOTE, "", attacks]
    return "\n".join(parts) + "\n"


ATTACK_NOTE = ("Each template wraps the harm-suite prompts (`data_files/attack_templates.json`); the judge scores "
               "the plain request against the answer. Worst case: a prompt counts harmful when any of its variants "
               "(plain and templated) got a harmful answer.")


def load_runs(paths: list[str]) -> list[tuple[str, dict]]:
    runs = []
    for p in paths:
        f = Path(p) / "metrics.json" if Path(p).is_dir() else Path(p)
        if not f.is_file():
            raise TasftError(f"{p}: no metrics.json (run `tasft evaluate` first)")
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise TasftError(f"{f}:{exc.lineno}: malformed JSON ({exc.msg})") from None
        if "summary" not in data or "suites" not in data:
            raise TasftError(f"{f}: not an evaluation metrics file (no summary/suites)")
        label = Path(p).name if Path(p).is_dir() else f.parent.name
        runs.append((label, data))
    labels = [label for label, _ in runs]
    if len(set(labels)) != len(labels):
        runs = [(f"{i + 1}:{label}", d) for i, (label, d) in enumerate(runs)]
    return runs


def plot_group(runs: list[tuple[str, dict]], title: str, metrics: list[tuple[str, str]], path: Path) -> bool:
    """Grouped bar chart (one group per metric, one bar per run); False if no run has these metrics."""
    plt = pyplot()

    present = [(label, key) for label, key in metrics if any(key in d["summary"] for _, d in runs)]
    if not present:
        return False
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(3.4 + (1.2 + 0.25 * len(runs)) * len(present), 3.6), dpi=110)
    for i, (name, data) in enumerate(runs):
        values = [_number(data["summary"].get(key)) for _, key in present]
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(present))]
        cis = [compare.interval(data, key) for _, key in present]
        # max(0, ·): a constant score's mean and its interval's ends may differ in the last bit either way
        err = [[max(0.0, v - c[0]) if c else 0.0 for v, c in zip(values, cis)],
               [max(0.0, c[1] - v) if c else 0.0 for v, c in zip(values, cis)]]
        bars = ax.bar(xs, values, width=width * 0.95, label=name, yerr=err if any(cis) else None, capsize=2,
                      error_kw={"elinewidth": 0.8})
        ax.bar_label(bars, labels=[_fmt(v) for v in values], fontsize=7, padding=1)
    ax.set_xticks(range(len(present)), [label for label, _ in present], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never on a bar
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def comparison_markdown(runs: list[tuple[str, dict]], images: list[Path], paired: str = "") -> str:
    keys = [(label, key) for _, _, group in GROUPS for label, key in group]
    rows = [[label, *(compare.fmt(d["summary"].get(key), compare.interval(d, key)) for _, d in runs)]
            for label, key in keys]
    suites = sorted({s for _, d in runs for s in d["suites"]})
    suite_rows = [[s, *(f"{_fmt(d['suites'].get(s, {}).get('harmful_rate'))} / "
                        f"{_fmt(d['suites'].get(s, {}).get('refusal_rate'))} / "
                        f"{_fmt(d['suites'].get(s, {}).get('degenerate_rate'))}" for _, d in runs)] for s in suites]
    names = [n for n, _ in runs]
    parts = ["# Evaluation comparison", "", "Models: " + ", ".join(f"`{n}` = {d['model']}" for n, d in runs), "",
             *([note, ""] if (note := trust_note()) else []),
             "## Methods", "", methods_table(runs), "",
             "## Summary", "", "Brackets: 95% bootstrap interval over prompts.", "", _table(["metric", *names], rows),
             "", *[f"![{p.stem}]({p.name})" for p in images], ""]
    if paired:
        parts += ["## Paired differences to the reference", "", paired, ""]
    parts += ["## Per suite: harmful / refusal / degenerate rate", "", _table(["suite", *names], suite_rows), ""]
    agreement = compare.agreement_table(runs)
    if agreement:
        parts += ["## Judges", "", "Harm-suite answers split by the judge's flag and the rule view (shares of all "
                  "answers); *judges disagree* = flagged harmful yet a refusal or degenerate.", "", agreement, "",
                  *compare.validation_lines(runs), ""]
    if several := compare.judges_table(runs):
        parts += ["Every judge of `--harm-scorer` on the harm suites, against the first:", "", several, ""]
    attacks = compare.attack_table(runs)
    if attacks:
        parts += ["## Jailbreak templates", "", ATTACK_NOTE, "", attacks, ""]
    return "\n".join(parts) + "\n"


#: the report page's look, and a click on a column header sorting its table (numbers by value, the rest as text)
_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
          "table{border-collapse:collapse;margin:.8em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.25em .6em;"
          "text-align:left;white-space:nowrap}th{background:#f0f0f0;cursor:pointer}tr:nth-child(even){background:#fafafa}"
          "td.sig{background:#fff3c4;font-weight:bold}.wide{overflow-x:auto}img{max-width:100%}"
          "figure{display:inline-block;margin:.5em}code{background:#f3f3f3;padding:0 .2em}")
_SORT = ("document.querySelectorAll('th').forEach((th,i)=>th.addEventListener('click',()=>{"
         "const body=th.closest('table').tBodies[0],rows=[...body.rows],down=th.dataset.down!=='1';"
         "const key=r=>{const t=r.cells[i].innerText,n=parseFloat(t.replace('\u2212','-'));return isNaN(n)?t:n};"
         "rows.sort((a,b)=>{const x=key(a),y=key(b);return (x>y?1:x<y?-1:0)*(down?1:-1)});"
         "th.dataset.down=down?'1':'0';rows.forEach(r=>body.appendChild(r))}));")


def comparison_html(markdown_text: str, images: list[Path]) -> str:
    """A self-contained page from the report's markdown: real HTML tables (a cell whose interval excludes 0, marked
    ``*``, highlighted; a click on a header sorts), links that work, and each figure inlined as a data URI where the
    markdown places it (beside the table it illustrates)."""
    import markdown

    inline = {**{f"{p.parent.name}/{p.name}": p for p in images}, **{p.name: p for p in images}}
    text = re.sub(r"\]\*", r"]\\*", markdown_text)  # "[lo, hi]*" marks a significant cell, not emphasis
    body = markdown.markdown(text, extensions=["tables"], output_format="html")

    def figure(match: re.Match) -> str:
        path = inline.get(html.unescape(match.group(2)))
        if path is None:
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<figure><img alt="{match.group(1)}" src="data:image/png;base64,{data}"></figure>'

    body = re.sub(r'<img alt="([^"]*)" src="([^"]+)"\s*/?>', figure, body)
    body = re.sub(r"<td>([^<]*\]\*[^<]*)</td>", r'<td class="sig">\1</td>', body)
    body = body.replace("<table>", "<div class='wide'><table>").replace("</table>", "</table></div>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tasft evaluation report</title>"
            f"<style>{_STYLE}</style></head><body>{body}<script>{_SORT}</script></body></html>\n")


def experiment_section(path: Path, out: Path) -> tuple[str, list[Path]]:
    """An experiment directory's results table and plots (copied next to the report)."""
    results = path / "results.md"
    if not results.is_file():
        raise TasftError(f"{path}: no results.md yet (run `tasft experiment` first)")
    target = out / path.name
    target.mkdir(parents=True, exist_ok=True)
    images = []
    for png in sorted(path.glob("*.png")):
        (target / png.name).write_bytes(png.read_bytes())
        images.append(target / png.name)
    body = results.read_text(encoding="utf-8").replace("\n## ", "\n### ").replace("# Experiment:", "## Experiment:", 1)
    return body + "\n" + "\n".join(f"![{p.stem}]({path.name}/{p.name})" for p in images) + "\n", images


PAIRED_KEYS = uncertainty.PAIRED_METRICS


def _run_dir(path: str) -> Path:
    return Path(path) if Path(path).is_dir() else Path(path).parent


def _check_report_dir(out: Path, inputs: dict[str, Path], overwrite: bool, locked: bool = False) -> str:
    """What a report may do with ``out`` — ``new`` (absent or empty) or ``replace`` (``--overwrite`` of an earlier
    tasft report) — or the one-line error why it cannot: the output rules of every command (:mod:`tasft.outputs`),
    and never an input's own folder (an evaluation's ``report.md`` is the evaluation's)."""
    what = "--out"
    if out.exists() and not out.is_dir():
        raise TasftError(f"{what} {out} exists and is not a directory")
    outputs.check_apart(out, inputs, what)  # before the rest: an input's own folder is never a report's
    if not out.is_dir() or outputs.is_empty(out):
        return "new"
    if not locked and outputs.in_use(out):
        raise TasftError(f"{what} {out} is in use by another tasft process")
    if not overwrite:
        if outputs.owner_kind(out) == "report":
            raise TasftError(f"{what} {out} already holds a tasft report (use --overwrite to replace it)")
        raise TasftError(f"{what} {out} already exists and holds no tasft report (choose a new directory)")
    outputs.check_replaceable(out, what, "report", locked=locked)
    return "replace"


def build_report(paths: list[str], out: str | Path, reference: str | None = None,
                 sample_k: int | None = None, overwrite: bool = False) -> Path:
    """Write ``report.md``, PNG plots and ``report.html`` into ``out``: a comparison of evaluation directories
    and/or the tables and plots of experiment directories (those with an ``experiment.json``); ``reference``
    (an evaluation directory, added if not among ``paths``) adds the paired differences, ``sample_k`` the page of
    sampled answers. ``out`` follows the output rules of every command: a new or empty folder, or with ``overwrite``
    an earlier report; never a folder it reads."""
    if sample_k is not None and sample_k < 1:
        raise TasftError(f"--samples: must be >= 1, got {sample_k}")
    experiments = [Path(p) for p in paths if (Path(p) / "experiment.json").is_file()]
    evals = [p for p in paths if Path(p) not in experiments]
    if reference is not None:
        matches = [i for i, p in enumerate(evals) if _run_dir(p).resolve() == _run_dir(reference).resolve()]
        if not matches:
            evals.insert(0, reference)
        ref_index = matches[0] if matches else 0
    if (reference is not None or sample_k is not None) and not evals:
        raise TasftError("--reference and --samples need evaluation directories")
    runs = load_runs(evals) if evals else []
    rows = [compare.scored_rows(_run_dir(p)) for p in evals]
    if reference is not None and rows[ref_index] is None:
        raise TasftError(f"--reference {reference}: no scores/ files to pair prompts with")
    out = Path(out).expanduser()
    inputs = {f"the input {p}": _run_dir(p) for p in [*paths, *([reference] if reference else [])]}
    action = _check_report_dir(out, inputs, overwrite)
    lock = outputs.claim(out, "report", "--out")
    try:
        if action == "replace":
            _check_report_dir(out, inputs, overwrite, locked=True)  # still so, now that this process holds it
            outputs.empty_owned(out, "--out", "report")
        return _write_report(out, evals, experiments, runs, rows, reference, ref_index if reference else 0, sample_k)
    finally:
        lock.release()


def _write_report(out: Path, evals: list[str], experiments: list[Path], runs: list, rows: list, reference,
                  ref_index: int, sample_k: int | None) -> Path:
    md, images = "", []
    if evals:
        for (_, data), r in zip(runs, rows):
            compare.ensure_intervals(data, r)
        images = [out / f"{stem}.png" for title, stem, group in GROUPS
                  if plot_group(runs, title, group, out / f"{stem}.png")]
        paired = "" if reference is None else (
            f"Reference: `{runs[ref_index][0]}`. Each cell: run − reference on the same prompts, 95% paired bootstrap "
            "interval; * = the interval excludes 0; p = McNemar's exact test (rates).\n\n"
            + compare.paired_table(runs, rows, ref_index, PAIRED_KEYS))
        md = comparison_markdown(runs, images, paired)
        if sample_k is not None:
            page = samples.write_samples(out, [(label, r) for (label, _), r in zip(runs, rows)], sample_k)
            md += f"\nSampled answers (content warning): [{page.name}]({page.name})\n"
    for path in experiments:
        section, pngs = experiment_section(path, out)
        md += ("\n" if md else "") + section
        images += pngs
    write_text_atomic(out / "report.md", md)
    write_text_atomic(out / "report.html", comparison_html(md, images))
    return out
