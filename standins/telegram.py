"""A loopback Telegram Bot API for tests and ``switchboard demo``.

``TelegramSandbox`` serves the Bot API methods Switchboard uses, in Telegram's wire format
(``POST /bot<token>/<method>`` with form, JSON or multipart arguments, answers
``{"ok": ..., "result": ...}``), and the file downloads (``GET /file/bot<token>/<path>``), so
python-telegram-bot's ``Bot(token, base_url=sandbox.api_url, base_file_url=sandbox.file_url)``
talks to it unchanged. It also plays Telegram's other side: it builds updates the way Telegram
does and delivers them to a webhook with the secret token header, or queues them for
``getUpdates``.

Where the sandbox knowingly differs from Telegram:

- Every chat is a private chat; a chat is known once an update from it went through the
  sandbox (``deliver`` or ``queue_update``) or ``add_chat`` named it, and sending to any other
  chat fails with ``chat not found``, as Telegram does for users who never wrote to the bot.
- ``setWebhook`` records the URL and secret but never calls it; ``deliver`` does that.
- Files are kept in memory; ``file_path`` values are ``<kind>/file_<n>.<ext>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import mimetypes
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from standins.loopback import Served, serve_on_loopback

Payload = dict[str, Any]

# Telegram's own limits.
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_DOWNLOAD = 20 * 1024 * 1024
_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class _ApiError(Exception):
    """A call Telegram answers with ``{"ok": false, "error_code": ..., "description": ...}``."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class SentMessage:
    """Something the bot sent to a chat: text, or a photo or document with its caption."""

    chat_id: int
    message_id: int
    kind: str
    text: str = ""
    filename: str = ""
    content: bytes = b""
    parse_mode: str = ""
    #: An inline keyboard sent with a text: rows of buttons (``{"text", "url"}``).
    buttons: tuple[tuple[Payload, ...], ...] = ()


@dataclass(slots=True)
class _StoredFile:
    file_id: str
    file_unique_id: str
    path: str
    content: bytes
    size: int


@dataclass(slots=True)
class _Failure:
    code: int
    description: str
    retry_after: int | None
    remaining: int


@dataclass(slots=True)
class Webhook:
    url: str = ""
    secret_token: str = ""
    allowed_updates: list[str] = field(default_factory=list)


class TelegramSandbox(Served):
    """A Telegram bot on loopback that python-telegram-bot's ``Bot`` can talk to.

    ``calls`` logs every Bot API call as ``(method, arguments)``, failed attempts included;
    ``sent`` holds what the bot sent to chats, in order.
    """

    def __init__(
        self,
        *,
        token: str = "123456789:AAHsandboxsandboxsandboxsandbox01",
        bot_username: str = "switchboard_bot",
        bot_name: str = "Switchboard",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.bot_id = int(token.partition(":")[0])
        self.bot_username = bot_username
        self.bot_name = bot_name
        self.calls: list[tuple[str, Payload]] = []
        self.sent: list[SentMessage] = []
        self.webhook = Webhook()
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._chats: dict[int, Payload] = {}
        self._blocked: set[int] = set()
        self._files: dict[str, _StoredFile] = {}
        self._paths: dict[str, _StoredFile] = {}
        self._failures: dict[str, deque[_Failure]] = {}
        self._updates: list[Payload] = []
        self._update_ids = itertools.count(700_000_001)
        self._message_ids = itertools.count(1)
        self._file_numbers = itertools.count(1)
        self._changed = asyncio.Condition()
        self._stopping = False
        self._methods: dict[str, Callable[[Payload, Mapping[str, tuple[str, bytes]]], Any]] = {
            "getMe": self._get_me,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "getFile": self._get_file,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
        }

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host:port``, a loopback address; port 0 picks a free port."""
        if self._runner is not None:
            raise RuntimeError("the Telegram sandbox is already running")
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_download)
        self._runner, self._url = await serve_on_loopback(app, host, port)

    async def stop(self) -> None:
        """Stop serving; what was recorded stays readable."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            # Long polls in flight answer now instead of holding up the shutdown.
            self._stopping = True
            async with self._changed:
                self._changed.notify_all()
            await runner.cleanup()
            self._stopping = False

    @property
    def url(self) -> str:
        """The base URL, like ``http://127.0.0.1:PORT/`` (the ``[telegram] api_url`` setting)."""
        if not self._url:
            raise RuntimeError("start the Telegram sandbox first")
        return self._url

    @property
    def api_url(self) -> str:
        """The value for ``Bot(base_url=...)``; the token is appended to it."""
        return f"{self.url}bot"

    @property
    def file_url(self) -> str:
        """The value for ``Bot(base_file_url=...)``."""
        return f"{self.url}file/bot"

    def add_chat(self, chat_id: int, first_name: str = "", username: str = "") -> None:
        """Make a private chat known, as if the user had started the bot."""
        chat: Payload = {"id": chat_id, "type": "private", "first_name": first_name or "User"}
        if username:
            chat["username"] = username
        self._chats.setdefault(chat_id, chat)

    def block(self, chat_id: int) -> None:
        """The user blocks the bot: sending to them fails with 403 from now on."""
        self._blocked.add(chat_id)

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int = 1,
        count: int = 1,
        description: str = "",
    ) -> None:
        """Make the next ``count`` calls of ``method`` fail without doing anything.

        429 answers carry ``parameters.retry_after``, as Telegram's flood control does.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        default = {
            429: f"Too Many Requests: retry after {retry_after}",
            403: "Forbidden: bot was blocked by the user",
            400: "Bad Request",
            500: "Internal Server Error",
        }.get(status, "Error")
        failure = _Failure(
            status, description or default, retry_after if status == 429 else None, count
        )
        self._failures.setdefault(method, deque()).append(failure)

    def add_file(
        self,
        content: bytes,
        *,
        kind: str = "documents",
        extension: str = "",
        file_id: str = "",
        file_unique_id: str = "",
    ) -> Payload:
        """Store a file a user sends; returns its ``file_id``, ``file_unique_id`` and size.

        Pass the ids of a captured update to make its files downloadable.
        """
        number = next(self._file_numbers)
        unique = file_unique_id or f"AgADsbx{number:04d}"
        file_id = file_id or f"BQACAgIAAxkBAAI{number:06d}{unique}"
        suffix = extension if extension.startswith(".") or not extension else f".{extension}"
        stored = _StoredFile(
            file_id, unique, f"{kind}/file_{number}{suffix}", content, len(content)
        )
        self._files[file_id] = stored
        self._paths[stored.path] = stored
        return {"file_id": file_id, "file_unique_id": unique, "file_size": len(content)}

    def next_update_id(self) -> int:
        return next(self._update_ids)

    def text_update(
        self,
        text: str,
        *,
        user_id: int = 555000111,
        first_name: str = "Maria",
        last_name: str = "",
        username: str = "",
        language_code: str = "de",
    ) -> Payload:
        """An update with a private text message, as Telegram sends it."""
        user: Payload = {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name,
            "language_code": language_code,
        }
        chat: Payload = {"id": user_id, "type": "private", "first_name": first_name}
        for key, value in (("last_name", last_name), ("username", username)):
            if value:
                user[key] = value
                chat[key] = value
        return {
            "update_id": self.next_update_id(),
            "message": {
                "message_id": next(self._message_ids),
                "from": user,
                "chat": chat,
                "date": int(self._clock()),
                "text": text,
            },
        }

    async def deliver(self, webhook_url: str, update: Payload, *, secret: str | None) -> int:
        """POST ``update`` to a webhook as Telegram does; returns the HTTP status.

        ``secret=None`` sends no secret header (a forged or misconfigured request).
        """
        _require_loopback_url(webhook_url)
        self._learn_chat(update)
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[_SECRET_HEADER] = secret
        async with (
            aiohttp.ClientSession() as session,
            session.post(webhook_url, data=json.dumps(update), headers=headers) as response,
        ):
            await response.read()
            return response.status

    async def queue_update(self, update: Payload) -> None:
        """Queue ``update`` for ``getUpdates`` (long polling)."""
        self._learn_chat(update)
        async with self._changed:
            self._updates.append(update)
            self._changed.notify_all()

    @property
    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by a later ``getUpdates`` offset."""
        return len(self._updates)

    async def wait_for_sent(self, count: int, timeout: float = 10.0) -> list[SentMessage]:
        """Wait until the bot has sent ``count`` messages."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.sent) >= count), timeout)
        return self.sent

    def sent_to(self, chat_id: int) -> list[SentMessage]:
        return [m for m in self.sent if m.chat_id == chat_id]

    def _learn_chat(self, update: Payload) -> None:
        for key in ("message", "edited_message"):
            chat = (update.get(key) or {}).get("chat")
            if isinstance(chat, dict) and isinstance(chat.get("id"), int):
                self._chats.setdefault(chat["id"], chat)

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            return _error_response(_ApiError(401, "Unauthorized"))
        try:
            params, files = await _read_arguments(request)
        except _ApiError as exc:
            return _error_response(exc)
        self.calls.append((method, {**params, **{k: v[0] for k, v in files.items()}}))
        if method == "getUpdates":
            handler: Callable[..., Any] | None = None
        else:
            handler = self._methods.get(method)
            if handler is None:
                return _error_response(_ApiError(404, "Not Found"))
        failures = self._failures.get(method)
        if failures:
            failure = failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                failures.popleft()
            return _error_response(
                _ApiError(failure.code, failure.description, failure.retry_after)
            )
        try:
            if handler is None:
                result = await self._get_updates(params)
            else:
                result = handler(params, files)
        except _ApiError as exc:
            return _error_response(exc)
        async with self._changed:
            self._changed.notify_all()
        return web.json_response({"ok": True, "result": result})

    async def _handle_download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        stored = self._paths.get(request.match_info["path"])
        if stored is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        return web.Response(body=stored.content, content_type="application/octet-stream")

    def _bot_user(self) -> Payload:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_name,
            "username": self.bot_username,
        }

    def _get_me(self, params: Payload, files: Mapping[str, tuple[str, bytes]]) -> Payload:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _chat_for(self, params: Payload) -> Payload:
        raw = str(params.get("chat_id", ""))
        try:
            chat_id = int(raw)
        except ValueError:
            raise _ApiError(400, "Bad Request: chat not found") from None
        chat = self._chats.get(chat_id)
        if chat is None:
            raise _ApiError(400, "Bad Request: chat not found")
        if chat_id in self._blocked:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _message(self, chat: Payload, **content: Any) -> Payload:
        return {
            "message_id": next(self._message_ids),
            "from": self._bot_user(),
            "chat": chat,
            "date": int(self._clock()),
            **content,
        }

    def _send_message(self, params: Payload, files: Mapping[str, tuple[str, bytes]]) -> Payload:
        chat = self._chat_for(params)
        text = str(params.get("text", ""))
        if not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            raise _ApiError(400, "Bad Request: message is too long")
        buttons = _inline_keyboard(params.get("reply_markup"))
        message = self._message(chat, text=text)
        if buttons:
            message["reply_markup"] = {"inline_keyboard": [list(row) for row in buttons]}
        self.sent.append(
            SentMessage(
                chat["id"],
                message["message_id"],
                "text",
                text=text,
                parse_mode=str(params.get("parse_mode", "")),
                buttons=buttons,
            )
        )
        return message

    def _send_photo(self, params: Payload, files: Mapping[str, tuple[str, bytes]]) -> Payload:
        return self._send_file("photo", params, files)

    def _send_document(self, params: Payload, files: Mapping[str, tuple[str, bytes]]) -> Payload:
        return self._send_file("document", params, files)

    def _send_file(
        self, kind: str, params: Payload, files: Mapping[str, tuple[str, bytes]]
    ) -> Payload:
        chat = self._chat_for(params)
        caption = str(params.get("caption", ""))
        if len(caption) > MAX_CAPTION:
            raise _ApiError(400, "Bad Request: message caption is too long")
        upload = files.get(kind)
        if upload is None:
            referenced = str(params.get(kind, ""))
            stored = self._files.get(referenced)
            if stored is None:
                raise _ApiError(400, f"Bad Request: there is no {kind} in the request")
            upload = (stored.path.rpartition("/")[2], stored.content)
        filename, content = upload
        if kind == "photo" and not _looks_like_image(content):
            raise _ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED")
        ref = self.add_file(content, kind=f"{kind}s", extension=mimetypes_extension(filename))
        if kind == "photo":
            body: Payload = {"photo": [{**ref, "width": 800, "height": 600}]}
        else:
            body = {
                "document": {
                    **ref,
                    "file_name": filename,
                    "mime_type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
                }
            }
        if caption:
            body["caption"] = caption
        message = self._message(chat, **body)
        self.sent.append(
            SentMessage(
                chat["id"],
                message["message_id"],
                kind,
                text=caption,
                filename=filename,
                content=content,
                parse_mode=str(params.get("parse_mode", "")),
            )
        )
        return message

    def _get_file(self, params: Payload, files: Mapping[str, tuple[str, bytes]]) -> Payload:
        stored = self._files.get(str(params.get("file_id", "")))
        if stored is None:
            raise _ApiError(400, "Bad Request: invalid file_id")
        if stored.size > MAX_DOWNLOAD:
            raise _ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": stored.path,
        }

    def _set_webhook(self, params: Payload, files: Mapping[str, tuple[str, bytes]]) -> bool:
        url = str(params.get("url", ""))
        if url and not url.startswith("https://"):
            raise _ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided")
        allowed = params.get("allowed_updates", [])
        if isinstance(allowed, str):
            allowed = json.loads(allowed) if allowed else []
        self.webhook = Webhook(url, str(params.get("secret_token", "")), list(allowed))
        return True

    def _delete_webhook(self, params: Payload, files: Mapping[str, tuple[str, bytes]]) -> bool:
        self.webhook = Webhook()
        if str(params.get("drop_pending_updates", "")).lower() in ("true", "1"):
            self._updates.clear()
        return True

    def _get_webhook_info(self, params: Payload, files: Mapping[str, tuple[str, bytes]]) -> Payload:
        info: Payload = {
            "url": self.webhook.url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook.allowed_updates:
            info["allowed_updates"] = self.webhook.allowed_updates
        return info

    async def _get_updates(self, params: Payload) -> list[Payload]:
        if self.webhook.url:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        async with self._changed:
            if offset:
                # An offset confirms every update before it: Telegram forgets them.
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: bool(self._updates) or self._stopping), timeout
                )
            return list(self._updates[:limit])


def mimetypes_extension(filename: str) -> str:
    """The extension of ``filename`` (with its dot), or ""."""
    name = filename.rpartition("/")[2]
    return "." + name.rpartition(".")[2] if "." in name else ""


def _looks_like_image(content: bytes) -> bool:
    return content.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF"))


def _require_loopback_url(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"the Telegram sandbox only calls loopback addresses: {url!r}")


async def _read_arguments(request: web.Request) -> tuple[Payload, dict[str, tuple[str, bytes]]]:
    """Query, form, multipart or JSON arguments, as the Bot API accepts them."""
    params: Payload = dict(request.query)
    files: dict[str, tuple[str, bytes]] = {}
    if not request.body_exists:
        return params, files
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise _ApiError(400, "Bad Request: can't parse JSON") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "Bad Request: can't parse JSON")
        params.update(body)
        return params, files
    form = await request.post()
    for key, value in form.items():
        if isinstance(value, web.FileField):
            files[key] = (value.filename or key, value.file.read())
        else:
            params[key] = value
    # Multipart uploads name their file "attach://<name>" in the argument itself.
    for key, value in list(params.items()):
        if isinstance(value, str) and value.startswith("attach://"):
            attached = files.pop(value.removeprefix("attach://"), None)
            if attached is not None:
                files[key] = attached
    return params, files


def _error_response(error: _ApiError) -> web.Response:
    body: Payload = {"ok": False, "error_code": error.code, "description": error.description}
    if error.retry_after is not None:
        body["parameters"] = {"retry_after": error.retry_after}
    return web.json_response(body, status=error.code)


def _inline_keyboard(markup: object) -> tuple[tuple[Payload, ...], ...]:
    """The rows of an ``InlineKeyboardMarkup`` as the Bot API checks them (URL buttons)."""
    if markup is None or markup == "":
        return ()
    parsed = json.loads(markup) if isinstance(markup, str) else markup
    rows = parsed.get("inline_keyboard") if isinstance(parsed, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise _ApiError(400, "Bad Request: can't parse inline keyboard button")
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not str(button.get("text", "")).strip():
                raise _ApiError(400, "Bad Request: inline keyboard button text is empty")
            url = str(button.get("url", ""))
            if "url" in button and not url.startswith(("http://", "https://", "tg://")):
                raise _ApiError(400, f"Bad Request: inline keyboard button URL '{url}' is invalid")
    return tuple(tuple(row) for row in rows)
