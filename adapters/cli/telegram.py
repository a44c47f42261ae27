"""Telegram subcommands: set-webhook, delete-webhook, webhook-info."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from telegram.error import TelegramError

from adapters.telegram.bot import build_bot, open_bot
from adapters.telegram.updates import ALLOWED_UPDATES
from adapters.telegram.webhook import WEBHOOK_PATH
from bot.errors import ConfigError
from bot.settings import Settings, config_path, load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``switchboard telegram ...``."""
    telegram = subparsers.add_parser("telegram", help="manage the Telegram bot's webhook")
    commands = telegram.add_subparsers(dest="telegram_command", required=True, metavar="COMMAND")
    set_hook = commands.add_parser(
        "set-webhook",
        help="tell Telegram to send updates to service.public_url + /telegram/webhook",
    )
    set_hook.set_defaults(func=_telling_failures(_set_webhook))
    delete = commands.add_parser(
        "delete-webhook", help="stop Telegram's calls (polling mode deletes it by itself)"
    )
    delete.set_defaults(func=_telling_failures(_delete_webhook))
    info = commands.add_parser("webhook-info", help="show what Telegram has registered")
    info.set_defaults(func=_telling_failures(_webhook_info))


def _telling_failures(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """``command``, with Telegram's refusal printed as one line instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except TelegramError as exc:
            print(f"switchboard: Telegram refused: {exc.message}", file=sys.stderr)
            return 1

    return run


def _telegram_settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(config_path(args.config))
    if not settings.telegram.enabled:
        raise ConfigError("telegram.enabled", "is false: set it to true to use the Telegram bot")
    return settings


async def set_webhook(settings: Settings) -> str:
    """Register our webhook URL and secret with Telegram; returns the URL."""
    public_url = settings.service.public_url.rstrip("/")
    if not public_url.startswith("https://"):
        raise ConfigError(
            "service.public_url",
            "must be the service's public https:// address for a Telegram webhook "
            '(like "https://support.example.com"); without one, use telegram.mode = "polling"',
        )
    if not settings.telegram.webhook_secret:
        raise ConfigError("TELEGRAM_WEBHOOK_SECRET", "must be set to register the webhook")
    url = public_url + WEBHOOK_PATH
    async with open_bot(build_bot(settings.telegram)) as bot:
        await bot.set_webhook(
            url,
            secret_token=settings.telegram.webhook_secret,
            allowed_updates=list(ALLOWED_UPDATES),
        )
    return url


def _set_webhook(args: argparse.Namespace) -> int:
    url = asyncio.run(set_webhook(_telegram_settings(args)))
    print(f"Telegram now sends updates to {url}")
    return 0


def _delete_webhook(args: argparse.Namespace) -> int:
    settings = _telegram_settings(args)

    async def run() -> None:
        async with open_bot(build_bot(settings.telegram)) as bot:
            await bot.delete_webhook()

    asyncio.run(run())
    print("Telegram's webhook is deleted")
    return 0


def _webhook_info(args: argparse.Namespace) -> int:
    settings = _telegram_settings(args)

    async def run() -> str:
        async with open_bot(build_bot(settings.telegram)) as bot:
            info = await bot.get_webhook_info()
        lines = [f"url: {info.url or '(none: polling or not set up)'}"]
        lines.append(f"pending updates: {info.pending_update_count}")
        if info.last_error_message:
            lines.append(f"last error: {info.last_error_message}")
        return "\n".join(lines)

    print(asyncio.run(run()))
    return 0
