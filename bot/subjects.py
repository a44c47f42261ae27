"""Subject lines: the reply and forward prefixes mail clients add, and the form used for matching.

Clients in different languages add different prefixes ("Re:", German "AW:" and "WG:", Nordic
"SV:", Dutch "Antw:", French "TR:"), some with a counter ("Re[2]:") or a space before the colon.
A follow-up is matched to its conversation on the subject without them.
"""

from __future__ import annotations

import re

_REPLY_WORDS = frozenset({"re", "aw", "antw", "sv"})

_PREFIX = re.compile(
    r"\s*(?P<word>re|aw|antw|sv|fwd|fw|wg|tr)(?:\s*(?:\[\d+\]|\(\d+\)|\^\d+))?\s*[:：]",
    re.IGNORECASE,
)


def _leading_prefixes(subject: str) -> list[tuple[str, int]]:
    """Each leading prefix as (lowercase word, end offset in ``subject``), in order."""
    prefixes: list[tuple[str, int]] = []
    position = 0
    while found := _PREFIX.match(subject, position):
        position = found.end()
        prefixes.append((found["word"].lower(), position))
    return prefixes


def normalise_subject(subject: str) -> str:
    """The subject without reply and forward prefixes, lowercased, with single spaces."""
    prefixes = _leading_prefixes(subject)
    rest = subject[prefixes[-1][1] :] if prefixes else subject
    return " ".join(rest.split()).lower()


def reply_subject(subject: str) -> str:
    """The subject of a reply: exactly one "Re: " in front, however many reply prefixes it had."""
    rest_from = 0
    for word, end in _leading_prefixes(subject):
        if word not in _REPLY_WORDS:
            break
        rest_from = end
    rest = " ".join(subject[rest_from:].split())
    return f"Re: {rest or '(no subject)'}"


def is_forward(subject: str) -> bool:
    """Whether the subject's first prefix says the message forwards another one (Fwd:, WG:)."""
    prefixes = _leading_prefixes(subject)
    return bool(prefixes) and prefixes[0][0] not in _REPLY_WORDS
