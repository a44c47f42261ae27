"""Slack to suggested replies, similar conversations and the text block editor.

The card's **Suggest reply** button answers the agent alone (an ephemeral message in the
thread) with up to three drafts, each with **Use**: the thread stays the record of what the
customer and the team said, and a draft nobody picked never clutters it. **Use** opens a modal
holding the filled-in draft; **Send** in the modal posts it in the thread under the agent's
name and hands it to the relay like a typed reply (undo window, reactions, delivery). Nothing
is sent unless the agent presses Send. **Similar** lists similar conversations, ephemeral too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient
from tortoise.backends.base.client import BaseDBAsyncClient

from adapters.slack.commands import Background, confirm_submission
from adapters.slack.render import SIMILAR_ACTION, SUGGEST_ACTION, Block, escape
from adapters.slack.views import BLOCK_FIELDS, BLOCK_MODAL
from bot.blocks import BlockDraft
from bot.commands import Answer, Commands, SaveBlock
from bot.errors import DeliveryError
from bot.lookups import conversation_of_message
from bot.relay import Outcome, Relay
from bot.roles import Actor
from bot.similar import Similar, SimilarConversation
from bot.suggestions import Suggester, Suggestion, record_used
from models import Conversation, Message

log = logging.getLogger(__name__)

USE_ACTION = re.compile(r"^switchboard_use_suggestion_\d$")
SEND_MODAL = "switchboard_send_suggestion"
REPLY_BLOCK = "reply"
REPLY_ACTION = "reply_text"
_PREVIEW = 700


def suggestions_message(suggestions: list[Suggestion], conversation_id: int) -> list[Block]:
    """The ephemeral list of drafts, each with its Use button."""
    blocks: list[Block] = [
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "Suggested replies (only you see this; nothing is sent until you "
                    "press Send):",
                }
            ],
        }
    ]
    for number, suggestion in enumerate(suggestions, 1):
        preview = escape(suggestion.text)
        if len(preview) > _PREVIEW:
            preview = preview[:_PREVIEW] + " …"
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*{number}. {escape(suggestion.label)}*\n{preview}",
                    "verbatim": True,
                },
                "accessory": {
                    "type": "button",
                    "action_id": f"switchboard_use_suggestion_{number}",
                    "text": {"type": "plain_text", "text": "Use"},
                    "value": json.dumps({"c": conversation_id, "s": suggestion.source}),
                },
            }
        )
    return blocks


def send_modal(text: str, metadata: str) -> Block:
    """The modal an agent edits a draft in before sending it."""
    return {
        "type": "modal",
        "callback_id": SEND_MODAL,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": "Reply to the customer"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": REPLY_BLOCK,
                "label": {"type": "plain_text", "text": "Your reply"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REPLY_ACTION,
                    "multiline": True,
                    "max_length": 3000,
                    "initial_value": text[:3000],
                },
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": "Goes to the customer after the undo window, like a reply "
                        "typed in the thread. Words in [brackets] still need filling in.",
                    }
                ],
            },
        ],
    }


def similar_text(found: list[SimilarConversation], links: dict[str, str]) -> str:
    """The ephemeral list of similar conversations."""
    if not found:
        return "No similar conversations found."
    lines = ["*Similar conversations*, most alike first:"]
    for item in found:
        link = links.get(item.short_id, "")
        subject = escape(item.subject or "(no subject)")[:100]
        title = f"<{link}|{subject}>" if link else subject
        lines.append(
            f"• `{item.short_id}` {title} · {item.status} · {item.similarity:.0%} alike · "
            f"{escape(item.solved_by)}"
        )
    return "\n".join(lines)[:3900]


def register_suggestions(
    app: AsyncApp,
    *,
    suggester: Suggester,
    similar: Similar,
    relay: Relay,
    commands: Commands,
    actor_of: Callable[[str], Awaitable[Actor]],
    name_of: Callable[[str], Awaitable[str]],
    background: Background,
) -> None:
    """Add the Suggest reply, Use, Similar and block editor listeners."""

    async def tell(
        client: AsyncWebClient, conversation: Conversation, user: str, **kw: Any
    ) -> None:
        assert conversation.chat_channel is not None
        await client.chat_postEphemeral(
            channel=conversation.chat_channel,
            user=user,
            thread_ts=conversation.chat_thread_ts or "",
            **kw,
        )

    async def conversation_of(body: dict[str, Any]) -> Conversation | None:
        container = body.get("container") or {}
        channel = str(container.get("channel_id") or (body.get("channel") or {}).get("id") or "")
        ts = str(container.get("message_ts") or "")
        return await conversation_of_message(channel, ts, str(container.get("thread_ts") or ""))

    async def offer(body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond) -> None:
        user = str(body["user"]["id"])
        try:
            conversation = await conversation_of(body)
            if conversation is None:
                await respond(text="That card is not one of Switchboard's conversations.")
                return
            suggestions = await suggester.suggest(conversation, await name_of(user))
            if not suggestions:
                await tell(
                    client,
                    conversation,
                    user,
                    text="No suggestions for this message yet: leads add text blocks with "
                    "`blocks add`, and every answer the team sends becomes a suggestion for "
                    "similar messages.",
                )
                return
            await suggester.record_offered(conversation, user, suggestions)
            blocks = suggestions_message(suggestions, conversation.id)
            await tell(client, conversation, user, text="Suggested replies", blocks=blocks)
        except Exception:
            log.exception("could not offer suggestions")
            await respond(text="Something went wrong on Switchboard's side; try again.")

    @app.action(SUGGEST_ACTION)
    async def on_suggest(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        background.spawn(offer(body, client, respond))

    @app.action(USE_ACTION)
    async def on_use(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        chosen = json.loads(str(body["actions"][0].get("value") or "{}"))
        user = str(body["user"]["id"])
        conversation = await Conversation.get_or_none(id=int(chosen.get("c", 0)))
        text = ""
        if conversation is not None:
            text = await suggester.draft(
                conversation, str(chosen.get("s", "")), await name_of(user)
            )
        if not text:
            await respond(text="That suggestion is gone (removed or forgotten); ask again.")
            return
        await client.views_open(
            trigger_id=body["trigger_id"], view=send_modal(text, json.dumps(chosen))
        )

    async def send(chosen: dict[str, Any], user: str, text: str, client: AsyncWebClient) -> None:
        conversation = await Conversation.get_or_none(id=int(chosen.get("c", 0)))
        if conversation is None:
            return
        source = str(chosen.get("s", ""))

        async def used(stored: Message, conn: BaseDBAsyncClient) -> None:
            await record_used(conversation.id, user, source, stored.id, conn=conn)

        try:
            result = await relay.send_draft(
                conversation, user, await name_of(user), text, after_store=used
            )
        except DeliveryError as exc:
            log.warning("could not post a drafted reply", extra={"reason": exc.reason})
            await tell(client, conversation, user, text=f"Not sent: {exc.reason}. Try again.")
            return
        if result.outcome is not Outcome.QUEUED:
            await tell(client, conversation, user, text="Nothing to send: the reply was empty.")

    @app.view(SEND_MODAL)
    async def on_send(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        view = body["view"]
        text = str(view["state"]["values"][REPLY_BLOCK][REPLY_ACTION].get("value") or "")
        if not text.strip():
            await ack(response_action="errors", errors={REPLY_BLOCK: "Write a reply, or Cancel."})
            return
        await ack()
        chosen = json.loads(view.get("private_metadata") or "{}")
        background.spawn(send(chosen, str(body["user"]["id"]), text, client))

    async def list_similar(
        body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        user = str(body["user"]["id"])
        try:
            conversation = await conversation_of(body)
            if conversation is None:
                await respond(text="That card is not one of Switchboard's conversations.")
                return
            found = await similar.conversations(conversation)
            links = {}
            for item in found:
                try:
                    links[item.short_id] = await relay.chat.permalink(
                        item.chat_channel, item.chat_thread_ts
                    )
                except DeliveryError:
                    links[item.short_id] = ""
            await tell(client, conversation, user, text=similar_text(found, links))
        except Exception:
            log.exception("could not list similar conversations")
            await respond(text="Something went wrong on Switchboard's side; try again.")

    @app.action(SIMILAR_ACTION)
    async def on_similar(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        background.spawn(list_similar(body, client, respond))

    @app.view(BLOCK_MODAL)
    async def on_block_saved(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        view = body["view"]
        values = view["state"]["values"]
        fields = {f: str((values.get(f) or {}).get(f, {}).get("value") or "") for f in BLOCK_FIELDS}
        where = json.loads(view.get("private_metadata") or "{}")
        replace = where.get("id")
        draft = BlockDraft(fields["title"], fields["skill"], fields["text_en"], fields["text_de"])
        actor = await actor_of(str(body["user"]["id"]))
        reply = await commands.run(
            SaveBlock(draft, replace if isinstance(replace, int) else None), actor
        )
        assert isinstance(reply, Answer)
        if reply.refused:
            await ack(response_action="errors", errors={"title": reply.text[:150]})
            return
        await ack()
        channel = str(where.get("channel") or "")
        if channel:
            background.spawn(confirm_submission(client, channel, actor.user_id, reply.text))
