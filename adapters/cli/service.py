"""Service subcommands: serve, migrate, check-config, demo."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from bot.database import apply_migrations
from bot.errors import ConfigError
from bot.logs import configure_logging
from bot.settings import check_settings, config_path, load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the service subcommands."""
    serve = subparsers.add_parser("serve", help="run the service until SIGINT/SIGTERM")
    serve.set_defaults(func=_serve)
    migrate = subparsers.add_parser("migrate", help="create or update the database schema")
    migrate.set_defaults(func=_migrate)
    check = subparsers.add_parser(
        "check-config", help="validate the settings and the environment without starting"
    )
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask Slack: the token, its scopes, and that the app is in every channel",
    )
    check.set_defaults(func=_check_config)
    demo = subparsers.add_parser(
        "demo",
        help="run the service against a local Slack sandbox and play a few conversations",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the service and the sandbox running afterwards (Ctrl-C stops)",
    )
    demo.set_defaults(func=_demo)


def _check_config(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    settings, problems = check_settings(path)
    if problems:
        print(f"{path}: {len(problems)} problem(s):", file=sys.stderr)
        _print_problems(problems)
        return 2
    assert settings is not None
    skills = ", ".join(f"{s.name} -> #{s.channel}" for s in settings.skills)
    print(f"{path}: OK")
    print(f"  database: {settings.database_url.split('@')[-1]}")
    print(f"  slack: {settings.slack.mode} mode")
    print(f"  e-mail: {settings.email.support_address} on port {settings.email.listen_port}")
    print(f"  skills: {skills}")
    if not args.online:
        return 0
    from adapters.slack.preflight import check_slack

    report = asyncio.run(check_slack(settings))
    for fact in report.facts:
        print(f"  slack: {fact}")
    if report.problems:
        print(f"Slack: {len(report.problems)} problem(s):", file=sys.stderr)
        _print_problems(report.problems)
        return 2
    return 0


def _print_problems(problems: list[ConfigError]) -> None:
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)


def _migrate(args: argparse.Namespace) -> int:
    settings = load_settings(config_path(args.config))
    asyncio.run(apply_migrations(settings.database_url))
    print("database schema is up to date")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from adapters.service import Service

    settings = load_settings(config_path(args.config))
    configure_logging(settings.service.log_level, settings.service.log_format)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Service(settings):
            await stop.wait()

    asyncio.run(run())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from standins.demo import run_demo

    status: int = asyncio.run(run_demo(keep_running=args.keep_running))
    return status
