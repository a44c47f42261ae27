"""Contact data in an e-mail signature: phone, company, position, address.

Only suggestions: the customer card shows them with the e-mail they came from, and they are
stored only when an agent confirms one. The signature is the short block at the end of the
newest part of the mail (before any quoted history): after a ``-- `` line or a closing
("Best regards", "Mit freundlichen Grüßen", ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.phones import e164

_QUOTE_START = re.compile(
    r"^(>|On .+ wrote:|Am .+ schrieb .+:|-----\s*Original|From:|Von:)", re.IGNORECASE
)
_CLOSINGS = re.compile(
    r"^(best( regards)?|kind regards|regards|many thanks|thanks|cheers|sincerely|yours|"
    r"mit freundlichen grüßen|mit freundlichem gruß|freundliche grüße|viele grüße|beste grüße|"
    r"liebe grüße|herzliche grüße|grüße|gruß|mfg|vg|lg)\b[ ,!.]*$",
    re.IGNORECASE,
)
_PHONE = re.compile(
    r"(?:tel(?:efon)?|phone|mobil(?:e)?|handy|fon|mob|cell|t|m)\.?\s*:?\s*"
    r"(\+?\(?\d[\d\s()/.\-]{6,}\d)",
    re.IGNORECASE,
)
_BARE_PHONE = re.compile(r"^(\+\d[\d\s()/.\-]{6,}\d)$")
_COMPANY = re.compile(
    r"\b(GmbH|AG|KG|OHG|UG|SE|e\.\s?V\.|Ltd\.?|Limited|Inc\.?|LLC|Corp\.?|S\.A\.|B\.V\.|"
    r"S\.r\.l\.|plc|Co\.)(\s|$|,)"
)
_POSITION = re.compile(
    r"\b(manager|managerin|director|direktor|head of|leiter|leiterin|geschäftsführer|"
    r"geschäftsführerin|ceo|cto|cfo|coo|founder|gründer|engineer|ingenieur|assistant|"
    r"assistentin|consultant|berater|beraterin|officer|einkauf|purchasing|buyer|sales|"
    r"vertrieb|owner|inhaber|inhaberin|team lead|teamleiter|accountant|buchhaltung)\b",
    re.IGNORECASE,
)
_CITY = re.compile(r"^(?:[A-Z]{1,2}-)?\d{4,5}\s+\S.*$")
_STREET = re.compile(r"^\S.*\s\d+\s?[a-zA-Z]?$")
_MAX_LINES = 10


@dataclass(frozen=True, slots=True)
class Found:
    """One piece of contact data and the signature line it came from."""

    kind: str
    value: str


def signature_block(text: str) -> list[str]:
    """The lines of the signature of the newest part of ``text`` (empty if none is found)."""
    lines: list[str] = []
    for line in text.splitlines():
        if _QUOTE_START.match(line.strip()):
            break
        lines.append(line.rstrip())
    start = None
    for index, line in enumerate(lines):
        if line in ("-- ", "--") or _CLOSINGS.match(line.strip()):
            start = index + 1
    if start is None:
        return []
    block = [line.strip() for line in lines[start:] if line.strip()]
    return block[:_MAX_LINES]


def contact_data(text: str) -> list[Found]:
    """Phone numbers, company, position and address in the signature of ``text``."""
    block = signature_block(text)
    found: list[Found] = []

    def add(kind: str, value: str) -> None:
        value = value.strip(" ,;")
        if value and Found(kind, value) not in found:
            found.append(Found(kind, value))

    for index, line in enumerate(block):
        phone = _PHONE.search(line) or _BARE_PHONE.match(line)
        if phone:
            number = phone.group(1)
            add("phone", e164(number) or number.strip())
            continue
        if "@" in line or "://" in line or line.lower().startswith("www."):
            continue
        if _CITY.match(line):
            previous = block[index - 1] if index else ""
            street = previous if _STREET.match(previous) and not _PHONE.search(previous) else ""
            add("address", f"{street}, {line}" if street else line)
            continue
        if _COMPANY.search(line):
            add("company", line)
            continue
        if _POSITION.search(line) and len(line) <= 80:
            add("position", line)
    return found
