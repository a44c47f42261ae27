"""Slack to spike alerts: the alert's "Link all to a known problem" button and its modal.

The button is for leads: anyone else is told so, only them, and no modal opens. A lead gets a
modal asking for the problem's name; its submission links every conversation of the spike
(bot/spikes.py) and is checked before it is acknowledged, so a refusal shows in the modal.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.commands import Background, confirm_submission
from adapters.slack.render import SPIKE_ACTION, Block
from adapters.slack.views import answer_text
from bot.commands import Answer, Commands, LinkSpike
from bot.jobs import Clock
from bot.roles import Actor, Role, Roles

SPIKE_MODAL = "switchboard_spike_problem_modal"
TITLE_BLOCK = "title"
TITLE_ACTION = "title"


def problem_modal(spike_id: int, channel: str) -> Block:
    """The modal a lead names the known problem in."""
    return {
        "type": "modal",
        "callback_id": SPIKE_MODAL,
        "private_metadata": json.dumps({"spike": spike_id, "channel": channel}),
        "title": {"type": "plain_text", "text": "Link to a known problem"},
        "submit": {"type": "plain_text", "text": "Link all"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": TITLE_BLOCK,
                "label": {"type": "plain_text", "text": "The known problem"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": TITLE_ACTION,
                    "max_length": 128,
                    "placeholder": {"type": "plain_text", "text": "payment provider outage"},
                },
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": "Every conversation of this spike is linked to it (a new name "
                        "makes a new known problem); each thread says so, and later similar "
                        "conversations show it on their card.",
                    }
                ],
            },
        ],
    }


def register_spikes(
    app: AsyncApp,
    *,
    commands: Commands,
    roles: Roles,
    actor_of: Callable[[str], Awaitable[Actor]],
    background: Background,
    clock: Clock,
) -> None:
    """Add the spike alert's button and modal listeners."""

    @app.action(SPIKE_ACTION)
    async def on_link_all(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        actor = await actor_of(str(body["user"]["id"]))
        if not roles.allows(actor, Role.LEAD):
            refusal = Answer(
                "Not allowed: linking a spike to a known problem is for leads, and nothing "
                "was changed.",
                ask=roles.who_to_ask(Role.LEAD),
                refused=True,
            )
            await respond(
                text=answer_text(refusal, clock()),
                response_type="ephemeral",
                replace_original=False,
            )
            return
        spike_id = int(str(body["actions"][0].get("value") or "0"))
        channel = str((body.get("container") or {}).get("channel_id") or "")
        await client.views_open(
            trigger_id=body["trigger_id"], view=problem_modal(spike_id, channel)
        )

    @app.view(SPIKE_MODAL)
    async def on_submitted(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        view = body["view"]
        title = str(view["state"]["values"][TITLE_BLOCK][TITLE_ACTION].get("value") or "")
        where = json.loads(view.get("private_metadata") or "{}")
        actor = await actor_of(str(body["user"]["id"]))
        reply = await commands.run(LinkSpike(int(where.get("spike", 0)), title), actor)
        assert isinstance(reply, Answer)
        if reply.refused:
            await ack(response_action="errors", errors={TITLE_BLOCK: reply.text[:150]})
            return
        await ack()
        channel = str(where.get("channel") or "")
        if channel:
            background.spawn(confirm_submission(client, channel, actor.user_id, reply.text))
