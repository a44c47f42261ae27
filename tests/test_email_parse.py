"""Inbound e-mail as real clients send it: what the agent sees, what threads it, what is automated.

The hand-written payloads are in tests/payloads/email/. The mailgun/talon fixtures (Apache-2.0,
real replies from many mail clients) are read from TALON_FIXTURES when that folder exists.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.email import parse as parse_module
from adapters.email.parse import parse_email
from adapters.email.quotes import strip_quotes
from adapters.email.tokens import find_token
from bot.shapes import ChannelKind, InboundMessage
from bot.subjects import is_forward, normalise_subject

PAYLOADS = Path(__file__).parent / "payloads" / "email"
# The shared data lies beside the checkout (../shared); TALON_FIXTURES points elsewhere.
_SHARED_TALON = Path(__file__).resolve().parents[2] / "shared" / "data" / "emails" / "talon"
TALON = Path(os.environ.get("TALON_FIXTURES", str(_SHARED_TALON)))
TALON_EMAILS = sorted(TALON.glob("**/*.eml")) if TALON.is_dir() else []
TALON_EXPECTED = sorted(TALON.glob("standard_replies/*_reply_text")) if TALON.is_dir() else []
TALON_HTML_REPLIES = sorted(TALON.glob("html_replies/*.html")) if TALON.is_dir() else []

RECEIVED = datetime(2024, 3, 15, 9, 30, tzinfo=UTC)
OUR_DOMAIN = "support.example.com"


def parse_payload(
    name: str, *, mail_from: str = "", recipients: Sequence[str] = ()
) -> InboundMessage:
    return parse_email(
        (PAYLOADS / name).read_bytes(),
        received_at=RECEIVED,
        mail_from=mail_from,
        recipients=recipients,
        own_domain=OUR_DOMAIN,
    )


DEFAULT_HEADERS = {
    "From": "Kim Customer <kim@customer.example.org>",
    "To": "support@support.example.com",
    "Subject": "A question",
    "Message-ID": "<question-1@customer.example.org>",
    "Content-Type": "text/plain; charset=utf-8",
}


def mail(headers: str = "", body: str = "Hallo, ich habe eine Frage.\n") -> bytes:
    """A small mail, plain text by default; ``headers`` lines replace the defaults of that name.

    A line starting with whitespace continues the header before it; a name with an empty value
    leaves the header out.
    """
    given = re.split(r"\n(?![ \t])", headers.strip("\n")) if headers.strip() else []
    given_names = {line.partition(":")[0] for line in given}
    lines = [
        *(f"{name}: {value}" for name, value in DEFAULT_HEADERS.items() if name not in given_names),
        *(line.replace("\n", "\r\n") for line in given if line.partition(":")[2].strip()),
        "",
        body,
    ]
    return "\r\n".join(lines).encode("utf-8")


def parse_mail(headers: str, *, mail_from: str = "") -> InboundMessage:
    return parse_email(
        mail(headers), received_at=RECEIVED, mail_from=mail_from, own_domain=OUR_DOMAIN
    )


def test_german_outlook_reply_shows_only_the_new_text_and_finds_its_conversation() -> None:
    message = parse_payload("german_outlook_reply.eml")

    assert message.channel is ChannelKind.EMAIL
    assert message.sender_address == "juergen.mueller@kunde-beispiel.de"
    assert message.sender_name == "Jürgen Müller"
    assert message.subject == "AW: Ihre Anfrage zu Bestellung 4711"
    assert message.text == (
        "Hallo Frau Schäfer,\n\n"
        "die Lieferung ist leider immer noch nicht angekommen. Können Sie bitte nachsehen, wo das "
        "Paket hängt? Die Sendungsnummer funktioniert bei DHL nicht.\n\n"
        "Mit freundlichen Grüßen\nJürgen Müller\nEinkauf, Kunde Beispiel GmbH"
    )
    assert "Ihre Bestellung 4711 wurde heute verschickt." in message.full_text
    assert message.external_id == (
        "<AM0PR10MB3155E1B8D4C6A2F0B8E5C1A8D42A0@AM0PR10MB3155.EURPRD10.PROD.OUTLOOK.COM>"
    )
    assert message.replies_to == (
        "<sb.k3j4h5g6f7.12@support.example.com>",
        "<AM0PR10MB3155A77C0E1F2B3A4C5D6E7F8A9B0@AM0PR10MB3155.EURPRD10.PROD.OUTLOOK.COM>",
    )
    assert message.conversation_token == "k3j4h5g6f7"
    assert not message.is_automated
    assert message.received_at == RECEIVED
    assert message.raw == (PAYLOADS / "german_outlook_reply.eml").read_bytes()


def test_gmail_reply_loses_signature_wrapped_attribution_and_quote() -> None:
    message = parse_payload(
        "gmail_reply.eml",
        mail_from="Jane.Doe@gmail.com",
        recipients=["support+p9q8r7s6t5@support.example.com"],
    )

    assert message.text == (
        "Thanks Anna, that works for me.\n\n"
        "One more question: will the refund show up on the same card?"
    )
    assert "we have issued the refund for order 1182." in message.full_text
    assert message.sender_name == "Jane Doe"
    assert message.sender_address == "jane.doe@gmail.com"
    assert message.subject == "Re: Re: Refund for order 1182"
    assert message.replies_to == (
        "<sb.p9q8r7s6t5.5@support.example.com>",
        "<sb.p9q8r7s6t5.3@support.example.com>",
    )
    assert message.conversation_token == "p9q8r7s6t5"


def test_html_only_mail_becomes_readable_text_without_scripts_or_styles() -> None:
    message = parse_payload("html_only.eml")

    for hidden in ("Internal tracking title", "do-not-show", "never shown", "font-family"):
        assert hidden not in message.full_text
    assert "comment nobody should read" not in message.full_text
    assert "<p>" not in message.full_text
    assert "my order 4711 (https://shop.example.org/orders/4711?ref=mail&lang=en)" in message.text
    assert "2. I also wrote to billing@shop.example.org, see https://status.example.org." in (
        message.text
    )
    assert "paid by card – 49,90 €" in message.text
    assert message.text.endswith("Regards,\nChris")


@pytest.mark.parametrize(
    ("payload", "sender_name", "subject", "text"),
    [
        pytest.param(
            "latin1.eml",
            "Klärchen Böhm",
            "Rückfrage zur Lieferung",
            "Grüß Gott,\n\n"
            "die Lieferung kostet laut Rechnung 12,50 € statt 9,90 €. Warum?\n\n"
            "Schöne Grüße\nKlärchen",
            id="raw latin-1 headers and a cp1252 euro sign",
        ),
        pytest.param(
            "broken_charset.eml",
            "René François",
            "Grüße aus Köln",
            "Grüße aus Köln, die Rechnung über 30 € ist falsch.\n\n"
            "Nachtrag: Bitte an Frau Weiß weiterleiten.",
            id="unknown and mislabelled charsets fall back to utf-8 and cp1252",
        ),
        pytest.param(
            "rfc2047_subject.eml",
            "Jürgen Müller",
            "Rückfrage zur Rechnung – nächste Woche äü",
            "Bitte prüfen Sie die Rechnung.",
            id="encoded words in two charsets, one character split over two words",
        ),
    ],
)
def test_names_subjects_and_text_in_any_charset_are_read(
    payload: str, sender_name: str, subject: str, text: str
) -> None:
    message = parse_payload(payload)

    assert message.sender_name == sender_name
    assert message.subject == subject
    assert message.text == text


def test_attachments_keep_their_names_types_and_bytes() -> None:
    message = parse_payload("attachments.eml")

    assert message.text == "Anbei Rechnung, Lieferschein und das Foto vom Paket."
    assert [(item.filename, item.content_type) for item in message.attachments] == [
        ("attachment-1.png", "image/png"),
        ("Rechnung März 2024.pdf", "application/pdf"),
        (
            "Lieferschein für Bestellung 4711.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        ("Übersicht.csv", "application/octet-stream"),
        ("attachment-5.eml", "message/rfc822"),
    ]
    image, invoice, delivery_note, overview, forwarded = message.attachments
    assert image.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert invoice.data.startswith(b"%PDF-1.4\n")
    assert invoice.data.endswith(b"%%EOF\n")
    assert delivery_note.data == b"PK\x03\x04" + bytes(range(40))
    assert overview.data == b"Artikel;Menge\nSchraube;12\n"
    enclosed = BytesParser(policy=policy.default).parsebytes(forwarded.data)
    assert enclosed["Subject"] == "Paket 4711 versendet"
    assert "Das Paket ist heute rausgegangen." in enclosed.get_content()


def test_out_of_office_reply_is_automated_but_still_finds_its_conversation() -> None:
    message = parse_payload("auto_reply.eml")

    assert message.is_automated
    assert message.automated_reason == "auto-reply (Auto-Submitted: auto-replied)"
    assert message.conversation_token == "k3j4h5g6f7"
    assert message.sender_name == "Petra König"
    assert message.text.startswith("Vielen Dank für Ihre Nachricht.")


def test_bounce_is_a_delivery_report_with_its_machine_parts_attached() -> None:
    message = parse_payload("bounce.eml", mail_from="<>")

    assert message.is_automated
    assert message.automated_reason == "bounce (delivery status notification)"
    assert message.sender_address == "mailer-daemon@mx.kunde.example.de"
    assert "550 5.1.1 User unknown" in message.text
    assert [(item.filename, item.content_type) for item in message.attachments] == [
        ("attachment-1.txt", "message/delivery-status"),
        ("attachment-2.txt", "text/rfc822-headers"),
    ]
    assert b"Final-Recipient: rfc822; nobody@kunde.example.de" in message.attachments[0].data
    assert b"<sb.k3j4h5g6f7.14@support.example.com>" in message.attachments[1].data


def test_mail_without_message_id_gets_a_stable_id_from_its_bytes() -> None:
    raw = (PAYLOADS / "missing_message_id.eml").read_bytes()

    first = parse_email(raw, received_at=RECEIVED)
    again = parse_email(raw, received_at=datetime.now(UTC))
    other = parse_email(raw + b"P.S. one more line\n", received_at=RECEIVED)

    assert first.external_id == f"<sha256-{hashlib.sha256(raw).hexdigest()}@missing-message-id>"
    assert again.external_id == first.external_id
    assert other.external_id != first.external_id
    assert first.text == "A very old mail program that sends no Message-ID."


def test_truncated_multipart_keeps_its_text_and_what_there_is_of_the_attachment() -> None:
    message = parse_payload("truncated_multipart.eml")

    assert message.text == "The printer shows error E=42 since this morning."
    assert [item.filename for item in message.attachments] == ["scan.pdf"]
    assert message.attachments[0].data.startswith(b"%PDF-1.4")


def test_mail_the_parser_cannot_read_at_all_is_shown_as_raw_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class BrokenParser:
        def parsebytes(self, raw: bytes) -> EmailMessage:
            raise RuntimeError("parser bug")

    monkeypatch.setattr(parse_module, "_PARSER", BrokenParser())
    raw = "Subject: kaputt\r\n\r\nGrüße \xa4".encode() + b"\xff"

    message = parse_email(raw, received_at=RECEIVED, mail_from="<>")

    assert message.text == message.full_text
    assert message.text.startswith("Subject: kaputt\n\nGrüße")
    assert message.external_id == f"<sha256-{hashlib.sha256(raw).hexdigest()}@missing-message-id>"
    assert message.subject == "(no subject)"
    assert message.automated_reason == "automatic message (empty envelope sender)"
    assert message.raw == raw


@pytest.mark.parametrize(
    ("headers", "mail_from", "reason"),
    [
        (
            "Auto-Submitted: auto-generated",
            "",
            "automatic message (Auto-Submitted: auto-generated)",
        ),
        ("X-Autoreply: yes", "", "auto-reply (X-Autoreply: yes)"),
        ("X-Autorespond: Vacation", "", "auto-reply (X-Autorespond: Vacation)"),
        ("X-Auto-Response-Suppress: OOF, DR", "", "auto-reply (X-Auto-Response-Suppress: OOF, DR)"),
        ("Precedence: bulk", "", "bulk mail (Precedence: bulk)"),
        ("Precedence: junk", "", "bulk mail (Precedence: junk)"),
        ("Precedence: list", "", "bulk mail (Precedence: list)"),
        (
            "List-Id: Kunden <kunden.lists.example.org>",
            "",
            "mailing list (List-Id: Kunden <kunden.lists.example.org>)",
        ),
        (
            "List-Unsubscribe: <mailto:leave@lists.example.org>",
            "",
            "mailing list (List-Unsubscribe)",
        ),
        ("", "<>", "automatic message (empty envelope sender)"),
        ("From: postmaster@mx.example.net", "", "bounce (from postmaster@mx.example.net)"),
        (
            "Message-ID: <sb.k3j4h5g6f7.9@support.example.com>",
            "",
            "mail loop (Message-ID in our own domain)",
        ),
        (
            "X-Switchboard-Loop: support.example.com",
            "",
            "mail loop (X-Switchboard-Loop: support.example.com)",
        ),
    ],
)
def test_automated_mail_is_recognised_with_a_reason(
    headers: str, mail_from: str, reason: str
) -> None:
    message = parse_mail(headers, mail_from=mail_from)

    assert message.is_automated
    assert message.automated_reason == reason


@pytest.mark.parametrize(
    "headers",
    ["Auto-Submitted: no", "X-Auto-Response-Suppress: DR, RN, NRN", "Precedence: first-class"],
)
def test_mail_a_person_wrote_is_not_automated(headers: str) -> None:
    message = parse_mail(headers, mail_from="kim@customer.example.org")

    assert not message.is_automated
    assert message.automated_reason == ""


def test_envelope_sender_stands_in_for_a_missing_from_header() -> None:
    raw = b"To: support@support.example.com\r\nSubject: hi\r\n\r\nno From header\r\n"

    message = parse_email(raw, received_at=RECEIVED, mail_from="<Anon@Example.NET>")

    assert message.sender_address == "anon@example.net"
    assert message.sender_name == "anon"


def test_sender_without_display_name_is_named_by_local_part() -> None:
    message = parse_mail("From: Kim.C@Customer.example.org")

    assert message.sender_address == "kim.c@customer.example.org"
    assert message.sender_name == "kim.c"


def test_token_in_the_envelope_recipient_plus_tag_threads_a_new_mail() -> None:
    message = parse_email(
        mail(),
        received_at=RECEIVED,
        recipients=["Support+Q1w2e3r4t5@support.example.com"],
        own_domain=OUR_DOMAIN,
    )

    assert message.conversation_token == "q1w2e3r4t5"


def test_a_customers_own_plus_address_is_not_taken_for_a_token() -> None:
    message = parse_mail("Cc: Kim <kim+newsletter@customer.example.org>")

    assert message.conversation_token is None


def test_find_token_prefers_our_message_ids_over_addresses() -> None:
    token = find_token(
        ["support+aaaaaaaaaa@support.example.com"],
        ["<CAx@mail.gmail.com>", "<sb.bbbbbbbbbb.3@support.example.com>"],
        domain=OUR_DOMAIN,
    )

    assert token == "bbbbbbbbbb"
    assert find_token(["support@support.example.com"], ["<sb.short.3@x>"]) is None
    assert find_token([], ["<sb.cccccccccc.1@elsewhere.example>"], domain=OUR_DOMAIN) is None


@pytest.mark.parametrize(
    "header",
    [
        "Message-ID: <question-1@customer.example.org>",
        "Message-ID:   <question-1@\n customer.example.org>  ",
        "Message-ID: question-1@customer.example.org",
    ],
)
def test_message_id_is_normalised_to_one_bracketed_token(header: str) -> None:
    assert parse_mail(header).external_id == "<question-1@customer.example.org>"


def test_replies_to_lists_in_reply_to_then_references_newest_first_without_repeats() -> None:
    message = parse_mail(
        "In-Reply-To: <c@x.example> (Kim's message of Friday)\n"
        "References: <a@x.example>\n <b@x.example>\t<c@x.example>"
    )

    assert message.replies_to == ("<c@x.example>", "<b@x.example>", "<a@x.example>")


@pytest.mark.parametrize(
    ("header", "subject"),
    [
        ("Subject: A\n  question   about\n\tbilling", "A question about billing"),
        ("Subject:", "(no subject)"),
        ("Subject: =?utf-8?Q?_?=", "(no subject)"),
    ],
)
def test_folded_subject_is_collapsed_and_a_missing_one_is_named(header: str, subject: str) -> None:
    assert parse_mail(header).subject == subject


def test_a_forwarded_mail_keeps_the_forwarded_text() -> None:
    body = (
        "Siehe unten, bitte helfen.\n\n"
        "________________________________\n"
        "Von: Lieferant <info@lieferant.example>\n"
        "Gesendet: Montag, 11. März 2024 16:02\n"
        "An: Kim\n"
        "Betreff: Ihre Reklamation\n\n"
        "Wir lehnen die Reklamation ab.\n"
    )

    message = parse_email(mail("Subject: WG: Ihre Reklamation", body), received_at=RECEIVED)

    assert "Wir lehnen die Reklamation ab." in message.text
    assert is_forward(message.subject)


def test_format_flowed_paragraphs_are_joined_again() -> None:
    raw = (
        b"From: kim@customer.example.org\r\nSubject: flowed\r\n"
        b"Content-Type: text/plain; charset=utf-8; format=flowed; delsp=no\r\n\r\n"
        b"This paragraph was wrapped by the \r\nsender's mail client.\r\n\r\n"
        b"> and this quote was \r\n> wrapped too\r\n"
    )

    message = parse_email(raw, received_at=RECEIVED)

    assert message.full_text == (
        "This paragraph was wrapped by the sender's mail client.\n\n"
        "> and this quote was wrapped too"
    )
    assert message.text == "This paragraph was wrapped by the sender's mail client."


def test_html_alternative_is_used_when_the_plain_part_is_empty() -> None:
    raw = (
        b"From: kim@customer.example.org\r\nSubject: empty plain\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\n \r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<p>Only the <b>HTML</b> part says it.</p>\r\n"
        b"--b--\r\n"
    )

    message = parse_email(raw, received_at=RECEIVED)

    assert message.text == "Only the HTML part says it."


@pytest.mark.parametrize(
    ("reply", "new"),
    [
        pytest.param(
            "Works now, thanks!\n\nOn Tue, 12 Mar 2024 at 10:02, Anna from Support <\n"
            "support@example.com> wrote:\n\n> Please restart the router.\n",
            "Works now, thanks!",
            id="english attribution wrapped over two lines",
        ),
        pytest.param(
            "Danke, jetzt geht es.\n\nAm Di., 12. März 2024 um 10:02 Uhr schrieb Anna Schäfer <\n"
            "support@example.com>:\n\n> Bitte starten Sie den Router neu.\n",
            "Danke, jetzt geht es.",
            id="german attribution wrapped over two lines",
        ),
        pytest.param(
            "Danke!\n\nAm 12.03.2024 um 10:02 schrieb Anna:\nBitte starten Sie den Router neu.\n",
            "Danke!",
            id="german attribution without quote marks",
        ),
        pytest.param(
            "Still broken.\n\n-----Original Message-----\nFrom: Support\nSent: Monday\n\nHello\n",
            "Still broken.",
            id="outlook original message",
        ),
        pytest.param(
            "Geht nicht.\n\n-----Ursprüngliche Nachricht-----\nVon: Support\n\nHallo\n",
            "Geht nicht.",
            id="outlook ursprüngliche nachricht",
        ),
        pytest.param(
            "Geht nicht.\n\nVon: Support <support@example.com>\nGesendet: Montag, 11. März 2024\n"
            "An: Kim\nBetreff: Router\n\nHallo Kim\n",
            "Geht nicht.",
            id="outlook von gesendet block",
        ),
        pytest.param(
            "Fixed.\n\n*From:* Support\n*Sent:* Monday\n*To:* Kim\n\nHello\n",
            "Fixed.",
            id="outlook from sent block in bold",
        ),
        pytest.param(
            "Fixed.\n\n________________________________\nFrom: Support\n\nHello\n",
            "Fixed.",
            id="outlook underscore separator",
        ),
        pytest.param(
            "See you tomorrow.\n\n-- \nKim Customer\n+49 30 1234567\n",
            "See you tomorrow.",
            id="signature delimiter",
        ),
        pytest.param(
            "Ok\n\nSent from my iPhone\n\nOn 12 Mar 2024, at 10:02, Anna wrote:\n\n> Hi\n",
            "Ok",
            id="iphone signature",
        ),
        pytest.param(
            "Passt.\n\nVon meinem iPhone gesendet\n\n> Hallo\n",
            "Passt.",
            id="german iphone signature",
        ),
        pytest.param(
            "Passt.\n\nGesendet von Outlook für Android\n",
            "Passt.",
            id="german outlook mobile signature",
        ),
        pytest.param(
            "> Which model is it?\nThe X200.\n\n> Since when?\nSince Monday.\n",
            "The X200.\n\nSince Monday.",
            id="interleaved answers keep their text",
        ),
        pytest.param(
            "Datum: 12.03.2024\nVon: Berlin\nNach: München\n\nBitte umbuchen.\n",
            "Datum: 12.03.2024\nVon: Berlin\nNach: München\n\nBitte umbuchen.",
            id="form fields are not a header block",
        ),
        pytest.param(
            "Am Montag schrieb ich Ihnen bereits:\nDie Lieferung fehlt.\n",
            "Am Montag schrieb ich Ihnen bereits:\nDie Lieferung fehlt.",
            id="a german sentence is not an attribution",
        ),
        pytest.param(
            "On 3 March the courier wrote:\nWe could not deliver your parcel.\n",
            "On 3 March the courier wrote:\nWe could not deliver your parcel.",
            id="an english sentence is not an attribution",
        ),
        pytest.param(
            "> only a quote\n> nothing new\n",
            "> only a quote\n> nothing new",
            id="nothing new keeps the whole text",
        ),
    ],
)
def test_strip_quotes_keeps_only_what_is_new(reply: str, new: str) -> None:
    assert strip_quotes(reply) == new


@pytest.mark.parametrize(
    ("subject", "normalised"),
    [
        ("Re: AW: Fwd:  Bestellung   4711", "bestellung 4711"),
        ("RE: RE[2]: Refund", "refund"),
        ("WG: Wg: SV: Antw: Rechnung", "rechnung"),
        ("[Ticket #12] Re: Drucker", "[ticket #12] re: drucker"),
        ("Aware: of the problem", "aware: of the problem"),
        ("Re : FW : Lieferung", "lieferung"),
    ],
)
def test_normalise_subject_drops_reply_and_forward_prefixes(subject: str, normalised: str) -> None:
    assert normalise_subject(subject) == normalised


@pytest.mark.parametrize("path", TALON_EMAILS, ids=lambda path: path.name)
def test_real_world_replies_parse_and_lose_their_quotes(path: Path) -> None:
    message = parse_email(path.read_bytes(), received_at=RECEIVED)

    assert message.text
    assert len(message.text) < len(message.full_text)
    assert "wrote:" not in message.text
    assert "Original Message" not in message.text


@pytest.mark.parametrize("expected_path", TALON_EXPECTED, ids=lambda path: path.name)
def test_real_world_replies_match_the_expected_reply_up_to_its_signature(
    expected_path: Path,
) -> None:
    client = expected_path.name.removesuffix("_reply_text")
    message = parse_email(
        (expected_path.parent / f"{client}.eml").read_bytes(), received_at=RECEIVED
    )
    # talon keeps signatures in its expected text; we drop them as well.
    expected = expected_path.read_text(encoding="utf-8").strip()

    assert expected.startswith(message.text)
    assert expected[len(message.text) :].strip().startswith(("Sent from my iPhone", "--"))


@pytest.mark.parametrize("path", TALON_HTML_REPLIES, ids=lambda path: path.name)
def test_real_world_html_replies_lose_their_quotes(path: Path) -> None:
    html_mail = EmailMessage()
    html_mail["From"] = "alex@example.com"
    html_mail["Subject"] = "Re: Test message"
    html_mail.set_content(path.read_text(encoding="utf-8"), subtype="html")

    message = parse_email(html_mail.as_bytes(), received_at=RECEIVED)

    assert message.text.startswith("Hi. I am fine.")
    assert message.text.endswith("Alex")
    assert "How are you?" in message.full_text
    assert "How are you?" not in message.text


def test_hostile_html_is_converted_without_blowing_up() -> None:
    unclosed_tags = "<p " * 20_000
    deep_lists = "<ul><li>level" * 3_000
    deep_quotes = "<blockquote>level" * 3_000

    texts = [
        parse_email(mail("Content-Type: text/html", markup), received_at=RECEIVED).full_text
        for markup in (unclosed_tags, deep_lists, deep_quotes)
    ]

    assert texts[0].startswith("<p <p <p")
    assert texts[1].count("level") == 3_000
    assert texts[2].count("level") == 3_000
    # Nesting is flattened past a few levels, so the text grows with the input, not its square.
    assert all(len(text) < 100_000 for text in texts)


SEEDS = sorted(PAYLOADS.glob("*.eml"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_mail_never_raises_and_always_has_a_text(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(SEEDS), label="payload").read_bytes()
    start = data.draw(st.integers(0, len(original)), label="start")
    end = data.draw(st.integers(start, min(len(original), start + 200)), label="end")
    noise = data.draw(st.binary(max_size=40), label="noise")
    damaged = original[:start] + noise + original[end:]

    message = parse_email(damaged, received_at=RECEIVED, own_domain=OUR_DOMAIN)

    assert message.raw == damaged
    assert message.external_id.startswith("<")
    assert message.external_id.endswith(">")
    assert message.subject
    assert message.text or not message.full_text


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    message = parse_email(raw, received_at=RECEIVED)

    assert message.channel is ChannelKind.EMAIL
    assert message.raw == raw
