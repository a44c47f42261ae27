"""Hostile and broken mail: the MIME parser on generated messages, and the SMTP endpoint's limits.

Whatever the bytes, ``parse_email`` returns a message or raises ``IntakeError`` (mail built to
exhaust the parser: nesting past ``MAX_MIME_DEPTH``, more than ``MAX_MIME_PARTS`` parts), and
the text it returns grows with the input, not faster.
"""

from __future__ import annotations

import base64
import os
import smtplib
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.email.parse import MAX_MIME_DEPTH, MAX_MIME_PARTS, parse_email
from bot.errors import IntakeError
from bot.shapes import InboundMessage
from models import Job, Message, StoredAttachment
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import SettingsFactory, running

RECEIVED = datetime(2024, 3, 15, 9, 30, tzinfo=UTC)
HEADER = b"From: Kim <kim@customer.example.org>\r\nSubject: hostile\r\nMIME-Version: 1.0\r\n"

CHARSETS = ["utf-8", "iso-8859-1", "windows-1252", "x-unknown", "utf-7", "\xff\xfe", "", "ascii"]
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "bogus", ""]
LEAF_TYPES = [
    "text/plain",
    "text/html",
    "application/pdf",
    "image/png",
    "message/delivery-status",
    "text/rfc822-headers",
    "multipart/mixed",  # a multipart without a boundary
    "nonsense",
    "",
]
HEADER_NAMES = [
    "Subject",
    "From",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Content-Type",
    "Content-Disposition",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
    "X-Anything",
]


def _text(max_size: int) -> st.SearchStrategy[bytes]:
    """Bytes that look like header or body text: mostly ASCII, some 8-bit, some encoded words."""
    pieces = st.one_of(
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.encode),
        st.binary(max_size=12),
        st.sampled_from(
            [b"=?utf-8?b?w6Q=?=", b"=?x-unknown?q?=E4?=", b"=?utf-8?B?!!?=", b"=?", b"\r\n ", b";"]
        ),
    )
    return st.lists(pieces, max_size=max_size).map(b"".join)


@st.composite
def header_soup(draw: st.DrawFn) -> bytes:
    """Header lines: known and unknown names, folded, 8-bit, encoded words, broken parameters."""
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.sampled_from(HEADER_NAMES) | st.text("X-abc:", min_size=1, max_size=8))
        value = draw(_text(6))
        lines.append(name.encode() + b": " + value + b"\r\n")
    return b"".join(lines)


@st.composite
def leaf(draw: st.DrawFn) -> bytes:
    content_type = draw(st.sampled_from(LEAF_TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    encoding = draw(st.sampled_from(ENCODINGS))
    name = draw(st.none() | _text(3))
    headers = f'Content-Type: {content_type}; charset="{charset}"\r\n'.encode(errors="replace")
    headers += f"Content-Transfer-Encoding: {encoding}\r\n".encode()
    if name is not None:
        headers += b'Content-Disposition: attachment; filename="' + name + b'"\r\n'
    headers += draw(header_soup())
    body = draw(_text(10) | st.binary(max_size=200))
    if encoding == "base64" and draw(st.booleans()):
        body = base64.encodebytes(body)
    return headers + b"\r\n" + body


def multipart(children: list[bytes], boundary: str = "b") -> bytes:
    head = f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\npreamble\r\n'.encode()
    parts = b"".join(f"--{boundary}\r\n".encode() + child + b"\r\n" for child in children)
    return head + parts + f"--{boundary}--\r\nepilogue\r\n".encode()


def enclosed(child: bytes) -> bytes:
    return b"Content-Type: message/rfc822\r\n\r\n" + child


@st.composite
def mime_tree(draw: st.DrawFn) -> bytes:
    """A message of leaves, multiparts (sometimes with clashing boundaries) and enclosed mail."""

    def extend(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
        boundaries = st.sampled_from(["b", "b1", "=_x", "b b", ""])
        return st.one_of(
            st.builds(multipart, st.lists(children, max_size=4), boundaries),
            st.builds(enclosed, children),
        )

    body = draw(st.recursive(leaf(), extend, max_leaves=8))
    cut = draw(st.none() | st.integers(0, len(body)))  # sometimes the message ends early
    return HEADER + draw(header_soup()) + (body if cut is None else body[:cut])


def parsed_or_refused(raw: bytes) -> InboundMessage | None:
    """The parsed message, or None when the parser refused it for the documented reason."""
    refusal = ""
    try:
        message = parse_email(raw, received_at=RECEIVED, own_domain="support.example.com")
    except IntakeError as refused:
        refusal = refused.reason
    if refusal:
        assert "MIME parts" in refusal
        return None
    assert message.raw == raw
    assert message.subject
    assert message.external_id.startswith("<")
    assert message.external_id.endswith(">")
    # Decoding never multiplies the input: no bomb hides in transfer encodings or charsets.
    assert len(message.full_text) <= 2 * len(raw) + 1000
    assert sum(len(a.data) for a in message.attachments) <= 2 * len(raw) + 1000
    return message


@given(raw=mime_tree())
def test_generated_mime_parses_or_is_refused_for_its_size(raw: bytes) -> None:
    parsed_or_refused(raw)


@given(raw=st.binary(max_size=3000), headers=header_soup())
def test_random_bytes_after_header_soup_parse(raw: bytes, headers: bytes) -> None:
    assert parsed_or_refused(headers + b"\r\n" + raw) is not None


def nested_multiparts(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nat the bottom\r\n"
    for level in range(depth):
        body = multipart([body], boundary=f"level{level}")
    return HEADER + body


def nested_messages(depth: int) -> bytes:
    body = b"Subject: inside\r\n\r\nat the bottom\r\n"
    for _ in range(depth):
        body = enclosed(body)
    return HEADER + body


@pytest.mark.parametrize("nest", [nested_multiparts, nested_messages])
def test_nesting_past_the_limit_is_refused_before_the_parser_does_the_work(nest: object) -> None:
    assert callable(nest)
    # 200 levels of multipart cost the standard library's parser 0.4 s, 1,000 levels 12 s.
    for depth in (MAX_MIME_DEPTH, 200, 5000):
        with pytest.raises(IntakeError, match=f"nested more than {MAX_MIME_DEPTH} levels"):
            parse_email(nest(depth), received_at=RECEIVED)


def test_nesting_within_the_limit_still_finds_the_text_at_the_bottom() -> None:
    message = parse_email(nested_multiparts(MAX_MIME_DEPTH - 3), received_at=RECEIVED)
    assert message.text == "at the bottom"

    forwarded = parse_email(nested_messages(MAX_MIME_DEPTH - 3), received_at=RECEIVED)
    assert [a.content_type for a in forwarded.attachments] == ["message/rfc822"]
    assert forwarded.attachments[0].data.endswith(b"Subject: inside\n\nat the bottom\n")


def many_parts(count: int) -> bytes:
    files = [
        f"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        f"filename=f{number}.bin\r\n\r\n{number}".encode()
        for number in range(count)
    ]
    return HEADER + multipart(files)


def test_more_parts_than_the_limit_are_refused() -> None:
    # The root and the multipart count as parts too.
    assert len(parse_email(many_parts(MAX_MIME_PARTS - 2), received_at=RECEIVED).attachments) == (
        MAX_MIME_PARTS - 2
    )
    with pytest.raises(IntakeError, match=f"more than {MAX_MIME_PARTS} MIME parts"):
        parse_email(many_parts(MAX_MIME_PARTS), received_at=RECEIVED)


@pytest.mark.parametrize(
    ("raw", "check"),
    [
        pytest.param(
            b"From: a@b.example\r\nSubject: " + b"x" * 1_000_000 + b"\r\n\r\nbody\r\n",
            lambda m: len(m.subject) == 1_000_000 and m.text == "body",
            id="a one-megabyte subject line",
        ),
        pytest.param(
            HEADER + b"X-Folded: " + b"word\r\n " * 100_000 + b"\r\nbody\r\n",
            lambda m: m.text == "body",
            id="a header folded over 100,000 lines",
        ),
        pytest.param(
            HEADER + b'Content-Type: text/plain; charset="x-\xff-unknown"\r\n\r\nGr\xfc\xdfe\r\n',
            lambda m: m.text == "Grüße",
            id="an invalid charset label",
        ),
        pytest.param(
            HEADER + b"Content-Type: text/plain; charset=utf-16\r\n\r\n\xff\xfe\xd8\x00",
            lambda m: m.text,
            id="utf-16 that is cut in half",
        ),
        pytest.param(
            HEADER + b"Content-Transfer-Encoding: base64\r\n\r\n!!!@@@###=\r\n",
            lambda m: m.full_text in ("", "!!!@@@###="),
            id="base64 garbage",
        ),
        pytest.param(
            HEADER + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\xff=4 ok\r\n",
            lambda m: "ok" in m.text,
            id="quoted-printable garbage",
        ),
        pytest.param(
            HEADER + b"Content-Type: text/html\r\n\r\n" + b"<b>x</b>" * 300_000,
            lambda m: m.full_text.count("x") == 300_000,
            id="HTML too big to convert keeps its text",
        ),
        pytest.param(
            HEADER
            + multipart(
                [
                    b"Content-Type: text/plain\r\n\r\nsee the file",
                    b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
                    b'filename="empty.pdf"\r\n\r\n',
                ]
            ),
            lambda m: [(a.filename, a.data) for a in m.attachments] == [("empty.pdf", b"")],
            id="a zero-byte attachment",
        ),
    ],
)
def test_hostile_mail_is_read_as_well_as_it_can_be(raw: bytes, check: object) -> None:
    message = parsed_or_refused(raw)

    assert message is not None
    assert callable(check)
    assert check(message)


def big_mail(attachment: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = "Kim <kim@customer.example.org>"
    message["To"] = "support@shop.example"
    message["Subject"] = "Das Video vom Schaden"
    message["Message-ID"] = f"<big-{len(attachment)}@customer.example.org>"
    message.set_content("Anbei das Video.")
    message.add_attachment(attachment, maintype="video", subtype="mp4", filename="schaden.mp4")
    return message.as_bytes(policy=policy.SMTP)


MEGABYTE = 1000 * 1000


async def test_a_25_mb_attachment_goes_through_and_a_bigger_mail_gets_552(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    video = os.urandom(25 * MEGABYTE)
    fits = big_mail(video)
    limit = len(fits) + 1024
    # Jobs do not run: the point is what the SMTP endpoint takes and stores.
    async with running(
        make_settings, slack, relay, run_jobs=False, email_extra=f"max_message_bytes = {limit}"
    ) as h:
        await h.send_mail(fits)

        stored = await StoredAttachment.get()
        assert stored.filename == "schaden.mp4"
        assert bytes(stored.data) == video

        too_big = big_mail(video + os.urandom(2 * MEGABYTE))
        with pytest.raises(smtplib.SMTPException) as refused:
            await h.send_mail(too_big)
        assert "552" in str(refused.value)
        assert await Message.all().count() == 1


async def test_a_nesting_bomb_gets_554_with_the_reason_and_the_next_mail_is_taken(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay, run_jobs=False) as h:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await h.send_mail(nested_multiparts(1000))
        assert refused.value.smtp_code == 554
        assert b"nested more than" in refused.value.smtp_error
        assert await Message.all().count() == 0
        assert await Job.all().count() == 0

        await h.send_mail(nested_multiparts(3))
        assert await Message.all().count() == 1
