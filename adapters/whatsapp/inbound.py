"""A WhatsApp webhook body into ``InboundMessage``s and ``DeliveryReport``s.

Meta posts ``{"object": "whatsapp_business_account", "entry": [{"changes": [{"field":
"messages", "value": {...}}]}]}``; a ``value`` holds the customer's ``messages`` (with the
senders' ``contacts``) or the ``statuses`` of what we sent. Every message type is read: text,
media (fetched through the media endpoint and attached), location and contacts written out,
button and list answers, reactions, replies to an earlier message (quoted), and types WhatsApp
cannot show (named). The dedup key is the message id (``wamid``); the thread key is the
sender's WhatsApp id, the identity their number in E.164.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.phones import e164
from bot.shapes import Attachment, ChannelKind, DeliveryReport, DeliveryState, InboundMessage

log = logging.getLogger(__name__)

#: Files bigger than this are named in the text instead of attached.
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
_MEDIA_TYPES = ("image", "document", "audio", "voice", "video", "sticker")
_SUBJECT_LENGTH = 80
_QUOTE_LENGTH = 120
_STATUSES = {
    "sent": DeliveryState.SENT,
    "delivered": DeliveryState.DELIVERED,
    "read": DeliveryState.READ,
    "failed": DeliveryState.FAILED,
}

#: Fetches a media id: its bytes and type, or None for the bytes when it is too big.
FetchMedia = Callable[[str], Awaitable[tuple[bytes | None, str]]]
#: The text of an earlier message, by its wamid, for a reply's quote.
Quote = Callable[[str], Awaitable[str | None]]
#: Turns a status's error into words and whether it means the window closed.
DescribeError = Callable[[object], tuple[str, bool]]


class MalformedWebhook(ValueError):
    """A body that is not a WhatsApp webhook; Meta sending it again won't help."""


@dataclass(slots=True)
class WebhookContent:
    """What one webhook call carried for our phone number."""

    messages: list[InboundMessage] = field(default_factory=list)
    reports: list[DeliveryReport] = field(default_factory=list)


def _quoted(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _QUOTE_LENGTH else text[: _QUOTE_LENGTH - 1] + "…"


def describe_location(location: dict[str, Any]) -> str:
    lat, lon = float(location["latitude"]), float(location["longitude"])
    where = f"{lat:.6f}, {lon:.6f}"
    link = (
        f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=17/{lat:.6f}/{lon:.6f}"
    )
    place = ", ".join(str(location[k]) for k in ("name", "address") if location.get(k))
    return f"📍 {place} ({where}) {link}" if place else f"📍 Location: {where} {link}"


def describe_contact(contact: dict[str, Any]) -> str:
    name = contact.get("name") or {}
    parts = [str(name.get("formatted_name") or name.get("first_name") or "someone")]
    for phone in contact.get("phones") or []:
        number = str(phone.get("phone") or phone.get("wa_id") or "")
        if number:
            parts.append(f"{number} ({phone['type']})" if phone.get("type") else number)
    parts += [str(e["email"]) for e in contact.get("emails") or [] if e.get("email")]
    org = contact.get("org") or {}
    company = ", ".join(str(org[k]) for k in ("title", "company") if org.get(k))
    if company:
        parts.append(company)
    for address in contact.get("addresses") or []:
        lines = [str(address[k]) for k in ("street", "zip", "city", "country") if address.get(k)]
        if lines:
            parts.append(" ".join(lines))
    return "👤 Contact: " + ", ".join(parts)


def _interactive(interactive: dict[str, Any]) -> str:
    kind = interactive.get("type")
    if kind == "button_reply":
        return f"🔘 Chose: {interactive['button_reply'].get('title', '')}"
    if kind == "list_reply":
        reply = interactive["list_reply"]
        description = reply.get("description")
        return f"📋 Chose from the list: {reply.get('title', '')}" + (
            f" ({description})" if description else ""
        )
    if kind == "nfm_reply":
        return f"📝 Filled in a form: {interactive['nfm_reply'].get('response_json', '')}"
    return f"[an answer of type {kind}]"


def _filename(kind: str, media: dict[str, Any], content_type: str) -> str:
    if kind == "document" and media.get("filename"):
        return str(media["filename"])
    extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
    if content_type.startswith("audio/ogg"):
        extension = ".ogg"
    return f"{kind}_{media['id']}{extension}"


async def _message(
    message: dict[str, Any],
    names: dict[str, str],
    fetch: FetchMedia,
    quote: Quote,
) -> InboundMessage:
    kind = str(message["type"])
    sender = str(message["from"])
    lines: list[str] = []
    attachments: list[Attachment] = []
    context = message.get("context") or {}
    if context.get("forwarded") or context.get("frequently_forwarded"):
        lines.append("↪️ Forwarded")
    if context.get("id") and kind != "reaction":
        earlier = await quote(str(context["id"]))
        lines.append(f"↩️ In reply to: “{_quoted(earlier)}”" if earlier else "↩️ In reply to us")
    if kind == "text":
        lines.append(str(message["text"]["body"]))
    elif kind in _MEDIA_TYPES:
        media = message[kind]
        is_voice = kind == "voice" or (kind == "audio" and media.get("voice"))
        data, content_type = await fetch(str(media["id"]))
        content_type = str(media.get("mime_type") or content_type)
        filename = _filename("voice" if is_voice else kind, media, content_type)
        if kind == "sticker":
            lines.append("[sticker]")
        if is_voice:
            lines.append("🎤 Voice message (attached)")
        if media.get("caption"):
            lines.append(str(media["caption"]))
        if data is None:
            lines.append(f"[{filename}: too big to fetch (over {MAX_DOWNLOAD_BYTES // 2**20} MB)]")
        else:
            attachments.append(Attachment(filename, content_type, data))
    elif kind == "location":
        lines.append(describe_location(message["location"]))
    elif kind == "contacts":
        lines += [describe_contact(c) for c in message["contacts"]]
    elif kind == "interactive":
        lines.append(_interactive(message["interactive"]))
    elif kind == "button":
        lines.append(f"🔘 Pressed: {message['button'].get('text', '')}")
    elif kind == "reaction":
        reaction = message["reaction"]
        earlier = await quote(str(reaction.get("message_id", "")))
        what = f"“{_quoted(earlier)}”" if earlier else "an earlier message"
        emoji = reaction.get("emoji")
        lines.append(f"Reacted {emoji} to {what}" if emoji else f"Took back a reaction to {what}")
    elif kind == "order":
        items = message["order"].get("product_items") or []
        lines.append(f"🛒 Sent an order of {len(items)} item(s)")
    elif kind == "system":
        lines.append(f"ℹ️ {message['system'].get('body', 'a change of their WhatsApp account')}")
    else:
        errors = message.get("errors") or []
        why = f": {errors[0].get('title', '')}" if errors and isinstance(errors[0], dict) else ""
        lines.append(f"[a message of a type WhatsApp does not pass on ({kind}){why}]")
    text = "\n".join(lines)
    first = next((line for line in lines if line.strip()), "")
    subject = first if len(first) <= _SUBJECT_LENGTH else first[: _SUBJECT_LENGTH - 1] + "…"
    timestamp = str(message.get("timestamp", ""))
    sent_at = (
        datetime.fromtimestamp(int(timestamp), UTC) if timestamp.isdigit() else datetime.now(UTC)
    )
    return InboundMessage(
        channel=ChannelKind.WHATSAPP,
        external_id=str(message["id"]),
        sender_address=e164(sender) or sender,
        sender_name=names.get(sender, ""),
        subject=subject or (attachments[0].filename if attachments else "WhatsApp message"),
        text=text,
        full_text=text,
        received_at=sent_at,
        attachments=tuple(attachments),
        thread_key=sender,
    )


def _report(status: dict[str, Any], describe: DescribeError) -> DeliveryReport | None:
    state = _STATUSES.get(str(status.get("status")))
    if state is None:
        return None
    reason, window_closed = "", False
    if state is DeliveryState.FAILED:
        errors = status.get("errors") or [{}]
        reason, window_closed = describe(errors[0])
    return DeliveryReport(
        ChannelKind.WHATSAPP, str(status["id"]), state, reason, window_closed=window_closed
    )


async def read_webhook(
    body: object,
    *,
    phone_number_id: str,
    fetch: FetchMedia,
    quote: Quote,
    describe: DescribeError,
) -> WebhookContent:
    """The messages and statuses ``body`` carries for our number; others are skipped."""
    if not isinstance(body, dict) or body.get("object") != "whatsapp_business_account":
        raise MalformedWebhook("not a WhatsApp Business Account webhook")
    content = WebhookContent()
    try:
        for entry in body.get("entry") or []:
            for change in entry.get("changes") or []:
                value = change.get("value") or {}
                if change.get("field") != "messages":
                    continue
                number = str((value.get("metadata") or {}).get("phone_number_id", ""))
                if number != phone_number_id:
                    log.warning("a WhatsApp webhook for another number", extra={"number": number})
                    continue
                names = {
                    str(c.get("wa_id")): str((c.get("profile") or {}).get("name") or "")
                    for c in value.get("contacts") or []
                }
                for message in value.get("messages") or []:
                    content.messages.append(await _message(message, names, fetch, quote))
                for status in value.get("statuses") or []:
                    report = _report(status, describe)
                    if report is not None:
                        content.reports.append(report)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedWebhook(f"a WhatsApp webhook of an unexpected shape: {exc!r}") from exc
    return content
