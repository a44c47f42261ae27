"""Slack to the team workflow: the slash command, the card's buttons, the shortcut, App Home.

Slack wants an answer within 3 seconds. The slash command, the buttons and App Home are
acknowledged first and worked on afterwards (``Background``); answers go to the response URL,
ephemeral. The shortcut opens its modal at once (its trigger id expires), and the modal's
submission is checked before it is acknowledged, so a refusal shows in the modal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.charts import report_png
from adapters.slack.views import (
    CONFIRM_DETAIL,
    REASSIGN_CALLBACK,
    REASSIGN_MODAL,
    SKILL_ACTION,
    SKILL_BLOCK,
    answer_blocks,
    answer_text,
    block_modal,
    home_view,
    reassign_modal,
    report_text,
)
from bot.commands import (
    Answer,
    Assign,
    Close,
    Command,
    Commands,
    ConfirmDetail,
    CustomerOf,
    OpenBlockEditor,
    Reassign,
    Reopen,
    Reply,
    ReportReply,
    SetPriority,
    Snooze,
    parse_duration,
)
from bot.conversations import short_id
from bot.errors import ActionRefused
from bot.jobs import Clock
from bot.lookups import ByMessage, Lookups, conversation_of_message
from bot.reports import Report, Reports
from bot.roles import Actor, Role, Roles
from bot.routing import skill_names
from bot.shapes import Priority

log = logging.getLogger(__name__)

CARD_ACTIONS = re.compile(r"^switchboard_(assign_me|skill|priority|snooze|close|reopen|customer)$")
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_GROUP = re.compile(r"<!subteam\^(S[A-Z0-9]+)(?:\|[^>]*)?>")
_CHANNEL = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|[^>]*)?>")


def command_text(text: str) -> str:
    """The command as the core reads it: ``@U123``, ``#name``, plain links and characters."""
    text = _MENTION.sub(r"@\1", text)
    text = _GROUP.sub(r"@\1", text)
    text = _CHANNEL.sub(lambda m: "#" + (m.group(2) or m.group(1)), text)
    text = _LINK.sub(lambda m: m.group(1).removeprefix("mailto:"), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class Background:
    """Work started after Slack has its answer; finished or cancelled when the service stops."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until the work started so far is done (tests, the demo)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, grace_seconds: float = 10.0) -> None:
        """Wait for running work up to ``grace_seconds``, then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class UserGroups:
    """Members of the user groups named in the roles (usergroups.users.list), cached."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl_seconds: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.monotonic = monotonic
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    async def groups_of(self, user_id: str, groups: tuple[str, ...]) -> frozenset[str]:
        """Which of ``groups`` ``user_id`` is in."""
        return frozenset([g for g in groups if user_id in await self._members_of(g)])

    async def _members_of(self, group: str) -> frozenset[str]:
        cached = self._members.get(group)
        now = self.monotonic()
        if cached is not None and now - cached[0] < self.ttl_seconds:
            return cached[1]
        try:
            response = await self.client.usergroups_users_list(usergroup=group)
        except SlackApiError as exc:
            # A group Slack does not know grants nothing; a stale list is better than none.
            log.warning("could not list a user group", extra={"group": group, "error": str(exc)})
            return cached[1] if cached is not None else frozenset()
        members = frozenset(str(u) for u in response.get("users") or [])
        self._members[group] = (now, members)
        return members


def card_command(action: dict[str, Any], ref: ByMessage) -> Command:
    """The command a button or menu on a root card stands for."""
    action_id = str(action["action_id"])
    value = str((action.get("selected_option") or {}).get("value") or action.get("value") or "")
    if action_id == "switchboard_assign_me":
        return Assign(ref, "me")
    if action_id == "switchboard_skill":
        return Reassign(ref, value)
    if action_id == "switchboard_priority":
        return SetPriority(ref, Priority(value))
    if action_id == "switchboard_snooze":
        return Snooze(ref, parse_duration(value))
    if action_id == "switchboard_close":
        return Close(ref)
    if action_id == "switchboard_customer":
        return CustomerOf(ref)
    return Reopen(ref)


def register_team_workflow(
    app: AsyncApp,
    *,
    commands: Commands,
    lookups: Lookups,
    roles: Roles,
    groups: UserGroups,
    name_of: Callable[[str], Awaitable[str]],
    background: Background,
    command_name: str,
    clock: Clock,
    reports: Reports | None = None,
) -> None:
    """Add the slash command, card actions, shortcut, modal and App Home listeners."""

    async def actor_of(user_id: str) -> Actor:
        return Actor(user_id, await name_of(user_id), await groups.groups_of(user_id, roles.groups))

    async def answer(respond: AsyncRespond, text: str, reply: Reply | None = None) -> None:
        blocks = answer_blocks(reply, clock()) if reply is not None else None
        if blocks:
            await respond(
                text=text, blocks=blocks, response_type="ephemeral", replace_original=False
            )
            return
        await respond(text=text, response_type="ephemeral", replace_original=False)

    async def run_command(
        body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        try:
            actor = await actor_of(str(body["user_id"]))
            reply = await commands.run_text(command_text(str(body.get("text") or "")), actor)
            if isinstance(reply, OpenBlockEditor):
                view = block_modal(reply, str(body.get("channel_id") or ""))
                await client.views_open(trigger_id=body["trigger_id"], view=view)
                return
            if isinstance(reply, ReportReply):
                where = str(body.get("channel_id") or "")
                await answer(respond, await post_report(client, reply.report, where, actor))
                return
            await answer(respond, answer_text(reply, clock()), reply)
        except Exception:
            log.exception("a slash command failed")
            await answer(respond, "Something went wrong on Switchboard's side; try again.")

    @app.command(command_name)
    async def on_command(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        await ack()
        background.spawn(run_command(body, respond, client))

    async def run_card_action(body: dict[str, Any], respond: AsyncRespond) -> None:
        container = body.get("container") or {}
        ref = ByMessage(
            str(container.get("channel_id") or (body.get("channel") or {}).get("id") or ""),
            str(container.get("message_ts") or ""),
        )
        try:
            actor = await actor_of(str(body["user"]["id"]))
            try:
                command = card_command(body["actions"][0], ref)
            except (ActionRefused, ValueError):
                await answer(respond, "That choice is not one Switchboard offers.")
                return
            reply = await commands.run(command, actor)
            # The card and the thread show a change; only a refusal or a look-up needs words.
            if not isinstance(reply, Answer) or reply.refused:
                await answer(respond, answer_text(reply, clock()), reply)
        except Exception:
            log.exception("a card action failed")
            await answer(respond, "Something went wrong on Switchboard's side; try again.")

    @app.action(CARD_ACTIONS)
    async def on_card_action(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        background.spawn(run_card_action(body, respond))

    async def run_confirm(body: dict[str, Any], respond: AsyncRespond) -> None:
        try:
            actor = await actor_of(str(body["user"]["id"]))
            key = str(body["actions"][0].get("value") or "")
            reply = await commands.run(ConfirmDetail(key), actor)
            await answer(respond, answer_text(reply, clock()))
        except Exception:
            log.exception("a confirmation failed")
            await answer(respond, "Something went wrong on Switchboard's side; try again.")

    @app.action(re.compile(f"^{CONFIRM_DETAIL}_[0-9]+$"))
    async def on_confirm(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        background.spawn(run_confirm(body, respond))

    @app.shortcut(REASSIGN_CALLBACK)
    async def on_reassign_shortcut(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        message = body.get("message") or {}
        channel = str((body.get("channel") or {}).get("id") or "")
        ts = str(message.get("ts") or body.get("message_ts") or "")
        thread_ts = str(message.get("thread_ts") or "")
        conversation = await conversation_of_message(channel, ts, thread_ts)
        if conversation is None:
            await answer(respond, "That message is not part of a Switchboard conversation.")
            return
        actor = await actor_of(str(body["user"]["id"]))
        if not roles.allows(actor, Role.LEAD):
            refusal = Answer(
                "Not allowed: reassigning is for leads, and nothing was changed.",
                ask=roles.who_to_ask(Role.LEAD),
                refused=True,
            )
            await answer(respond, answer_text(refusal, clock()))
            return
        where = json.dumps({"channel": channel, "ts": ts, "thread_ts": thread_ts})
        view = reassign_modal(await skill_names(), short_id(conversation), where)
        await client.views_open(trigger_id=body["trigger_id"], view=view)

    @app.view(REASSIGN_MODAL)
    async def on_reassign_submitted(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient
    ) -> None:
        view = body["view"]
        where = json.loads(view.get("private_metadata") or "{}")
        chosen = view["state"]["values"][SKILL_BLOCK][SKILL_ACTION].get("selected_option") or {}
        ref = ByMessage(str(where["channel"]), str(where["ts"]), str(where.get("thread_ts", "")))
        actor = await actor_of(str(body["user"]["id"]))
        reply = await commands.run(Reassign(ref, str(chosen.get("value", ""))), actor)
        text = answer_text(reply, clock())
        if isinstance(reply, Answer) and reply.refused:
            await ack(response_action="errors", errors={SKILL_BLOCK: text[:150]})
            return
        await ack()
        background.spawn(_tell(client, where, actor.user_id, text))

    async def post_report(
        client: AsyncWebClient, report: Report, channel_id: str, actor: Actor
    ) -> str:
        """Upload the charts with the summary where the command was typed, else in a DM."""
        names = {a.user_id: await name_of(a.user_id) for a in report.agents[:12]}
        png = await asyncio.to_thread(report_png, report, names)
        upload: dict[str, Any] = {
            "content": png,
            "filename": "switchboard-report.png",
            "title": "Switchboard report",
        }
        comment = report_text(report)
        try:
            await client.files_upload_v2(
                channel=channel_id, file_uploads=[upload], initial_comment=comment
            )
            return "Posted the report with its charts here."
        except SlackApiError as exc:
            if exc.response.get("error") not in ("not_in_channel", "channel_not_found"):
                raise
        # Not a member of that channel (or a DM between people): send it to the lead directly.
        opened = await client.conversations_open(users=actor.user_id)
        dm = str((opened.get("channel") or {}).get("id") or "")
        await client.files_upload_v2(channel=dm, file_uploads=[upload], initial_comment=comment)
        return (
            "The report is in your direct messages with Switchboard: I am not in this channel "
            "(invite me to post reports here)."
        )

    async def publish_home(client: AsyncWebClient, user_id: str) -> None:
        try:
            week = None
            if reports is not None:
                week = await reports.report(reports.period("week"))
            view = home_view(await lookups.home(user_id), clock(), week, command_name)
            await client.views_publish(user_id=user_id, view=view)
        except Exception:
            log.exception("could not publish the App Home")

    @app.event("app_home_opened")
    async def on_home_opened(event: dict[str, Any], client: AsyncWebClient) -> None:
        user = event.get("user")
        if event.get("tab", "home") == "home" and isinstance(user, str) and user:
            background.spawn(publish_home(client, user))


async def _tell(client: AsyncWebClient, where: dict[str, str], user_id: str, text: str) -> None:
    try:
        await client.chat_postEphemeral(
            channel=where["channel"],
            user=user_id,
            text=text,
            thread_ts=where.get("thread_ts") or where["ts"],
        )
    except SlackApiError as exc:
        log.warning("could not confirm a reassignment", extra={"error": str(exc)})


async def confirm_submission(client: AsyncWebClient, channel: str, user: str, text: str) -> None:
    """Tell the person who submitted a modal what it did (only them, in ``channel``)."""
    try:
        await client.chat_postEphemeral(channel=channel, user=user, text=text)
    except SlackApiError as exc:
        log.warning("could not confirm a modal's submission", extra={"error": str(exc)})
