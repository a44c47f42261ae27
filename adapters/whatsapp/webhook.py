"""WhatsApp's webhook on the service's aiohttp app: verification, then signed notifications.

``GET`` answers Meta's verification (``hub.mode=subscribe``, ``hub.verify_token``,
``hub.challenge``). ``POST`` checks ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with
the app secret) before a byte is parsed: a request without the right signature gets 401 and
nothing is stored. Messages are answered 200 only after they are committed with their jobs,
statuses after their jobs are; any other answer makes Meta deliver the call again, and a
message delivered again is recognised by its id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping

from aiohttp import web

from adapters.whatsapp.graph import REENGAGEMENT, GraphClient, error_of
from adapters.whatsapp.inbound import MAX_DOWNLOAD_BYTES, MalformedWebhook, read_webhook
from bot.errors import TransientDeliveryError
from bot.intake import Intake
from bot.jobs import Clock, utcnow
from bot.shapes import ChannelKind
from bot.whatsapp import accept_reports, quoted_text

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/whatsapp/webhook"
SIGNATURE_HEADER = "X-Hub-Signature-256"


def sign(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends with ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_problem(app_secret: str, headers: Mapping[str, str], body: bytes) -> str:
    """Why a request is not signed by Meta with ``app_secret``, or "" when it is."""
    given = headers.get(SIGNATURE_HEADER, "")
    if not given:
        return f"the {SIGNATURE_HEADER} header is required"
    expected = sign(app_secret, body).encode()
    # surrogateescape: a header with bytes that are not UTF-8 is simply a wrong signature.
    if not app_secret or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected
    ):
        return "the signature does not match"
    return ""


def describe_status_error(error: object) -> tuple[str, bool]:
    """A failed status's error in words for agents, and whether the window had closed."""
    found = error_of(error)
    if found is None:
        return "WhatsApp reported a failure without a reason", False
    return found.words, found.code == REENGAGEMENT


class WhatsAppWebhook:
    """The aiohttp handlers for ``GET`` and ``POST /whatsapp/webhook``."""

    def __init__(
        self,
        *,
        phone_number_id: str,
        app_secret: str,
        verify_token: str,
        intake: Intake,
        graph: GraphClient,
        on_reports: Callable[[], None] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.clock = clock
        self.phone_number_id = phone_number_id
        self.app_secret = app_secret
        self.verify_token = verify_token.encode()
        self.intake = intake
        self.graph = graph
        self.on_reports = on_reports

    def routes(self) -> list[web.RouteDef]:
        return [web.get(WEBHOOK_PATH, self.verify), web.post(WEBHOOK_PATH, self.handle)]

    async def verify(self, request: web.Request) -> web.Response:
        """Meta's subscription check: echo the challenge when the verify token matches."""
        given = request.query.get("hub.verify_token", "").encode("utf-8", "surrogateescape")
        if (
            request.query.get("hub.mode") != "subscribe"
            or not self.verify_token
            or not hmac.compare_digest(given, self.verify_token)
        ):
            return web.json_response({"error": "wrong verify token or mode"}, status=403)
        return web.Response(text=request.query.get("hub.challenge", ""))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        problem = signature_problem(self.app_secret, request.headers, body)
        if problem:
            return web.json_response({"error": problem}, status=401)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return web.json_response({"error": "the body is not JSON"}, status=400)
        try:
            content = await read_webhook(
                data,
                phone_number_id=self.phone_number_id,
                fetch=self._fetch,
                quote=self._quote,
                describe=describe_status_error,
            )
            # Together, in order: they share one commit, and one sender's stay in order.
            accepted = await asyncio.gather(*(self.intake.accept(m) for m in content.messages))
            await accept_reports(content.reports, self.clock)
        except MalformedWebhook as exc:
            log.warning("refused a malformed WhatsApp webhook", extra={"reason": str(exc)})
            return web.json_response({"error": str(exc)}, status=400)
        except TransientDeliveryError as exc:
            log.warning("could not take a WhatsApp webhook yet", extra={"reason": exc.reason})
            return web.json_response({"error": exc.reason}, status=503)
        except Exception:
            log.exception("could not store a WhatsApp webhook")
            return web.json_response({"error": "could not store the webhook"}, status=500)
        if content.reports and self.on_reports is not None:
            self.on_reports()
        return web.json_response(
            {
                "ok": True,
                "messages": [a.message_id for a in accepted],
                "duplicates": sum(a.duplicate for a in accepted),
                "statuses": len(content.reports),
            }
        )

    async def _fetch(self, media_id: str) -> tuple[bytes | None, str]:
        url, content_type, size = await self.graph.media(media_id)
        if size is not None and size > MAX_DOWNLOAD_BYTES:
            return None, content_type
        return await self.graph.download(url), content_type

    async def _quote(self, external_id: str) -> str | None:
        return await quoted_text(ChannelKind.WHATSAPP, external_id)
