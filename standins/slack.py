"""A loopback Slack for tests and ``switchboard demo``.

``SlackSandbox`` serves the Slack Web API methods Switchboard uses, in Slack's wire format, so the
real ``AsyncWebClient(token=..., base_url=sandbox.api_url)`` talks to it unchanged. It also hosts
what Slack hosts beside the API: upload URLs (``files_upload_v2``), private file downloads and
response URLs. ``SlackEvents`` plays the other direction: it signs events, button clicks and slash
commands the way Slack does and delivers them to the service. In Socket Mode the service connects
instead (``apps.connections.open`` with the app-level token, then a WebSocket), and
``SlackSandbox.send_socket_event`` sends it events there and returns its ack.

Where the sandbox knowingly differs from Slack:

- ``chat.postMessage`` and ``chat.postEphemeral`` create a channel the first time they see its
  name (``create_channels=False`` gives Slack's ``channel_not_found``); every other method takes
  channel ids only, as Slack does.
- Replying to a ``thread_ts`` that names no message fails with ``thread_not_found``, so a wrong
  ts shows up in tests instead of as a stray top-level post.
- Sharing a file is synchronous: the file is in the thread when ``files.completeUploadExternal``
  answers. Trigger ids never expire. Cursors are offsets.
- Only the methods in ``SlackSandbox.methods`` exist; any other answers ``unknown_method``.
- The bot token's ``scopes`` are named in the ``x-oauth-scopes`` header of every answer to it,
  as Slack does, but no method checks them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import html
import ipaddress
import json
import mimetypes
import random
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from adapters.slack.preflight import MANIFEST_SCOPES
from standins.loopback import Served, serve_on_loopback

Payload = dict[str, Any]

# Slack's own limits, so that a post Slack would refuse is refused here too.
_MAX_TEXT = 40_000
_MAX_BLOCKS = 50
_MAX_SECTION_TEXT = 3_000
_MAX_HEADER_TEXT = 150
_MAX_FIELDS = 10
_MAX_FIELD_TEXT = 2_000
_MAX_BUTTON_TEXT = 75
_MAX_BUTTON_VALUE = 2_000
_MAX_ID = 255
_HISTORY_LIMIT = 100
_REPLIES_LIMIT = 1_000
_MAX_UPLOAD = 100 * 1024 * 1024
_CHANNEL_NAME = re.compile(r"[a-z0-9_-]{1,80}")
_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
# What files.slack.com answers to a download without a valid token: a sign-in page with
# status 200, which a client that forgets the token would otherwise store as the file.
_SIGN_IN_PAGE = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"


class _SlackError(Exception):
    """A call Slack answers with ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass(frozen=True, slots=True)
class SandboxFile:
    """A file a user attaches to a message in the sandbox."""

    name: str
    content: bytes
    mimetype: str = ""


@dataclass(frozen=True, slots=True)
class ServiceResponse:
    """What the service answered to a request ``SlackEvents`` delivered."""

    status: int
    body: str
    content_type: str

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class AgentReply:
    """A message an agent wrote in the sandbox, and the service's answer to its event."""

    message: Payload
    response: ServiceResponse

    @property
    def ts(self) -> str:
        """The ts Slack gave the message."""
        return str(self.message["ts"])


@dataclass(slots=True)
class _Channel:
    id: str
    name: str
    created: int
    members: list[str] = field(default_factory=list)
    # Keyed by ts; ts are issued in increasing order, so insertion order is time order.
    messages: dict[str, Payload] = field(default_factory=dict)


@dataclass(slots=True)
class _File:
    id: str
    name: str
    title: str
    user: str
    created: int
    mimetype: str
    content: bytes | None = None
    channels: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Failure:
    status: int
    retry_after: int
    error: str
    remaining: int


@dataclass(frozen=True, slots=True)
class _Interaction:
    """Where answers to a click or a command go (its response URL)."""

    channel: str
    user: str
    message_ts: str | None
    thread_ts: str | None
    ephemeral: bool


class _Params:
    """The arguments of one Web API call, read the way Slack reads them."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def text(self, key: str, default: str = "") -> str:
        value = self._values.get(key)
        if value is None:
            return default
        return value if isinstance(value, str) else str(value)

    def optional(self, key: str) -> str | None:
        return self.text(key) or None

    def required(self, key: str, error: str) -> str:
        value = self.text(key)
        if not value:
            raise _SlackError(error)
        return value

    def flag(self, key: str) -> bool:
        value = self._values.get(key)
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("1", "true")

    def integer(self, key: str, default: int) -> int:
        value = self._values.get(key)
        if value in (None, ""):
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise _SlackError("invalid_arguments") from None

    def decoded(self, key: str, error: str) -> Any:
        """A JSON argument: form and query values carry it as a string, JSON bodies as is."""
        value = self._values.get(key)
        if not isinstance(value, str):
            return value
        if not value:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise _SlackError(error) from None


class SlackSandbox(Served):
    """A Slack workspace on loopback that the real ``AsyncWebClient`` can talk to.

    ``calls`` logs every Web API call as ``(method, arguments)``, failed attempts included;
    ``views`` logs opened, updated and published views; ``responses`` logs what the service sent
    to response URLs and as immediate answers to slash commands.
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-sandbox-token",
        app_token: str = "xapp-1-A0001-sandbox-token",
        team_id: str = "T0001",
        team_domain: str = "sandbox",
        app_id: str = "A0001",
        bot_id: str = "B0001",
        bot_user_id: str = "U0BOT",
        bot_name: str = "switchboard",
        create_channels: bool = True,
        scopes: Iterable[str] = MANIFEST_SCOPES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bot_token = bot_token
        #: The bot token's scopes, named in the ``x-oauth-scopes`` header; by default those
        #: Switchboard's app manifest asks for.
        self.scopes = tuple(scopes)
        self.app_token = app_token
        self.team_id = team_id
        self.team_domain = team_domain
        self.app_id = app_id
        self.bot_id = bot_id
        self.bot_user_id = bot_user_id
        self.bot_name = bot_name
        self.create_channels = create_channels
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.views: list[tuple[str, Payload]] = []
        self.responses: list[Payload] = []
        #: How many Web API calls were answered with an injected failure.
        self.failures_injected = 0
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._counters: dict[str, int] = {}
        self._last_ts_us = 0
        self._channels: dict[str, _Channel] = {}
        self._channel_ids: dict[str, str] = {}
        self._users: dict[str, Payload] = {}
        self._usergroups: dict[str, Payload] = {}
        self._dm_ids: dict[str, str] = {}
        self._presence: dict[str, str] = {}
        self._ephemeral: dict[str, list[Payload]] = {}
        self._files: dict[str, _File] = {}
        self._uploads: dict[str, str] = {}
        self._interactions: dict[str, _Interaction] = {}
        self._triggers: dict[str, bool] = {}
        self._views_by_id: dict[str, Payload] = {}
        self._failures: dict[str, deque[_Failure]] = {}
        self._failure_rate = 0.0
        self._failure_methods: frozenset[str] | None = None
        #: Slack refuses posts and file shares into a channel the app is not a member of
        #: (``not_in_channel``). Off unless a test turns it on: most tests create channels
        #: without adding the app, and care about other things.
        self.require_membership = False
        self._random = random.Random()
        self._changed = asyncio.Event()
        self._socket_tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_acks: dict[str, asyncio.Future[Payload]] = {}
        self._methods: dict[str, Callable[[_Params], Payload]] = {
            "apps.connections.open": self._apps_connections_open,
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "conversations.list": self._conversations_list,
            "conversations.info": self._conversations_info,
            "conversations.members": self._conversations_members,
            "conversations.open": self._conversations_open,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "reactions.get": self._reactions_get,
            "users.info": self._users_info,
            "users.getPresence": self._users_get_presence,
            "users.profile.get": self._users_profile_get,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroups_users_list,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "files.info": self._files_info,
            "files.delete": self._files_delete,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
        }
        self.add_user(bot_user_id, bot_name, real_name=bot_name, is_bot=True)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host:port``, a loopback address; port 0 picks a free port."""
        _require_loopback(host)
        if self._runner is not None:
            raise RuntimeError("the Slack sandbox is already running")
        app = web.Application(client_max_size=_MAX_UPLOAD)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{key}", self._handle_upload)
        app.router.add_get("/files-pri/{ref}/{name}", self._handle_download)
        app.router.add_get("/files-pri/{ref}/download/{name}", self._handle_download)
        app.router.add_post("/response/{key}", self._handle_response_url)
        app.router.add_get("/socket-mode/{ticket}", self._handle_socket)
        self._runner, self._url = await serve_on_loopback(app, host, port)

    async def stop(self) -> None:
        """Stop serving; the recorded workspace stays readable."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            for socket in list(self._sockets):
                await socket.close(code=aiohttp.WSCloseCode.GOING_AWAY)
            await runner.cleanup()

    @property
    def url(self) -> str:
        """The base URL, like ``http://127.0.0.1:PORT/``."""
        if not self._url:
            raise RuntimeError("start the Slack sandbox first")
        return self._url

    @property
    def methods(self) -> tuple[str, ...]:
        """The Web API methods the sandbox serves."""
        return tuple(self._methods)

    @property
    def api_url(self) -> str:
        """The Web API base URL to give ``AsyncWebClient(base_url=...)``."""
        return f"{self.url}api/"

    def add_channel(self, name: str, *, members: Iterable[str] = ()) -> str:
        """Create a public channel (or find it) by name; returns its id."""
        name = name.removeprefix("#")
        if not _CHANNEL_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a Slack channel name (lowercase, digits, - and _)")
        channel_id = self._channel_ids.get(name)
        if channel_id is None:
            channel_id = self._new_id("C")
            self._channels[channel_id] = _Channel(channel_id, name, int(self._clock()))
            self._channel_ids[name] = channel_id
        channel = self._channels[channel_id]
        for user in members:
            _join(channel, user)
        self._notify()
        return channel_id

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str = "",
        display_name: str = "",
        email: str = "",
        is_bot: bool = False,
        tz: str = "UTC",
    ) -> None:
        """Make ``users.info`` know a user."""
        profile: Payload = {
            "real_name": real_name,
            "real_name_normalized": real_name,
            "display_name": display_name,
            "display_name_normalized": display_name,
            "team": self.team_id,
        }
        if email:
            profile["email"] = email
        if is_bot:
            profile["bot_id"] = self.bot_id
        self._users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real_name,
            "tz": tz,
            "tz_label": tz,
            "tz_offset": 0,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(self._clock()),
        }

    def add_usergroup(self, handle: str, users: Iterable[str], *, name: str = "") -> str:
        """Create a user group (``@handle``) with these members; returns its id."""
        group_id = self._new_id("S")
        members = list(users)
        self._usergroups[group_id] = {
            "id": group_id,
            "team_id": self.team_id,
            "is_usergroup": True,
            "name": name or handle,
            "handle": handle.removeprefix("@"),
            "date_create": int(self._clock()),
            "users": members,
            "user_count": len(members),
        }
        return group_id

    def fail_next(
        self,
        method: str,
        *,
        status: int = 500,
        retry_after: int = 1,
        count: int = 1,
        error: str = "",
    ) -> None:
        """Make the next ``count`` calls of ``method`` fail without changing anything.

        429 answers carry ``Retry-After: retry_after``. With ``status=200`` the call answers
        ``{"ok": false, "error": error}``, the way Slack refuses a call it understood.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        failure = _Failure(status, retry_after, error, count)
        self._failures.setdefault(method, deque()).append(failure)

    def failure_rate(
        self, rate: float, seed: int | None = None, *, methods: Iterable[str] | None = None
    ) -> None:
        """Fail this share of Web API calls (of ``methods``, or all), half 500 and half 429."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        self._failure_rate = rate
        self._failure_methods = None if methods is None else frozenset(methods)
        self._random = random.Random(seed)

    def channel_id(self, channel: str) -> str:
        """The id of a channel given by name (``#x`` or ``x``) or id."""
        return self._known_channel(channel).id

    def channel_messages(self, channel: str) -> list[Payload]:
        """The channel's top-level messages, oldest first, as Slack would list them."""
        found = self._known_channel(channel)
        listed = [m for m in found.messages.values() if _is_listed(m)]
        return [self._wire(found, m, with_metadata=True) for m in listed]

    def thread(self, channel: str, ts: str) -> list[Payload]:
        """The parent message and its replies, oldest first."""
        found = self._known_channel(channel)
        parent_ts = self._parent_ts(found, ts)
        if parent_ts is None:
            raise LookupError(f"no message {ts} in #{found.name}")
        thread = [found.messages[parent_ts], *self._replies(found, parent_ts)]
        return [self._wire(found, m, with_metadata=True) for m in thread]

    def ephemeral_messages(self, user: str) -> list[Payload]:
        """The ephemeral messages shown to ``user``, oldest first."""
        return copy.deepcopy(self._ephemeral.get(user, []))

    def file_content(self, file_id: str) -> bytes:
        """The bytes uploaded for a file."""
        content = self._files[file_id].content
        if content is None:
            raise LookupError(f"nothing was uploaded for {file_id}")
        return content

    def post_as_user(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        files: Sequence[SandboxFile] = (),
    ) -> Payload:
        """Record a message a person typed in the Slack client; returns it as Slack stores it."""
        found = self._writable_channel(channel)
        parent_ts = None if thread_ts is None else self._parent_ts(found, thread_ts)
        if thread_ts is not None and parent_ts is None:
            raise LookupError(f"no message {thread_ts} in #{found.name}")
        # Slack escapes what people type; the rich_text block keeps the raw text.
        message: Payload = {
            "user": user,
            "type": "message",
            "ts": self._next_ts(),
            "client_msg_id": str(uuid.uuid4()),
            "text": _escape(text),
            "team": self.team_id,
        }
        if text:
            message["blocks"] = [_rich_text_block(text)]
        if files:
            message["subtype"] = "file_share"
            message["files"] = [self._user_file(user, found, f) for f in files]
            message["upload"] = False
            message["display_as_bot"] = False
        self._store(found, message, parent_ts)
        return self._wire(found, message, with_metadata=True)

    def edit_as_user(self, channel: str, ts: str, text: str) -> tuple[Payload, Payload]:
        """Record a person editing their message; returns the message before and after."""
        found = self._known_channel(channel)
        message = self._stored_message(found, ts)
        before = self._wire(found, message, with_metadata=False)
        message["text"] = _escape(text)
        message["blocks"] = [_rich_text_block(text)]
        message["edited"] = {"user": message["user"], "ts": self._next_ts()}
        self._notify()
        return before, self._wire(found, message, with_metadata=False)

    def delete_as_user(self, channel: str, ts: str) -> Payload:
        """Record a person deleting their message; returns the deleted message."""
        found = self._known_channel(channel)
        before = self._wire(found, self._stored_message(found, ts), with_metadata=False)
        self._remove_message(found, ts)
        self._notify()
        return before

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
        """Wait until ``condition()`` holds; it is checked again after every recorded change."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if condition():
                    return
                await changed.wait()

    async def wait_for_message(
        self,
        channel: str,
        matches: Callable[[Payload], bool] = lambda message: True,
        *,
        thread_ts: str | None = None,
        timeout: float = 5.0,
    ) -> Payload:
        """Wait for a message that ``matches`` at the top of a channel or in one thread."""
        found: list[Payload] = []

        def seen() -> bool:
            watched = self._lookup_channel(channel)
            if watched is None:
                return False
            if thread_ts is None:
                candidates = self.channel_messages(channel)
            elif self._parent_ts(watched, thread_ts) is None:
                return False
            else:
                candidates = self.thread(channel, thread_ts)[1:]
            found[:] = [m for m in candidates if matches(m)]
            return bool(found)

        await self.wait_until(seen, timeout=timeout)
        return found[0]

    async def send_socket_event(self, event: Payload, *, timeout: float = 5.0) -> Payload:
        """Send an ``event_callback`` over Socket Mode and return the app's ack for it.

        The newest open connection gets it, after waiting for one to open if none is; a missing
        ack raises ``TimeoutError``. Build ``event`` with ``SlackEvents.event_callback``.
        """
        if event.get("type") != "event_callback":
            raise ValueError("send an event in its envelope: SlackEvents.event_callback(event)")
        envelope_id = str(uuid.uuid4())
        acked: asyncio.Future[Payload] = asyncio.get_running_loop().create_future()
        self._socket_acks[envelope_id] = acked
        try:
            async with asyncio.timeout(timeout):
                await self.wait_until(lambda: bool(self._sockets), timeout=timeout)
                await self._sockets[-1].send_json(
                    {
                        "envelope_id": envelope_id,
                        "type": "events_api",
                        "accepts_response_payload": False,
                        "payload": event,
                        "retry_attempt": 0,
                        "retry_reason": "",
                    }
                )
                return await acked
        except TimeoutError:
            raise TimeoutError(f"no Socket Mode ack for {envelope_id} within {timeout} s") from None
        finally:
            del self._socket_acks[envelope_id]

    def render_text(self) -> str:
        """Every channel with its messages, threads, files and reactions, for a person to read."""
        lines: list[str] = []
        for channel in self._channels.values():
            lines.append(f"#{channel.name} ({channel.id})")
            listed = [m for m in channel.messages.values() if _is_listed(m)]
            if not listed:
                lines.append("  (no messages)")
            for message in listed:
                lines.extend(self._render_message(message, "  * "))
                if _is_parent(message):
                    for reply in self._replies(channel, message["ts"]):
                        lines.extend(self._render_message(reply, "      > "))
            lines.append("")
        shown = [(user, m) for user, messages in self._ephemeral.items() for m in messages]
        if shown:
            lines.append("Ephemeral messages")
            for user, message in shown:
                where = f"#{self._channels[message['channel']].name}"
                if message.get("thread_ts"):
                    where += f", thread {message['thread_ts']}"
                body = " ".join(_body_lines(message))
                lines.append(f"  to {self._user_label(user)} in {where}: {body}")
        return "\n".join(lines).rstrip() + "\n"

    def _render_message(self, message: Payload, lead: str) -> list[str]:
        author = self._user_label(message.get("user", ""), message)
        header = f"{lead}{author}  {message['ts']}"
        if "edited" in message:
            header += "  (edited)"
        if "metadata" in message:
            header += f"  [metadata: {message['metadata'].get('event_type', '?')}]"
        indent = " " * (len(lead) + 2)
        lines = [header]
        lines.extend(f"{indent}{line}" for line in _body_lines(message))
        for shared in message.get("files", []):
            if shared.get("mode") == "tombstone":
                lines.append(f"{indent}file: (deleted)")
                continue
            size = shared.get("size", 0)
            lines.append(f"{indent}file: {shared['name']} ({size} bytes, {shared['mimetype']})")
        reactions = message.get("reactions", [])
        if reactions:
            shown = ", ".join(f":{r['name']}: {r['count']}" for r in reactions)
            lines.append(f"{indent}reactions: {shown}")
        return lines

    def _user_label(self, user: str, message: Payload | None = None) -> str:
        if message is not None and message.get("bot_id"):
            return f"{message.get('username') or self.bot_name} [bot]"
        known = self._users.get(user)
        if known is None:
            return user or "?"
        profile = known["profile"]
        return str(profile["display_name"] or profile["real_name"] or known["name"])

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await _read_params(request)
        except _SlackError as exc:
            return web.json_response({"ok": False, "error": exc.error})
        token = _bearer_token(request) or str(params.get("token", ""))
        params.pop("token", None)
        self.calls.append((method, copy.deepcopy(params)))
        failure = self._take_failure(method)
        if failure is not None:
            self.failures_injected += 1
            return failure
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        # apps.connections.open takes the app-level token only; every other method the bot's.
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            known = token in (self.bot_token, self.app_token)
            error = "not_allowed_token_type" if known else "invalid_auth"
            return web.json_response({"ok": False, "error": error})
        headers = {"x-oauth-scopes": ",".join(self.scopes)} if token == self.bot_token else {}
        handler = self._methods.get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, headers=headers)
        try:
            answer = handler(_Params(params))
        except _SlackError as exc:
            return web.json_response({"ok": False, "error": exc.error}, headers=headers)
        self._notify()
        return web.json_response({"ok": True, **answer}, headers=headers)

    def _take_failure(self, method: str) -> web.Response | None:
        queued = self._failures.get(method)
        if queued:
            failure = queued[0]
            failure.remaining -= 1
            if failure.remaining == 0:
                queued.popleft()
            return _failure_response(failure.status, failure.retry_after, failure.error)
        chosen = self._failure_methods is None or method in self._failure_methods
        if chosen and self._failure_rate and self._random.random() < self._failure_rate:
            return _failure_response(self._random.choice((500, 429)), 1, "")
        return None

    async def _handle_upload(self, request: web.Request) -> web.Response:
        file_id = self._uploads.get(request.match_info["key"])
        if file_id is None:
            return web.Response(status=404, text="not found")
        content = await _uploaded_bytes(request)
        self._files[file_id].content = content
        self._notify()
        return web.Response(text=f"OK - {len(content)}", content_type="text/plain")

    async def _handle_download(self, request: web.Request) -> web.Response:
        if _bearer_token(request) != self.bot_token:
            return web.Response(text=_SIGN_IN_PAGE, content_type="text/html")
        _, _, file_id = request.match_info["ref"].partition("-")
        stored = self._files.get(file_id)
        if stored is None or stored.content is None or stored.name != request.match_info["name"]:
            return web.Response(status=404, text="file not found")
        return web.Response(
            body=stored.content,
            headers={
                "Content-Type": stored.mimetype,
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(stored.name)}",
            },
        )

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        interaction = self._interactions.get(request.match_info["key"])
        if interaction is None:
            return web.json_response({"ok": False, "error": "expired_url"}, status=404)
        try:
            answer = await request.json()
            if not isinstance(answer, dict):
                raise _SlackError("invalid_payload")
            self._answer_interaction(interaction, answer)
        except json.JSONDecodeError:
            return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
        except _SlackError as exc:
            return web.json_response({"ok": False, "error": exc.error}, status=400)
        self._notify()
        return web.json_response({"ok": True})

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        """A Socket Mode connection: hello, then events out and acks (``envelope_id``) in."""
        ticket = request.match_info["ticket"]
        if ticket not in self._socket_tickets:
            return web.Response(status=401, text="invalid or used ticket")
        self._socket_tickets.discard(ticket)
        # Pings are answered by aiohttp; slack_sdk pings every few seconds and reconnects
        # when the pongs stop.
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets) + 1,
                "debug_info": {
                    "host": "applink-sandbox",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        self._sockets.append(socket)
        self._notify()
        try:
            async for frame in socket:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    ack = json.loads(frame.data)
                except json.JSONDecodeError:
                    continue
                envelope_id = str(ack.get("envelope_id")) if isinstance(ack, dict) else ""
                waiting = self._socket_acks.get(envelope_id)
                if waiting is not None and not waiting.done():
                    waiting.set_result(ack)
        finally:
            self._sockets.remove(socket)
            self._notify()
        return socket

    def _answer_interaction(self, interaction: _Interaction, answer: Payload) -> None:
        """Apply what the service sent to a response URL (or as a command's immediate answer)."""
        text = str(answer.get("text", ""))
        blocks = _checked_blocks(answer.get("blocks"))
        self.responses.append(copy.deepcopy(answer))
        channel = self._channels[interaction.channel]
        original = interaction.message_ts
        delete = bool(answer.get("delete_original"))
        if original is not None and (delete or answer.get("replace_original")):
            if interaction.ephemeral:
                shown = self._ephemeral.get(interaction.user, [])
                self._ephemeral[interaction.user] = [
                    _replaced(m, text, blocks) if m["ts"] == original else m
                    for m in shown
                    if not (delete and m["ts"] == original)
                ]
            elif delete:
                self._remove_message(channel, original)
            elif original in channel.messages:
                channel.messages[original] = _replaced(channel.messages[original], text, blocks)
            return
        thread_ts = answer.get("thread_ts") or interaction.thread_ts
        if answer.get("response_type") == "in_channel":
            parent_ts = self._parent_ts(channel, thread_ts) if thread_ts else None
            self._store(channel, self._bot_message(text, blocks, None), parent_ts)
        else:
            self._show_ephemeral(channel, interaction.user, text, blocks, thread_ts)

    def _apps_connections_open(self, params: _Params) -> Payload:
        ticket = secrets.token_urlsafe(16)
        self._socket_tickets.add(ticket)
        return {"url": f"ws{self.url.removeprefix('http')}socket-mode/{ticket}"}

    def _auth_test(self, params: _Params) -> Payload:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_domain.title(),
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: _Params) -> Payload:
        text, blocks = _message_content(params)
        metadata = _metadata(params)
        attachments = params.decoded("attachments", "invalid_attachments")
        channel, parent_ts = self._posting_target(params)
        self._check_member(channel)
        message = self._bot_message(text, blocks, metadata)
        username = params.optional("username")
        if username:
            message["username"] = username
        if params.optional("icon_emoji"):
            message["icons"] = {"emoji": params.text("icon_emoji")}
        elif params.optional("icon_url"):
            message["icons"] = {"image_48": params.text("icon_url")}
        if parent_ts is not None and params.flag("reply_broadcast"):
            message["subtype"] = "thread_broadcast"
        if attachments:
            message["attachments"] = attachments
        self._store(channel, message, parent_ts)
        return {
            "channel": channel.id,
            "ts": message["ts"],
            "message": self._wire(channel, message, with_metadata=True),
        }

    def _chat_update(self, params: _Params) -> Payload:
        channel = self._channel_param(params)
        message = self._message(channel, params.required("ts", "message_not_found"))
        if message.get("bot_id") != self.bot_id:
            raise _SlackError("cant_update_message")
        text, blocks = _message_content(params)
        metadata = _metadata(params)
        message["text"] = text
        if blocks:
            message["blocks"] = blocks
        if metadata:
            message["metadata"] = metadata
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {
            "channel": channel.id,
            "ts": message["ts"],
            "text": text,
            "message": self._wire(channel, message, with_metadata=True),
        }

    def _chat_delete(self, params: _Params) -> Payload:
        channel = self._channel_param(params)
        ts = params.required("ts", "message_not_found")
        if self._message(channel, ts).get("bot_id") != self.bot_id:
            raise _SlackError("cant_delete_message")
        self._remove_message(channel, ts)
        return {"channel": channel.id, "ts": ts}

    def _chat_post_ephemeral(self, params: _Params) -> Payload:
        text, blocks = _message_content(params)
        user = params.required("user", "user_not_found")
        channel, _ = self._posting_target(params, threaded=False)
        shown = self._show_ephemeral(channel, user, text, blocks, params.optional("thread_ts"))
        return {"message_ts": shown["ts"]}

    def _chat_get_permalink(self, params: _Params) -> Payload:
        channel = self._channel_param(params)
        ts = params.required("message_ts", "message_not_found")
        message = self._message(channel, ts)
        link = f"https://{self.team_domain}.slack.com/archives/{channel.id}/p{ts.replace('.', '')}"
        parent = message.get("thread_ts")
        if parent and parent != ts:
            link += f"?thread_ts={parent}&cid={channel.id}"
        return {"channel": channel.id, "permalink": link}

    def _conversations_replies(self, params: _Params) -> Payload:
        channel = self._channel_param(params)
        parent_ts = self._parent_ts(channel, params.required("ts", "thread_not_found"))
        if parent_ts is None:
            raise _SlackError("thread_not_found")
        thread = [channel.messages[parent_ts], *self._replies(channel, parent_ts)]
        page, next_cursor = _page(_window(thread, params), params, _REPLIES_LIMIT)
        with_metadata = params.flag("include_all_metadata")
        return {
            "messages": [self._wire(channel, m, with_metadata=with_metadata) for m in page],
            "has_more": bool(next_cursor),
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _conversations_history(self, params: _Params) -> Payload:
        channel = self._channel_param(params)
        listed = [m for m in channel.messages.values() if _is_listed(m)]
        newest_first = list(reversed(_window(listed, params)))
        page, next_cursor = _page(newest_first, params, _HISTORY_LIMIT)
        with_metadata = params.flag("include_all_metadata")
        return {
            "messages": [self._wire(channel, m, with_metadata=with_metadata) for m in page],
            "has_more": bool(next_cursor),
            "pin_count": 0,
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _conversations_list(self, params: _Params) -> Payload:
        channels = [
            self._channel_object(c) for c in self._channels.values() if not c.id.startswith("D")
        ]
        page, next_cursor = _page(channels, params, _HISTORY_LIMIT)
        return {"channels": page, "response_metadata": {"next_cursor": next_cursor}}

    def _conversations_info(self, params: _Params) -> Payload:
        return {"channel": self._channel_object(self._channel_param(params))}

    def _conversations_members(self, params: _Params) -> Payload:
        channel = self._channel_param(params)
        page, next_cursor = _page(list(channel.members), params, _HISTORY_LIMIT)
        return {"members": page, "response_metadata": {"next_cursor": next_cursor}}

    def _conversations_open(self, params: _Params) -> Payload:
        """The app's direct-message channel with one user (``users=U…``), opened once."""
        user = params.required("users", "users_list_not_supplied")
        if "," in user:
            raise _SlackError("not_supported")  # a group DM: not needed here
        if user not in self._users:
            raise _SlackError("user_not_found")
        channel_id = self._dm_ids.get(user)
        if channel_id is None:
            channel_id = self._new_id("D")
            self._channels[channel_id] = _Channel(
                channel_id, f"dm-{user.lower()}", int(self._clock()), [user, self.bot_user_id]
            )
            self._dm_ids[user] = channel_id
        return {"channel": {"id": channel_id, "is_im": True, "user": user}}

    def direct_messages(self, user: str) -> list[Payload]:
        """What the app wrote to ``user`` in their direct messages, oldest first."""
        channel_id = self._dm_ids.get(user)
        return [] if channel_id is None else self.channel_messages(channel_id)

    def _reactions_add(self, params: _Params) -> Payload:
        message = self._reacted_message(params)
        name = params.required("name", "invalid_name")
        reactions: list[Payload] = message.setdefault("reactions", [])
        entry = next((r for r in reactions if r["name"] == name), None)
        if entry is not None and self.bot_user_id in entry["users"]:
            raise _SlackError("already_reacted")
        if entry is None:
            entry = {"name": name, "users": [], "count": 0}
            reactions.append(entry)
        entry["users"].append(self.bot_user_id)
        entry["count"] += 1
        return {}

    def _reactions_remove(self, params: _Params) -> Payload:
        message = self._reacted_message(params)
        name = params.required("name", "invalid_name")
        reactions: list[Payload] = message.get("reactions", [])
        entry = next((r for r in reactions if r["name"] == name), None)
        if entry is None or self.bot_user_id not in entry["users"]:
            raise _SlackError("no_reaction")
        entry["users"].remove(self.bot_user_id)
        entry["count"] -= 1
        if not entry["users"]:
            reactions.remove(entry)
        if not reactions:
            message.pop("reactions", None)
        return {}

    def _reactions_get(self, params: _Params) -> Payload:
        channel = self._channel_param(params)
        message = self._reacted_message(params)
        return {
            "type": "message",
            "channel": channel.id,
            "message": self._wire(channel, message, with_metadata=False),
        }

    def _reacted_message(self, params: _Params) -> Payload:
        channel = self._channel_param(params)
        return self._message(channel, params.required("timestamp", "no_item_specified"))

    def _users_info(self, params: _Params) -> Payload:
        user = self._users.get(params.text("user"))
        if user is None:
            raise _SlackError("user_not_found")
        return {"user": copy.deepcopy(user)}

    def _users_get_presence(self, params: _Params) -> Payload:
        user = self._users.get(params.text("user"))
        if user is None:
            raise _SlackError("user_not_found")
        presence = self._presence.get(user["id"], "active")
        return {"presence": presence, "online": presence == "active"}

    def _users_profile_get(self, params: _Params) -> Payload:
        user = self._users.get(params.text("user"))
        if user is None:
            raise _SlackError("user_not_found")
        profile = copy.deepcopy(user["profile"])
        profile.setdefault("status_text", "")
        profile.setdefault("status_emoji", "")
        return {"profile": profile}

    def set_presence(self, user_id: str, presence: str) -> None:
        """What users.getPresence says of ``user_id``: "active" (the default) or "away"."""
        if presence not in ("active", "away"):
            raise ValueError("presence is 'active' or 'away'")
        self._presence[user_id] = presence

    def set_status(self, user_id: str, text: str, emoji: str = "") -> None:
        """A user's custom status, as users.profile.get shows it."""
        profile = self._users[user_id]["profile"]
        profile["status_text"] = text
        profile["status_emoji"] = emoji

    def _usergroups_list(self, params: _Params) -> Payload:
        groups = copy.deepcopy(list(self._usergroups.values()))
        if not params.flag("include_users"):
            for group in groups:
                del group["users"]
        return {"usergroups": groups}

    def _usergroups_users_list(self, params: _Params) -> Payload:
        group = self._usergroups.get(params.text("usergroup"))
        if group is None:
            raise _SlackError("no_such_subteam")
        return {"users": list(group["users"])}

    def _files_get_upload_url(self, params: _Params) -> Payload:
        name = params.required("filename", "invalid_arguments")
        if params.integer("length", 0) < 1:
            raise _SlackError("invalid_arguments")
        stored = self._new_file(name, self.bot_user_id)
        key = secrets.token_urlsafe(16)
        self._uploads[key] = stored.id
        return {"upload_url": f"{self.url}upload/v1/{key}", "file_id": stored.id}

    def _files_complete_upload(self, params: _Params) -> Payload:
        listed = params.decoded("files", "invalid_arguments")
        if not isinstance(listed, list) or not listed:
            raise _SlackError("invalid_arguments")
        uploads: list[tuple[_File, str]] = []
        for item in listed:
            stored = self._files.get(str(item.get("id", ""))) if isinstance(item, dict) else None
            if stored is None or stored.content is None:
                raise _SlackError("file_not_found")
            uploads.append((stored, str(item.get("title") or stored.name)))
        refs = [params.text("channel_id"), *params.text("channels").split(",")]
        thread_ts = params.optional("thread_ts")
        targets: list[tuple[_Channel, str | None]] = []
        for ref in filter(None, refs):
            channel = self._channels.get(ref)
            if channel is None:
                raise _SlackError("channel_not_found")
            self._check_member(channel)
            parent_ts = self._parent_ts(channel, thread_ts) if thread_ts else None
            if thread_ts and parent_ts is None:
                raise _SlackError("thread_not_found")
            targets.append((channel, parent_ts))
        files = [stored for stored, _ in uploads]
        for stored, title in uploads:
            stored.title = title
        for channel, parent_ts in targets:
            for stored in files:
                stored.channels.append(channel.id)
            message = self._bot_message(params.text("initial_comment"), None, None)
            message["files"] = [self._file_object(stored) for stored in files]
            message["upload"] = True
            message["display_as_bot"] = False
            self._store(channel, message, parent_ts)
        return {"files": [self._file_object(stored) for stored in files]}

    def _check_member(self, channel: _Channel) -> None:
        if self.require_membership and self.bot_user_id not in channel.members:
            raise _SlackError("not_in_channel")

    def _files_info(self, params: _Params) -> Payload:
        stored = self._files.get(params.text("file"))
        if stored is None:
            raise _SlackError("file_not_found")
        return {
            "file": self._file_object(stored),
            "comments": [],
            "response_metadata": {"next_cursor": ""},
        }

    def _files_delete(self, params: _Params) -> Payload:
        stored = self._files.get(params.text("file"))
        if stored is None:
            raise _SlackError("file_not_found")
        if stored.user != self.bot_user_id:
            raise _SlackError("cant_delete_file")
        del self._files[stored.id]
        # Slack keeps the messages that shared the file, showing it as deleted.
        for channel in self._channels.values():
            for message in channel.messages.values():
                if any(f.get("id") == stored.id for f in message.get("files", [])):
                    message["files"] = [
                        {"id": f["id"], "mode": "tombstone"} if f.get("id") == stored.id else f
                        for f in message["files"]
                    ]
        self._notify()
        return {}

    def _views_open(self, params: _Params) -> Payload:
        trigger_id = params.required("trigger_id", "invalid_trigger_id")
        if trigger_id not in self._triggers:
            raise _SlackError("invalid_trigger_id")
        if self._triggers[trigger_id]:
            raise _SlackError("exchanged_trigger_id")
        view = self._new_view(params)
        self._triggers[trigger_id] = True
        return self._record_view("views.open", view)

    def _views_update(self, params: _Params) -> Payload:
        view_id = params.optional("view_id")
        external_id = params.optional("external_id")
        current = next(
            (
                v
                for v in self._views_by_id.values()
                if v["id"] == view_id or (external_id and v.get("external_id") == external_id)
            ),
            None,
        )
        if current is None:
            raise _SlackError("not_found")
        if params.optional("hash") and params.text("hash") != current["hash"]:
            raise _SlackError("hash_conflict")
        view = self._new_view(params, view_id=current["id"])
        return self._record_view("views.update", view)

    def _views_publish(self, params: _Params) -> Payload:
        user = params.required("user_id", "invalid_arguments")
        view = self._new_view(params)
        view["user_id"] = user
        return self._record_view("views.publish", view)

    def _new_view(self, params: _Params, *, view_id: str = "") -> Payload:
        given = params.decoded("view", "invalid_arguments")
        if not isinstance(given, dict) or "type" not in given:
            raise _SlackError("invalid_arguments")
        view_id = view_id or self._new_id("V")
        return {
            "id": view_id,
            "team_id": self.team_id,
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "state": {"values": {}},
            **copy.deepcopy(given),
            "blocks": _checked_blocks(given.get("blocks")) or [],
            "hash": f"{int(self._clock())}.{secrets.token_hex(4)}",
            "root_view_id": view_id,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
        }

    def _record_view(self, method: str, view: Payload) -> Payload:
        self._views_by_id[view["id"]] = view
        self.views.append((method, copy.deepcopy(view)))
        return {"view": copy.deepcopy(view)}

    def _posting_target(
        self, params: _Params, *, threaded: bool = True
    ) -> tuple[_Channel, str | None]:
        """The channel (created by name if need be) and thread parent a post goes to."""
        ref = params.required("channel", "channel_not_found")
        thread_ts = params.optional("thread_ts") if threaded else None
        channel = self._lookup_channel(ref)
        if channel is None:
            name = ref.removeprefix("#")
            if not self.create_channels or not _CHANNEL_NAME.fullmatch(name):
                raise _SlackError("channel_not_found")
            if thread_ts is not None:
                raise _SlackError("thread_not_found")
            channel = self._channels[self.add_channel(name)]
        if thread_ts is None:
            return channel, None
        parent_ts = self._parent_ts(channel, thread_ts)
        if parent_ts is None:
            raise _SlackError("thread_not_found")
        return channel, parent_ts

    def _lookup_channel(self, ref: str) -> _Channel | None:
        if ref in self._channels:
            return self._channels[ref]
        channel_id = self._channel_ids.get(ref.removeprefix("#"))
        return None if channel_id is None else self._channels[channel_id]

    def _known_channel(self, ref: str) -> _Channel:
        channel = self._lookup_channel(ref)
        if channel is None:
            known = ", ".join(f"#{c.name}" for c in self._channels.values()) or "none"
            raise KeyError(f"no channel {ref!r} in the Slack sandbox (channels: {known})")
        return channel

    def _writable_channel(self, ref: str) -> _Channel:
        channel = self._lookup_channel(ref)
        return channel if channel is not None else self._channels[self.add_channel(ref)]

    def _channel_param(self, params: _Params) -> _Channel:
        channel = self._channels.get(params.text("channel"))
        if channel is None:
            raise _SlackError("channel_not_found")
        return channel

    def _message(self, channel: _Channel, ts: str) -> Payload:
        message = channel.messages.get(ts)
        if message is None:
            raise _SlackError("message_not_found")
        return message

    def _stored_message(self, channel: _Channel, ts: str) -> Payload:
        message = channel.messages.get(ts)
        if message is None:
            raise LookupError(f"no message {ts} in #{channel.name}")
        return message

    def _parent_ts(self, channel: _Channel, ts: str) -> str | None:
        """The thread parent of ``ts`` (itself for a top-level message), None if unknown."""
        message = channel.messages.get(ts)
        if message is None:
            return None
        return str(message.get("thread_ts", ts))

    def _replies(self, channel: _Channel, parent_ts: str) -> list[Payload]:
        return [
            m
            for m in channel.messages.values()
            if m.get("thread_ts") == parent_ts and m["ts"] != parent_ts
        ]

    def _bot_message(self, text: str, blocks: list[Payload] | None, metadata: Any) -> Payload:
        message: Payload = {
            "user": self.bot_user_id,
            "type": "message",
            "ts": self._next_ts(),
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": text,
            "team": self.team_id,
            "bot_profile": {
                "id": self.bot_id,
                "app_id": self.app_id,
                "name": self.bot_name,
                "deleted": False,
                "team_id": self.team_id,
            },
        }
        if blocks:
            message["blocks"] = blocks
        if metadata:
            message["metadata"] = metadata
        return message

    def _store(self, channel: _Channel, message: Payload, parent_ts: str | None) -> None:
        if parent_ts is not None:
            message["thread_ts"] = parent_ts
            message["parent_user_id"] = channel.messages[parent_ts].get("user", "")
        channel.messages[message["ts"]] = message
        _join(channel, message["user"])
        self._notify()

    def _remove_message(self, channel: _Channel, ts: str) -> None:
        message = channel.messages.get(ts)
        if message is None:
            return
        if _is_parent(message) and self._replies(channel, ts):
            # Slack keeps a deleted parent as a tombstone so that its thread stays readable.
            channel.messages[ts] = {
                "type": "message",
                "subtype": "tombstone",
                "text": "This message was deleted.",
                "user": "USLACKBOT",
                "hidden": True,
                "ts": ts,
                "thread_ts": ts,
            }
        else:
            del channel.messages[ts]

    def _show_ephemeral(
        self,
        channel: _Channel,
        user: str,
        text: str,
        blocks: list[Payload] | None,
        thread_ts: str | None,
    ) -> Payload:
        shown: Payload = {
            "type": "message",
            "channel": channel.id,
            "user": user,
            "ts": self._next_ts(),
            "text": text,
            "bot_id": self.bot_id,
        }
        if blocks:
            shown["blocks"] = blocks
        if thread_ts:
            shown["thread_ts"] = thread_ts
        self._ephemeral.setdefault(user, []).append(shown)
        self._notify()
        return shown

    def _wire(self, channel: _Channel, message: Payload, *, with_metadata: bool) -> Payload:
        """A stored message as Slack returns it, with its thread summary when it has replies."""
        wire = copy.deepcopy(message)
        if not with_metadata:
            wire.pop("metadata", None)
        if _is_parent(message):
            replies = self._replies(channel, message["ts"])
            if replies:
                users = list(dict.fromkeys(str(r.get("user", "")) for r in replies))
                wire["thread_ts"] = message["ts"]
                wire["reply_count"] = len(replies)
                wire["reply_users_count"] = len(users)
                wire["latest_reply"] = replies[-1]["ts"]
                wire["reply_users"] = users
                wire["is_locked"] = False
                wire["subscribed"] = False
        return wire

    def _channel_object(self, channel: _Channel) -> Payload:
        return {
            "id": channel.id,
            "name": channel.name,
            "name_normalized": channel.name,
            "is_channel": True,
            "is_group": False,
            "is_im": False,
            "is_mpim": False,
            "is_private": False,
            "is_archived": False,
            "is_general": False,
            "is_shared": False,
            "is_ext_shared": False,
            "is_org_shared": False,
            "is_member": self.bot_user_id in channel.members,
            "created": channel.created,
            "creator": self.bot_user_id,
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
            "num_members": len(channel.members),
        }

    def _new_file(self, name: str, user: str, mimetype: str = "") -> _File:
        guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
        stored = _File(
            id=self._new_id("F"),
            name=name,
            title=name,
            user=user,
            created=int(self._clock()),
            mimetype=mimetype or guessed,
        )
        self._files[stored.id] = stored
        return stored

    def _user_file(self, user: str, channel: _Channel, upload: SandboxFile) -> Payload:
        stored = self._new_file(upload.name, user, upload.mimetype)
        stored.content = upload.content
        stored.channels.append(channel.id)
        return self._file_object(stored)

    def _file_object(self, stored: _File) -> Payload:
        """A file as Slack describes it in messages, events and ``files.info``."""
        name = quote(stored.name, safe="")
        private = f"{self.url}files-pri/{self.team_id}-{stored.id}/"
        permalink = f"https://{self.team_domain}.slack.com/files/{stored.user}/{stored.id}/"
        extension = stored.name.rpartition(".")[2].lower() if "." in stored.name else "binary"
        return {
            "id": stored.id,
            "created": stored.created,
            "timestamp": stored.created,
            "name": stored.name,
            "title": stored.title,
            "mimetype": stored.mimetype,
            "filetype": extension,
            "pretty_type": extension.upper(),
            "user": stored.user,
            "user_team": self.team_id,
            "editable": False,
            "size": len(stored.content or b""),
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": True,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": private + name,
            "url_private_download": f"{private}download/{name}",
            "permalink": permalink + name,
            "channels": list(dict.fromkeys(stored.channels)),
            "groups": [],
            "ims": [],
            "has_rich_preview": False,
            "file_access": "visible",
        }

    def _find_message(self, channel: _Channel, user: str, ts: str) -> tuple[Payload, bool]:
        """The message with ``ts`` in a channel, or shown to ``user`` only; and if ephemeral."""
        if ts in channel.messages:
            return self._wire(channel, channel.messages[ts], with_metadata=False), False
        for shown in self._ephemeral.get(user, []):
            if shown["ts"] == ts and shown["channel"] == channel.id:
                return copy.deepcopy(shown), True
        raise LookupError(f"no message {ts} in #{channel.name} that {user} can see")

    def _new_interaction(self, interaction: _Interaction, kind: str) -> tuple[str, str]:
        """A response URL and a trigger id for a click or a command."""
        key = f"{kind}-{secrets.token_urlsafe(12)}"
        self._interactions[key] = interaction
        trigger_id = f"{int(self._clock() * 1000)}.{self.team_id}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = False
        return f"{self.url}response/{key}", trigger_id

    def _new_id(self, prefix: str) -> str:
        number = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = number
        return f"{prefix}{number:04d}"

    def _next_ts(self) -> str:
        """A message ts: the clock in microseconds, and always later than the one before."""
        now = int(self._clock() * 1_000_000)
        self._last_ts_us = max(now, self._last_ts_us + 1)
        seconds, micros = divmod(self._last_ts_us, 1_000_000)
        return f"{seconds}.{micros:06d}"

    def _notify(self) -> None:
        # Wake everyone in wait_until; later waiters wait on a fresh event.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class SlackEvents:
    """Delivers events, clicks and slash commands to the service, signed as Slack signs them."""

    def __init__(
        self,
        sandbox: SlackSandbox,
        *,
        events_url: str,
        signing_secret: str,
        interactivity_url: str = "",
        commands_url: str = "",
        verification_token: str = "sandbox-verification-token",
        clock: Callable[[], float] = time.time,
    ) -> None:
        for url in filter(None, (events_url, interactivity_url, commands_url)):
            _require_loopback_url(url)
        self.sandbox = sandbox
        self.events_url = events_url
        self.interactivity_url = interactivity_url or events_url
        self.commands_url = commands_url or events_url
        self.verification_token = verification_token
        self._verifier = SignatureVerifier(signing_secret)
        self._clock = clock

    async def deliver(
        self,
        url: str,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        retry_num: int = 0,
    ) -> ServiceResponse:
        """POST ``body`` to ``url`` with Slack's headers; ``timestamp`` makes a stale request."""
        _require_loopback_url(url)
        stamp = str(int(self._clock()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": content_type,
            "User-Agent": _USER_AGENT,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": self.signature(stamp, body),
        }
        if retry_num:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, data=body.encode(), headers=headers) as response,
        ):
            text = await response.text()
            return ServiceResponse(response.status, text, response.content_type)

    def signature(self, timestamp: str, body: str) -> str:
        """The ``X-Slack-Signature`` for a body sent at ``timestamp``."""
        signature = self._verifier.generate_signature(timestamp=timestamp, body=body)
        if signature is None:
            raise ValueError("a request timestamp is needed to sign a request")
        return signature

    def event_callback(self, event: Payload) -> Payload:
        """The envelope the Events API wraps every event in."""
        event_time = int(float(event.get("event_ts") or self._clock()))
        return {
            "token": self.verification_token,
            "team_id": self.sandbox.team_id,
            "context_team_id": self.sandbox.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.sandbox.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{secrets.token_hex(5).upper()}",
            "event_time": event_time,
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.sandbox.team_id,
                    "user_id": self.sandbox.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{secrets.token_urlsafe(24)}",
        }

    def message_event(self, channel: str, ts: str) -> Payload:
        """The ``message`` event Slack sends for a message recorded in the sandbox."""
        found = self.sandbox._known_channel(channel)
        stored = self.sandbox._stored_message(found, ts)
        # The event is sent as the message is posted: no reactions or thread summary yet.
        event = {
            k: copy.deepcopy(v) for k, v in stored.items() if k not in ("reactions", "metadata")
        }
        event.update({"channel": found.id, "event_ts": event["ts"], "channel_type": "channel"})
        return event

    def url_verification(self, challenge: str) -> Payload:
        """The request Slack sends when the events URL is set in the app's settings."""
        return {
            "token": self.verification_token,
            "challenge": challenge,
            "type": "url_verification",
        }

    def block_actions(self, channel: str, message_ts: str, user: str, action_id: str) -> Payload:
        """The ``block_actions`` payload of ``user`` clicking a button on a sandbox message."""
        found = self.sandbox._known_channel(channel)
        message, _ = self.sandbox._find_message(found, user, message_ts)
        block_id, button = _find_button(message.get("blocks", []), action_id)
        action: Payload = {
            "action_id": action_id,
            "block_id": block_id,
            "text": button.get("text", {"type": "plain_text", "text": ""}),
            "value": button.get("value", ""),
            "type": "button",
            "action_ts": self.sandbox._next_ts(),
        }
        if "style" in button:
            action["style"] = button["style"]
        return self._block_actions(channel, message_ts, user, action, {})

    def _block_actions(
        self, channel: str, message_ts: str, user: str, action: Payload, state: Payload
    ) -> Payload:
        sandbox = self.sandbox
        found = sandbox._known_channel(channel)
        message, ephemeral = sandbox._find_message(found, user, message_ts)
        # Only a reply is "in" a thread; a parent's thread_ts is its own ts.
        thread_ts = message.get("thread_ts") if message.get("thread_ts") != message_ts else None
        response_url, trigger_id = sandbox._new_interaction(
            _Interaction(found.id, user, message_ts, thread_ts, ephemeral), "actions"
        )
        container: Payload = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": found.id,
            "is_ephemeral": ephemeral,
        }
        if thread_ts:
            container["thread_ts"] = thread_ts
        payload: Payload = {
            "type": "block_actions",
            "user": self._user_summary(user),
            "api_app_id": sandbox.app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": trigger_id,
            "team": {"id": sandbox.team_id, "domain": sandbox.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": found.id, "name": found.name},
            "state": {"values": state},
            "response_url": response_url,
            "actions": [action],
        }
        # Slack leaves the message out when it was ephemeral: only its container is known.
        if not ephemeral:
            payload["message"] = message
        return payload

    def select_actions(
        self, channel: str, message_ts: str, user: str, action_id: str, value: str
    ) -> Payload:
        """The ``block_actions`` payload of ``user`` picking ``value`` in a static select menu."""
        sandbox = self.sandbox
        found = sandbox._known_channel(channel)
        message, _ = sandbox._find_message(found, user, message_ts)
        block_id, select = _find_element(message.get("blocks", []), action_id, "static_select")
        option = next((o for o in select.get("options", []) if o.get("value") == value), None)
        if option is None:
            raise LookupError(f"the menu {action_id!r} has no option {value!r}")
        action: Payload = {
            "type": "static_select",
            "action_id": action_id,
            "block_id": block_id,
            "selected_option": copy.deepcopy(option),
            "placeholder": select.get("placeholder", {"type": "plain_text", "text": ""}),
            "action_ts": sandbox._next_ts(),
        }
        state = {block_id: {action_id: {"type": "static_select", "selected_option": option}}}
        return self._block_actions(channel, message_ts, user, action, state)

    def message_action(self, channel: str, message_ts: str, user: str, callback_id: str) -> Payload:
        """The payload of ``user`` running the message shortcut ``callback_id`` on a message."""
        sandbox = self.sandbox
        found = sandbox._known_channel(channel)
        message, _ = sandbox._find_message(found, user, message_ts)
        thread_ts = message.get("thread_ts") if message.get("thread_ts") != message_ts else None
        response_url, trigger_id = sandbox._new_interaction(
            _Interaction(found.id, user, None, thread_ts, False), "actions"
        )
        return {
            "type": "message_action",
            "token": self.verification_token,
            "action_ts": sandbox._next_ts(),
            "team": {"id": sandbox.team_id, "domain": sandbox.team_domain},
            "user": self._user_summary(user),
            "channel": {"id": found.id, "name": found.name},
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": trigger_id,
            "response_url": response_url,
            "message_ts": message_ts,
            "message": message,
        }

    def view_submission(self, view_id: str, user: str, chosen: Mapping[str, str]) -> Payload:
        """The payload of ``user`` submitting an open modal; ``chosen`` maps block id to value.

        A static select gets the option with that value, a text input the text itself.
        """
        sandbox = self.sandbox
        view = sandbox._views_by_id.get(view_id)
        if view is None:
            raise LookupError(f"no view {view_id!r} was opened")
        values: Payload = {}
        for block in view.get("blocks", []):
            element = block.get("element")
            if block.get("type") != "input" or not isinstance(element, dict):
                continue
            value = chosen.get(str(block["block_id"]))
            state: Payload = {"type": element["type"]}
            if element["type"] == "static_select":
                options = element.get("options", [])
                picked = next((o for o in options if o.get("value") == value), None)
                if value is not None and picked is None:
                    raise LookupError(f"the menu in {block['block_id']!r} has no {value!r}")
                state["selected_option"] = copy.deepcopy(picked)
            else:
                state["value"] = value
            values[str(block["block_id"])] = {str(element["action_id"]): state}
        submitted = copy.deepcopy(view)
        submitted["state"] = {"values": values}
        submitted.pop("user_id", None)
        _, trigger_id = sandbox._new_interaction(
            _Interaction(next(iter(sandbox._channels)), user, None, None, True), "views"
        )
        return {
            "type": "view_submission",
            "team": {"id": sandbox.team_id, "domain": sandbox.team_domain},
            "user": self._user_summary(user),
            "api_app_id": sandbox.app_id,
            "token": self.verification_token,
            "trigger_id": trigger_id,
            "view": submitted,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def app_home_opened(self, user: str) -> Payload:
        """The ``app_home_opened`` event of ``user`` opening the app's Home tab."""
        return {
            "type": "app_home_opened",
            "user": user,
            "channel": f"D{user.removeprefix('U')[:10]}",
            "tab": "home",
            "event_ts": self.sandbox._next_ts(),
        }

    def slash_command(self, command: str, text: str, *, user: str, channel: str) -> dict[str, str]:
        """The form fields Slack posts for ``user`` typing ``command text`` in a channel."""
        sandbox = self.sandbox
        found = sandbox._known_channel(channel)
        response_url, trigger_id = sandbox._new_interaction(
            _Interaction(found.id, user, None, None, False), "commands"
        )
        return {
            "token": self.verification_token,
            "team_id": sandbox.team_id,
            "team_domain": sandbox.team_domain,
            "channel_id": found.id,
            "channel_name": found.name,
            "user_id": user,
            "user_name": self._user_summary(user)["username"],
            "command": command,
            "text": text,
            "api_app_id": sandbox.app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id,
        }

    async def send_event(
        self, event: Payload, *, timestamp: int | None = None, retry_num: int = 0
    ) -> ServiceResponse:
        """Deliver an event in its ``event_callback`` envelope."""
        body = json.dumps(self.event_callback(event))
        return await self.deliver(
            self.events_url, body, "application/json", timestamp=timestamp, retry_num=retry_num
        )

    async def send_message_event(
        self, channel: str, ts: str, *, timestamp: int | None = None
    ) -> ServiceResponse:
        """Deliver the ``message`` event of a message recorded in the sandbox."""
        return await self.send_event(self.message_event(channel, ts), timestamp=timestamp)

    async def send_url_verification(
        self, challenge: str = "", *, timestamp: int | None = None
    ) -> ServiceResponse:
        """Deliver a ``url_verification`` challenge; the service must echo it."""
        body = json.dumps(self.url_verification(challenge or secrets.token_urlsafe(24)))
        return await self.deliver(self.events_url, body, "application/json", timestamp=timestamp)

    async def click_button(
        self,
        channel: str,
        message_ts: str,
        user: str,
        action_id: str,
        *,
        timestamp: int | None = None,
    ) -> ServiceResponse:
        """Deliver ``user`` clicking the button ``action_id`` on a message (form ``payload=``)."""
        payload = self.block_actions(channel, message_ts, user, action_id)
        return await self._send_payload(payload, timestamp)

    async def choose_option(
        self,
        channel: str,
        message_ts: str,
        user: str,
        action_id: str,
        value: str,
        *,
        timestamp: int | None = None,
    ) -> ServiceResponse:
        """Deliver ``user`` picking ``value`` in the menu ``action_id`` on a message."""
        payload = self.select_actions(channel, message_ts, user, action_id, value)
        return await self._send_payload(payload, timestamp)

    async def use_message_shortcut(
        self,
        channel: str,
        message_ts: str,
        user: str,
        callback_id: str,
        *,
        timestamp: int | None = None,
    ) -> ServiceResponse:
        """Deliver ``user`` running a message shortcut on a message."""
        payload = self.message_action(channel, message_ts, user, callback_id)
        return await self._send_payload(payload, timestamp)

    async def submit_view(
        self,
        view_id: str,
        user: str,
        chosen: Mapping[str, str],
        *,
        timestamp: int | None = None,
    ) -> ServiceResponse:
        """Deliver ``user`` submitting a modal; the answer may carry ``response_action``."""
        payload = self.view_submission(view_id, user, chosen)
        return await self._send_payload(payload, timestamp)

    async def open_app_home(self, user: str, *, timestamp: int | None = None) -> ServiceResponse:
        """Deliver ``app_home_opened`` for ``user``."""
        return await self.send_event(self.app_home_opened(user), timestamp=timestamp)

    async def _send_payload(self, payload: Payload, timestamp: int | None) -> ServiceResponse:
        body = urlencode({"payload": json.dumps(payload)})
        return await self.deliver(
            self.interactivity_url, body, "application/x-www-form-urlencoded", timestamp=timestamp
        )

    async def send_slash_command(
        self,
        command: str,
        text: str = "",
        *,
        user: str,
        channel: str,
        timestamp: int | None = None,
    ) -> ServiceResponse:
        """Deliver a slash command; an immediate answer is shown to the user, as Slack does."""
        fields = self.slash_command(command, text, user=user, channel=channel)
        body = urlencode(fields)
        response = await self.deliver(
            self.commands_url, body, "application/x-www-form-urlencoded", timestamp=timestamp
        )
        if response.status == 200 and response.body.strip():
            answer = _command_answer(response)
            interaction = _Interaction(fields["channel_id"], user, None, None, False)
            # Slack shows the user an error instead of a malformed answer; so nothing is shown.
            with contextlib.suppress(_SlackError):
                self.sandbox._answer_interaction(interaction, answer)
        return response

    async def post_agent_reply(
        self,
        channel: str,
        thread_ts: str | None,
        user: str,
        text: str,
        files: Sequence[SandboxFile] = (),
        *,
        timestamp: int | None = None,
    ) -> AgentReply:
        """Record ``user`` writing in a thread, as Slack would, and deliver its event."""
        message = self.sandbox.post_as_user(channel, user, text, thread_ts=thread_ts, files=files)
        response = await self.send_message_event(channel, message["ts"], timestamp=timestamp)
        return AgentReply(message, response)

    async def edit_agent_reply(
        self, channel: str, ts: str, text: str, *, timestamp: int | None = None
    ) -> ServiceResponse:
        """Record a person editing their message and deliver ``message_changed``."""
        before, after = self.sandbox.edit_as_user(channel, ts, text)
        channel_id = self.sandbox.channel_id(channel)
        edited_ts = after["edited"]["ts"]
        event: Payload = {
            "type": "message",
            "subtype": "message_changed",
            "message": {**after, "source_team": self.sandbox.team_id},
            "previous_message": before,
            "channel": channel_id,
            "hidden": True,
            "ts": edited_ts,
            "event_ts": edited_ts,
            "channel_type": "channel",
        }
        return await self.send_event(event, timestamp=timestamp)

    async def delete_agent_reply(
        self, channel: str, ts: str, *, timestamp: int | None = None
    ) -> ServiceResponse:
        """Record a person deleting their message and deliver ``message_deleted``."""
        before = self.sandbox.delete_as_user(channel, ts)
        deleted_at = self.sandbox._next_ts()
        event: Payload = {
            "type": "message",
            "subtype": "message_deleted",
            "previous_message": before,
            "channel": self.sandbox.channel_id(channel),
            "hidden": True,
            "deleted_ts": ts,
            "ts": deleted_at,
            "event_ts": deleted_at,
            "channel_type": "channel",
        }
        return await self.send_event(event, timestamp=timestamp)

    def _user_summary(self, user: str) -> Payload:
        name = str(self.sandbox._users.get(user, {}).get("name", user))
        return {"id": user, "username": name, "name": name, "team_id": self.sandbox.team_id}


def _require_loopback(host: str, *, allow_localhost: bool = False) -> None:
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = allow_localhost and host == "localhost"
    if not loopback:
        raise ValueError(f"the Slack sandbox only uses loopback addresses like 127.0.0.1: {host!r}")


def _require_loopback_url(url: str) -> None:
    _require_loopback(urlsplit(url).hostname or "", allow_localhost=True)


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Query and body arguments merged, as Slack accepts them (query, form, or JSON body)."""
    params: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return params
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise _SlackError("invalid_json") from None
        if not isinstance(body, dict):
            raise _SlackError("invalid_json")
        params.update(body)
    else:
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def _bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _uploaded_bytes(request: web.Request) -> bytes:
    """The file body of an upload: raw bytes, as slack_sdk sends them, or a multipart file."""
    if request.content_type != "multipart/form-data":
        return await request.read()
    form = await request.post()
    for value in form.values():
        if isinstance(value, web.FileField):
            return value.file.read()
    return b""


def _failure_response(status: int, retry_after: int, error: str) -> web.Response:
    if status == 429:
        return web.json_response(
            {"ok": False, "error": error or "ratelimited"},
            status=429,
            headers={"Retry-After": str(retry_after)},
        )
    default = "fatal_error" if status == 200 else "internal_error"
    return web.json_response({"ok": False, "error": error or default}, status=status)


def _message_content(params: _Params) -> tuple[str, list[Payload] | None]:
    """Text and blocks of a post, refused where Slack refuses them."""
    text = params.text("text")
    blocks = _checked_blocks(params.decoded("blocks", "invalid_blocks_format"))
    if not text and not blocks and not params.optional("attachments"):
        raise _SlackError("no_text")
    if len(text) > _MAX_TEXT:
        raise _SlackError("msg_too_long")
    return text, blocks


def _metadata(params: _Params) -> Payload | None:
    metadata = params.decoded("metadata", "invalid_metadata_format")
    if metadata is None:
        return None
    if (
        not isinstance(metadata, dict)
        or not isinstance(metadata.get("event_type"), str)
        or not isinstance(metadata.get("event_payload"), dict)
    ):
        raise _SlackError("invalid_metadata_format")
    return {"event_type": metadata["event_type"], "event_payload": metadata["event_payload"]}


def _checked_blocks(blocks: Any) -> list[Payload] | None:
    """Blocks as given, or ``invalid_blocks`` where Slack's block limits would refuse them."""
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > _MAX_BLOCKS:
        raise _SlackError("invalid_blocks")
    block_ids: set[str] = set()
    for block in blocks:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _SlackError("invalid_blocks")
        block_id = block.get("block_id")
        if block_id is not None:
            if block_id in block_ids or len(str(block_id)) > _MAX_ID:
                raise _SlackError("invalid_blocks")
            block_ids.add(str(block_id))
        _check_block(block)
    stored = copy.deepcopy(blocks)
    # Slack names every block and interactive element the poster left unnamed.
    for block in stored:
        block.setdefault("block_id", secrets.token_urlsafe(3))
        for element in _elements(block):
            element.setdefault("action_id", secrets.token_urlsafe(3))
    return stored


def _check_block(block: Payload) -> None:
    kind = block["type"]
    if kind == "section":
        if len(_text_of(block.get("text"))) > _MAX_SECTION_TEXT:
            raise _SlackError("invalid_blocks")
        fields = block.get("fields", [])
        if len(fields) > _MAX_FIELDS or any(len(_text_of(f)) > _MAX_FIELD_TEXT for f in fields):
            raise _SlackError("invalid_blocks")
    elif kind == "header" and len(_text_of(block.get("text"))) > _MAX_HEADER_TEXT:
        raise _SlackError("invalid_blocks")
    for element in _elements(block):
        _check_element(element)


def _elements(block: Payload) -> list[Payload]:
    """The interactive elements of a block: an actions block's, or a section's accessory."""
    elements = list(block.get("elements", [])) if block.get("type") == "actions" else []
    if isinstance(block.get("accessory"), dict):
        elements.append(block["accessory"])
    return elements


def _check_element(element: Payload) -> None:
    if len(str(element.get("action_id", ""))) > _MAX_ID:
        raise _SlackError("invalid_blocks")
    if element.get("type") == "button" and (
        len(_text_of(element.get("text"))) > _MAX_BUTTON_TEXT
        or len(str(element.get("value", ""))) > _MAX_BUTTON_VALUE
    ):
        raise _SlackError("invalid_blocks")


def _text_of(text_object: Any) -> str:
    return str(text_object.get("text", "")) if isinstance(text_object, dict) else ""


def _window(messages: list[Payload], params: _Params) -> list[Payload]:
    """Messages between ``oldest`` and ``latest``, exclusive unless ``inclusive``."""
    oldest = _ts_value(params.text("oldest", "0"))
    latest = _ts_value(params.text("latest")) if params.optional("latest") else None
    inclusive = params.flag("inclusive")

    def inside(message: Payload) -> bool:
        ts = _ts_value(message["ts"])
        after = ts >= oldest if inclusive else ts > oldest
        before = latest is None or (ts <= latest if inclusive else ts < latest)
        return after and before

    return [m for m in messages if inside(m)]


def _ts_value(ts: str) -> Decimal:
    # Decimal, not float: a float cannot tell apart two ts a microsecond apart.
    try:
        return Decimal(ts)
    except InvalidOperation:
        raise _SlackError("invalid_ts_oldest") from None


def _page(items: list[Any], params: _Params, default_limit: int) -> tuple[list[Any], str]:
    """One page of ``items`` and the cursor of the next ("" on the last page)."""
    start = 0
    cursor = params.text("cursor")
    if cursor:
        try:
            start = int(base64.b64decode(cursor).decode().removeprefix("offset:"))
        except ValueError:
            raise _SlackError("invalid_cursor") from None
    limit = params.integer("limit", default_limit) or default_limit
    end = start + limit
    next_cursor = base64.b64encode(f"offset:{end}".encode()).decode() if end < len(items) else ""
    return items[start:end], next_cursor


def _join(channel: _Channel, user: str) -> None:
    if user and user not in channel.members:
        channel.members.append(user)


def _is_parent(message: Payload) -> bool:
    return "thread_ts" not in message or message["thread_ts"] == message["ts"]


def _is_listed(message: Payload) -> bool:
    return _is_parent(message) or message.get("subtype") == "thread_broadcast"


def _replaced(message: Payload, text: str, blocks: list[Payload] | None) -> Payload:
    replaced = {**message, "text": text}
    replaced.pop("blocks", None)
    if blocks:
        replaced["blocks"] = blocks
    return replaced


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _rich_text_block(text: str) -> Payload:
    return {
        "type": "rich_text",
        "block_id": secrets.token_urlsafe(4),
        "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}],
    }


def _find_button(blocks: list[Payload], action_id: str) -> tuple[str, Payload]:
    """The block id and element of the button ``action_id`` in a message's blocks."""
    return _find_element(blocks, action_id, "button")


def _find_element(blocks: list[Payload], action_id: str, kind: str) -> tuple[str, Payload]:
    """The block id and element of the ``kind`` element ``action_id`` in a message's blocks."""
    for block in blocks:
        for element in _elements(block):
            if element.get("type") == kind and element.get("action_id") == action_id:
                return str(block.get("block_id", "")), element
    raise LookupError(f"no {kind} with action_id {action_id!r} on that message")


def _command_answer(response: ServiceResponse) -> Payload:
    """A slash command's immediate answer: JSON like a response URL body, or plain text."""
    if response.content_type == "application/json":
        answer = response.json()
        if isinstance(answer, dict):
            return answer
    return {"text": response.body}


def _body_lines(message: Payload) -> list[str]:
    """What a person sees of a message: its blocks if it has any, else its text."""
    if message.get("subtype") == "tombstone":
        return ["(deleted)"]
    blocks = message.get("blocks") or []
    lines = [line for block in blocks for line in _block_lines(block)]
    if not lines:
        lines = html.unescape(str(message.get("text", ""))).splitlines()
    return lines


def _block_lines(block: Payload) -> list[str]:
    kind = block.get("type")
    if kind in ("section", "header"):
        lines = _text_of(block.get("text")).splitlines()
        fields = [_text_of(f) for f in block.get("fields", [])]
        if fields:
            lines.append(" | ".join(fields))
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("type") == "button":
            lines.append(f"[{_text_of(accessory.get('text'))}]")
        return lines
    if kind == "context":
        return [" | ".join(_text_of(e) or f"[{e.get('type')}]" for e in block.get("elements", []))]
    if kind == "actions":
        return [" ".join(_element_label(e) for e in block.get("elements", []))]
    if kind == "divider":
        return ["---"]
    if kind == "rich_text":
        return _rich_text(block).splitlines()
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    return [f"[{kind} block]"]


def _element_label(element: Payload) -> str:
    if element.get("type") == "button":
        return f"[{_text_of(element.get('text'))}]"
    return f"[{_text_of(element.get('placeholder')) or element.get('type')} v]"


def _rich_text(element: Payload) -> str:
    kind = element.get("type")
    if kind == "text":
        return str(element.get("text", ""))
    if kind == "link":
        return str(element.get("text") or element.get("url", ""))
    if kind == "user":
        return f"@{element.get('user_id', '')}"
    if kind == "emoji":
        return f":{element.get('name', '')}:"
    parts = [_rich_text(e) for e in element.get("elements", [])]
    return ("\n" if kind == "rich_text" else "").join(parts)
