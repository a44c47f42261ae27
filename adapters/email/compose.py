"""Outbound e-mail: an agent's ``OutboundReply`` as a MIME message for the SMTP relay.

Everything in the message is derived from the reply, so a retry after a crash sends the same
Message-ID and the customer's client shows one mail, not two.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime

from adapters.email.tokens import message_id_for, reply_address
from bot.errors import PermanentDeliveryError
from bot.shapes import OutboundReply
from bot.subjects import reply_subject

# Long threads would otherwise grow References past what some servers accept; the root and the
# newest ids are the ones clients thread by (RFC 5322 section 3.6.4).
_MAX_REFERENCES = 20

_PARSER = BytesParser(policy=policy.default)

_ADDRESS = re.compile(r"([^\s@<>()\[\],;:\\\"]+)@([^\s@<>()\[\],;:\\\"]+)")


def compose_reply(
    reply: OutboundReply,
    *,
    support_address: str,
    support_name: str,
    date: datetime | None = None,
) -> EmailMessage:
    """The e-mail that carries ``reply`` to the customer; the same reply gives the same ids."""
    domain = support_address.rpartition("@")[2].strip().lower()
    agent_name = _one_line(reply.agent_name)
    support_name = _one_line(support_name)
    if agent_name and support_name:
        sender_name = f"{agent_name} ({support_name})"
    else:
        sender_name = agent_name or support_name

    message = EmailMessage()
    message["From"] = Address(display_name=sender_name, addr_spec=support_address.strip())
    message["Reply-To"] = Address(
        display_name=support_name,
        addr_spec=reply_address(support_address, reply.conversation_token),
    )
    message["To"] = _recipient(reply.to_name, reply.to_address)
    message["Subject"] = reply_subject(_one_line(reply.subject))
    message["Date"] = format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    message["Message-ID"] = message_id_for(reply.conversation_token, reply.reply_id, domain)
    if reply.replies_to:
        message["In-Reply-To"] = reply.replies_to[0]
        chain = list(reversed(reply.replies_to))
        if len(chain) > _MAX_REFERENCES:
            chain = chain[:1] + chain[-(_MAX_REFERENCES - 1) :]
        message["References"] = " ".join(chain)
    # Marks our own mail, so that it is recognised as a loop if it ever comes back to us.
    message["X-Switchboard-Loop"] = domain

    text = reply.text.replace("\r\n", "\n").replace("\r", "\n")
    message.set_content(
        text if text.endswith("\n") else text + "\n",
        subtype="plain",
        charset="utf-8",
        cte="quoted-printable",
    )
    for attachment in reply.attachments:
        maintype, subtype = _mime_type(attachment.content_type)
        filename = _one_line(attachment.filename) or "attachment"
        if maintype == "message":
            # RFC 2046 forbids base64 for message/*: the enclosed mail goes as a message part.
            enclosed = _PARSER.parsebytes(attachment.data)
            message.add_attachment(enclosed, subtype=subtype, filename=filename)
        else:
            message.add_attachment(
                attachment.data, maintype=maintype, subtype=subtype, filename=filename
            )
    return message


def _one_line(value: str) -> str:
    # A line break in a header value would start a header of the sender's choosing.
    return " ".join(value.split())


def _recipient(name: str, address: str) -> Address:
    """The customer's address as a header value; a malformed one is a permanent failure."""
    found = _ADDRESS.fullmatch(address.strip())
    try:
        if not found:
            raise ValueError("expected local-part@domain")
        # International domains go out in their ASCII form, which every relay accepts.
        ascii_domain = found[2].encode("idna").decode("ascii")
        return Address(display_name=_one_line(name), username=found[1], domain=ascii_domain)
    except (ValueError, UnicodeError) as exc:
        raise PermanentDeliveryError(f"cannot send to {address!r}: not an e-mail address") from exc


def _mime_type(content_type: str) -> tuple[str, str]:
    """(maintype, subtype) of a content type, application/octet-stream when it makes no sense."""
    maintype, _, subtype = content_type.partition(";")[0].strip().lower().partition("/")
    if not maintype or not subtype or "/" in subtype or maintype == "multipart":
        return "application", "octet-stream"
    if (maintype, subtype) == ("message", "partial"):
        return "application", "octet-stream"
    return maintype, subtype
