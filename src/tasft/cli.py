"""``tasft <command>``: argument parsing only; the work is done by the library functions it calls.

Every :class:`TasftError` is printed as one line ``tasft: error: ...`` on stderr with exit code 2.
Generated text is written to files, never to stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .config import DEFAULT_MODEL, GenerationSettings
from .errors import TasftError
from .evaluation.specs import SPECS
from .experiments.study import STUDIES
from .io_utils import dumps
from .methods import METHODS
from .scoring.deberta import DEFAULT_MODEL as DEBERTA_MODEL
from .scoring.judges import JUDGES
from .suites import SUITES


def _train(args: argparse.Namespace) -> None:
    from .run_config import load_train_config
    from .training.pipeline import train

    cfg = load_train_config(args.config, args.set)
    metrics = train(cfg, overwrite=args.overwrite, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate/torchrun only the main process reports
        return
    summary = {k: metrics.get(k) for k in ("method", "label", "steps", "before", "after", "train_seconds",
                                           "tokens_per_second")}
    print(dumps(summary, indent=2))
    print(f"saved to {cfg.output_dir}")
    run = Path(cfg.output_dir)
    print(f"next: tasft evaluate --model {run} --out {run}-eval --spec quick   "
          f"# then: tasft report {run}-eval --out {run}-report")


def _generation_settings(args: argparse.Namespace):
    from .generation.generate import GenerationSettings

    given = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "temperature": args.temperature,
             "top_p": args.top_p, "seed": args.seed, "max_prompt_tokens": args.max_prompt_tokens,
             "workers": args.workers}
    # a flag not given takes GenerationSettings' own default (the one place it is set)
    return GenerationSettings(do_sample=args.sample, **{k: v for k, v in given.items() if v is not None})


def _generate(args: argparse.Namespace) -> None:
    from .config import DataSource
    from .data.records import load_source
    from .generation.generate import check_prompt_lengths, generate_jsonl
    from .generation.harvest import check_output_free, command_inputs, harvest_items
    from .models import load_model, load_tokenizer

    out = Path(args.out)
    settings = _generation_settings(args).check()
    if args.limit is not None and args.limit < 1:
        raise TasftError(f"--limit: must be >= 1, got {args.limit}")
    inputs = command_inputs(args.model, args.prompts)
    check_output_free(out, args.overwrite, dry_run=True, inputs=inputs)
    records = load_source(DataSource(args.prompts, limit=args.limit), "prompts", need_response=False)
    tokenizer = load_tokenizer(args.model)
    items = harvest_items(records)
    check_prompt_lengths(tokenizer, items, settings.max_prompt_tokens)
    model = load_model(args.model)
    check_output_free(out, args.overwrite, inputs=inputs)
    generate_jsonl(model, tokenizer, items, out, settings, extra={"model": args.model, "seed": settings.seed})
    print(f"wrote {len(items)} responses to {out}")


def _harvest(args: argparse.Namespace) -> None:
    from .generation.harvest import HarvestSettings, harvest

    generation = _generation_settings(args)
    settings = HarvestSettings(
        prompts=args.prompts, out=args.out, model=args.model, limit=args.limit, seed=generation.seed,
        exclude=args.exclude, generation=generation, overwrite=args.overwrite,
        samples=args.samples, keep_harmful=args.keep_harmful, scorer_path=args.scorer, data_dir=args.data_dir,
    )
    counts = harvest(settings)
    print(dumps(counts))
    print(f"wrote {counts['kept']} harvested responses to {args.out} (unsafe text: open with care)")


def _audit(args: argparse.Namespace) -> None:
    from .scoring.prompt_audit import run_audit

    summary = run_audit(args.pool, args.out, verdicts=args.verdicts, data_dir=args.data_dir, overwrite=args.overwrite)
    agree = summary.get("agreement")
    line = (f"{summary['prompts']} prompts: the XSTest prompt classifier calls {summary['classifier_benign']} benign "
            f"(its cross-validated AUROC on XSTest {summary['classifier']['cv_auroc']:.3f})")
    if agree is not None:
        line += (f"; the audit calls {summary['verdicts']['benign']} benign, {summary['verdicts']['borderline']} "
                 f"borderline; both benign {agree['both_benign']}, kappa {agree['cohen_kappa']}")
    print(line + f"; wrote {args.out}")


def _suite_limits(pairs: list[str]) -> dict[str, int]:
    """``--suite-limit xstest-safe=50`` (repeatable) as {suite: limit}."""
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if not name or not value.isdigit() or int(value) < 1:
            raise TasftError(f"--suite-limit '{pair}': expected SUITE=N with N >= 1")
        out[name] = int(value)
    return out


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluation.evaluate import EvalSettings, evaluate, from_spec

    common = dict(model=args.model, out=args.out, data_dir=args.data_dir, harm_scorer=args.harm_scorer,
                  scorer_path=args.scorer, deberta_model=args.deberta_model,
                  generation=_generation_settings(args), overwrite=args.overwrite, attacks=args.attacks)
    if args.spec is not None:
        if args.suites is not None or args.limit is not None or args.suite_limit:
            raise TasftError(f"--spec {args.spec} sets the suites and their limits: drop --suites, --limit and "
                             "--suite-limit (or drop --spec)")
        settings = from_spec(args.spec, **common)
    else:
        settings = EvalSettings(suites="all" if args.suites is None else args.suites, limit=args.limit,
                                suite_limits=_suite_limits(args.suite_limit), **common)
    metrics = evaluate(settings)
    print(dumps(metrics["summary"], indent=2))
    print(f"wrote {args.out}/metrics.json and report.md (generations in {args.out}/generations/)")
    print(f"next: tasft report {Path(args.out)} [another evaluation ...] --out {Path(args.out)}-report   "
          "# side by side; --reference EVAL adds paired differences")


def _report(args: argparse.Namespace) -> None:
    from .evaluation.report import build_report

    out = build_report(args.runs, args.out, reference=args.reference, sample_k=args.samples, overwrite=args.overwrite)
    extra = f" and {out}/samples.html (answers, content warning)" if args.samples else ""
    print(f"wrote {out}/report.md, {out}/report.html and the PNG plots{extra}")


def _rescore(args: argparse.Namespace) -> None:
    from .evaluation.rescore import refresh_rule_flags

    for path in args.evals:
        summary = refresh_rule_flags(path)["summary"]
        show = {label: summary.get(key) for label, key in (("safe rate", "harm_suites_safe_rate"),
                ("degenerate rate", "harm_suites_degenerate_rate"), ("over-refusal", "over_refusal"))}
        print(f"{path}: " + ", ".join(f"{k} {'–' if v is None else f'{v:.3f}'}" for k, v in show.items()))


def _experiment(args: argparse.Namespace) -> None:
    from .experiments.publish import check_export, export_points, restore_points
    from .experiments.runner import point_progress, run_experiment

    out = Path(args.out)
    if args.export:
        check_export(out, Path(args.export))
    if args.restore:
        written = restore_points(Path(args.restore), out)
        print(f"restored {written} files of the exported points in {args.restore} into {args.out}")
    say, exported = point_progress(lambda line: print(line, flush=True)), {}

    def on_point(done: int, total: int, point, seconds: float) -> None:
        say(done, total, point, seconds)
        if args.export:  # each point as it finishes: a grid stopped later loses none of them
            exported["files"] = export_points(out, Path(args.export), exported.get("files"))[1]

    rows = run_experiment(args.study, args.config, out, seeds=args.seeds, prune=args.prune,
                          tables_only=args.tables_only, on_point=on_point)
    print(f"{len(rows)} points done; wrote {args.out}/results.csv, results.md and the PNG plots")
    if args.export:
        count = export_points(out, Path(args.export), exported.get("files"))[0]
        print(f"exported {count} finished runs and evaluations of {args.out} without generated text to {args.export}")


def _scorer_train(args: argparse.Namespace) -> None:
    from .scoring.harmfulness_train import train_local_scorer
    from .suites import find_data_dir

    meta = train_local_scorer(args.out, find_data_dir(args.data_dir), overwrite=args.overwrite)
    print(dumps(meta.get("validation", {}), indent=2))
    print(f"saved the local harmfulness scorer to {args.out} (threshold {meta.get('threshold')})")


def _data_fetch(args: argparse.Namespace) -> None:
    from .data_fetch import fetch_all

    dest = fetch_all(args.dest, base_url=args.base_url, overwrite=args.overwrite)
    print(f"data ready in {dest}" + ("" if args.dest is None else f" (use it with --data-dir {dest} or TASFT_DATA)"))


def _add_generation_flags(p: argparse.ArgumentParser, overwrite: str) -> None:
    """Decoding flags; each default is GenerationSettings' (the one place they are set)."""
    d = GenerationSettings()
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help=f"new tokens per answer (default {d.max_new_tokens})")
    p.add_argument("--batch-size", type=int, default=None, help=f"prompts per batch (default {d.batch_size})")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=None, help=f"with --sample (default {d.temperature})")
    p.add_argument("--top-p", type=float, default=None, help=f"with --sample (default {d.top_p})")
    p.add_argument("--seed", type=int, default=None, help=f"with --sample (default {d.seed})")
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help=f"longer prompts are an error (default {d.max_prompt_tokens})")
    p.add_argument("--workers", type=int, default=None,
                   help=f"CPU processes sharing the batches, one thread each (Linux; same outputs; default "
                   f"{d.workers}): on a 2-core machine 2 do ~1.7x the work of one")
    p.add_argument("--limit", type=int, default=None, help="use at most this many prompts")
    p.add_argument("--overwrite", action="store_true", help=overwrite)


class _Parser(argparse.ArgumentParser):
    """argparse with tasft's error contract: one line ``tasft: error: ...`` (no usage block), exit code 2."""

    def error(self, message: str):
        print(f"tasft: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tasft", description="Toxicity-Avoiding SFT for causal LMs")
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help=f"fine-tune with one of the methods ({', '.join(METHODS)}): a YAML config "
                       "(configs/methods/) and --set overrides")
    p.add_argument("--config", help="YAML config (see configs/); without it the built-in demo defaults apply")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set ta_sft.penalty=emd_lb --set ta_sft.lambda=0.5 "
                   "--set lora.r=8 (a method's settings live in its block: "
                   + ", ".join(f"{m.Settings.BLOCK}." for m in METHODS.values() if m.Settings) + ")")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output_dir (only one tasft created; never the current directory)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.set_defaults(func=_train)

    p = sub.add_parser("generate", help="batched generation for a prompt file into resumable JSONL")
    p.add_argument("--model", required=True, help="alias, local path (e.g. a run dir) or HF id")
    p.add_argument("--prompts", required=True, help="JSON/JSONL/CSV file of prompts")
    p.add_argument("--out", required=True, help="output JSONL file")
    _add_generation_flags(p, overwrite="replace an existing output file")
    p.set_defaults(func=_generate)

    p = sub.add_parser("harvest", help="the model's own responses to toxic prompts, as a D_h file")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--prompts", required=True, help="file of toxic prompts (responses in it are ignored)")
    p.add_argument("--out", required=True, help="output JSONL of {prompt, response, model, seed}")
    p.add_argument("--exclude", action="append", default=[], metavar="PATH",
                   help="drop prompts found in these files/directories (e.g. the evaluation suites)")
    _add_generation_flags(p, overwrite="replace an existing output file")
    p.add_argument("--samples", type=int, default=1, help="answers per prompt (sampled when > 1)")
    p.add_argument("--keep-harmful", type=int, default=None, metavar="N",
                   help="score every answer and keep the N most harmful prompts' answers (non-refusal, non-degenerate)")
    p.add_argument("--scorer", default=None,
                   help="local harmfulness scorer directory (default: cache, built if missing)")
    p.add_argument("--data-dir", default=None, help="shared data directory (default: ./shared/data or ../shared/data)")
    p.set_defaults(func=_harvest)

    p = sub.add_parser("audit", help="how pure is a D_h file: its prompts against an XSTest prompt classifier and "
                       "a human verdict file")
    p.add_argument("pool", help="D_h JSONL (e.g. a harvest's output)")
    p.add_argument("--verdicts", default=None, help="audit CSV: prompt_id,verdict (harmful / borderline / benign)")
    p.add_argument("--out", required=True, help="output JSON (prompt ids, scores and verdicts only: no text)")
    p.add_argument("--data-dir", default=None, help="shared data directory (default: ./shared/data or ../shared/data)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_audit)

    p = sub.add_parser("evaluate",
                       help="generate on evaluation suites and score harmfulness, refusal, language, quality")
    p.add_argument("--model", required=True, help="alias, local path (e.g. a run dir) or HF id")
    p.add_argument("--out", required=True, help="output directory (re-running resumes)")
    p.add_argument("--spec", default=None, choices=list(SPECS),
                   help="a named evaluation: " + "; ".join(f"{k} = {v.description}" for k, v in SPECS.items()))
    p.add_argument("--suites", default=None, help="comma-separated suite names or .json/.jsonl/.csv files; "
                   f"'all' (the default) = every named suite but the held-out quality one(s) its quality suite holds: "
                   f"{', '.join(SUITES)}")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--harm-scorer", default="local",
                   help=f"the harmfulness judge(s), NAME[:MODEL_ID][,NAME…] (the first gives the rates, the others "
                   f"their own columns): {' | '.join(JUDGES)}")
    p.add_argument("--scorer", default=None, help="local scorer directory (default: cache, built on first use)")
    p.add_argument("--deberta-model", default=DEBERTA_MODEL)
    p.add_argument("--suite-limit", action="append", default=[], metavar="SUITE=N",
                   help="prompts of one suite, overriding --limit (repeatable), e.g. xstest-safe=50")
    p.add_argument("--attacks", default=None, metavar="all|NAME,...",
                   help="also evaluate every harm suite given under these jailbreak templates (SUITE@NAME; "
                   "templates: data_files/attack_templates.json)")
    _add_generation_flags(p, overwrite="delete the --out directory and evaluate afresh "
                          "(only a directory tasft created; default: resume what it holds)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("rescore", help="recompute the rule-based flags (refusal, language, degenerate) and summaries "
                       "of saved evaluations, keeping their harmfulness scores and quality metrics (no model)")
    p.add_argument("evals", nargs="+", help="evaluation directories (written by tasft evaluate)")
    p.set_defaults(func=_rescore)

    p = sub.add_parser("report", help="compare evaluation directories: markdown tables, PNG plots, one HTML page")
    p.add_argument("runs", nargs="+", help="evaluation directories (or their metrics.json)")
    p.add_argument("--out", required=True)
    p.add_argument("--reference", default=None, metavar="RUN",
                   help="an evaluation directory: add each run's paired difference to it (same prompts) with its "
                   "95%% interval and McNemar's p")
    p.add_argument("--samples", type=int, default=None, metavar="K",
                   help="also write samples.html: K seeded answers per run and suite, each collapsed behind a "
                   "content warning")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier report in --out (only a directory tasft created for a report)")
    p.set_defaults(func=_report)

    from .cli_compare import add_compare_parser

    add_compare_parser(sub)

    p = sub.add_parser("experiment", help="a study's grid of train + evaluate points (resumable), table and plots")
    p.add_argument("study", choices=list(STUDIES))
    p.add_argument("--config", required=True, help="experiment YAML (see configs/experiments/)")
    p.add_argument("--out", required=True, help="output directory (re-running resumes: finished points are skipped)")
    p.add_argument("--seeds", type=int, default=None,
                   help="train and evaluate every point with seeds 0..N-1; tables, paired differences and the Pareto "
                   "plot then carry intervals over seeds x prompts (default: the file's seeds, for its "
                   "headline_values only when it lists them)")
    p.add_argument("--prune", action="store_true",
                   help="delete each point's weights too once evaluated (keeps metrics and logs; its checkpoints go "
                   "once its final model is written, but for a checkpoints: true series, which keeps them all "
                   "until then)")
    p.add_argument("--tables-only", action="store_true",
                   help="run nothing: rewrite the tables and plots from the points already finished")
    p.add_argument("--export", metavar="DIR", default=None,
                   help="write the finished points without generated text (configs, metrics, per-answer flags) "
                   "as one archive, DIR/points.tar.xz, and its checksum DIR/points.sha256 (or a line of "
                   "DIR/../SHA256SUMS where that manifest exists), to commit or share: after each point computed "
                   "here and at the end")
    p.add_argument("--restore", metavar="DIR", default=None,
                   help="first make the points exported to DIR (or the archive file itself; checked against their "
                   "checksum) finished points of "
                   "--out: nothing is retrained or re-evaluated for them; with --tables-only, rebuild the tables")
    p.set_defaults(func=_experiment)

    p = sub.add_parser("data", help="the public evaluation and training data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    q = data_sub.add_parser("fetch", help="download STL, XSTest, HH-RLHF and AlpacaEval files from their official "
                            "locations (pinned commits, checked by SHA-256, resumable)")
    q.add_argument("--dest", default=None, help="data directory (default: ~/.cache/tasft/data, found automatically)")
    q.add_argument("--base-url", default=None, help="a mirror laid out like the data directory")
    q.add_argument("--overwrite", action="store_true", help="replace files whose bytes differ from the pinned ones")
    q.set_defaults(func=_data_fetch)

    from .cli_labels import add_labels_parser

    add_labels_parser(sub, _Parser)

    p = sub.add_parser("scorer", help="offline harmfulness scorer")
    scorer_sub = p.add_subparsers(dest="scorer_command", required=True, parser_class=_Parser)
    q = scorer_sub.add_parser("train", help="train and validate the local scorer on the shared data")
    q.add_argument("--out", required=True)
    q.add_argument("--data-dir", default=None)
    q.add_argument("--overwrite", action="store_true", help="replace an existing scorer directory")
    q.set_defaults(func=_scorer_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":  # accelerate launch --cpu --num_processes N: N processes, from either entry point
        from .training.launch import prepare

        prepare(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args.func(args)
    except TasftError as exc:
        print(f"tasft: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except OSError as exc:  # the environment, not tasft: an unwritable folder, a full disk, a vanished file
        if args.verbose:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"tasft: error: {where}{exc.strerror or exc} (-v shows where)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tasft: interrupted (re-run with --resume to continue)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
