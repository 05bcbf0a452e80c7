"""``tasft compare``: "I am fine-tuning my model on my data — how do I keep it safe, and which method should I use?"

One command: harvest D_h from the user's model (its own harmful answers to STL's safety prompts, scored and
filtered; or ``--harmful FILE``), train each method on the user's data with the same settings and seeds, evaluate
each on the same spec, and write the paired table, the Pareto plot and a plain recommendation (:mod:`.advise`).
It is a study of the experiment runner — ``train.yaml`` and ``experiment.yaml`` written into ``--out``, then
:func:`tasft.experiments.runner.run_experiment` — so it resumes where it stopped and shares nothing it should not.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DEFAULT_MODEL
from ..errors import TasftError
from ..io_utils import read_jsonl, write_json_atomic, write_text_atomic, write_yaml_atomic
from ..methods import METHODS
from ..scoring.answer_class import trust_note
from .advise import recommendation

REQUEST = "compare.json"  # what was asked, to resume only the same comparison
POOL = "harmful_pool.jsonl"  # D_h harvested from the model (harmful text: never printed)


@dataclass
class CompareSettings:
    """What ``tasft compare`` does; each field's default is the command's."""

    data: str  # the user's D_u: {prompt, response} pairs (or any format a training config reads)
    out: str
    model: str = DEFAULT_MODEL
    methods: list[str] = field(default_factory=lambda: ["sft", "ta-sft", "npo", "stl"])
    seeds: int = 3
    spec: str | None = "full"  # the evaluation spec; None when ``suites`` are given instead
    suites: str | None = None  # named suites or ROLE:FILE (``harm:my_prompts.jsonl``), instead of the spec
    limit: int | None = None  # prompts per suite with ``suites``
    harmful: str | None = None  # a D_h file to use instead of harvesting one
    harvest_prompts: str | None = None  # default: STL's safety-only prompts in the data directory
    harvest_limit: int = 400
    keep_harmful: int = 100
    budget: float = 0.05  # the quality budget: reference NLL at most (1 + budget) x plain SFT's
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE for every method's training
    data_dir: str | None = None


def check(settings: CompareSettings) -> CompareSettings:
    """One-line errors before anything is written or loaded."""
    unknown = [m for m in settings.methods if m not in METHODS]
    if unknown or not settings.methods:
        raise TasftError(f"--methods: unknown method {', '.join(unknown) or '(none given)'} "
                         f"(choose from {', '.join(METHODS)})")
    if settings.seeds < 1:
        raise TasftError(f"--seeds: must be >= 1, got {settings.seeds}")
    if not settings.budget > 0:
        raise TasftError(f"--budget: must be > 0 (a relative increase of the reference NLL), got {settings.budget}")
    for flag, path in (("--data", settings.data), ("--harmful", settings.harmful),
                       ("--harvest-prompts", settings.harvest_prompts)):
        if path is not None and not Path(path).expanduser().is_file():
            raise TasftError(f"{flag} {path}: no such file")
    if (settings.spec is None) == (settings.suites is None):
        raise TasftError("give an evaluation --spec or --suites, not both")
    if settings.suites is not None:
        from ..suites import parse_suites

        parse_suites(settings.suites)  # an unknown suite or role fails now, not after the first training
    return settings


def _methods(settings: CompareSettings) -> list[str]:
    """The methods compared: plain ``sft`` first (the reference every method is paired with), then the others."""
    return list(dict.fromkeys(["sft", *settings.methods]))


def _pool_path(settings: CompareSettings, out: Path) -> Path:
    """Where D_h is: ``--harmful``, or the model's own answers harvested into ``out``."""
    return Path(settings.harmful).expanduser().resolve() if settings.harmful else (out / POOL).resolve()


def _harvest(settings: CompareSettings, pool: Path) -> None:
    """The model's own answers to STL's safety prompts, scored and filtered, into ``pool``."""
    from ..generation.harvest import HarvestSettings, harvest
    from ..suites import STL_SAFETY_FILE, find_data_dir

    data_dir = find_data_dir(settings.data_dir)
    excluded = data_dir / "stl" / "evaluation"
    harvest(HarvestSettings(prompts=settings.harvest_prompts or str(data_dir / STL_SAFETY_FILE), out=str(pool),
                            model=settings.model, limit=settings.harvest_limit,
                            exclude=[str(excluded)] if excluded.is_dir() else [], keep_harmful=settings.keep_harmful,
                            data_dir=str(data_dir), overwrite=True))


def _train_config(settings: CompareSettings, pool: Path) -> dict:
    """The training config every method shares (the user's model and data, D_h, the --set overrides), checked for
    each method now — a bad setting is one line before anything is written or harvested."""
    from ..run_config import apply_overrides, build_config

    data = str(Path(settings.data).expanduser().resolve())
    train = apply_overrides({"model": settings.model, "train_data": {"path": data, "split": "train"},
                             "eval_data": {"path": data, "split": "heldout"},
                             "harmful_data": {"path": str(pool), "shuffle_seed": 0}}, list(settings.overrides))
    for method in _methods(settings):
        build_config({**train, "method": method})
    return train


def _write_study(settings: CompareSettings, out: Path, train: dict) -> Path:
    """``out/train.yaml`` and ``out/experiment.yaml`` (one series per method, paired with sft)."""
    from ..suites import absolute_suites

    write_yaml_atomic(out / "train.yaml", train)

    evaluate = ({"spec": settings.spec} if settings.spec else
                {"suites": absolute_suites(settings.suites), "limit": settings.limit})
    if settings.data_dir:
        evaluate["data_dir"] = settings.data_dir
    write_yaml_atomic(out / "experiment.yaml", {
        "study": "variants", "train_config": "train.yaml", "x_label": "x", "reference": "sft",
        "seeds": settings.seeds, "evaluate": evaluate,
        "series": [{"name": m, "set": {"method": m}} for m in _methods(settings)], "plots": [{"kind": "pareto"}]})
    return out / "experiment.yaml"


def _say(line: str) -> None:
    print(line, flush=True)  # at once, also into a log file (a long run is watched with tail -f)


def run_compare(settings: CompareSettings, progress: bool = True, echo: Callable[[str], None] = _say) -> Path:
    """Run (or resume) the comparison; returns the recommendation file (``out/recommendation.md``)."""
    from .runner import point_progress, run_experiment

    check(settings)
    out = Path(settings.out).expanduser()
    request = {k: v for k, v in dataclasses.asdict(settings).items() if k != "out"}
    resumed = (out / REQUEST).is_file()
    if resumed:
        before = json.loads((out / REQUEST).read_text(encoding="utf-8"))
        if before != request:
            changed = ", ".join(sorted(k for k in request if before.get(k) != request[k]))
            raise TasftError(f"{out}: holds another comparison (it differs in {changed}); use another --out")
    elif out.exists() and any(out.iterdir()):
        raise TasftError(f"{out}: not empty and not a comparison; use a new --out")
    pool = _pool_path(settings, out)
    train = _train_config(settings, pool)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / REQUEST, request)
    if settings.harmful is None and not (resumed and pool.is_file()):
        _harvest(settings, pool)
    kept = sum(1 for _ in read_jsonl(pool))
    if kept == 0:
        raise TasftError(f"{pool}: no harmful answers to push away from (the model refused everything harvested)")
    experiment = _write_study(settings, out, train)
    methods = _methods(settings)
    echo(f"{len(methods)} methods x {settings.seeds} seeds = {len(methods) * settings.seeds} points "
         f"(train, then evaluate on {settings.spec or settings.suites}); D_h: {kept} answers; the first point "
         "sets the time estimate")
    start = time.perf_counter()
    rows = run_experiment("variants", str(experiment), out, seeds=settings.seeds, progress=progress,
                          on_point=point_progress(echo))
    paired = json.loads((out / "paired.json").read_text(encoding="utf-8")) if (out / "paired.json").is_file() else {}
    nlls = [r["reference_nll"] for r in rows if r["series"] == "sft" and isinstance(r.get("reference_nll"), float)]
    text = recommendation(paired, sum(nlls) / len(nlls) if nlls else None, settings.budget, settings.seeds,
                          trust_note())
    path = write_text_atomic(out / "recommendation.md", text)
    echo(f"done in {(time.perf_counter() - start) / 60:.1f} min: {out / 'results.md'}, "
         f"{out / 'pareto_not_safe_vs_reference_nll.png'}, {path}")
    return path
