"""The python-telegram-bot ``Bot`` of the service: built from the settings, opened and closed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from telegram import Bot
from telegram.error import InvalidToken, TelegramError

from bot.errors import ConfigError
from bot.settings import TelegramSettings

log = logging.getLogger(__name__)


def build_bot(settings: TelegramSettings) -> Bot:
    """A ``Bot`` for the real Bot API, or for the server at ``settings.api_url``."""
    if not settings.api_url:
        return Bot(settings.bot_token)
    base = settings.api_url.rstrip("/") + "/"
    return Bot(settings.bot_token, base_url=f"{base}bot", base_file_url=f"{base}file/bot")


@asynccontextmanager
async def open_bot(bot: Bot) -> AsyncIterator[Bot]:
    """``bot`` initialised (getMe), shut down on exit.

    A refused token stops start-up; Telegram being unreachable does not (the webhook still takes
    updates, and replies wait as jobs until Telegram is back).
    """
    try:
        await bot.initialize()
    except InvalidToken as exc:
        await bot.shutdown()
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN", "was refused by Telegram: export the token @BotFather gave you"
        ) from exc
    except TelegramError as exc:
        log.warning("Telegram is not reachable at start-up", extra={"reason": exc.message})
    try:
        yield bot
    finally:
        await bot.shutdown()
