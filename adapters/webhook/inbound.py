"""``POST /webhooks/<source>``: messages from web chat widgets, forms and other messengers.

The door, in order: a known source (else 404), a valid signature over timestamp and body (else
401, before the body is parsed), then the JSON and its fields (else 400 naming the field), then
the linked files (400 when refused, 502 when they cannot be fetched now). The answer is 200 only
after the message and its job are committed; nothing is stored before that.

    {"event_id": "evt-1001", "conversation_id": "chat-42",
     "sender": {"id": "visitor-7", "name": "Jonas Weber", "email": "jonas@example.org"},
     "text": "Hello", "subject": "optional",
     "attachments": ["https://files.example.com/a.pdf", {"url": "...", "filename": "b.png"}]}
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from adapters.webhook.fetch import AttachmentRefused, AttachmentUnavailable, fetch_attachment
from adapters.webhook.signing import signature_problem
from bot.intake import Intake
from bot.settings import WebhookSourceSettings
from bot.shapes import Attachment, ChannelKind, InboundMessage

log = logging.getLogger(__name__)

ROUTE = "/webhooks/{source}"
_MAX_ID_LENGTH = 200
_MAX_ATTACHMENTS = 10
_SUBJECT_LENGTH = 80
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


class FieldError(ValueError):
    """A field of the JSON is missing or wrong; the message names it."""


@dataclass(frozen=True, slots=True)
class LinkedFile:
    url: str
    filename: str = ""


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One message as a source posted it, checked."""

    event_id: str
    conversation_id: str
    sender_id: str
    sender_name: str
    sender_email: str
    text: str
    subject: str
    files: tuple[LinkedFile, ...]


def _identifier(data: Mapping[str, Any], key: str, where: str = "") -> str:
    name = f"{where}{key}"
    if key not in data:
        raise FieldError(f"field '{name}' is missing")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FieldError(f"field '{name}' must be a string")
    text = str(value).strip()
    if not text or len(text) > _MAX_ID_LENGTH:
        raise FieldError(f"field '{name}' must be 1 to {_MAX_ID_LENGTH} characters")
    return text


def _optional_text(data: Mapping[str, Any], key: str, where: str = "") -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FieldError(f"field '{where}{key}' must be a string")
    return value


def _files(raw: object) -> tuple[LinkedFile, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise FieldError("field 'attachments' must be a list of URLs")
    if len(raw) > _MAX_ATTACHMENTS:
        raise FieldError(f"field 'attachments' holds more than {_MAX_ATTACHMENTS} files")
    files: list[LinkedFile] = []
    for index, item in enumerate(raw):
        name = f"attachments[{index}]"
        if isinstance(item, str):
            files.append(LinkedFile(item))
        elif isinstance(item, dict) and isinstance(item.get("url"), str):
            files.append(LinkedFile(item["url"], _optional_text(item, "filename", f"{name}.")))
        else:
            raise FieldError(f"field '{name}' must be a URL or an object with 'url'")
    return tuple(files)


def parse_event(data: object) -> WebhookEvent:
    """The checked event in a request's JSON; raises ``FieldError`` naming the first bad field."""
    if not isinstance(data, dict):
        raise FieldError("the body must be a JSON object")
    sender = data.get("sender")
    if sender is None:
        raise FieldError("field 'sender' is missing")
    if not isinstance(sender, dict):
        raise FieldError("field 'sender' must be an object with 'id' and 'name'")
    if "text" not in data:
        raise FieldError("field 'text' is missing")
    event = WebhookEvent(
        event_id=_identifier(data, "event_id"),
        conversation_id=_identifier(data, "conversation_id"),
        sender_id=_identifier(sender, "id", "sender."),
        sender_name=_optional_text(sender, "name", "sender.").strip(),
        sender_email=_optional_text(sender, "email", "sender.").strip(),
        text=_optional_text(data, "text"),
        subject=_optional_text(data, "subject").strip(),
        files=_files(data.get("attachments")),
    )
    if not event.text.strip() and not event.files:
        raise FieldError("field 'text' is empty and there are no attachments")
    return event


def to_inbound(
    source: str,
    event: WebhookEvent,
    attachments: Sequence[Attachment],
    raw: bytes,
    received_at: datetime,
) -> InboundMessage:
    """The ``InboundMessage`` of a checked event; ids are kept apart per source."""
    name = event.sender_name or event.sender_id
    if event.sender_email:
        name = f"{name} ({event.sender_email})"
    first_line = next((line.strip() for line in event.text.splitlines() if line.strip()), "")
    subject = event.subject or first_line[:_SUBJECT_LENGTH] or "Web message"
    email = event.sender_email.lower()
    return InboundMessage(
        claims=(("email", email),) if _EMAIL.match(email) else (),
        channel=ChannelKind.WEBHOOK,
        external_id=f"{source}:{event.event_id}",
        sender_address=f"{source}:{event.sender_id}",
        sender_name=name,
        subject=subject,
        text=event.text,
        full_text=event.text,
        received_at=received_at,
        attachments=tuple(attachments),
        thread_key=f"{source}:{event.conversation_id}",
        raw=raw,
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


class WebhookIntake:
    """The aiohttp handler for ``POST /webhooks/<source>``."""

    def __init__(self, sources: Sequence[WebhookSourceSettings], intake: Intake) -> None:
        self.sources = {source.name: source for source in sources}
        self.intake = intake

    def routes(self) -> list[web.RouteDef]:
        return [web.post(ROUTE, self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        source = self.sources.get(request.match_info["source"])
        if source is None:
            return _error(404, "no such webhook source")
        body = await request.read()
        problem = signature_problem(source.secret, request.headers, body)
        if problem:
            return _error(401, problem)
        try:
            event = parse_event(json.loads(body))
        except (ValueError, RecursionError) as exc:  # not UTF-8 or JSON, too deep, giant numbers
            return _error(400, f"the body is not valid JSON: {exc}")
        except FieldError as exc:
            return _error(400, str(exc))
        try:
            attachments = [
                await fetch_attachment(
                    linked.url,
                    filename=linked.filename,
                    allow_private=source.allow_private_attachment_urls,
                    max_bytes=source.max_attachment_bytes,
                )
                for linked in event.files
            ]
        except AttachmentRefused as exc:
            return _error(400, f"field 'attachments': {exc}")
        except AttachmentUnavailable as exc:
            return _error(502, f"an attachment could not be fetched, send again later: {exc}")
        message = to_inbound(source.name, event, attachments, body, datetime.now(UTC))
        try:
            accepted = await self.intake.accept(message)
        except Exception:
            log.exception("could not store a webhook message", extra={"source": source.name})
            return _error(500, "could not store the message, send it again later")
        return web.json_response(
            {"ok": True, "message_id": accepted.message_id, "duplicate": accepted.duplicate}
        )
