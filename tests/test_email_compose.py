"""An agent's reply as the customer's mail program receives it.

Each test composes a reply, writes it out as bytes and reads it back with the standard library's
parser, as the customer's side would.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from email import policy
from email.headerregistry import AddressHeader
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from adapters.email.compose import compose_reply
from adapters.email.parse import parse_email
from adapters.email.tokens import message_id_for, reply_address
from bot.errors import PermanentDeliveryError
from bot.shapes import Attachment, ChannelKind, OutboundReply

SUPPORT_ADDRESS = "support@support.example.com"
SUPPORT_NAME = "Beispiel Support"
TOKEN = "k3j4h5g6f7"
SENT_AT = datetime(2024, 3, 12, 10, 2, tzinfo=UTC)

REPLY = OutboundReply(
    reply_id=12,
    conversation_token=TOKEN,
    channel=ChannelKind.EMAIL,
    to_address="juergen.mueller@kunde-beispiel.de",
    to_name="Jürgen Müller",
    agent_name="Anna Schäfer",
    text="Hallo Herr Müller,\n\nIhre Bestellung wurde heute verschickt.\n\nViele Grüße\nAnna",
    subject="AW: Ihre Anfrage zu Bestellung 4711",
    replies_to=(
        "<AM0PR10MB3155E1B8@EURPRD10.PROD.OUTLOOK.COM>",
        "<sb.k3j4h5g6f7.11@support.example.com>",
        "<CAB1x2y3z@mail.kunde-beispiel.de>",
    ),
)


def compose(reply: OutboundReply = REPLY) -> EmailMessage:
    return compose_reply(
        reply, support_address=SUPPORT_ADDRESS, support_name=SUPPORT_NAME, date=SENT_AT
    )


def received(reply: OutboundReply = REPLY) -> EmailMessage:
    """The reply as the customer's side reads it back from the wire."""
    return BytesParser(policy=policy.default).parsebytes(compose(reply).as_bytes())


def only_address(message: EmailMessage, name: str) -> tuple[str, str]:
    header = message[name]
    assert isinstance(header, AddressHeader)
    (address,) = header.addresses
    return address.display_name, address.addr_spec


def test_from_names_the_agent_and_the_team() -> None:
    assert only_address(received(), "From") == (
        "Anna Schäfer (Beispiel Support)",
        SUPPORT_ADDRESS,
    )


def test_from_is_the_team_alone_when_the_agent_has_no_name() -> None:
    assert only_address(received(replace(REPLY, agent_name="")), "From") == (
        SUPPORT_NAME,
        SUPPORT_ADDRESS,
    )


def test_reply_to_carries_the_conversation_token() -> None:
    assert only_address(received(), "Reply-To") == (
        SUPPORT_NAME,
        "support+k3j4h5g6f7@support.example.com",
    )
    assert reply_address(SUPPORT_ADDRESS, TOKEN) == "support+k3j4h5g6f7@support.example.com"


def test_to_is_the_customer_with_an_encoded_name() -> None:
    wire = compose().as_bytes()
    header_block = wire.split(b"\n\n", 1)[0]

    assert only_address(received(), "To") == ("Jürgen Müller", "juergen.mueller@kunde-beispiel.de")
    assert header_block.isascii()
    assert b"=?utf-8?" in header_block


def test_international_domain_goes_out_in_ascii() -> None:
    message = received(replace(REPLY, to_address="kunde@müller.example"))

    assert only_address(message, "To")[1] == "kunde@xn--mller-kva.example"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("AW: Ihre Anfrage zu Bestellung 4711", "Re: Ihre Anfrage zu Bestellung 4711"),
        ("Re: RE: Aw: Rückfrage", "Re: Rückfrage"),
        ("Rückfrage zur Rechnung", "Re: Rückfrage zur Rechnung"),
        ("Re: Fwd: Lieferschein", "Re: Fwd: Lieferschein"),
        ("", "Re: (no subject)"),
    ],
)
def test_subject_gets_one_re_prefix(subject: str, expected: str) -> None:
    assert received(replace(REPLY, subject=subject))["Subject"] == expected


def test_message_id_is_stable_so_a_retry_sends_the_same_mail() -> None:
    first = received()
    retry = compose_reply(REPLY, support_address=SUPPORT_ADDRESS, support_name=SUPPORT_NAME)

    assert first["Message-ID"] == "<sb.k3j4h5g6f7.12@support.example.com>"
    assert retry["Message-ID"] == first["Message-ID"]
    assert first["Message-ID"] == message_id_for(TOKEN, 12, "support.example.com")


def test_in_reply_to_and_references_continue_the_customers_thread() -> None:
    message = received()

    assert message["In-Reply-To"] == "<AM0PR10MB3155E1B8@EURPRD10.PROD.OUTLOOK.COM>"
    assert str(message["References"]).split() == [
        "<CAB1x2y3z@mail.kunde-beispiel.de>",
        "<sb.k3j4h5g6f7.11@support.example.com>",
        "<AM0PR10MB3155E1B8@EURPRD10.PROD.OUTLOOK.COM>",
    ]


def test_a_first_reply_has_no_thread_headers() -> None:
    message = received(replace(REPLY, replies_to=()))

    assert message["In-Reply-To"] is None
    assert message["References"] is None


def test_a_long_thread_keeps_its_root_and_newest_references() -> None:
    newest_first = tuple(f"<m{number}@kunde.example>" for number in range(30, 0, -1))

    references = str(received(replace(REPLY, replies_to=newest_first))["References"]).split()

    assert len(references) == 20
    assert references[0] == "<m1@kunde.example>"
    assert references[1:] == [f"<m{number}@kunde.example>" for number in range(12, 31)]


def test_date_and_loop_marker_are_set() -> None:
    message = received()

    assert message["Date"].datetime == SENT_AT
    assert message["X-Switchboard-Loop"] == "support.example.com"


def test_body_is_utf8_plain_text() -> None:
    message = received()
    body = message.get_body(("plain",))

    assert body is not None
    assert body.get_content_type() == "text/plain"
    assert body.get_content_charset() == "utf-8"
    assert body.get_content() == REPLY.text + "\n"


def test_attachments_arrive_with_their_names_types_and_bytes() -> None:
    pdf = b"%PDF-1.4\n\x00\xff binary\n%%EOF\n"
    forwarded = "From: lager@kunde.example\r\nSubject: Paket\r\n\r\nIst raus. Grüße\r\n".encode()
    reply = replace(
        REPLY,
        attachments=(
            Attachment("Rechnung März.pdf", "application/pdf", pdf),
            Attachment("notiz.txt", "text/plain; charset=utf-8", "Grüße".encode()),
            Attachment("weitergeleitet.eml", "message/rfc822", forwarded),
            Attachment("raetsel", "", b"\x01\x02"),
        ),
    )

    parts = list(received(reply).iter_attachments())

    assert [(part.get_filename(), part.get_content_type()) for part in parts] == [
        ("Rechnung März.pdf", "application/pdf"),
        ("notiz.txt", "text/plain"),
        ("weitergeleitet.eml", "message/rfc822"),
        ("raetsel", "application/octet-stream"),
    ]
    assert parts[0].get_payload(decode=True) == pdf
    assert parts[1].get_payload(decode=True) == "Grüße".encode()
    enclosed = parts[2].get_content()
    assert enclosed["Subject"] == "Paket"
    assert parts[3].get_payload(decode=True) == b"\x01\x02"


def test_line_breaks_in_names_cannot_add_headers() -> None:
    reply = replace(REPLY, agent_name="Anna\r\nBcc: everyone@example.com", to_name="Kim\nCc: x@y")

    message = received(reply)

    assert message["Bcc"] is None
    assert message["Cc"] is None
    assert only_address(message, "From")[0] == "Anna Bcc: everyone@example.com (Beispiel Support)"


@pytest.mark.parametrize(
    "address", ["", "not-an-address", "kim@", "@example.com", "kim @example.com", "a@b@c"]
)
def test_a_malformed_customer_address_fails_for_good(address: str) -> None:
    with pytest.raises(PermanentDeliveryError, match="not an e-mail address"):
        compose(replace(REPLY, to_address=address))


def test_a_malformed_token_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="conversation token"):
        compose(replace(REPLY, conversation_token="Not-A-Token"))


def test_the_customers_answer_threads_back_by_message_id_or_by_reply_address() -> None:
    ours = received()
    answer = EmailMessage()
    answer["From"] = "Jürgen Müller <juergen.mueller@kunde-beispiel.de>"
    answer["To"] = str(ours["Reply-To"])
    answer["Subject"] = f"AW: {ours['Subject']}"
    answer["Message-ID"] = "<answer-1@kunde-beispiel.de>"
    answer["In-Reply-To"] = str(ours["Message-ID"])
    answer["References"] = f"{ours['References']} {ours['Message-ID']}"
    answer.set_content("Danke, ist angekommen.")
    without_ids = EmailMessage()
    without_ids["From"] = answer["From"]
    without_ids["To"] = answer["To"]
    without_ids.set_content("Danke!")

    by_id = parse_email(answer.as_bytes(), received_at=SENT_AT, own_domain="support.example.com")
    by_address = parse_email(
        without_ids.as_bytes(), received_at=SENT_AT, own_domain="support.example.com"
    )

    assert by_id.replies_to[0] == "<sb.k3j4h5g6f7.12@support.example.com>"
    assert by_id.conversation_token == TOKEN
    assert by_address.conversation_token == TOKEN
    assert not by_id.is_automated


def test_our_own_reply_coming_back_is_recognised_as_a_loop() -> None:
    echoed = parse_email(
        compose().as_bytes(), received_at=SENT_AT, own_domain="support.example.com"
    )

    assert echoed.is_automated
    assert echoed.automated_reason == "mail loop (X-Switchboard-Loop: support.example.com)"
    assert echoed.text == REPLY.text
