"""Telegram updates into ``InboundMessage``: the one place a PTB ``Update`` is read.

Text and captions become the message text; photos, documents, voice notes, video, audio and
animations become attachments fetched with the Bot API's getFile; contacts and locations are
written out readably; an edited message arrives as a new message marked as an edit.

The dedup key is the bot's id and the ``update_id`` (update ids count per bot), the thread key
is the chat id, and the customer's identity is their Telegram user id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from telegram import Bot, Contact, Location, Message, Update, Venue
from telegram.error import BadRequest, TelegramError

from bot.errors import TransientDeliveryError
from bot.intake import Accepted, Intake
from bot.phones import e164
from bot.shapes import Attachment, ChannelKind, InboundMessage

log = logging.getLogger(__name__)

# The Bot API hands out files up to this size; bigger ones are named in the text instead.
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
ALLOWED_UPDATES = ("message", "edited_message")
_SUBJECT_LENGTH = 80
EDIT_MARK = "✏️ Edited message:"

Download = Callable[[str], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file a message carries, before it is downloaded."""

    file_id: str
    filename: str
    content_type: str
    size: int | None


def sender_name(message: Message) -> str:
    """The customer's name as shown in Slack: full name and @username."""
    user = message.from_user
    if user is None:
        return message.chat.effective_name or str(message.chat.id)
    name = user.full_name
    return f"{name} (@{user.username})" if user.username else name


def describe_contact(contact: Contact) -> str:
    name = " ".join(part for part in (contact.first_name, contact.last_name) if part)
    text = f"👤 Contact: {name}, {contact.phone_number}"
    if contact.user_id:
        text += f" (Telegram user {contact.user_id})"
    return text


def describe_location(location: Location, venue: Venue | None = None) -> str:
    lat, lon = location.latitude, location.longitude
    where = f"{lat:.6f}, {lon:.6f}"
    link = (
        f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=17/{lat:.6f}/{lon:.6f}"
    )
    if venue is not None:
        return f"📍 {venue.title}, {venue.address} ({where}) {link}"
    return f"📍 Location: {where} {link}"


# The media a message can carry besides photos: attribute, default file name and content type.
_MEDIA = (
    ("animation", "animation_{}.mp4", "video/mp4"),
    ("document", "document_{}", "application/octet-stream"),
    ("voice", "voice_{}.ogg", "audio/ogg"),
    ("audio", "audio_{}.mp3", "audio/mpeg"),
    ("video", "video_{}.mp4", "video/mp4"),
    ("video_note", "video_note_{}.mp4", "video/mp4"),
)


def files_of(message: Message) -> list[FileRef]:
    """The files a message carries, the biggest photo size only."""
    refs: list[FileRef] = []
    if message.photo:
        photo = message.photo[-1]
        refs.append(
            FileRef(
                photo.file_id, f"photo_{photo.file_unique_id}.jpg", "image/jpeg", photo.file_size
            )
        )
    for attribute, default_name, default_type in _MEDIA:
        media = getattr(message, attribute)
        # Telegram sends an animation as both "animation" and "document"; it is one file.
        if media is None or (attribute == "document" and message.animation is not None):
            continue
        refs.append(
            FileRef(
                media.file_id,
                getattr(media, "file_name", None) or default_name.format(media.file_unique_id),
                getattr(media, "mime_type", None) or default_type,
                media.file_size,
            )
        )
    return refs


def text_lines(message: Message) -> list[str]:
    """What the message says, in words: text, caption, contact, location, sticker, voice."""
    lines: list[str] = []
    if message.text:
        lines.append(message.text)
    if message.caption:
        lines.append(message.caption)
    if message.contact:
        lines.append(describe_contact(message.contact))
    if message.location:
        lines.append(describe_location(message.location, message.venue))
    if message.sticker:
        lines.append(f"[sticker {message.sticker.emoji or ''}]".replace(" ]", "]"))
    if message.voice:
        lines.append("🎤 Voice message (attached)")
    if message.video_note:
        lines.append("🎥 Video message (attached)")
    if message.poll:
        lines.append(f"📊 Poll: {message.poll.question}")
    if message.dice:
        lines.append(f"🎲 {message.dice.emoji} {message.dice.value}")
    return lines


def _subject(lines: list[str], refs: list[FileRef]) -> str:
    first = next((line.strip() for line in "\n".join(lines).splitlines() if line.strip()), "")
    if not first:
        return refs[0].filename if refs else "Telegram message"
    return first if len(first) <= _SUBJECT_LENGTH else first[: _SUBJECT_LENGTH - 1] + "…"


async def to_inbound(
    update: Update, *, bot_id: str, download: Download, raw: bytes = b""
) -> InboundMessage | None:
    """The ``InboundMessage`` of ``update``, or None for updates that are not a customer writing.

    Raises ``TransientDeliveryError`` when a file cannot be fetched right now.
    """
    message = update.message or update.edited_message
    if message is None:
        return None
    lines = text_lines(message)
    refs = files_of(message)
    if not lines and not refs:
        # Service messages (a member joined, a title changed) are nobody writing to us.
        return None
    attachments: list[Attachment] = []
    for ref in refs:
        data = await _fetch(ref, download)
        if data is None:
            lines.append(
                f"[{ref.filename}: too big for the Telegram Bot API to fetch (over 20 MB)]"
            )
        else:
            attachments.append(Attachment(ref.filename, ref.content_type, data))
    text = "\n".join(lines)
    edited = update.edited_message is not None
    if edited:
        text = f"{EDIT_MARK}\n{text}"
    sent_at = (message.edit_date if edited else None) or message.date
    user = message.from_user
    return InboundMessage(
        claims=own_phone(message),
        channel=ChannelKind.TELEGRAM,
        external_id=f"{bot_id}:{update.update_id}",
        sender_address=str(user.id if user is not None else message.chat.id),
        sender_name=sender_name(message),
        subject=_subject(text_lines(message), refs),
        text=text,
        full_text=text,
        received_at=sent_at.astimezone(UTC) if sent_at else datetime.now(UTC),
        attachments=tuple(attachments),
        thread_key=str(message.chat.id),
        raw=raw,
    )


def own_phone(message: Message) -> tuple[tuple[str, str], ...]:
    """The sender's phone number, when they shared their own contact (Telegram says whose)."""
    contact, user = message.contact, message.from_user
    if contact is None or user is None or contact.user_id != user.id:
        return ()
    number = e164(contact.phone_number)
    return (("phone", number),) if number else ()


async def _fetch(ref: FileRef, download: Download) -> bytes | None:
    if ref.size is not None and ref.size > MAX_DOWNLOAD_BYTES:
        return None
    try:
        return await download(ref.file_id)
    except BadRequest as exc:
        if "too big" in exc.message.lower():
            return None
        raise TransientDeliveryError(f"Telegram getFile: {exc.message}") from exc
    except TelegramError as exc:
        raise TransientDeliveryError(f"Telegram file download: {exc.message}") from exc


class MalformedUpdate(ValueError):
    """An update with fields not of the types Telegram documents; sending it again won't help."""


class TelegramIntake:
    """Accepts Telegram updates, from the webhook or from polling, through ``Intake``."""

    def __init__(self, bot: Bot, intake: Intake, *, bot_id: str) -> None:
        self.bot = bot
        self.intake = intake
        self.bot_id = bot_id

    def parse(self, data: dict[str, object]) -> Update:
        """A PTB ``Update`` from the JSON Telegram sent; raises ``MalformedUpdate``."""
        try:
            return Update.de_json(data, self.bot)
        except Exception as exc:  # PTB trips over fields of the wrong shape in many ways
            raise MalformedUpdate(f"not a Telegram update: {exc}") from exc

    async def take(self, update: Update, raw: bytes = b"") -> Accepted | None:
        """Store ``update`` durably, or return None if it is nothing to store.

        Raises ``MalformedUpdate`` when a field has the wrong type (PTB does not check types).
        """
        try:
            message = await to_inbound(
                update,
                bot_id=self.bot_id,
                download=self._download,
                raw=raw or json.dumps(update.to_dict()).encode(),
            )
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise MalformedUpdate(f"update {update.update_id} is malformed: {exc}") from exc
        if message is None:
            log.info("ignored a Telegram update", extra={"update_id": update.update_id})
            return None
        return await self.intake.accept(message)

    async def _download(self, file_id: str) -> bytes:
        file = await self.bot.get_file(file_id)
        return bytes(await file.download_as_bytearray())
