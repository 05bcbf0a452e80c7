"""``tasft labels``: the labelling commands (sample a blind sheet, join the labels, compare two readers, fit the
answer-class head, check the head as it is against labels, the agreement table) — parsing only; the work is
:mod:`tasft.evaluation.labels` and :mod:`tasft.evaluation.agreement`'s."""

from __future__ import annotations

import argparse
from pathlib import Path

from .evaluation.agreement import shown as _k


def _labels_sample(args: argparse.Namespace) -> None:
    from .evaluation.labels import sample_sheet

    counts = sample_sheet(args.evals, args.n, args.seed, args.out, parts=args.parts)
    print(f"wrote a blind sheet of {counts['items']} answers to {args.out} (answers_to_label.jsonl: harmful text, "
          "for the reader only; key.csv: which model wrote each, not for the reader); fill in labels.csv, then "
          f"tasft labels join {args.out} --out labels.csv")


def _labels_join(args: argparse.Namespace) -> None:
    from .evaluation.labels import join_labels

    counts = join_labels(args.sheets, args.out)
    print(f"wrote {sum(counts.values())} labels to {args.out} (prompt ids, model points, classes: no text): "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def _labels_compare(args: argparse.Namespace) -> None:
    from .evaluation.labels import compare_readers

    got = compare_readers(args.first, args.second)
    print(f"{got['n']} answers labelled by both: agreement {got['agreement']:.2f}, kappa {_k(got['kappa'])} "
          f"(5 classes), {_k(got['harmful_kappa'])} (harmful vs not)")


def _labels_fit(args: argparse.Namespace) -> None:
    from .evaluation.agreement import fit_classifier

    table = fit_classifier(args.labels, args.sheets, args.out, data_dir=args.data_dir)
    overall = table["overall"]
    print(f"{overall['n']} labelled answers; cross-validated by prompt: classifier kappa "
          f"{_k(overall['classifier_kappa'])} (5 classes), {_k(overall['classifier_harmful_kappa'])} (harmful vs "
          f"not); local scorer {_k(overall['local_scorer_harmful_kappa'])}; wrote {args.out}/predictions.csv, "
          "agreement.md and the fitted head answer_head.*")


def _labels_check(args: argparse.Namespace) -> None:
    from .evaluation.agreement import check_classifier

    table = check_classifier(args.labels, args.sheets, args.out, head_dir=args.head, data_dir=args.data_dir)
    overall, by = table["overall"], table["classified_by"]
    sample = "in-sample: the head was fitted on these labels" if by["in_sample"] else "the head not refit on them"
    print(f"{overall['n']} labelled answers ({sample}): classifier kappa {_k(overall['classifier_kappa'])} "
          f"(5 classes), {_k(overall['classifier_harmful_kappa'])} (harmful vs not); local scorer "
          f"{_k(overall['local_scorer_harmful_kappa'])}; wrote {args.out}/predictions.csv and agreement.md")


def _labels_agree(args: argparse.Namespace) -> None:
    from .evaluation.agreement import write_agreement

    overall = write_agreement(args.predictions, args.out)["overall"]
    where = args.out or str(Path(args.predictions).parent)
    print(f"{overall['n']} labelled answers: classifier kappa {_k(overall['classifier_kappa'])}, harmful vs not "
          f"{_k(overall['classifier_harmful_kappa'])}, local scorer {_k(overall['local_scorer_harmful_kappa'])}; "
          f"wrote {where}/agreement.md and agreement.json")


def add_labels_parser(sub, parser_class) -> None:
    """The ``labels`` command and its subcommands, on the main parser's ``sub``."""
    p = sub.add_parser("labels", help="label answers by reading, blind to the model: a sheet, the joined labels")
    labels_sub = p.add_subparsers(dest="labels_command", required=True, parser_class=parser_class)
    q = labels_sub.add_parser("sample", help="a blind, shuffled sheet of harm-suite answers drawn evenly from "
                              "evaluation directories (seeded)")
    q.add_argument("evals", nargs="+", help="evaluation directories (each one model point)")
    q.add_argument("--n", type=int, default=600, help="answers to draw (default 600)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--parts", type=int, default=1, help="split into part-1..part-K sheets, one per reader")
    q.add_argument("--out", required=True, help="a new sheet directory")
    q.set_defaults(func=_labels_sample)
    q = labels_sub.add_parser("join", help="a filled-in sheet's labels as prompt_id,model_point,class (no text)")
    q.add_argument("sheets", nargs="+", help="sheet directories (labels.csv filled in)")
    q.add_argument("--out", required=True, help="output CSV")
    q.set_defaults(func=_labels_join)
    q = labels_sub.add_parser("compare", help="two readers' labels of the same answers: kappa and agreement")
    q.add_argument("first", help="joined labels of one reader")
    q.add_argument("second", help="joined labels of another reader (the answers both labelled are compared)")
    q.set_defaults(func=_labels_compare)
    q = labels_sub.add_parser("fit", help="cross-validate (by prompt) and fit the answer-class head on labelled "
                              "answers; write predictions.csv (no text), agreement.md and the head")
    q.add_argument("labels", help="joined labels (tasft labels join)")
    q.add_argument("sheets", nargs="+", help="the sheet directories the labelled answers came from")
    q.add_argument("--out", required=True, help="output directory")
    q.add_argument("--data-dir", default=None, help="shared data directory (the local scorer is built from it)")
    q.set_defaults(func=_labels_fit)
    q = labels_sub.add_parser("check", help="how far the classes evaluations write (the rules, then the head as it "
                              "is, not refit) agree with labelled answers: your own model's, or any the head never "
                              "saw; predictions.csv (no text) and agreement.md")
    q.add_argument("labels", help="joined labels (tasft labels join)")
    q.add_argument("sheets", nargs="+", help="the sheet directories the labelled answers came from")
    q.add_argument("--out", required=True, help="output directory")
    q.add_argument("--head", default=None, help="a head directory (tasft labels fit --out); default: the shipped one")
    q.add_argument("--data-dir", default=None, help="shared data directory (the local scorer is built from it)")
    q.set_defaults(func=_labels_check)
    q = labels_sub.add_parser("agree", help="the agreement table (kappa, per-class precision and recall, per model "
                              "point) from a predictions.csv alone")
    q.add_argument("predictions", help="predictions.csv written by tasft labels fit")
    q.add_argument("--out", default=None, help="directory for agreement.md / .json (default: beside the input)")
    q.set_defaults(func=_labels_agree)
