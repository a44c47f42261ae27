"""How command answers, the App Home and the reassign modal look in Slack.

Subjects and customer names are customer text and go through ``escape``; mentions are drawn
here, so the core never writes Slack markup.
"""

from __future__ import annotations

import json
from datetime import datetime

from adapters.slack.render import (
    CHANNEL_LABEL,
    PRIORITY_EMOJI,
    Block,
    deadline_text,
    escape,
    mention,
)
from bot.commands import Answer, OpenBlockEditor, Reply, ReportReply
from bot.lookups import CustomerView, HomeView, LogView, QueueEntry, QueueView, SkillsView
from bot.reports import Report, agent_lines, summary_lines
from bot.workflow import format_duration, format_time

REASSIGN_CALLBACK = "switchboard_reassign"
REASSIGN_MODAL = "switchboard_reassign_modal"
SKILL_BLOCK = "skill"
SKILL_ACTION = "skill_choice"
_MAX_TEXT = 3900
BLOCK_MODAL = "switchboard_block_editor"
BLOCK_FIELDS = ("title", "skill", "text_en", "text_de")


def answer_text(reply: Reply, now: datetime) -> str:
    """The ephemeral answer to a command or a click."""
    if isinstance(reply, OpenBlockEditor):
        return "The text block editor is open."
    if isinstance(reply, Answer):
        if not reply.ask:
            return reply.text
        return f"{reply.text} Ask {' or '.join(mention(who) for who in reply.ask)}."
    if isinstance(reply, QueueView):
        return _queue(reply, now)
    if isinstance(reply, CustomerView):
        return _customer(reply, now)
    if isinstance(reply, SkillsView):
        return _skills(reply)
    if isinstance(reply, ReportReply):
        return report_text(reply.report)
    return _log(reply)


def report_text(report: Report, *, agents: int = 10) -> str:
    """The report's summary, as posted above its charts (and on the App Home)."""
    title, *lines = summary_lines(report)
    text = [f"*{escape(title)}*", *(f"• {escape(line)}" for line in lines)]
    busiest = agent_lines(report, mention)[:agents]
    if busiest:
        text += ["*Per agent*", *busiest]
    return _clip(text)


def _entry_line(entry: QueueEntry, now: datetime) -> str:
    age = format_duration(now - entry.created_at)
    owner = f" · {mention(entry.owner)}" if entry.owner else ""
    snoozed = f" · :zzz: until {format_time(entry.snoozed_until)}" if entry.snoozed_until else ""
    closed = " · closed" if entry.status == "closed" else ""
    due = f" · {deadline_text(entry.deadline)}" if entry.deadline is not None else ""
    subject = escape(entry.subject or "(no subject)")[:120]
    return (
        f"{PRIORITY_EMOJI[entry.priority]} `{entry.short_id}` *{subject}* from "
        f"{escape(entry.customer)} · {entry.skill or 'triage'} · {age} old"
        f"{owner}{snoozed}{closed}{due}"
    )


def _clip(lines: list[str]) -> str:
    text = "\n".join(lines)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 2] + " …"


def _queue(view: QueueView, now: datetime) -> str:
    where = f" in {view.skill}" if view.skill else ""
    if not view.entries:
        return f"Nothing waiting{where}. :tada:"
    order = "most urgent and oldest first"
    if any(e.deadline for e in view.entries):
        order = "least time left first, then " + order
    lines = [f"*{view.total} open conversations{where}*, {order}:"]
    lines += [_entry_line(e, now) for e in view.entries]
    if view.total > len(view.entries):
        lines.append(f"… and {view.total - len(view.entries)} more.")
    return _clip(lines)


def _customer(view: CustomerView, now: datetime) -> str:
    reached = ", ".join(
        f"{CHANNEL_LABEL[kind]} {escape(address)}" for kind, address in view.identities
    )
    lines = [
        f"*{escape(view.name or 'Customer')}*: {reached}",
        f"{len(view.conversations)} conversations, {view.messages} messages:",
    ]
    endings = view.endings or ("",) * len(view.conversations)
    lines += [
        _entry_line(e, now) + (f" · {ending}" if ending and ending != "open" else "")
        for e, ending in zip(view.conversations, endings, strict=False)
    ]
    if view.sentiment:
        moods = " → ".join(f"{when:%Y-%m-%d} {mood}" for when, mood in view.sentiment)
        lines.append(f"*Sentiment over time*: {moods}")
    for kind, value, source in view.details:
        lines.append(f"• {kind}: {escape(value)} ({escape(source)})")
    if view.suggestions:
        lines.append("*Suggested* (found in signatures, not stored until someone confirms):")
    for found in view.suggestions:
        lines.append(
            f"• {found.kind}: {escape(found.value)} ({found.source}): "
            f"`customer confirm {found.key}`"
        )
    return _clip(lines)


CONFIRM_DETAIL = "switchboard_confirm_detail"


def answer_blocks(reply: Reply, now: datetime) -> list[Block] | None:
    """Blocks for an answer that offers buttons (a customer card's suggestions), else None."""
    if not isinstance(reply, CustomerView) or not reply.suggestions:
        return None
    buttons = [
        {
            "type": "button",
            "action_id": f"{CONFIRM_DETAIL}_{index}",
            "text": {"type": "plain_text", "text": f"Confirm {found.kind}"[:75]},
            "value": found.key,
        }
        for index, found in enumerate(reply.suggestions[:5])
    ]
    return [_section(_customer(reply, now)), {"type": "actions", "elements": buttons}]


def _skills(view: SkillsView) -> str:
    lines = ["*Skills*"]
    for row in view.skills:
        default = " (default)" if row.name == view.default_skill else ""
        described = f": {escape(row.description)}" if row.description else ""
        lines.append(
            f"• *{row.name}*{default} → #{row.chat_channel} · {row.examples} examples · "
            f"{row.open_conversations} open{described}"
        )
    return _clip(lines)


def _log(view: LogView) -> str:
    if not view.entries:
        return f"Nobody has changed `{view.short_id}` yet."
    lines = [f"*Changes to `{view.short_id}`*"]
    lines += [f"{format_time(when)}: {summary}" for when, summary in view.entries]
    return _clip(lines)


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def home_view(
    view: HomeView, now: datetime, week: Report | None = None, command_name: str = "/switchboard"
) -> Block:
    """The App Home tab: mine, the open queue per skill, snoozed ones due soon, this week."""
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Your conversations"}},
    ]
    mine = [_entry_line(e, now) for e in view.mine]
    blocks.append(_section("\n".join(mine) if mine else "Nothing assigned to you."))
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "Open queue"}})
    if not view.queues:
        blocks.append(_section("Nothing waiting. :tada:"))
    for queue in view.queues[:20]:
        lines = [f"*{queue.skill or 'triage'}*: {queue.total} open"]
        lines += [_entry_line(e, now) for e in queue.entries]
        blocks.append(_section("\n".join(lines)))
    blocks.append(
        {"type": "header", "text": {"type": "plain_text", "text": "Snoozed, due within a day"}}
    )
    snoozed = [_entry_line(e, now) for e in view.snoozed]
    blocks.append(_section("\n".join(snoozed) if snoozed else "None."))
    if week is not None:
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": "This week"}})
        blocks.append(_section(report_text(week, agents=5)))
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"Charts: `{command_name} report week`"}],
            }
        )
    return {"type": "home", "blocks": blocks[:100]}


def reassign_modal(skills: tuple[str, ...], short_id: str, private_metadata: str) -> Block:
    """The modal the "Reassign conversation" shortcut opens."""
    options = [
        {"text": {"type": "plain_text", "text": name[:75]}, "value": name} for name in skills
    ]
    return {
        "type": "modal",
        "callback_id": REASSIGN_MODAL,
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": "Reassign conversation"},
        "submit": {"type": "plain_text", "text": "Move"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            _section(f"Conversation `{short_id}` goes to the channel of the skill you pick."),
            {
                "type": "input",
                "block_id": SKILL_BLOCK,
                "label": {"type": "plain_text", "text": "Skill"},
                "element": {
                    "type": "static_select",
                    "action_id": SKILL_ACTION,
                    "placeholder": {"type": "plain_text", "text": "Pick a skill"},
                    "options": options[:100],
                },
            },
        ],
    }


def block_modal(editor: OpenBlockEditor, channel: str) -> Block:
    """The text block editor: title, skill, English and German text."""
    draft = editor.draft
    labels = {
        "title": ("Title", False, draft.title),
        "skill": ("Skill (empty: every skill)", False, draft.skill),
        "text_en": ("English text", True, draft.text_en),
        "text_de": ("German text", True, draft.text_de),
    }
    blocks: list[Block] = []
    for field in BLOCK_FIELDS:
        label, multiline, value = labels[field]
        element: Block = {"type": "plain_text_input", "action_id": field, "multiline": multiline}
        if value:
            element["initial_value"] = value
        blocks.append(
            {
                "type": "input",
                "block_id": field,
                "optional": field != "title",
                "label": {"type": "plain_text", "text": label},
                "element": element,
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "Placeholders: {customer_first_name}, {customer_name}, "
                    "{customer_email}, {agent_name}, {conversation}, {order}, {subject}, {skill}",
                }
            ],
        }
    )
    return {
        "type": "modal",
        "callback_id": BLOCK_MODAL,
        "private_metadata": json.dumps({"id": editor.block_id, "channel": channel}),
        "title": {"type": "plain_text", "text": "Text block"},
        "submit": {"type": "plain_text", "text": "Save"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }
