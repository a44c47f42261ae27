"""Slack to the core: thread messages become replies, the Undo button cancels one.

Works the same over HTTP (requests verified by signature, see adapters/web.py) and Socket Mode.
Events are processed before they are acknowledged, so an agent's reply is stored before Slack
hears "ok"; Slack's own retry of a slow event is recognised and not stored twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.logger import get_bolt_logger
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.chat import SlackChat
from adapters.slack.render import plain_text
from bot.errors import DeliveryError
from bot.relay import Outcome, Relay
from bot.shapes import AgentMessage, Attachment

log = logging.getLogger(__name__)

# Message subtypes that are a person writing; edits, deletions and joins are not replies.
_REPLY_SUBTYPES = {None, "file_share", "thread_broadcast"}


class AgentDirectory:
    """Display names of Slack users (users.info), cached; replies go out under them."""

    def __init__(
        self,
        client: AsyncWebClient,
        overrides: dict[str, str] | None = None,
        *,
        stored_override: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        self.client = client
        self.overrides = dict(overrides or {})
        # The name an admin set with the slash command; asked every time, so it is never stale.
        self.stored_override = stored_override
        self._names: dict[str, str] = {}

    async def name_of(self, user_id: str) -> str:
        if user_id in self.overrides:
            return self.overrides[user_id]
        if self.stored_override is not None:
            stored = await self.stored_override(user_id)
            if stored:
                return stored
        if user_id not in self._names:
            try:
                response = await self.client.users_info(user=user_id)
            except SlackApiError:
                return ""
            user = response.get("user") or {}
            profile = user.get("profile") or {}
            self._names[user_id] = str(
                profile.get("display_name") or user.get("real_name") or user.get("name") or ""
            )
        return self._names[user_id]


# bolt answers 200 with this text when its auth.test call fails, so Slack would never send the
# event again; _AsksAgainWhenSlackIsDown turns it into a 503 that Slack retries.
_AUTHORIZE_FAILED = "switchboard: Slack's auth.test failed; send this again"


class _AsksAgainWhenSlackIsDown(AsyncApp):
    """The bolt app, but an event that could not be authorised is refused, not dropped.

    bolt checks the token with auth.test before the first listener runs; when Slack fails that
    call (an outage, a 429) bolt acknowledges the request anyway, and the agent's reply in it
    would be lost. A 503 makes Slack retry over HTTP; in Socket Mode an unacknowledged
    envelope is delivered again.
    """

    async def async_dispatch(self, req: AsyncBoltRequest) -> BoltResponse:
        response = await super().async_dispatch(req)
        if response.status == 200 and response.body == _AUTHORIZE_FAILED:
            return BoltResponse(status=503, body=_AUTHORIZE_FAILED)
        return response


class _TokenFromTheClient(logging.Filter):
    """Drops bolt's warning that its ``token`` is unused when it is given a ``client``.

    bolt reads SLACK_BOT_TOKEN from the environment by itself and warns that the client wins
    over it; the client carries that very token, so the warning only reads like a config problem.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


_TOKEN_FROM_THE_CLIENT = _TokenFromTheClient()


def build_bolt_app(
    *,
    client: AsyncWebClient,
    signing_secret: str,
    relay: Relay,
    chat: SlackChat,
    directory: AgentDirectory,
    extend: Callable[[AsyncApp], None] | None = None,
) -> AsyncApp:
    """The bolt app with Switchboard's listeners; ``extend`` adds more (the team workflow)."""
    get_bolt_logger(AsyncApp).addFilter(_TOKEN_FROM_THE_CLIENT)  # added once however often called
    app = _AsksAgainWhenSlackIsDown(
        client=client,
        signing_secret=signing_secret,
        process_before_response=True,
        user_facing_authorize_error_message=_AUTHORIZE_FAILED,
    )
    background: set[asyncio.Task[None]] = set()

    @app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        if event.get("subtype") not in _REPLY_SUBTYPES or event.get("bot_id"):
            return
        thread_ts = event.get("thread_ts")
        if not thread_ts or not event.get("user"):
            return
        attachments = []
        for file in event.get("files") or []:
            url = file.get("url_private_download") or file.get("url_private")
            if url:
                data = await chat.download(url)
                attachments.append(
                    Attachment(
                        filename=str(file.get("name") or "file"),
                        content_type=str(file.get("mimetype") or "application/octet-stream"),
                        data=data,
                    )
                )
        message = AgentMessage(
            chat_channel=str(event["channel"]),
            thread_ts=str(thread_ts),
            ts=str(event["ts"]),
            user_id=str(event["user"]),
            user_name=await directory.name_of(str(event["user"])),
            text=plain_text(str(event.get("text") or "")),
            attachments=tuple(attachments),
        )
        result = await relay.on_agent_message(message)
        if result.outcome is Outcome.QUEUED:
            # Shown after Slack has its answer: the reply is stored, the rest is decoration.
            task = asyncio.create_task(relay.show_queued(message, result))
            background.add(task)
            task.add_done_callback(background.discard)

    @app.action("switchboard_undo")
    async def on_undo(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        action = body["actions"][0]
        user = body["user"]["id"]
        answer = await relay.undo(str(action.get("value", "")), user)
        channel = (body.get("channel") or {}).get("id", "")
        thread_ts = (body.get("container") or {}).get("thread_ts", "")
        if channel:
            try:
                await chat.tell(channel, user, answer, thread_ts)
            except DeliveryError as exc:
                log.warning("could not answer an undo", extra={"reason": exc.reason})

    if extend is not None:
        extend(app)
    return app
