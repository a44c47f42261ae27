"""``switchboard suggest eval``: how often the suggested replies would be right, on a history."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from adapters.hnsw_index import HnswIndex
from bot.settings import config_path, load_settings
from bot.suggest_eval import evaluate_suggestions, read_rows, split
from bot.triage.encoder import EncoderEmbedder, SentenceEncoder


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``switchboard suggest eval``."""
    suggest = subparsers.add_parser("suggest", help="measure the suggested replies")
    commands = suggest.add_subparsers(dest="suggest_command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "eval",
        help="hit@1 and hit@3 of the suggestions for --test given the answered --history",
        description=(
            "Every --history row becomes an answered past conversation; each --test message "
            "gets the suggestions an agent would see (the team's past answers; text blocks "
            "are not used). A suggestion is a hit when the past message it answers has the "
            "test message's label. Prints JSON. Without --test, --holdout of each label is "
            "drawn from --history with --seed."
        ),
    )
    run.add_argument("--history", type=Path, required=True, help="CSV with a header row")
    run.add_argument("--test", type=Path, help="CSV with the same columns")
    run.add_argument("--holdout", type=float, default=0.2)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--text-col", default="text")
    run.add_argument("--label-col", default="category")
    run.add_argument("--reply-col", default="", help="the team's answer to each history row")
    run.add_argument("--model", default=None, help="encoder folder (default: triage.model)")
    run.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    model = args.model
    if model is None:
        path = config_path(args.config)
        model = load_settings(path).triage.model if path.exists() else ""
    history = read_rows(args.history, args.text_col, args.label_col, args.reply_col)
    if args.test is not None:
        test = read_rows(args.test, args.text_col, args.label_col, args.reply_col)
    else:
        history, test = split(history, args.holdout, args.seed)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    say(f"{len(history):,} history rows, {len(test):,} test rows; loading the encoder")
    embedder = EncoderEmbedder(SentenceEncoder.load(model))
    report = asyncio.run(evaluate_suggestions(history, test, embedder, HnswIndex, progress=say))
    print(json.dumps(report, indent=2))
    return 0
