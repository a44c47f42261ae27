"""How conversations look in Slack: the root card, customer posts, delivery reactions.

Everything a customer wrote goes through ``escape`` first: Slack reads ``<!channel>``,
``<@U123>`` and ``<https://x|y>`` as commands in message text, and escaping ``&``, ``<`` and
``>`` makes them plain text that pings nobody.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bot.shapes import ChannelKind, ConversationCard, CustomerPost, DeliveryState, Priority

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
}
DELIVERY_REACTION = {
    DeliveryState.PENDING: "hourglass_flowing_sand",
    DeliveryState.SENT: "white_check_mark",
    DeliveryState.FAILED: "x",
    DeliveryState.CANCELLED: "leftwards_arrow_with_hook",
}


def escape(text: str) -> str:
    """Make customer text inert in Slack: no mentions, no disguised links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
        f"*Status*\n{card.status}" + (f" · owner <@{card.owner}>" if card.owner else ""),
    ]
    if triage.language or triage.sentiment:
        fields.append(
            f"*Language · sentiment*\n{triage.language or '?'} · {triage.sentiment or '?'}"
        )
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
    text = f"{emoji} [{card.short_id}] {subject} from {customer}"
    return text, blocks


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
