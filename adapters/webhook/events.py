"""Rules' events out to a CRM or ERP: a POST of signed JSON, as webhooks' replies are signed.

    {"event_id": "rule-812", "type": "rule", "rule": "VIP in distress", "event": "negative",
     "conversation": {"id": "k7q2ab", "skill": "billing", "priority": "urgent", ...}}

``event_id`` is the same on every try. Connection errors, 5xx, 408 and 429 are retried; any
other 4xx is permanent.
"""

from __future__ import annotations

import json

import aiohttp

from adapters.webhook.signing import signed_headers
from bot.errors import PermanentDeliveryError, TransientDeliveryError

_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


class SignedEventSender:
    """Implements ``bot.ports.EventSender``."""

    async def send_event(self, url: str, secret: str, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        try:
            async with (
                aiohttp.ClientSession(timeout=_TIMEOUT) as session,
                session.post(url, data=data, headers=signed_headers(secret, data)) as answer,
            ):
                text = (await answer.text(errors="replace"))[:300]
                status = answer.status
                retry_after = answer.headers.get("Retry-After", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientDeliveryError(
                f"the webhook {url} is unreachable ({type(exc).__name__}: {exc})"
            ) from exc
        reason = f"the webhook {url} answered {status}: {text or '(no body)'}"
        if status >= 500 or status in (408, 429):
            raise TransientDeliveryError(
                reason, float(retry_after) if retry_after.isdigit() else None
            )
        if status >= 400:
            raise PermanentDeliveryError(reason)
