"""A loopback WhatsApp Cloud API (Graph API) for tests, benchmarks and ``switchboard demo``.

``WhatsAppSandbox`` serves the Graph API calls Switchboard makes, in Meta's wire format:
``GET /{version}/{phone-number-id}`` (the number's record), ``POST .../messages`` (text, media
by id, templates; answers ``{"messaging_product", "contacts", "messages": [{"id": wamid}]}``),
``POST .../media`` (multipart upload; answers ``{"id"}``), ``GET /{version}/{media-id}`` (the
media's ``url``, ``mime_type``, ``file_size``) and the download of that url. Every call needs
the Bearer token; a wrong one gets Meta's ``OAuthException`` code 190. ``fail_next`` makes calls
fail with any Meta error code.

It also plays Meta's other side: it builds webhook bodies the way Meta does (``message``,
``status``) and posts them signed with ``X-Hub-Signature-256`` (``deliver``), and asks the
verification challenge (``verify``).

Where it knowingly differs from Meta: templates are accepted by name without checking that
they were approved; the 24-hour window is not enforced (``fail_next(131047)`` plays it);
media urls stay valid for ever.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from standins.loopback import Served, serve_on_loopback

Payload = dict[str, Any]

PHONE_NUMBER_ID = "106540352242922"
BUSINESS_ACCOUNT_ID = "102290129340398"
DISPLAY_NUMBER = "+1 555-010-0199"
MAX_TEXT = 4096
_TITLES = {
    4: "Application request limit reached",
    100: "Invalid parameter",
    130429: "Rate limit hit",
    131000: "Something went wrong",
    131026: "Message undeliverable",
    131047: "Re-engagement message",
    131051: "Unsupported message type",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    132001: "Template name does not exist in the translation",
    190: "Invalid OAuth access token",
}


@dataclass(frozen=True, slots=True)
class SentWhatsApp:
    """A message the business sent: text, media (with its bytes) or a template."""

    wamid: str
    to: str
    kind: str
    text: str = ""
    filename: str = ""
    content: bytes = b""
    content_type: str = ""
    template: Payload = field(default_factory=dict)


@dataclass(slots=True)
class _Failure:
    code: int
    status: int
    title: str


@dataclass(slots=True)
class _Media:
    content: bytes
    content_type: str
    filename: str = ""


def error_body(code: int, title: str = "") -> Payload:
    """Meta's error answer for ``code``."""
    title = title or _TITLES.get(code, "Error")
    return {
        "error": {
            "message": f"({'#'}{code}) {title}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": title},
            "fbtrace_id": secrets.token_hex(8),
        }
    }


class WhatsAppSandbox(Served):
    """A WhatsApp Business number on loopback that the service's Graph client talks to.

    ``calls`` logs every call as ``(what, arguments)``, failed ones included; ``sent`` holds
    what the business sent, in order.
    """

    def __init__(
        self,
        *,
        token: str = "EAAGsandboxsandboxsandboxsandbox",
        app_secret: str = "sandbox-app-secret",
        verify_token: str = "sandbox-verify-token",
        phone_number_id: str = PHONE_NUMBER_ID,
        api_version: str = "v21.0",
    ) -> None:
        self.token = token
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.phone_number_id = phone_number_id
        self.api_version = api_version
        self.calls: list[tuple[str, Payload]] = []
        self.sent: list[SentWhatsApp] = []
        self._media: dict[str, _Media] = {}
        self._failures: dict[str, deque[_Failure]] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host:port``, a loopback address; port 0 picks a free port."""
        if self._runner is not None:
            raise RuntimeError("the WhatsApp sandbox is already running")
        app = web.Application(client_max_size=120 * 1024 * 1024)
        app.router.add_get("/media-download/{media_id}", self._download)
        app.router.add_get("/{version}/{node}", self._get_node)
        app.router.add_post("/{version}/{node}/messages", self._messages)
        app.router.add_post("/{version}/{node}/media", self._upload)
        self._runner, self._url = await serve_on_loopback(app, host, port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def url(self) -> str:
        """The base URL, like ``http://127.0.0.1:PORT/`` (the ``[whatsapp] api_url`` setting)."""
        if not self._url:
            raise RuntimeError("start the WhatsApp sandbox first")
        return self._url

    def env(self) -> dict[str, str]:
        """The environment the service needs to talk to this number."""
        return {
            "WHATSAPP_TOKEN": self.token,
            "WHATSAPP_APP_SECRET": self.app_secret,
            "WHATSAPP_VERIFY_TOKEN": self.verify_token,
        }

    def settings_toml(self, templates: str = "") -> str:
        """The ``[whatsapp]`` table for this number (``templates``: extra TOML after it)."""
        return (
            f'[whatsapp]\nenabled = true\nphone_number_id = "{self.phone_number_id}"\n'
            f'api_version = "{self.api_version}"\napi_url = "{self.url}"\n{templates}\n'
        )

    def fail_next(self, what: str, code: int, *, status: int = 400, count: int = 1) -> None:
        """Make the next ``count`` calls of ``what`` ("messages", "media", "node", "download")
        fail with Meta error ``code`` and HTTP ``status``."""
        queue = self._failures.setdefault(what, deque())
        queue.extend(_Failure(code, status, _TITLES.get(code, "Error")) for _ in range(count))

    def add_media(self, content: bytes, content_type: str, filename: str = "") -> str:
        """Keep a customer's file; returns its media id for a webhook message."""
        media_id = str(900_000_000_000 + next(self._ids))
        self._media[media_id] = _Media(content, content_type, filename)
        return media_id

    def new_wamid(self) -> str:
        return "wamid." + secrets.token_urlsafe(24)

    # Meta's side: webhook bodies, signed deliveries, the verification challenge.

    def webhook_body(self, value: Payload) -> Payload:
        """A webhook body carrying one change ``value`` for this number."""
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": BUSINESS_ACCOUNT_ID,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": DISPLAY_NUMBER.replace(" ", ""),
                                    "phone_number_id": self.phone_number_id,
                                },
                                **value,
                            },
                        }
                    ],
                }
            ],
        }

    def message(
        self,
        wa_id: str,
        name: str,
        kind: str,
        content: Any,
        *,
        wamid: str = "",
        context: Payload | None = None,
        timestamp: int | None = None,
    ) -> Payload:
        """A webhook body with one message of ``kind`` (``content`` is its object)."""
        message: Payload = {
            "from": wa_id,
            "id": wamid or self.new_wamid(),
            "timestamp": str(int(time.time() if timestamp is None else timestamp)),
            "type": kind,
            kind: content,
        }
        if context is not None:
            message["context"] = context
        return self.webhook_body(
            {"contacts": [{"profile": {"name": name}, "wa_id": wa_id}], "messages": [message]}
        )

    def text(self, wa_id: str, name: str, body: str, **kwargs: Any) -> Payload:
        """A webhook body with one text message."""
        return self.message(wa_id, name, "text", {"body": body}, **kwargs)

    def status(
        self, wamid: str, status: str, recipient: str, *, error_code: int | None = None
    ) -> Payload:
        """A webhook body reporting ``status`` (sent, delivered, read, failed) of ``wamid``."""
        report: Payload = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": recipient,
        }
        if error_code is not None:
            title = _TITLES.get(error_code, "Error")
            report["errors"] = [
                {
                    "code": error_code,
                    "title": title,
                    "message": title,
                    "error_data": {"details": title},
                }
            ]
        return self.webhook_body({"statuses": [report]})

    def sign(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()

    async def deliver(
        self, url: str, body: Payload | bytes, *, signature: str | None = None
    ) -> tuple[int, Payload]:
        """Post a webhook body as Meta does; ``signature`` overrides the real one ("" = none)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        given = self.sign(raw) if signature is None else signature
        if given:
            headers["X-Hub-Signature-256"] = given
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=raw, headers=headers) as response,
        ):
            text = await response.text()
            try:
                answer = json.loads(text)
            except ValueError:
                answer = {"text": text}
            return response.status, answer if isinstance(answer, dict) else {}

    async def verify(
        self, url: str, *, verify_token: str = "", challenge: str = ""
    ) -> tuple[int, str]:
        """Meta's subscription check; returns the status and the body (the echoed challenge)."""
        query = {
            "hub.mode": "subscribe",
            "hub.verify_token": verify_token or self.verify_token,
            "hub.challenge": challenge or str(secrets.randbelow(10**9)),
        }
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, params=query) as response,
        ):
            return response.status, await response.text()

    # The Graph API.

    def _refusal(self, request: web.Request, what: str) -> web.Response | None:
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            return web.json_response(error_body(190), status=401)
        queue = self._failures.get(what)
        if queue:
            failure = queue.popleft()
            return web.json_response(error_body(failure.code, failure.title), status=failure.status)
        return None

    def _node_is_number(self, request: web.Request) -> bool:
        return (
            request.match_info["version"] == self.api_version
            and request.match_info["node"] == self.phone_number_id
        )

    async def _get_node(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        self.calls.append(("node", {"node": node}))
        refusal = self._refusal(request, "node")
        if refusal is not None:
            return refusal
        if self._node_is_number(request):
            return web.json_response(
                {
                    "verified_name": "Shop Support",
                    "display_phone_number": DISPLAY_NUMBER,
                    "id": self.phone_number_id,
                    "quality_rating": "GREEN",
                }
            )
        media = self._media.get(node)
        if media is None or request.match_info["version"] != self.api_version:
            return web.json_response(
                error_body(100, f"Unsupported get request. Object with ID '{node}' does not exist"),
                status=400,
            )
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "url": f"{self.url}media-download/{node}",
                "mime_type": media.content_type,
                "sha256": hashlib.sha256(media.content).hexdigest(),
                "file_size": len(media.content),
                "id": node,
            }
        )

    async def _download(self, request: web.Request) -> web.Response:
        media_id = request.match_info["media_id"]
        self.calls.append(("download", {"id": media_id}))
        refusal = self._refusal(request, "download")
        if refusal is not None:
            return refusal
        media = self._media.get(media_id)
        if media is None:
            return web.Response(status=404)
        return web.Response(body=media.content, content_type=media.content_type.split(";")[0])

    async def _messages(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(error_body(100, "The body is not JSON"), status=400)
        self.calls.append(("messages", body))
        refusal = self._refusal(request, "messages")
        if refusal is not None:
            return refusal
        if not self._node_is_number(request):
            return web.json_response(error_body(100, "Unknown phone number id"), status=400)
        problem = self._message_problem(body)
        if problem:
            return web.json_response(error_body(100, problem), status=400)
        wamid = self.new_wamid()
        kind = str(body["type"])
        sent = SentWhatsApp(wamid=wamid, to=str(body["to"]), kind=kind)
        if kind == "text":
            sent = SentWhatsApp(wamid, sent.to, kind, text=str(body["text"]["body"]))
        elif kind == "template":
            sent = SentWhatsApp(wamid, sent.to, kind, template=dict(body["template"]))
        else:
            media = self._media.get(str(body[kind].get("id", "")))
            if media is None:
                return web.json_response(error_body(131053, "Media upload error"), status=400)
            sent = SentWhatsApp(
                wamid,
                sent.to,
                kind,
                text=str(body[kind].get("caption", "")),
                filename=str(body[kind].get("filename", media.filename)),
                content=media.content,
                content_type=media.content_type,
            )
        self.sent.append(sent)
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": sent.to, "wa_id": sent.to}],
                "messages": [{"id": wamid}],
            }
        )

    @staticmethod
    def _message_problem(body: Any) -> str:
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return "messaging_product must be whatsapp"
        if not str(body.get("to", "")).isdigit():
            return "to must be a phone number"
        kind = body.get("type")
        if kind == "text":
            text = (body.get("text") or {}).get("body")
            if not isinstance(text, str) or not text:
                return "text.body is required"
            if len(text) > MAX_TEXT:
                return f"text.body is longer than {MAX_TEXT} characters"
            return ""
        if kind == "template":
            template = body.get("template") or {}
            if not template.get("name") or not (template.get("language") or {}).get("code"):
                return "template.name and template.language.code are required"
            return ""
        if kind in ("image", "video", "audio", "document", "sticker"):
            return "" if isinstance(body.get(kind), dict) else f"{kind} is required"
        return f"unsupported message type {kind!r}"

    async def _upload(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request, "media")
        form = await request.post()
        self.calls.append(("media", {k: str(v)[:80] for k, v in form.items()}))
        if refusal is not None:
            return refusal
        upload = form.get("file")
        if form.get("messaging_product") != "whatsapp" or not isinstance(upload, web.FileField):
            return web.json_response(
                error_body(100, "messaging_product and file are required"), status=400
            )
        content = upload.file.read()
        media_id = self.add_media(
            content, str(form.get("type") or upload.content_type), upload.filename
        )
        return web.json_response({"id": media_id})
