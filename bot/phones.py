"""Phone numbers in one form, E.164 (``+4915112345678``), so the same number matches anywhere."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s().\-/]")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def e164(number: str) -> str | None:
    """``number`` as E.164, or None when it is not an international number.

    WhatsApp ids (``4915112345678``) are international without the plus; a leading ``00`` is
    the international prefix. A national number (``0151 ...``) cannot be told apart, so it is None.
    """
    compact = _SEPARATORS.sub("", number.strip())
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    elif compact.isdigit() and not compact.startswith("0"):
        compact = "+" + compact
    return compact if _E164.match(compact) else None
