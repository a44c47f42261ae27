"""How loud a message is: the model's reading combined with the team's rules.

The model hears urgency (trained on config/triage_examples.toml) and the customer's mood; the
rules add what the text alone cannot tell: who is writing (VIP customers and domains), words the
team always treats as pressing, how often the customer has followed up, and how long they have
waited. Every factor that applied is named in the reason, e.g. "urgent: 'Server down', VIP domain".
The rules (``PriorityRules``, with their defaults) are settings: ``[triage.priority]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from bot.settings import PriorityRules as PriorityRules
from bot.shapes import Priority

_ORDER = (Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.URGENT)
_TONES = {
    Priority.URGENT: "urgent tone",
    Priority.HIGH: "pressing tone",
    Priority.LOW: "casual tone",
}


def _rank(priority: Priority) -> int:
    return _ORDER.index(priority)


def _raised(priority: Priority, *, cap: Priority = Priority.URGENT) -> Priority:
    """``priority`` one step up, but never past ``cap`` (and never lowered)."""
    return _ORDER[max(min(_rank(priority) + 1, _rank(cap)), _rank(priority))]


def _at_least(priority: Priority, floor: Priority) -> Priority:
    return _ORDER[max(_rank(priority), _rank(floor))]


@lru_cache(maxsize=64)
def _keyword_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    """One case-insensitive pattern finding any of ``words`` at the start of a word."""
    alternatives = "|".join(re.escape(w.strip()) for w in words if w.strip())
    return re.compile(rf"(?<!\w)(?:{alternatives})", re.IGNORECASE) if alternatives else None


def _find(words: tuple[str, ...], text: str) -> str:
    pattern = _keyword_pattern(words)
    found = pattern.search(text) if pattern else None
    return found.group(0) if found else ""


@dataclass(frozen=True, slots=True)
class PrioritySignals:
    """Everything priority is decided from, for one message."""

    text: str
    sender_address: str = ""
    model_priority: Priority = Priority.NORMAL
    model_confidence: float = 0.0
    sentiment: str = "neutral"
    sentiment_confidence: float = 0.0
    follow_ups: int = 0
    waiting_hours: float = 0.0


def decide_priority(signals: PrioritySignals, rules: PriorityRules) -> tuple[Priority, str]:
    """The priority and its reason (empty for a plain normal message)."""
    level = Priority.NORMAL
    reasons: list[str] = []

    if signals.model_confidence >= rules.model_min_confidence:
        level = signals.model_priority
        if level in _TONES:
            reasons.append(_TONES[level])

    urgent_hit = _find(rules.urgent_keywords, signals.text)
    high_hit = _find(rules.high_keywords, signals.text)
    low_hit = _find(rules.low_keywords, signals.text)
    if urgent_hit:
        level = Priority.URGENT
        reasons.insert(0, f"'{urgent_hit}'")
    elif high_hit:
        level = _at_least(level, Priority.HIGH)
        reasons.insert(0, f"'{high_hit}'")
    elif low_hit and level == Priority.NORMAL:
        level = Priority.LOW
        reasons.append(f"'{low_hit}'")

    if (
        signals.sentiment == "negative"
        and signals.sentiment_confidence >= rules.negative_min_confidence
    ):
        level = _raised(level, cap=Priority.HIGH)
        reasons.append("negative sentiment")

    address = signals.sender_address.strip().lower()
    domain = address.rpartition("@")[2]
    if address and address in {c.lower() for c in rules.vip_customers}:
        level = _raised(level)
        reasons.append("VIP customer")
    elif domain and domain in {d.lower().lstrip("@") for d in rules.vip_domains}:
        level = _raised(level)
        reasons.append("VIP domain")

    level = _waiting_rules(level, signals.follow_ups, signals.waiting_hours, rules, reasons)
    return level, _reason(level, reasons)


def escalate(
    priority: Priority, *, follow_ups: int, waiting_hours: float, rules: PriorityRules
) -> tuple[Priority, str]:
    """``priority`` raised by the follow-up and waiting rules alone, and the reason for it.

    The running service applies these to a conversation whose customer is still waiting.
    """
    reasons: list[str] = []
    level = _waiting_rules(priority, follow_ups, waiting_hours, rules, reasons)
    return level, _reason(level, reasons)


def outranks(priority: Priority, other: Priority) -> bool:
    """True if ``priority`` is more pressing than ``other``."""
    return _rank(priority) > _rank(other)


def _waiting_rules(
    level: Priority, follow_ups: int, waiting_hours: float, rules: PriorityRules, reasons: list[str]
) -> Priority:
    """``level`` after the rules on follow-ups and waiting time; adds their reasons."""
    if rules.follow_ups_to_raise and follow_ups >= rules.follow_ups_to_raise:
        level = _raised(level)
        reasons.append(f"{follow_ups} follow-ups")

    if waiting_hours >= rules.waiting_hours_urgent:
        level = Priority.URGENT
        reasons.append(f"waiting {waiting_hours:.0f} h")
    elif waiting_hours >= rules.waiting_hours_high:
        level = _at_least(level, Priority.HIGH)
        reasons.append(f"waiting {waiting_hours:.0f} h")
    return level


def _reason(level: Priority, reasons: list[str]) -> str:
    return f"{level.value}: {', '.join(reasons)}" if reasons else ""
