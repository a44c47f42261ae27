"""``switchboard rules test``: which rules a message would fire, and why, without acting."""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

from adapters.email.parse import parse_email
from bot.errors import ConfigError
from bot.rules import evaluate, message_facts
from bot.settings import Settings, config_path, load_settings
from bot.shapes import ChannelKind, InboundMessage, Priority, Triage


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = subparsers.add_parser("rules", help="the event rules of [[rules]]")
    commands = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    test = commands.add_parser(
        "test",
        help="show which rules a new message would fire, and why; nothing is changed",
        description="Triage the message as the service would (or take --skill and "
        "--priority), then check every rule for a new conversation's first message.",
    )
    test.add_argument("message", nargs="?", type=Path, help="an e-mail file (.eml)")
    test.add_argument("--text", help="the message's text instead of an e-mail file")
    test.add_argument("--sender", default="customer@example.org", help="with --text")
    test.add_argument("--subject", default="", help="with --text")
    test.add_argument("--skill", help="skip triage's skill")
    test.add_argument("--priority", choices=[p.value for p in Priority], help="skip triage's")
    test.add_argument("--language", default="", help="with --skill and --priority")
    test.add_argument("--sentiment", default="", help="with --skill and --priority")
    test.add_argument("--at", help="the moment it arrives, ISO 8601 (business hours); default now")
    test.set_defaults(func=_test)


def _message(args: argparse.Namespace, settings: Settings, now: datetime) -> InboundMessage:
    if (args.message is None) == (args.text is None):
        raise ConfigError("rules test", "give an e-mail file or --text, one of them")
    if args.text is not None:
        return InboundMessage(
            channel=ChannelKind.EMAIL,
            external_id="rules-test",
            sender_address=args.sender,
            sender_name="",
            subject=args.subject,
            text=args.text,
            full_text=args.text,
            received_at=now,
        )
    if not args.message.is_file():
        raise ConfigError("rules test", f"{args.message} is not a file")
    return parse_email(args.message.read_bytes(), received_at=now, own_domain=settings.email.domain)


async def _triage(message: InboundMessage, settings: Settings, args: argparse.Namespace) -> Triage:
    if args.skill and args.priority:
        return Triage(args.skill, 1.0, Priority(args.priority), "", args.language, args.sentiment)
    from bot.triage import TriageEngine

    engine = await TriageEngine.load(settings.triage, settings.skills)
    try:
        found = await engine.triage(message)
    finally:
        await engine.aclose()
    return Triage(
        args.skill or found.skill,
        found.confidence,
        Priority(args.priority) if args.priority else found.priority,
        found.priority_reason,
        found.language,
        found.sentiment,
    )


def _test(args: argparse.Namespace) -> int:
    settings = load_settings(config_path(args.config), os.environ)
    now = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    if now.tzinfo is None:
        raise ConfigError("--at", "needs a time zone, like 2026-12-04T17:55:00+01:00")
    message = _message(args, settings, now)
    triage = asyncio.run(_triage(message, settings, args))
    facts = message_facts(message, triage, settings, now)
    print(
        f"A message from {facts.sender} ({facts.channel}): skill {facts.skill}, priority "
        f"{facts.priority}, language {facts.language or '?'}, sentiment "
        f"{facts.sentiment or '?'}, {'in' if facts.in_business_hours else 'outside'} "
        "business hours."
    )
    if not settings.rules:
        print("No rules are configured ([[rules]] in the settings).")
    for rule in settings.rules:
        verdict = evaluate(rule, facts)
        if verdict.fires:
            print(f"FIRES  {rule.name}: {verdict.why}; would {', '.join(rule.actions)}")
        else:
            print(f"no     {rule.name}: {verdict.why}")
    return 0
