"""How loud a message is: the model's reading combined with the team's rules.

The model reads what a message is about (its concerns, trained on the ``[concern]`` examples of
config/triage_examples.toml): an outage, blocked work, lost money, lost data, security, health,
a legal threat or a deadline make it at least high, and the reason names them ("high: outage,
blocked work"); automatic replies and messages that need nothing are low; everything else is a
normal request. A second head (``[priority]`` examples) tells urgent from high. The rules add
what the text alone cannot tell: who is writing (VIP customers and domains), words the team
always treats as pressing, the customer's mood, how often they have followed up and how long they
have waited. Every factor that applied is named in the reason, e.g. "urgent: 'Server down', VIP
domain". The rules (``PriorityRules``, with their defaults) are settings: ``[triage.priority]``.

Two kinds of message never get louder from their words: automatic mail (auto-replies, bounces,
loops: the e-mail parser marks them) is always low, and text that cannot be read (empty, or bytes
decoded into noise) is judged by the conversation's rules alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from bot.settings import PriorityRules as PriorityRules
from bot.shapes import Priority
from bot.triage.sentiment import polarity

_ORDER = (Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.URGENT)
#: Concerns that make a message low: nothing for an agent to do.
LOW_CONCERNS = ("automatic reply", "nothing to do")
#: The concern of a plain request: normal.
ROUTINE_CONCERN = "request"
#: A pressing concern is named in the reason if it holds this share of the pressing probability.
CONCERN_NAMED_FROM = 0.25
#: The model this sure that a message is an automatic reply (its likeliest reading) makes it
#: low, keywords and all ("for urgent matters please contact ..."), even without the headers
#: that mark one, unless it asks a question (an automatic reply does not; "my refills did not
#: come, can you send them?" does). Below it, that reading weighs as "nothing to do" does: a
#: pressing reading or a keyword still raises the message (a customer's note that a delivery
#: failed is no bounce).
AUTOMATIC_REPLY_FROM = 0.7
#: The probability that a message is pressing from which it is at least high. Below one half:
#: the concern model spreads an unsure reading over its eight pressing concerns, and missing a
#: pressing message costs a customer more than a lead's look at a plain one (chosen on the
#: evaluation sets and the first two hold-outs; priority_holdout3.tsv was scored after).
PRESSING_FROM = 0.45
#: Text with more replacement characters than this share was not decoded: it is not read.
UNREADABLE_SHARE = 0.02
#: How the customer's mood is named in the reason.
_MOODS = {"anger": "angry customer", "frustration": "frustrated customer"}


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


#: A keyword right after one of these is denied, not said ("not urgent", "nicht so dringend",
#: "kein Notfall"); only a softening word may stand between ("not working, urgent" counts).
_NEGATION = re.compile(
    r"(?<!\w)(?:not|no|never|nothing|isn't|aren't|nicht|kein\w*|nie)\s+"
    r"(?:(?:so|that|very|really|too|sehr|besonders|wirklich|ganz|allzu)\s+)?$",
    re.IGNORECASE,
)


#: ... or names a case, not this one: "in dringenden Fällen wenden Sie sich an", "for urgent
#: matters please call", "im Notfall erreichen Sie" (out-of-office replies and signatures).
_CASE_BEFORE = re.compile(r"(?<!\w)(?:in|im|bei|für|for)\s+$", re.IGNORECASE)
_CASE_AFTER = re.compile(
    r"\w*\s+(?:fällen|fälle|anliegen|angelegenheiten|fragen|matters|cases|enquiries|inquiries"
    r"|issues|requests|questions)(?!\w)",
    re.IGNORECASE,
)
#: ... the same without a noun after it: "for anything urgent, call", "if urgent", "falls es
#: dringend ist", "wenn's eilt".
_ANY_CASE_BEFORE = re.compile(
    r"(?<!\w)(?:(?:for|in|bei|für)\s+(?:anything|something|alles|etwas)"
    r"|if|falls|wenn)(?:\s+(?:it's|it\s+is|es|'s|sehr|really|wirklich))*\s+$",
    re.IGNORECASE,
)
#: ... or stands in quotation marks: a name or a quote ("Notfall-Set", an old subject line).
_QUOTED = re.compile(r'"[^"\n]{1,120}"|„[^“”"\n]{1,120}[“”"]|“[^”\n]{1,120}”|«[^»\n]{1,120}»')
#: A question a person asks ("can you send them?", "where is it?!"); an encoded word
#: ("=?UTF-8?B?...?=") is none.
_QUESTION = re.compile(r"\w[\s)\"'“”]*\?(?![\w=])")


def _find(words: tuple[str, ...], text: str) -> str:
    """The first of ``words`` that ``text`` says of itself; empty if none."""
    pattern = _keyword_pattern(words)
    quoted: list[tuple[int, int]] | None = None  # found when a keyword is
    for found in pattern.finditer(text) if pattern else ():
        start, end = found.start(), found.end()
        if _NEGATION.search(text, max(0, start - 40), start):
            continue
        before = _CASE_BEFORE.search(text, max(0, start - 8), start)
        if before and (found.group(0).lower() == "notfall" or _CASE_AFTER.match(text, end)):
            continue
        if _ANY_CASE_BEFORE.search(text, max(0, start - 30), start):
            continue
        if quoted is None:
            quoted = [m.span() for m in _QUOTED.finditer(text)]
        if any(first < start and end < last for first, last in quoted):
            continue
        return found.group(0)
    return ""


def asks_a_question(text: str) -> bool:
    """True if ``text`` asks something, as a person writing does and an automatic reply does not."""
    return _QUESTION.search(text) is not None


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
    #: The model's probability of each concern (see the module docstring).
    concerns: tuple[tuple[str, float], ...] = ()
    #: Automatic mail (auto-reply, bounce, loop): never above low.
    automated: bool = False
    #: False for empty text or undecodable bytes: its words and mood count for nothing.
    readable: bool = True


def pressing_concerns(concerns: Sequence[tuple[str, float]]) -> tuple[float, list[str]]:
    """The probability that a message is pressing, and the pressing concerns worth naming."""
    pressing = sorted(
        ((p, name) for name, p in concerns if name not in LOW_CONCERNS and name != ROUTINE_CONCERN),
        reverse=True,
    )
    share = sum(p for p, _ in pressing)
    named = [name for p, name in pressing if share and p / share >= CONCERN_NAMED_FROM][:2]
    return share, named or [name for _, name in pressing[:1]]


def _model_reading(
    signals: PrioritySignals, rules: PriorityRules, *, asks: bool
) -> tuple[Priority, list[str]]:
    """The level the model's reading gives, and what it saw (``asks``: the text asks a
    question, so it is a person's, whatever the model took it for)."""
    sure = signals.model_confidence >= rules.model_min_confidence
    heard = signals.model_priority if sure else Priority.NORMAL
    share, named = pressing_concerns(signals.concerns)
    read = [c for c in signals.concerns if not (asks and c[0] == LOW_CONCERNS[0])]
    top = max(read, key=lambda c: c[1], default=("", 0.0))
    low = top[0] in LOW_CONCERNS and top[1] >= 0.5
    if share >= PRESSING_FROM or (heard in (Priority.HIGH, Priority.URGENT) and not low and named):
        return (Priority.URGENT if heard == Priority.URGENT else Priority.HIGH), named
    if low:
        return Priority.LOW, [top[0]]
    if heard == Priority.LOW:
        return Priority.LOW, ["nothing to do"]
    return Priority.NORMAL, []


def readable(text: str) -> bool:
    """False for empty text and for bytes decoded into noise (replacement characters, mojibake)."""
    visible = "".join(text.split())
    if not visible or visible.count("\ufffd") > len(visible) * UNREADABLE_SHARE:
        return False
    # Words of two letters or more; mojibake ("Ã¤Ã¶") and binary noise have few of them.
    letters = sum(len(word) for word in re.findall(r"[^\W\d_]{2,}", text))
    return letters >= len(visible) / 2


def decide_priority(signals: PrioritySignals, rules: PriorityRules) -> tuple[Priority, str]:
    """The priority and its reason (empty for a plain normal message)."""
    if signals.automated:
        return Priority.LOW, "low: automatic mail"
    asks = asks_a_question(signals.text)
    if (
        signals.readable
        and dict(signals.concerns).get(LOW_CONCERNS[0], 0.0) >= AUTOMATIC_REPLY_FROM
        and not asks
    ):
        return Priority.LOW, f"low: {LOW_CONCERNS[0]}"
    level = Priority.NORMAL
    reasons: list[str] = []
    if signals.readable:
        level, reasons = _model_reading(signals, rules, asks=asks)
    else:
        reasons.append("unreadable text")

    text = signals.text if signals.readable else ""
    urgent_hit = _find(rules.urgent_keywords, text)
    high_hit = _find(rules.high_keywords, text)
    low_hit = _find(rules.low_keywords, text)
    if urgent_hit:
        level = Priority.URGENT
        reasons.insert(0, f"'{urgent_hit}'")
    elif high_hit:
        level = _at_least(level, Priority.HIGH)
        reasons.insert(0, f"'{high_hit}'")
    elif low_hit and level == Priority.NORMAL:
        level = Priority.LOW
        reasons.append(f"'{low_hit}'")
    elif low_hit and level != Priority.LOW:
        # The customer says nothing is pressing: the model's reading alone does not overrule it.
        level, reasons = Priority.NORMAL, []
    if level != Priority.LOW:
        # A keyword raised a message the model read as needing nothing: only the keyword counts.
        reasons = [reason for reason in reasons if reason not in LOW_CONCERNS]

    if (
        signals.readable
        and polarity(signals.sentiment) == "negative"
        and signals.sentiment_confidence >= rules.negative_min_confidence
    ):
        level = _raised(level, cap=Priority.HIGH)
        reasons.append(_MOODS.get(signals.sentiment, "negative sentiment"))

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
