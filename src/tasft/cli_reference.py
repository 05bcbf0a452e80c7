"""The command-line reference, generated from tasft's argument parser (the documentation site's CLI page is this
text, written when the site is built, so it cannot drift from the commands)."""

from __future__ import annotations

import argparse


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser) -> str:
    formatter = parser.formatter_class
    parser.formatter_class = lambda prog: formatter(prog, width=100)
    try:
        return parser.format_help().rstrip()
    finally:
        parser.formatter_class = formatter


def reference_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """Markdown: one section per command (and sub-command), each its ``--help`` text as argparse writes it."""
    from .cli import build_parser

    parser = parser or build_parser()
    out = ["## `tasft`", "", "```text", _help(parser), "```", ""]

    def walk(p: argparse.ArgumentParser, words: list[str]) -> None:
        for name, sub in _subcommands(p).items():
            out.extend([f"## `tasft {' '.join([*words, name])}`", "", "```text", _help(sub), "```", ""])
            walk(sub, [*words, name])

    walk(parser, [])
    return "\n".join(out)
