"""Rules' events out to a CRM or ERP: a POST of signed JSON, as webhooks' replies are signed.

    {"event_id": "rule-812", "type": "rule", "rule": "VIP in distress", "event": "negative",
     "conversation": {"id": "k7q2ab", "skill": "billing", "priority": "urgent", ...}}

``event_id`` is the same on every try. Connection errors, 5xx, 408 and 429 are retried; any
other 4xx is permanent.
"""

from __future__ import annotations

import json

from adapters.webhook.sender import post_signed
from bot.errors import PermanentDeliveryError, TransientDeliveryError


class SignedEventSender:
    """Implements ``bot.ports.EventSender``."""

    async def send_event(self, url: str, secret: str, body: dict[str, object]) -> None:
        status, text, retry_after = await post_signed(
            url, secret, json.dumps(body).encode(), f"the webhook {url}"
        )
        reason = f"the webhook {url} answered {status}: {text or '(no body)'}"
        if status >= 500 or status in (408, 429):
            raise TransientDeliveryError(reason, retry_after)
        if status >= 400:
            raise PermanentDeliveryError(reason)
