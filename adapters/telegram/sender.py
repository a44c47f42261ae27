"""Agents' replies out to Telegram with PTB's ``Bot``.

Text goes as plain text (no ``parse_mode``), so nothing an agent writes can break Telegram's
markup or be read as it; texts over Telegram's 4,096 characters go as several messages. Files
go as photos (JPEG, PNG, WebP up to 10 MB) or as documents.

Telegram has no idempotency key: a reply that failed half-way (some parts sent) is sent whole
again on its retry, so the customer may see its first part twice. That is the lesser evil next
to losing the rest.
"""

from __future__ import annotations

import warnings
from datetime import timedelta

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.warnings import PTBDeprecationWarning

from bot.errors import (
    BlockedDeliveryError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from bot.shapes import Attachment, OutboundReply

MAX_TEXT = 4096
_PHOTO_TYPES = {"image/jpeg", "image/png", "image/webp"}
_MAX_PHOTO_BYTES = 10 * 1024 * 1024


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, cut at a line break or space if any."""
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = rest.rfind("\n", limit // 2, limit + 1)
        if cut < 0:
            cut = rest.rfind(" ", limit // 2, limit + 1)
        if cut < 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def retry_seconds(exc: RetryAfter) -> float:
    """Telegram's flood-control wait, in seconds."""
    with warnings.catch_warnings():
        # PTB 22 warns that the int will become a timedelta; both are handled here.
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def translate(exc: TelegramError) -> DeliveryError:
    """Our error for a failed Bot API call."""
    if isinstance(exc, RetryAfter):
        seconds = retry_seconds(exc)
        return TransientDeliveryError(f"Telegram flood control: retry in {seconds:g} s", seconds)
    if isinstance(exc, Forbidden):
        if "blocked" in exc.message.lower():
            return PermanentDeliveryError(
                "the customer has blocked the Telegram bot, so the reply cannot reach them "
                f"(Telegram: {exc.message})"
            )
        return PermanentDeliveryError(f"Telegram refused to deliver: {exc.message}")
    if isinstance(exc, InvalidToken):
        return BlockedDeliveryError(
            "Telegram refused the bot token: check TELEGRAM_BOT_TOKEN (from @BotFather)"
        )
    if isinstance(exc, ChatMigrated):
        return PermanentDeliveryError(
            f"the Telegram group became a supergroup (new chat id {exc.new_chat_id})"
        )
    if isinstance(exc, BadRequest):
        return PermanentDeliveryError(f"Telegram refused the message: {exc.message}")
    return TransientDeliveryError(f"Telegram is unreachable: {exc.message}")


class TelegramReplySender:
    """Implements ``bot.ports.ReplySender`` for Telegram."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send(self, reply: OutboundReply) -> str:
        if not reply.thread_key or not reply.thread_key.lstrip("-").isdigit():
            raise PermanentDeliveryError("this conversation has no Telegram chat to answer in")
        chat_id = int(reply.thread_key)
        sent: list[str] = []
        try:
            if reply.survey is not None:
                # One button per rating, each opening the survey page.
                buttons = [
                    InlineKeyboardButton("★" * rating, url=url)
                    for rating, url in reply.survey.links
                ]
                message = await self.bot.send_message(
                    chat_id=chat_id,
                    text=reply.survey.intro,
                    reply_markup=InlineKeyboardMarkup([buttons[:3], buttons[3:]]),
                )
                return str(message.message_id)
            for part in split_text(reply.text):
                message = await self.bot.send_message(chat_id=chat_id, text=part)
                sent.append(str(message.message_id))
            for attachment in reply.attachments:
                sent.append(await self._send_file(chat_id, attachment))
        except TelegramError as exc:
            raise translate(exc) from exc
        return ",".join(sent)

    async def _send_file(self, chat_id: int, attachment: Attachment) -> str:
        upload = InputFile(attachment.data, filename=attachment.filename)
        if attachment.content_type in _PHOTO_TYPES and len(attachment.data) <= _MAX_PHOTO_BYTES:
            message = await self.bot.send_photo(chat_id=chat_id, photo=upload)
        else:
            message = await self.bot.send_document(chat_id=chat_id, document=upload)
        return str(message.message_id)
