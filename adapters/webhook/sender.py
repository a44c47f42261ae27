"""Agents' replies out to a webhook source's callback URL, as signed JSON.

    {"event_id": "reply-57", "type": "reply", "conversation_id": "chat-42",
     "recipient": {"id": "visitor-7"}, "agent": {"name": "Anna"}, "text": "...",
     "attachments": [{"filename": "a.pdf", "content_type": "application/pdf",
                      "data_base64": "..."}]}

``event_id`` is the same on every try, so a receiver can ignore a reply it already has.
Connection errors, 5xx, 408 and 429 are retried (429 and 503 after their Retry-After); any
other 4xx is permanent, with the receiver's answer shown in the Slack thread.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import aiohttp

from adapters.webhook.signing import signed_headers
from bot.errors import BlockedDeliveryError, PermanentDeliveryError, TransientDeliveryError
from bot.settings import WebhookSourceSettings
from bot.shapes import OutboundReply

_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


def reply_payload(
    reply: OutboundReply, conversation_id: str, recipient_id: str
) -> dict[str, object]:
    """The JSON body a callback receives for ``reply`` (a ``survey`` event for a survey)."""
    if reply.survey is not None:
        return {
            "event_id": f"survey-{reply.reply_id}",
            "type": "survey",
            "conversation_id": conversation_id,
            "recipient": {"id": recipient_id},
            "text": reply.survey.intro,
            "ratings": [{"rating": r, "url": url} for r, url in reply.survey.links],
        }
    return {
        "event_id": f"reply-{reply.reply_id}",
        "type": "reply",
        "conversation_id": conversation_id,
        "recipient": {"id": recipient_id},
        "agent": {"name": reply.agent_name},
        "text": reply.text,
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "data_base64": base64.b64encode(a.data).decode(),
            }
            for a in reply.attachments
        ],
    }


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


async def post_signed(
    url: str, secret: str, body: bytes, what: str
) -> tuple[int, str, float | None]:
    """POST signed JSON: the answer's status, its start, and its Retry-After.

    ``TransientDeliveryError`` if ``what`` (named in the reason) cannot be reached.
    """
    try:
        async with (
            aiohttp.ClientSession(timeout=_TIMEOUT) as session,
            session.post(url, data=body, headers=signed_headers(secret, body)) as answer,
        ):
            text = (await answer.text(errors="replace"))[:300]
            return answer.status, text, _retry_after(answer)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise TransientDeliveryError(
            f"{what} is unreachable ({type(exc).__name__}: {exc})"
        ) from exc


class CallbackReplySender:
    """Implements ``bot.ports.ReplySender`` for the webhook channel."""

    def __init__(self, sources: Sequence[WebhookSourceSettings]) -> None:
        self.sources = {source.name: source for source in sources}

    async def send(self, reply: OutboundReply) -> str:
        name, _, conversation_id = (reply.thread_key or "").partition(":")
        source = self.sources.get(name)
        if source is None:
            # An admin can configure it again; the reply waits.
            raise BlockedDeliveryError(
                f"the webhook source {name!r} of this conversation is not configured any more"
            )
        recipient = reply.to_address.removeprefix(f"{name}:")
        payload = reply_payload(reply, conversation_id, recipient)
        body = json.dumps(payload).encode()
        url = source.callback_url
        status, text, retry_after = await post_signed(
            url, source.secret, body, f"the {name} callback {url}"
        )
        reason = f"the {name} callback answered {status}: {text or '(no body)'}"
        if status >= 500 or status in (408, 429):
            raise TransientDeliveryError(reason, retry_after)
        if status in (401, 403, 404):
            # A secret or URL out of step with the caller's side: fixed in the settings.
            raise BlockedDeliveryError(reason)
        if status >= 400:
            raise PermanentDeliveryError(reason)
        return str(payload["event_id"])
