"""How safe are the contrastive study's "safe counterparts"? Scores the cached generated answers of one contrastive
run (refusal and degenerate rules, the local harmfulness scorer) and writes counts only — never the text — to
``contrastive_counterparts.json`` next to this file. Run from the repository root after the contrastive study."""

import json
import sys
from pathlib import Path

from tasft.io_utils import read_jsonl
from tasft.scoring.degenerate import degenerate_reasons
from tasft.scoring.harmfulness import LocalHarmfulnessScorer
from tasft.scoring.judges import default_scorer_dir
from tasft.scoring.refusal import refusal_scores

path = Path(sys.argv[1] if len(sys.argv) > 1 else
            "runs/experiments/contrastive/runs/emd-contrastive__x1.0__seed0/contrastive_safe_responses.jsonl")
rows = read_jsonl(path)
prompts = [r["prompt"][-1]["content"] if isinstance(r["prompt"], list) else r["prompt"] for r in rows]
responses = [r["response"] for r in rows]
scorer = LocalHarmfulnessScorer.load(default_scorer_dir())
harm = scorer.score(prompts, responses, progress=False)
counts = {
    "file": str(path), "generator": rows[0].get("generator"), "answers": len(rows),
    "refusals": sum(s >= 0.5 for s in refusal_scores(responses, prompts)),
    "degenerate": sum(d is not None for d in degenerate_reasons(responses, prompts)),
    "harmful_by_local_scorer": sum(h >= scorer.threshold for h in harm),
}
out = Path(__file__).resolve().parent / "contrastive_counterparts.json"
out.write_text(json.dumps(counts, indent=1) + "\n", encoding="utf-8")
print(json.dumps(counts))
