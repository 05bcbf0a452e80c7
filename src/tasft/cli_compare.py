"""``tasft compare``: "which method keeps my fine-tune safe?" — parsing only; the work is
:mod:`tasft.experiments.compare_methods`'s."""

from __future__ import annotations

import argparse

from .evaluation.specs import SPECS
from .experiments.compare_methods import CompareSettings
from .methods import METHODS


def _compare(args: argparse.Namespace) -> None:
    from .experiments.compare_methods import CompareSettings, run_compare

    given = {"model": args.model, "seeds": args.seeds, "harmful": args.harmful, "harvest_prompts": args.harvest_prompts,
             "harvest_limit": args.harvest_limit, "keep_harmful": args.keep_harmful, "budget": args.budget,
             "data_dir": args.data_dir, "limit": args.limit}
    extra = {k: v for k, v in given.items() if v is not None}
    if args.methods is not None:
        extra["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.suites is not None:
        extra.update(suites=args.suites, spec=args.spec)
    elif args.spec is not None:
        extra["spec"] = args.spec
    path = run_compare(CompareSettings(data=args.data, out=args.out, overrides=args.set, **extra))
    print(f"recommendation: {path}")


def add_compare_parser(sub) -> None:
    """The ``compare`` command; each default shown is :class:`CompareSettings`' (the one place it is set)."""
    d = CompareSettings(data="", out="")
    p = sub.add_parser("compare", help="keep my fine-tune safe: harvest D_h from the model, train each method on "
                       "your data with the same settings, evaluate each, and recommend one (resumable)")
    p.add_argument("--data", required=True,
                   help="your fine-tuning data (D_u): {prompt, response} pairs, JSONL/JSON/CSV")
    p.add_argument("--out", required=True, help="the comparison's directory (re-run the same command to resume)")
    p.add_argument("--model", default=None, help=f"the model you fine-tune (default {d.model})")
    p.add_argument("--methods", default=None, help=f"comma-separated, plain sft always added as the reference "
                   f"(default {','.join(d.methods)}; choose from {', '.join(METHODS)})")
    p.add_argument("--seeds", type=int, default=None, help=f"training seeds per method (default {d.seeds})")
    p.add_argument("--spec", choices=list(SPECS), default=None, help=f"evaluation spec (default {d.spec})")
    p.add_argument("--suites", default=None, help="evaluate on these suites instead of a spec: names or ROLE:FILE, "
                   "e.g. harm:my_prompts.jsonl,xstest-safe,alpaca-eval")
    p.add_argument("--limit", type=int, default=None, help="prompts per suite with --suites (default: all)")
    p.add_argument("--harmful", default=None, help="use this D_h file instead of harvesting one from the model")
    p.add_argument("--harvest-prompts", default=None, help="toxic prompts to harvest D_h with (default: STL's "
                   "safety-only prompts in the data directory)")
    p.add_argument("--harvest-limit", type=int, default=None, help=f"prompts harvested (default {d.harvest_limit})")
    p.add_argument("--keep-harmful", type=int, default=None,
                   help=f"the most harmful answers kept as D_h (default {d.keep_harmful})")
    p.add_argument("--budget", type=float, default=None, help=f"quality budget: reference NLL at most (1 + BUDGET) x "
                   f"plain SFT's (default {d.budget})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a training setting for every method (max_steps=200, lora.r=16, ...)")
    p.add_argument("--data-dir", default=None, help="the evaluation data (default: as tasft evaluate finds it)")
    p.set_defaults(func=_compare)
