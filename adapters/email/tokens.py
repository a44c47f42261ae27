"""Conversation tokens in our outbound mail: where we put them and how we find them in an answer.

Every reply we send carries its conversation's token twice: in its Message-ID
(``<sb.{token}.{reply_id}@{domain}>``), which comes back in the customer's In-Reply-To and
References, and as the plus-tag of its Reply-To address (``support+{token}@domain``), which comes
back as the recipient. Either one is enough to thread the answer when a client drops the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.utils import parseaddr

TOKEN = re.compile(r"[a-z0-9]{10}")

_OUR_MESSAGE_ID = re.compile(r"<sb\.([a-z0-9]{10})\.\d+@([^<>@\s]+)>", re.IGNORECASE)


def _checked(token: str) -> str:
    # A malformed token would go out fine and then never be found in the answer.
    if not TOKEN.fullmatch(token):
        raise ValueError(f"conversation token {token!r} is not 10 characters of [a-z0-9]")
    return token


def message_id_for(token: str, reply_id: int, domain: str) -> str:
    """The Message-ID of reply ``reply_id`` in the conversation with ``token``."""
    return f"<sb.{_checked(token)}.{reply_id}@{domain.strip().lower()}>"


def reply_address(support_address: str, token: str) -> str:
    """The support address with the conversation's token as its plus-tag."""
    local, _, domain = support_address.strip().rpartition("@")
    return f"{local}+{_checked(token)}@{domain}"


def find_token(
    addresses: Iterable[str], message_ids: Iterable[str], *, domain: str = ""
) -> str | None:
    """The conversation token in our Message-IDs or in a recipient's plus-tag, if there is one.

    Message-IDs are tried first (In-Reply-To names the exact mail answered); with ``domain``, only
    ids and addresses in that domain count, so a customer's own plus-address is never taken.
    """
    domain = domain.strip().lower()
    for message_id in message_ids:
        found = _OUR_MESSAGE_ID.fullmatch(message_id.strip())
        if found and (not domain or found[2].lower() == domain):
            return found[1].lower()
    for address in addresses:
        addr_spec = parseaddr(address)[1] or address
        local, at, address_domain = addr_spec.strip().lower().rpartition("@")
        if not at or (domain and address_domain != domain):
            continue
        _, plus, tag = local.rpartition("+")
        if plus and TOKEN.fullmatch(tag):
            return tag
    return None
