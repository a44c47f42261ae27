"""The ``switchboard`` command line.

Each module here adds its subcommands with ``register(subparsers)``; a subcommand sets
``func`` to a function that takes the parsed arguments and returns the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from bot.errors import ConfigError, MissingPackages

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand registered."""
    from adapters.cli.blocks import register as register_blocks
    from adapters.cli.customers import register as register_customers
    from adapters.cli.jobs import register as register_jobs
    from adapters.cli.replay import register as register_replay
    from adapters.cli.report import register as register_report
    from adapters.cli.rules import register as register_rules
    from adapters.cli.service import register as register_service
    from adapters.cli.suggest import register as register_suggest
    from adapters.cli.telegram import register as register_telegram
    from adapters.cli.triage import register as register_triage
    from adapters.cli.whatsapp import register as register_whatsapp

    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Answer customers' e-mail and messenger conversations from Slack threads.",
    )
    parser.add_argument(
        "-c",
        "--config",
        default=None,
        help="the TOML settings file (default: $SWITCHBOARD_CONFIG or switchboard.toml)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in (
        register_service,
        register_triage,
        register_replay,
        register_telegram,
        register_customers,
        register_jobs,
        register_whatsapp,
        register_rules,
        register_blocks,
        register_suggest,
        register_report,
    ):
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``switchboard`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"switchboard: configuration error: {exc}", file=sys.stderr)
        return 2
    except MissingPackages as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def confirmed(prompt: str) -> bool:
    """Ask a yes/no question on the terminal; anything but "y" or "yes" (or no input) is no."""
    try:
        answer = await asyncio.to_thread(input, prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
