"""Telegram's webhook on the service's aiohttp app.

The secret token header is checked before a byte of the body is read, as PTB's own webhook
handler does: a request without the right secret gets 403 and nothing is stored. An update is
answered 200 only after its message and job are committed; any other answer makes Telegram
deliver it again later.
"""

from __future__ import annotations

import hmac
import json
import logging

from aiohttp import web

from adapters.telegram.updates import MalformedUpdate, TelegramIntake
from bot.errors import TransientDeliveryError

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class TelegramWebhook:
    """The aiohttp handler for ``POST /telegram/webhook``."""

    def __init__(self, secret: str, updates: TelegramIntake) -> None:
        self.secret = secret.encode()
        self.updates = updates

    def routes(self) -> list[web.RouteDef]:
        return [web.post(WEBHOOK_PATH, self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        # surrogateescape: a header with bytes that are not UTF-8 is simply a wrong secret.
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
        if not self.secret or not hmac.compare_digest(given, self.secret):
            return web.json_response({"error": "wrong or missing secret token"}, status=403)
        body = await request.read()
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # not UTF-8 or JSON, too deep, a giant number
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return web.json_response({"error": "not a Telegram update"}, status=400)
        try:
            accepted = await self.updates.take(self.updates.parse(data), body)
        except MalformedUpdate as exc:
            log.warning("refused a malformed Telegram update", extra={"reason": str(exc)})
            return web.json_response({"error": "not a Telegram update"}, status=400)
        except TransientDeliveryError as exc:
            log.warning("could not take a Telegram update yet", extra={"reason": exc.reason})
            return web.json_response({"error": exc.reason}, status=503)
        except Exception:
            log.exception("could not store a Telegram update")
            return web.json_response({"error": "could not store the update"}, status=500)
        if accepted is None:
            return web.json_response({"ok": True, "ignored": True})
        return web.json_response({"ok": True, "message_id": accepted.message_id})
