"""The Graph API calls Switchboard makes for WhatsApp, and Meta's error codes in our terms.

Every call carries the system user's token as a Bearer header. Meta answers errors as
``{"error": {"message", "type", "code", "error_subcode", "error_data": {"details"}}}``;
``translate`` turns the code into retry (rate limits, outages), park (a token or account an
operator must fix) or a failure told in the thread (the message itself cannot go).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.errors import (
    BlockedDeliveryError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    WindowClosed,
)
from bot.settings import WhatsAppSettings
from bot.shapes import Attachment

# Rate limits: throughput (130429), per-customer pair (131056), spam (131048), app and
# account call limits (4, 80007). Retried after a pause.
RATE_LIMITED = {4, 80007, 130429, 131048, 131056}
# Meta's side is down for a moment: "something went wrong", "service unavailable", 1, 2.
OUTAGE = {1, 2, 131000, 131016}
# A person must fix these: an invalid or expired token (190, OAuthException), missing
# permission (10, 200-299), a locked or unpaid account, an unregistered number.
OPERATOR = {0, 3, 10, 190, 368, 131031, 131042, 133010}
#: The customer-service window closed ("re-engagement message").
REENGAGEMENT = 131047
_PAUSE_SECONDS = {130429: 5.0, 131056: 60.0, 131048: 60.0, 4: 60.0, 80007: 60.0}
_MEANING = {
    100: "WhatsApp refused a parameter of the message",
    131026: "the message is undeliverable (the number is not on WhatsApp, or has not accepted "
    "the current terms, or uses an old app)",
    131051: "WhatsApp does not support this kind of message",
    131052: "WhatsApp could not download the media",
    131053: "WhatsApp could not take the uploaded media (type or size)",
    131009: "a value of the message is not valid",
    131008: "a required value of the message is missing",
    131021: "the recipient is the business number itself",
    132000: "the template's parameters do not match what was approved (their number)",
    132001: "the template does not exist in this language, or is not approved yet",
    132005: "the template's text is too long once filled in",
    132007: "the template breaks a format rule",
    132012: "the template's parameters do not match what was approved (their format)",
    132015: "the template is paused for low quality",
    132016: "the template is disabled for low quality",
}


@dataclass(frozen=True, slots=True)
class GraphError:
    """An error as Meta reports it."""

    code: int
    title: str
    details: str = ""
    kind: str = ""

    @property
    def words(self) -> str:
        """The error for agents: what it means, then Meta's own words and code."""
        meaning = _MEANING.get(self.code)
        meta = "; ".join(part for part in (self.title, self.details) if part)
        if meaning:
            return f"{meaning} (WhatsApp error {self.code}: {meta})"
        return f"WhatsApp error {self.code}: {meta or 'no reason given'}"


def error_of(data: object) -> GraphError | None:
    """The error in a Graph API answer or a status's ``errors`` entry, if there is one."""
    if not isinstance(data, dict):
        return None
    error = data.get("error", data)
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return None
    error_data = error.get("error_data")
    details = error_data.get("details", "") if isinstance(error_data, dict) else ""
    return GraphError(
        code=int(error["code"]),
        title=str(error.get("message") or error.get("title") or ""),
        details=str(details or ""),
        kind=str(error.get("type", "")),
    )


def translate(error: GraphError | None, status: int, window_note: str = "") -> DeliveryError:
    """Our error for a refused Graph API call (``status``: the HTTP status)."""
    if error is None:
        if status >= 500 or status == 429:
            return TransientDeliveryError(f"the Graph API answered HTTP {status}")
        return PermanentDeliveryError(f"the Graph API answered HTTP {status} without a reason")
    if error.code in RATE_LIMITED:
        return TransientDeliveryError(
            f"WhatsApp rate limit: {error.words}", _PAUSE_SECONDS.get(error.code)
        )
    if error.code == REENGAGEMENT:
        return WindowClosed(window_note or error.words)
    if error.code in OPERATOR or (error.kind == "OAuthException" and 200 <= error.code < 300):
        return BlockedDeliveryError(
            f"{error.words}: check WHATSAPP_TOKEN (a permanent system-user token with "
            "whatsapp_business_messaging) and the WhatsApp account in Meta Business Suite"
        )
    if error.code in OUTAGE or status >= 500:
        return TransientDeliveryError(f"WhatsApp is not available: {error.words}")
    return PermanentDeliveryError(error.words)


class GraphClient:
    """Calls the Graph API for one business phone number, with one aiohttp session."""

    def __init__(self, settings: WhatsAppSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self.base = f"{settings.api_url.rstrip('/')}/{settings.api_version}"
        self.headers = {"Authorization": f"Bearer {settings.access_token}"}

    async def _json(
        self, method: str, url: str, *, window_note: str = "", **kwargs: Any
    ) -> dict[str, Any]:
        try:
            async with self.session.request(
                method, url, headers=self.headers, **kwargs
            ) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientDeliveryError(f"the Graph API is unreachable: {exc!r}") from exc
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = None
        if status >= 300 or not isinstance(data, dict) or "error" in data:
            raise translate(error_of(data), status, window_note)
        return data

    async def phone_number(self) -> dict[str, Any]:
        """The business number's record (``GET /{phone-number-id}``)."""
        return await self._json("GET", f"{self.base}/{self.settings.phone_number_id}")

    async def send(self, message: dict[str, Any], *, window_note: str = "") -> str:
        """Send one message (``POST /{phone-number-id}/messages``); returns its wamid."""
        body = {"messaging_product": "whatsapp", "recipient_type": "individual", **message}
        data = await self._json(
            "POST",
            f"{self.base}/{self.settings.phone_number_id}/messages",
            json=body,
            window_note=window_note,
        )
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages or "id" not in messages[0]:
            raise PermanentDeliveryError("the Graph API accepted the message but named no id")
        return str(messages[0]["id"])

    async def upload(self, attachment: Attachment, content_type: str) -> str:
        """Upload a file (``POST /{phone-number-id}/media``); returns the media id."""
        form = aiohttp.FormData()
        form.add_field("messaging_product", "whatsapp")
        form.add_field("type", content_type)
        form.add_field(
            "file", attachment.data, filename=attachment.filename, content_type=content_type
        )
        data = await self._json(
            "POST", f"{self.base}/{self.settings.phone_number_id}/media", data=form
        )
        if "id" not in data:
            raise PermanentDeliveryError("the Graph API took the file but named no media id")
        return str(data["id"])

    async def media(self, media_id: str) -> tuple[str, str, int | None]:
        """Where a customer's file is (``GET /{media-id}``): url, type and size."""
        data = await self._json("GET", f"{self.base}/{media_id}")
        size = data.get("file_size")
        return (
            str(data.get("url", "")),
            str(data.get("mime_type", "application/octet-stream")),
            int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
        )

    async def download(self, url: str) -> bytes:
        """The bytes at a media url (it needs the token, too)."""
        try:
            async with self.session.get(url, headers=self.headers) as response:
                if response.status >= 400:
                    body = await response.read()
                    data = json.loads(body) if body.startswith(b"{") else None
                    raise translate(error_of(data), response.status)
                return await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientDeliveryError(f"the WhatsApp media download failed: {exc!r}") from exc
