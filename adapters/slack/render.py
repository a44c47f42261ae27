"""How conversations look in Slack: the root card, customer posts, delivery reactions.

Everything a customer wrote goes through ``escape`` first: Slack reads ``<!channel>``,
``<@U123>`` and ``<https://x|y>`` as commands in message text, and escaping ``&``, ``<`` and
``>`` makes them plain text that pings nobody.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from bot.businesstime import format_working
from bot.shapes import (
    ChannelKind,
    ConversationCard,
    CustomerPost,
    DeadlineState,
    DeadlineView,
    DeliveryState,
    Priority,
    SpikeAlert,
)
from bot.workflow import format_time

Block = dict[str, Any]

# Slack refuses section text longer than 3,000 characters.
_SECTION_LIMIT = 3000

PRIORITY_EMOJI = {
    Priority.URGENT: ":red_circle:",
    Priority.HIGH: ":large_orange_circle:",
    Priority.NORMAL: ":large_blue_circle:",
    Priority.LOW: ":white_circle:",
}
PRIORITY_COLOUR = {
    Priority.URGENT: "#d62728",
    Priority.HIGH: "#ff7f0e",
    Priority.NORMAL: "#1f77b4",
    Priority.LOW: "#aaaaaa",
}
CHANNEL_LABEL = {
    ChannelKind.EMAIL: ":email: E-mail",
    ChannelKind.TELEGRAM: ":speech_balloon: Telegram",
    ChannelKind.WEBHOOK: ":globe_with_meridians: Web",
    ChannelKind.WHATSAPP: ":iphone: WhatsApp",
}
DELIVERY_REACTION = {
    DeliveryState.PENDING: "hourglass_flowing_sand",
    DeliveryState.SENT: "white_check_mark",
    DeliveryState.FAILED: "x",
    DeliveryState.CANCELLED: "leftwards_arrow_with_hook",
    DeliveryState.DELIVERED: "ballot_box_with_check",
    DeliveryState.READ: "eyes",
}


def escape(text: str) -> str:
    """Make customer text inert in Slack: no mentions, no disguised links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(user_id: str) -> str:
    """A person (``U…``) or a user group (``S…``), named so that they are notified."""
    return f"<!subteam^{user_id}>" if user_id.startswith("S") else f"<@{user_id}>"


_SLACK_REFERENCE = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")


def plain_text(text: str, names: Mapping[str, str] | None = None) -> str:
    """What an agent typed, as a customer should read it: Slack's markup turned into text.

    ``<@U123>`` becomes ``@name`` (from ``names``), ``<#C1|general>`` ``#general``,
    ``<https://x|label>`` ``label (https://x)``, and ``&amp;``, ``&lt;``, ``&gt;`` their
    characters again.
    """
    names = names or {}

    def replace(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith("@"):
            return "@" + (label or names.get(target[1:], target[1:]))
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            return "@" + (label or target[1:].split("^")[0])
        if target.startswith("mailto:"):
            return label or target.removeprefix("mailto:")
        if label and label != target:
            return f"{label} ({target})"
        return target

    unlinked = _SLACK_REFERENCE.sub(replace, text)
    return unlinked.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _chunks(text: str) -> list[str]:
    if not text:
        return []
    return [text[i : i + _SECTION_LIMIT] for i in range(0, len(text), _SECTION_LIMIT)]


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st."""
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{'th' if number % 100 in (11, 12, 13) else suffix}"


def root_message(card: ConversationCard) -> tuple[str, list[Block]]:
    """The fallback text and blocks of a conversation's root message."""
    triage = card.triage
    subject = escape(card.subject or "(no subject)")
    customer = escape(card.customer_name or card.customer_address)
    address = escape(card.customer_address)
    emoji = PRIORITY_EMOJI.get(triage.priority, "")
    priority = f"{emoji} {triage.priority.value}"
    if triage.priority_reason:
        priority += f" ({escape(triage.priority_reason)})"
    skill = escape(triage.skill or "unassigned")
    if triage.confidence and triage.confidence < 1.0:
        skill += f" ({triage.confidence:.0%})"
    fields = [
        f"*Customer*\n{customer} ({address})",
        f"*Channel*\n{CHANNEL_LABEL[card.channel]}",
        f"*Skill*\n{skill}",
        f"*Priority*\n{priority}",
        f"*Status*\n{_status(card)}",
    ]
    if card.deadlines and not card.moved_to:
        fields.append(deadlines_field(card.deadlines))
    if card.tags:
        fields.append("*Tags*\n" + ", ".join(f"`{escape(tag)}`" for tag in card.tags))
    if triage.sentiment:
        mood = triage.sentiment
        if triage.sentiment_message > 1:
            mood += f", {ordinal(triage.sentiment_message)} message"
        fields.append(f"*Language · sentiment*\n{triage.language or '?'} · {mood}")
    elif triage.language:
        # Triage shows the mood only when it is sure of it.
        fields.append(f"*Language*\n{triage.language}")
    blocks: list[Block] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{subject}*"},
        },
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": field} for field in fields],
        },
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"Conversation `{card.short_id}`"}],
        },
    ]
    blocks[-1:-1] = similar_lines(card)
    text = f"{emoji} [{card.short_id}] {subject} from {customer}"
    if card.oncall and not card.moved_to:
        # Our own text, the only place a group mention comes from: customer text is escaped.
        page = f":rotating_light: Urgent: {mention(card.oncall)}, please take a look."
        blocks.insert(1, {"type": "section", "text": {"type": "mrkdwn", "text": page}})
        text += f" {mention(card.oncall)}"
    if not card.moved_to:
        blocks.append(_card_actions(card))
    return text, blocks


SNOOZE_CHOICES = (("1 hour", "1h"), ("4 hours", "4h"), ("1 day", "1d"), ("1 week", "1w"))


def _status(card: ConversationCard) -> str:
    if card.moved_to:
        return f":arrow_right: moved to <{card.moved_to}|its new thread>"
    status = card.status
    if card.snoozed_until is not None and card.status == "open":
        status += f" · :zzz: snoozed until {format_time(card.snoozed_until)}"
    return status + (f" · owner {mention(card.owner)}" if card.owner else " · no owner")


def _option(label: str, value: str) -> Block:
    return {"text": {"type": "plain_text", "text": label[:75]}, "value": value[:150]}


def _select(action_id: str, placeholder: str, options: list[Block], initial: str = "") -> Block:
    select: Block = {
        "type": "static_select",
        "action_id": action_id,
        "placeholder": {"type": "plain_text", "text": placeholder},
        "options": options,
    }
    chosen = next((o for o in options if o["value"] == initial), None)
    if chosen is not None:
        select["initial_option"] = chosen
    return select


def _button(action_id: str, label: str, style: str = "") -> Block:
    button: Block = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": action_id,
    }
    if style:
        button["style"] = style
    return button


def _card_actions(card: ConversationCard) -> Block:
    """Assign to me, Skill, Priority, Snooze and Close/Reopen, so nobody has to type an id."""
    elements: list[Block] = [_button("switchboard_assign_me", "Assign to me", "primary")]
    if card.skills:
        skills = [_option(name, name) for name in card.skills[:100]]
        elements.append(_select("switchboard_skill", "Skill", skills, card.triage.skill))
    priorities = [_option(p.value.title(), p.value) for p in Priority]
    elements.append(
        _select("switchboard_priority", "Priority", priorities, card.triage.priority.value)
    )
    snooze = [_option(label, value) for label, value in SNOOZE_CHOICES]
    if card.snoozed_until is not None:
        snooze.append(_option("Wake up now", "off"))
    elements.append(_select("switchboard_snooze", "Snooze", snooze))
    if card.status == "closed":
        elements.append(_button("switchboard_reopen", "Reopen"))
    else:
        elements.append(_button("switchboard_close", "Close", "danger"))
    elements.append(_button("switchboard_customer", "Customer"))
    elements.append(_button(SUGGEST_ACTION, "Suggest reply"))
    if card.similar_open or card.similar_closed:
        elements.append(_button(SIMILAR_ACTION, "Similar"))
    return {"type": "actions", "block_id": "switchboard_card_actions", "elements": elements}


SUGGEST_ACTION = "switchboard_suggest"
SIMILAR_ACTION = "switchboard_similar"


def similar_lines(card: ConversationCard) -> list[Block]:
    """The card's line about similar conversations and a known problem, when there are any."""
    parts = []
    if card.known_problem:
        parts.append(f":warning: Known problem: *{escape(card.known_problem)}*")
    if card.similar_open or card.similar_closed:
        parts.append(
            f":mag: similar: {card.similar_open} open · {card.similar_closed} closed this week"
        )
    if not parts:
        return []
    return [{"type": "context", "elements": [{"type": "mrkdwn", "text": "   ".join(parts)}]}]


def rating(stars: int, comment: str) -> tuple[str, list[Block]]:
    """A customer's satisfaction rating in the thread; the comment is theirs, so escaped."""
    shown = "★" * stars + "☆" * (5 - stars)
    headline = f":star: The customer rated this conversation {shown} ({stars} of 5)"
    blocks: list[Block] = [{"type": "section", "text": {"type": "mrkdwn", "text": headline}}]
    body = escape(comment)
    if body:
        blocks += [
            {"type": "section", "text": {"type": "mrkdwn", "text": chunk, "verbatim": True}}
            for chunk in _chunks(body)
        ]
    return f"{headline}: {body[:2800]}" if body else headline, blocks


def customer_message(post: CustomerPost) -> tuple[str, list[Block]]:
    """The fallback text and blocks of a customer's message in the thread."""
    sender = escape(post.sender_name)
    body = escape(post.text) or "_(no text)_"
    blocks: list[Block] = [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"*{sender}* wrote:"}]}
    ]
    blocks += [
        {"type": "section", "text": {"type": "mrkdwn", "text": chunk, "verbatim": True}}
        for chunk in _chunks(body)
    ]
    if post.is_automated:
        notice = escape(post.notice or "automatic message")
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f":robot_face: Automatic mail ({notice}): replies to it are "
                        "not sent unless the customer writes themselves.",
                    }
                ],
            }
        )
    if post.attachments:
        names = ", ".join(escape(a.filename) for a in post.attachments)
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f":paperclip: {names}"}]}
        )
    return f"{sender}: {body[:2900]}", blocks


def undo_message(seconds: float, undo_token: str) -> tuple[str, list[Block]]:
    """The note, shown only to the agent, that their reply goes out soon."""
    text = f"Your reply goes to the customer in {seconds:g} s."
    return text, [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": text},
            "accessory": {
                "type": "button",
                "action_id": "switchboard_undo",
                "text": {"type": "plain_text", "text": "Undo"},
                "style": "danger",
                "value": undo_token,
            },
        }
    ]


def erased_message(note: str) -> tuple[str, list[Block]]:
    """What a post of an erased conversation shows instead of what it showed."""
    # Blocks are sent too: chat.update keeps a message's old blocks when it gets none.
    text = escape(note)
    return text, [{"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}]


#: The card's colour for a deadline: green while there is time, yellow from the warning on,
#: red once overdue; paused while waiting on the customer.
DEADLINE_EMOJI = {
    DeadlineState.RUNNING: ":large_green_square:",
    DeadlineState.WARNING: ":large_yellow_square:",
    DeadlineState.OVERDUE: ":large_red_square:",
    DeadlineState.PAUSED: ":double_vertical_bar:",
}


def deadline_text(deadline: DeadlineView) -> str:
    """``first reply due in 3 h 20 min``, ``resolution overdue by 40 min``, in business time.

    The due moment is a Slack date, which each viewer reads in their own time zone.
    """
    emoji = DEADLINE_EMOJI[deadline.state]
    if deadline.state is DeadlineState.PAUSED:
        if deadline.left <= timedelta():
            return f"{emoji} {deadline.label} paused, overdue by {format_working(-deadline.left)}"
        return f"{emoji} {deadline.label} paused, {format_working(deadline.left)} left"
    if deadline.state is DeadlineState.OVERDUE:
        text = f"{emoji} {deadline.label} overdue"
        if -deadline.left >= timedelta(minutes=1):
            text += f" by {format_working(-deadline.left)}"
    else:
        text = f"{emoji} {deadline.label} due in {format_working(deadline.left)}"
    if deadline.due_at is not None:
        stamp, fallback = int(deadline.due_at.timestamp()), format_time(deadline.due_at)
        text += f" (<!date^{stamp}^{{date_short_pretty}} {{time}}|{fallback}>)"
    return text


def deadlines_field(deadlines: tuple[DeadlineView, ...]) -> str:
    """The card's field listing what is due."""
    return "*Due*\n" + "\n".join(deadline_text(d) for d in deadlines)


def agent_copy(author_name: str, text: str) -> tuple[str, list[Block]]:
    """A reply an agent wrote in a modal, posted in the thread under their name."""
    author = escape(author_name or "An agent")
    body = escape(text)
    blocks: list[Block] = [
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"*{author}* replied (from a suggestion):"}],
        }
    ]
    blocks += [
        {"type": "section", "text": {"type": "mrkdwn", "text": chunk, "verbatim": True}}
        for chunk in _chunks(body)
    ]
    return f"{author}: {body[:2900]}", blocks


SPIKE_ACTION = "switchboard_spike_problem"


def spike_alert(alert: SpikeAlert) -> tuple[str, list[Block]]:
    """A spike's alert for the leads: how many, three linked examples, where, and a button."""
    usual = f"{alert.usual:.1f}" if alert.usual < 10 else f"{alert.usual:.0f}"
    text = (
        f":rotating_light: *{alert.count} conversations about the same thing* in the last "
        f"{alert.window_minutes} minutes (usually about {usual})."
    )
    lines: list[str] = []
    for example in alert.examples:
        excerpt = escape(example.excerpt) or "(no text)"
        label = f"`{example.short_id}`"
        lines.append(
            f"• <{example.link}|{label}> {excerpt}" if example.link else f"• {label} {excerpt}"
        )
    where: list[str] = []
    if alert.skills:
        skills = ", ".join(f"{escape(skill or 'none')} ({n})" for skill, n in alert.skills)
        where.append(f"*Skills:* {skills}")
    if alert.channels:
        labels = ", ".join(
            f"{CHANNEL_LABEL.get(kind, escape(str(kind)))} ({n})" for kind, n in alert.channels
        )
        where.append(f"*Channels:* {labels}")
    if alert.chat_channels:
        where.append("*In:* " + " ".join(f"<#{c}>" for c in alert.chat_channels[:10]))
    blocks: list[Block] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
    ]
    if lines:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "\n".join(lines)[:_SECTION_LIMIT],
                    "verbatim": True,
                },
            }
        )
    if where:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "   ".join(where)[:3000]}]}
        )
    button = _button(SPIKE_ACTION, "Link all to a known problem", "primary")
    button["value"] = str(alert.spike_id)
    blocks.append(
        {"type": "actions", "block_id": "switchboard_spike_actions", "elements": [button]}
    )
    fallback = f"{alert.count} conversations about the same thing in {alert.window_minutes} minutes"
    return fallback, blocks
