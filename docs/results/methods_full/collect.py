"""Rebuild this directory from the outputs of configs/experiments/methods_full.yaml (run from the repository root
after the two `tasft experiment` commands in that file's header): the study's table, CSV, paired differences, plots
and resolved experiment, and per point the training and evaluation metrics — never the generated text or the
per-answer scores, which hold harmful answers — then the verdict.

    python docs/results/methods_full/collect.py results/methods_full_a results/methods_full_b
"""

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

SOURCES = [Path(p) for p in (sys.argv[1:] or ["results/methods_full_a", "results/methods_full_b"])]
DST = Path(__file__).resolve().parent
MAIN = SOURCES[0]  # the directory whose tables are copied (the sibling holds the points it trained)


def relative(path: str) -> str:
    """An eval directory as a path inside this folder (``<study dir name>/evals/<point>``)."""
    p = Path(path)
    return f"{p.parent.parent.name}/{p.parent.name}/{p.name}"


for f in [*MAIN.glob("*.png"), MAIN / "results.md", MAIN / "experiment.json", MAIN / "paired.json"]:
    shutil.copy2(f, DST / f.name)
rows = list(csv.DictReader((MAIN / "results.csv").open(encoding="utf-8")))
for row in rows:
    row["eval_dir"] = relative(row["eval_dir"])
buf = io.StringIO()
writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
writer.writeheader()
writer.writerows(rows)
(DST / "results.csv").write_text(buf.getvalue(), encoding="utf-8")
experiment = json.loads((MAIN / "experiment.json").read_text(encoding="utf-8"))
experiment["train_config"] = "configs/experiments/" + Path(experiment["train_config"]).name
(DST / "experiment.json").write_text(json.dumps(experiment, indent=1) + "\n", encoding="utf-8")
kept = (("runs", ("metrics.json", "config.yaml", "log.jsonl")), ("evals", ("metrics.json", "report.md")))
for src in SOURCES:
    for kind, names in kept:
        for point in sorted((src / kind).glob("*")):
            if not (point / "metrics.json").is_file():
                continue  # an unfinished point
            for name in names:
                if (point / name).is_file():
                    target = DST / src.name / kind / point.name
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(point / name, target / name)
subprocess.run([sys.executable, str(DST / "verdict.py")], check=True)
