"""What is new in a reply: quoted text, attribution lines and signatures taken away.

Handles the reply styles of common mail clients in English and German: "On <date>, X wrote:" and
"Am <date> schrieb X:" attributions (also wrapped over two or three lines), ">" quotes, Outlook's
"-----Original Message-----" / "-----Ursprüngliche Nachricht-----" and "____" separators, header
blocks ("From: ... Sent: ..." / "Von: ... Gesendet: ...", also in French, Spanish and Russian),
the "-- " signature delimiter and the one-line signatures of mobile mail apps. Bottom-posted and
interleaved answers keep their text; only the quoted lines between them go.
"""

from __future__ import annotations

import itertools
import re

_QUOTED = re.compile(r"^\s*>")

# The lookahead wants a digit (the date), so that "Am Montag schrieb ich Ihnen:" is not taken.
_ATTRIBUTION = re.compile(
    r"^(?=.*\d)[\s>*_-]*(?:on\s.{1,250}\swrote|am\s.{1,250}\sschrieb(?:\s.{0,250})?)\s*:[\s*_]*$",
    re.IGNORECASE,
)
_ATTRIBUTION_START = re.compile(r"^[\s>*_-]*(?:on|am)\s", re.IGNORECASE)
# Mail clients put a time or an address in their attribution; a customer's sentence such as
# "On 3 March the courier wrote:" has neither, and what follows it is their own text.
_CLIENT_ATTRIBUTION = re.compile(r"@|\d{1,2}:\d{2}")

# Words that end a client's attribution line in languages we do not parse in full.
_ATTRIBUTION_VERB = re.compile(
    r"\b(?:wrote|schrieb|écrit|escribió|scritto|schreef|skrev|napisał|написал|написала)\b",
    re.IGNORECASE,
)

_SEPARATOR = re.compile(
    r"^\s*(?:-{2,}\s*(?:original message|original|ursprüngliche nachricht|originalnachricht"
    r"|original-nachricht|message d'origine)\s*-{2,}|_{20,})\s*$",
    re.IGNORECASE,
)

# Header names as Outlook and webmailers write them in English, German, French, Spanish, Russian.
_HEADER_LINE = re.compile(
    r"^[\s*_]*(from|von|de|от|sent|gesendet|envoyé|enviado|отправлено|date|datum|дата"
    r"|to|an|à|para|кому|cc|subject|betreff|objet|asunto|тема)[\s*_]*:",
    re.IGNORECASE,
)
_HEADER_FROM = frozenset({"from", "von", "de", "от"})
_HEADER_WHEN = frozenset(
    {"sent", "gesendet", "envoyé", "enviado", "отправлено", "date", "datum", "дата"}
)

_SIGNATURE_DELIMITER = re.compile(r"^--\s?$")
# A horizontal rule ("* * *" from HTML, a line of dashes) left over above a cut-off quote.
_RULE = re.compile(r"^\s*(?:[-_*]\s*){3,}$")

_MOBILE_SIGNATURE = re.compile(
    r"^\s*(?:"
    r"sent from my (?:iphone|ipad|ipod|android|blackberry|samsung|galaxy|huawei|xiaomi|pixel"
    r"|mobile|smartphone|phone|tablet)\b.{0,60}"
    r"|sent (?:from|with|via) (?:mail|outlook|yahoo mail|gmail|proton ?mail|aol|the samsung)\b"
    r".{0,80}"
    r"|get outlook for (?:ios|android)\b.{0,80}"
    r"|von meinem .{1,60} gesendet"
    r"|gesendet (?:von|mit|über) (?:meinem|der|dem|mail|outlook|yahoo|gmx|web\.de|t-online)\b"
    r".{0,80}"
    r"|diese nachricht wurde von meinem .{1,80} gesendet"
    r")[.!]?\s*$",
    re.IGNORECASE,
)

_MAX_ATTRIBUTION_LINES = 3
_HEADER_BLOCK_LINES = 10
_WRAPPED_LINE_MIN = 30


def strip_quotes(text: str) -> str:
    """The new part of a reply: quotes, attributions and signatures removed (or all of it)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    in_quote = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if _QUOTED.match(line):
            if not in_quote:
                _drop_attribution(kept)
                # What follows the quote is a paragraph of its own.
                kept.append("")
            in_quote = True
            index += 1
            continue
        if line.strip():
            in_quote = False
        attribution = _attribution_length(lines, index)
        if attribution and _next_is_quoted(lines, index + attribution):
            index += attribution
            continue
        if attribution and _CLIENT_ATTRIBUTION.search(" ".join(lines[index : index + attribution])):
            break
        if _SEPARATOR.match(line) or _starts_header_block(lines, index):
            break
        if _SIGNATURE_DELIMITER.match(line):
            break
        if not _MOBILE_SIGNATURE.match(line):
            kept.append(line.rstrip())
        index += 1
    while kept and (not kept[-1].strip() or _RULE.match(kept[-1])):
        kept.pop()
    new = tidy_lines("\n".join(kept))
    return new or tidy_lines(text)


def tidy_lines(text: str) -> str:
    """Text with Unix newlines, no trailing spaces, no runs of blank lines, none at either end."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def _next_is_quoted(lines: list[str], index: int) -> bool:
    for line in itertools.islice(lines, index, None):
        if line.strip():
            return bool(_QUOTED.match(line))
    return False


def _attribution_length(lines: list[str], index: int) -> int:
    """How many lines from ``index`` make an "On ... wrote:" / "Am ... schrieb ...:" line."""
    if not _ATTRIBUTION_START.match(lines[index]):
        return 0
    joined = ""
    for count, line in enumerate(lines[index : index + _MAX_ATTRIBUTION_LINES], start=1):
        if not line.strip():
            return 0
        joined = f"{joined} {line.strip()}"
        if _ATTRIBUTION.match(joined):
            return count
    return 0


def _drop_attribution(kept: list[str]) -> None:
    """Remove the line(s) introducing a quote block, in whatever language the client wrote them.

    An introduction ends with ":" and names an address, a date or a "wrote" verb; a long line
    before it without closing punctuation is the first half of the same wrapped line.
    """
    while kept and not kept[-1].strip():
        kept.pop()
    if not kept or not kept[-1].rstrip(" *_").endswith(":"):
        return
    if not (_ATTRIBUTION_VERB.search(kept[-1]) or re.search(r"[@\d]", kept[-1])):
        return
    start = len(kept) - 1
    while len(kept) - start < _MAX_ATTRIBUTION_LINES and start > 0:
        previous = kept[start - 1].strip()
        wrapped = len(previous) >= _WRAPPED_LINE_MIN and not previous.endswith((".", "!", "?", ":"))
        if not (previous.endswith("<") or wrapped):
            break
        start -= 1
    del kept[start:]


def _starts_header_block(lines: list[str], index: int) -> bool:
    """Whether a quoted message's header block ("From: ... Sent: ... To: ...") starts here."""
    if not _HEADER_LINE.match(lines[index]):
        return False
    names: set[str] = set()
    for line in lines[index : index + _HEADER_BLOCK_LINES]:
        if not line.strip():
            break
        if found := _HEADER_LINE.match(line):
            names.add(found[1].lower())
    # Three different names, one of them the sender and one the date, so that a customer's own
    # "Datum: ... / Von: Berlin" lines are not taken for a quoted message.
    return len(names) >= 3 and bool(names & _HEADER_FROM) and bool(names & _HEADER_WHEN)
