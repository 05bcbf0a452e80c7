"""Rebuild this directory from the issue-5 experiment outputs (run from the repository root after the commands in
docs/RESULTS.md): per study its results table, CSV, plots and resolved experiment, and per point the training and
evaluation metrics (never the generated text, which holds harmful answers), then one report page for all studies."""

import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/experiments")
DST = Path("docs/results/experiments")
STUDIES = ("data_efficiency", "data_efficiency_seeds", "lambda", "lambda_paper_constant", "stages", "contrastive")


def relative(path: str) -> str:
    """An eval directory as a path inside this folder (shared points live in a sibling study's folder)."""
    parts = Path(path).parts
    i = max(i for i, p in enumerate(parts) if p in STUDIES)
    return "/".join(parts[i:])


for study in STUDIES:
    src, dst = SRC / study, DST / study
    if not (src / "results.csv").is_file():
        continue
    dst.mkdir(parents=True, exist_ok=True)
    for f in [*src.glob("*.png"), src / "results.md", src / "experiment.json"]:
        shutil.copy2(f, dst / f.name)
    rows = list(csv.DictReader((src / "results.csv").open(encoding="utf-8")))
    for row in rows:
        row["eval_dir"] = relative(row["eval_dir"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (dst / "results.csv").write_text(buf.getvalue(), encoding="utf-8")
    kept = (("runs", ("metrics.json", "config.yaml", "log.jsonl")), ("evals", ("metrics.json", "report.md")))
    for kind, names in kept:
        for point in sorted((src / kind).glob("*")):
            for name in names:
                if (point / name).is_file():
                    (dst / kind / point.name).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(point / name, dst / kind / point.name / name)
present = [str(SRC / s) for s in STUDIES if (SRC / s / "results.csv").is_file()]
subprocess.run(["tasft", "report", *present, "--out", str(DST / "report")], check=True)
