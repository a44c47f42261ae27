"""Slack as the core's ``ChatPort``: posts, lookups and reactions over the Web API."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.slack import render
from bot.errors import (
    BlockedDeliveryError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from bot.shapes import (
    Attachment,
    ConversationCard,
    CustomerPost,
    DeliveryState,
    SpikeAlert,
    ThreadErasure,
)

MARKER_EVENT = "switchboard_post"
_NOT_IN_CHANNEL = frozenset({"not_in_channel"})
_REACTION_DONE = frozenset({"already_reacted", "no_reaction"})
# A thread or message someone deleted (or a channel gone) has nothing left to erase.
_GONE = frozenset({"thread_not_found", "channel_not_found", "message_not_found"})
_FILE_GONE = frozenset({"file_not_found", "file_deleted"})
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
# Errors a person fixes (the token, its scopes, the channel, the bot's membership): work that
# carries a customer's message or a reply parks on them and goes on once they are fixed.
_BLOCKED = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "no_permission",
        "is_archived",
        "channel_not_found",
        "not_in_channel",
        "team_access_not_granted",
    }
)
# Errors no retry can fix: Slack rejects the message itself.
_PERMANENT = frozenset({"msg_too_long", "invalid_blocks", "no_text", "invalid_arguments"})
# Everything else (rate limits, 5xx, timeouts) is retried.

_FIX = {
    "invalid_auth": " (fix SLACK_BOT_TOKEN and restart)",
    "not_authed": " (set SLACK_BOT_TOKEN and restart)",
    "token_revoked": " (reinstall the app, set the new SLACK_BOT_TOKEN and restart)",
    "missing_scope": " (add the scope from config/slack-manifest.yml and reinstall the app)",
    "channel_not_found": " (create the channel or map the skill to another)",
    "not_in_channel": " (invite the app to the channel)",
    "is_archived": " (unarchive the channel or map the skill to another)",
}


def _translate(method: str, exc: Exception) -> DeliveryError:
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        error = str(exc.response.get("error", "")) if exc.response.data else ""
        if status == 429 or error == "ratelimited":
            retry_after = float(exc.response.headers.get("Retry-After", "1"))
            return TransientDeliveryError(f"Slack {method}: rate limited", retry_after)
        if error in _BLOCKED:
            return BlockedDeliveryError(f"Slack {method}: {error}{_FIX.get(error, '')}")
        if error in _PERMANENT:
            return PermanentDeliveryError(f"Slack {method}: {error}")
        return TransientDeliveryError(f"Slack {method}: {error or f'HTTP {status}'}")
    return TransientDeliveryError(f"Slack {method}: {type(exc).__name__}: {exc}")


class SlackChat:
    """Implements ``bot.ports.ChatPort`` with slack_sdk's ``AsyncWebClient``."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._channel_ids: dict[str, str] = {}
        self._own_ids: tuple[str, str] | None = None

    async def _call(self, method: str, **kwargs: Any) -> AsyncSlackResponse:
        response = await self._call_tolerating(method, frozenset(), **kwargs)
        assert response is not None
        return response

    async def _call_tolerating(
        self, method: str, tolerated: frozenset[str], **kwargs: Any
    ) -> AsyncSlackResponse | None:
        """Call ``method``; None when Slack answers one of the ``tolerated`` errors."""
        # The typed client methods know how each method wants its arguments (form or JSON).
        call = getattr(self.client, method.replace(".", "_"))
        try:
            response: AsyncSlackResponse = await call(**kwargs)
            return response
        except SlackApiError as exc:
            if exc.response.get("error") in tolerated:
                return None
            raise _translate(method, exc) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _translate(method, exc) from exc

    async def channel_id(self, name: str) -> str:
        """The id of a channel named in the config (ids are returned as they are)."""
        name = name.lstrip("#")
        if _CHANNEL_ID.match(name):
            return name
        if name not in self._channel_ids:
            await self._load_channels()
        if name not in self._channel_ids:
            # Parks: an admin can create the channel and nothing is lost.
            raise BlockedDeliveryError(
                f"Slack channel #{name} does not exist or the app cannot see it: create it "
                "and invite the Switchboard app, or map the skill to another channel",
                retry_after=60,
            )
        return self._channel_ids[name]

    async def _load_channels(self) -> None:
        cursor = ""
        while True:
            response = await self._call(
                "conversations.list",
                types="public_channel,private_channel",
                exclude_archived=True,
                limit=1000,
                cursor=cursor,
            )
            channels: list[dict[str, Any]] = response.get("channels", [])
            for channel in channels:
                self._channel_ids[channel["name"]] = channel["id"]
            cursor = (response.get("response_metadata") or {}).get("next_cursor", "")
            if not cursor:
                return

    async def _post(self, channel: str, **kwargs: Any) -> AsyncSlackResponse:
        kwargs.update(channel=channel, unfurl_links=False, unfurl_media=False)
        posted = await self._call_tolerating("chat.postMessage", _NOT_IN_CHANNEL, **kwargs)
        if posted is not None:
            return posted
        # A public channel the app was not invited to: join it and try once more.
        await self._call("conversations.join", channel=channel)
        return await self._call("chat.postMessage", **kwargs)

    @staticmethod
    def _metadata(marker: str) -> dict[str, Any]:
        return {"event_type": MARKER_EVENT, "event_payload": {"marker": marker}}

    async def post_root(self, chat_channel: str, card: ConversationCard, *, marker: str) -> str:
        text, blocks = render.root_message(card)
        response = await self._post(
            chat_channel, text=text, blocks=blocks, metadata=self._metadata(marker)
        )
        return str(response["ts"])

    async def update_root(self, chat_channel: str, ts: str, card: ConversationCard) -> None:
        text, blocks = render.root_message(card)
        await self._call("chat.update", channel=chat_channel, ts=ts, text=text, blocks=blocks)

    async def post_in_thread(
        self, chat_channel: str, thread_ts: str, post: CustomerPost, *, marker: str
    ) -> str:
        text, blocks = render.customer_message(post)
        return await self._post_marked(chat_channel, thread_ts, text, blocks, marker)

    async def _post_marked(
        self, chat_channel: str, thread_ts: str, text: str, blocks: list[Any], marker: str
    ) -> str:
        """Post blocks in a thread with ``marker``, for a retry's ``find_post``; returns the ts."""
        response = await self._post(
            chat_channel,
            thread_ts=thread_ts,
            text=text,
            blocks=blocks,
            metadata=self._metadata(marker),
        )
        return str(response["ts"])

    async def upload_files(
        self, chat_channel: str, thread_ts: str, attachments: Sequence[Attachment]
    ) -> None:
        """Upload attachments into a thread."""
        # The customer named the file: Slack shows its name and title like message text.
        uploads = [
            {
                "content": a.data,
                "filename": render.escape(a.filename),
                "title": render.escape(a.filename),
            }
            for a in attachments
        ]
        try:
            await self.client.files_upload_v2(
                channel=chat_channel, thread_ts=thread_ts, file_uploads=uploads
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _translate("files.upload", exc) from exc

    async def post_notice(
        self, chat_channel: str, thread_ts: str, text: str, *, marker: str = ""
    ) -> str:
        extra: dict[str, Any] = {"metadata": self._metadata(marker)} if marker else {}
        response = await self._post(chat_channel, thread_ts=thread_ts, text=text, **extra)
        return str(response["ts"])

    async def post_rating(
        self, chat_channel: str, thread_ts: str, rating: int, comment: str, *, marker: str
    ) -> str:
        text, blocks = render.rating(rating, comment)
        return await self._post_marked(chat_channel, thread_ts, text, blocks, marker)

    async def permalink(self, chat_channel: str, ts: str) -> str:
        response = await self._call("chat.getPermalink", channel=chat_channel, message_ts=ts)
        return str(response["permalink"])

    def mention(self, user_id: str) -> str:
        return render.mention(user_id)

    async def find_post(self, chat_channel: str, thread_ts: str | None, marker: str) -> str | None:
        if thread_ts is None:
            response = await self._call(
                "conversations.history", channel=chat_channel, include_all_metadata=True, limit=200
            )
        else:
            response = await self._call(
                "conversations.replies",
                channel=chat_channel,
                ts=thread_ts,
                include_all_metadata=True,
                limit=1000,
            )
        messages: list[dict[str, Any]] = response.get("messages", [])
        for message in messages:
            metadata = message.get("metadata") or {}
            if (
                metadata.get("event_type") == MARKER_EVENT
                and (metadata.get("event_payload") or {}).get("marker") == marker
            ):
                return str(message["ts"])
        return None

    async def show_delivery(self, chat_channel: str, ts: str, state: DeliveryState) -> None:
        for other, reaction in render.DELIVERY_REACTION.items():
            if other is not state:
                await self._react("reactions.remove", chat_channel, ts, reaction)
        await self._react("reactions.add", chat_channel, ts, render.DELIVERY_REACTION[state])

    async def _react(self, method: str, chat_channel: str, ts: str, name: str) -> None:
        # Adding a reaction that is there, or removing one that is not, is already done.
        await self._call_tolerating(
            method, _REACTION_DONE, channel=chat_channel, timestamp=ts, name=name
        )

    async def offer_undo(
        self, chat_channel: str, thread_ts: str, user_id: str, undo_token: str, seconds: float
    ) -> None:
        text, blocks = render.undo_message(seconds, undo_token)
        await self._call(
            "chat.postEphemeral",
            channel=chat_channel,
            thread_ts=thread_ts,
            user=user_id,
            text=text,
            blocks=blocks,
        )

    async def post_agent_copy(
        self, chat_channel: str, thread_ts: str, author_name: str, text: str
    ) -> str:
        fallback, blocks = render.agent_copy(author_name, text)
        response = await self._post(chat_channel, thread_ts=thread_ts, text=fallback, blocks=blocks)
        return str(response["ts"])

    async def tell(self, chat_channel: str, user_id: str, text: str, thread_ts: str = "") -> None:
        """Answer one person only (an ephemeral message)."""
        kwargs: dict[str, Any] = {"channel": chat_channel, "user": user_id, "text": text}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        await self._call("chat.postEphemeral", **kwargs)

    async def erase_thread(self, chat_channel: str, thread_ts: str, note: str) -> ThreadErasure:
        """Replace our posts in a thread by ``note``; delete files we uploaded there.

        Messages people wrote are left: only the author (or an admin's user token) can change
        them, and chat.update answers cant_update_message to a bot.
        """
        user_id, bot_id = await self._own()
        text, blocks = render.erased_message(note)
        erased = ThreadErasure()
        for message in await self._thread(chat_channel, thread_ts):
            if message.get("subtype") == "tombstone":
                continue
            if message.get("bot_id") != bot_id and message.get("user") != user_id:
                if "bot_id" not in message:
                    erased += ThreadErasure(left=1)
                continue
            files = message.get("files", [])
            for file in files:
                if file.get("mode") == "tombstone":
                    continue
                if await self._call_tolerating("files.delete", _FILE_GONE, file=file["id"]):
                    erased += ThreadErasure(files_deleted=1)
            # A file's own message goes with the file; one with text shows the note instead.
            if message.get("text") == text or (files and not message.get("text")):
                continue
            updated = await self._call_tolerating(
                "chat.update",
                _GONE,
                channel=chat_channel,
                ts=message["ts"],
                text=text,
                blocks=blocks,
            )
            if updated is not None:
                erased += ThreadErasure(replaced=1)
        return erased

    async def _thread(self, chat_channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """Every message of a thread, root first ([] when the thread is gone)."""
        messages: list[dict[str, Any]] = []
        cursor = ""
        while True:
            response = await self._call_tolerating(
                "conversations.replies",
                _GONE,
                channel=chat_channel,
                ts=thread_ts,
                limit=200,
                cursor=cursor,
            )
            if response is None:
                return messages
            messages += response.get("messages", [])
            cursor = (response.get("response_metadata") or {}).get("next_cursor", "")
            if not cursor:
                return messages

    async def _own(self) -> tuple[str, str]:
        """Our bot's user id and bot id, which mark the messages we posted."""
        if self._own_ids is None:
            response = await self._call("auth.test")
            self._own_ids = (str(response.get("user_id", "")), str(response.get("bot_id", "")))
        return self._own_ids

    async def check(self) -> None:
        await self._call("auth.test")

    async def direct_channel(self, user_id: str) -> str:
        response = await self._call("conversations.open", users=user_id)
        return str(response["channel"]["id"])

    async def post_message(self, chat_channel: str, text: str, *, marker: str) -> str:
        response = await self._post(chat_channel, text=text, metadata=self._metadata(marker))
        return str(response["ts"])

    async def post_spike(self, chat_channel: str, alert: SpikeAlert, *, marker: str) -> str:
        text, blocks = render.spike_alert(alert)
        response = await self._post(
            chat_channel, text=text, blocks=blocks, metadata=self._metadata(marker)
        )
        return str(response["ts"])

    async def download(self, url: str) -> bytes:
        """Fetch a file an agent posted (Slack wants the bot token for it)."""
        headers = {"Authorization": f"Bearer {self.client.token}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
                session.get(url, headers=headers) as response,
            ):
                response.raise_for_status()
                # Slack answers a download it refuses with its sign-in page, status 200.
                if response.content_type == "text/html" and "/files" in url:
                    body = await response.read()
                    if b"<!DOCTYPE html>" in body[:100]:
                        raise PermanentDeliveryError(
                            "Slack refused the file download: the app needs the files:read scope"
                        )
                    return body
                return await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientDeliveryError(f"Slack file download: {exc}") from exc
