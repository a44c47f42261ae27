"""Inbound e-mail: the raw bytes received over SMTP as an ``InboundMessage``.

Mail from the real world is often malformed: broken MIME, unknown or wrong charsets, raw 8-bit
headers. Nothing here raises on such input. Each header and part is decoded as well as it can
be, and when even that fails the raw bytes become the text, so a customer's message is always
stored and shown, never dropped.

The one exception is mail built to exhaust the parser: MIME parts nested more than
``MAX_MIME_DEPTH`` deep, or more than ``MAX_MIME_PARTS`` of them. The standard library's parser
checks every line against every enclosing boundary, so a 70 KB message nested a thousand levels
deep takes it seconds; such mail raises ``IntakeError`` (the SMTP sender gets 554 with the
reason) before that work is done.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import html
import mimetypes
import re
from collections.abc import Sequence
from datetime import datetime
from email import policy
from email.feedparser import FeedParser
from email.message import Message, MIMEPart
from email.policy import EmailPolicy
from email.utils import collapse_rfc2231_value, getaddresses
from typing import Any, cast

import html2text

from adapters.email.quotes import strip_quotes, tidy_lines
from adapters.email.tokens import find_token
from bot.errors import IntakeError
from bot.shapes import Attachment, ChannelKind, InboundMessage
from bot.subjects import is_forward


class _RememberingPolicy(EmailPolicy):
    """The default policy, remembering the headers it has parsed.

    Reading a message asks for Content-Type and its parameters a dozen times, and the default
    policy parses the header anew each time (most of the cost of a plain message). Parsing is
    a pure function of the header's name and text, so the result can be reused.
    """

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (one policy object, kept for the process)
    def header_fetch_parse(self, name: str, value: str) -> Any:
        return super().header_fetch_parse(name, value)


# Real mail nests a few levels (a forward of a forward) and holds dozens of parts at most.
MAX_MIME_DEPTH = 50
MAX_MIME_PARTS = 1000


class _BoundedFeedParser(FeedParser):
    """The standard library's parser, stopping at the first part past the limits."""

    def __init__(self, policy: EmailPolicy) -> None:
        super().__init__(policy=policy)
        self._depth = 0
        self._parts = 0

    # The parser opens each part, at any depth, with _new_message and closes it with
    # _pop_message (CPython's email.feedparser since 2.4; not in the type stubs).
    def _new_message(self) -> None:
        self._parts += 1
        self._depth += 1
        if self._depth > MAX_MIME_DEPTH:
            raise IntakeError(f"MIME parts are nested more than {MAX_MIME_DEPTH} levels deep")
        if self._parts > MAX_MIME_PARTS:
            raise IntakeError(f"the message has more than {MAX_MIME_PARTS} MIME parts")
        super()._new_message()  # type: ignore[misc]

    def _pop_message(self) -> Message:
        self._depth -= 1
        popped: Message = super()._pop_message()  # type: ignore[misc]
        return popped


class _BoundedParser:
    """``BytesParser.parsebytes`` with the limits of ``_BoundedFeedParser``."""

    def __init__(self, policy: EmailPolicy) -> None:
        self.policy = policy

    def parsebytes(self, raw: bytes) -> Message:
        parser = _BoundedFeedParser(self.policy)
        # What BytesParser does: non-ASCII bytes survive as surrogates for the policy to decode.
        parser.feed(raw.decode("ascii", "surrogateescape"))
        return parser.close()


_PARSER = _BoundedParser(_RememberingPolicy())

# Serialises an enclosed message as it was received: no refolding, 8-bit bodies left alone.
_VERBATIM = policy.default.clone(refold_source="none", cte_type="8bit")

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_ANGLE_ID = re.compile(r"<[^<>]+>")
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)

# Labels that in practice mean "whatever Windows wrote": real UTF-8 is often sent under them.
_WESTERN_CHARSETS = frozenset(
    {"", "us-ascii", "ascii", "iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "cp1252",
     "windows-1252", "iso-8859-15", "iso8859-15"}
)  # fmt: skip

# An unclosed comment, script or style runs to the end, as in a browser; that also keeps these
# patterns linear on hostile input.
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_HTML_SCRIPT = re.compile(
    r"<(script|style)\b[^>]{0,2000}>.*?(?:</\1\s*>|\Z)", re.IGNORECASE | re.DOTALL
)
# html2text indents each level of lists and quotes, so deep nesting makes text quadratic in size.
_NESTING_TAG = re.compile(r"<(/?)(?:ul|ol|blockquote)\b[^<>]*>", re.IGNORECASE)
_MAX_NESTING = 10
_HTML_HEAD_START = re.compile(r"<head\b[^>]{0,2000}>", re.IGNORECASE)
_HTML_HEAD_END = re.compile(r"</head\s*>", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^<>]*>")
# html2text takes some 15 µs a tag: a message-sized page of tags would hold a thread for a minute.
# Bigger HTML (no mail client writes that much) is shown with its tags removed instead.
_MAX_CONVERTED_HTML = 1024 * 1024
# A "<" that starts a tag but is not closed before the next "<". Python's HTMLParser takes time
# quadratic in their number (CVE-2025-6069), so they are shown as text instead.
_UNCLOSED_TAG = re.compile(r"<(?=[A-Za-z/!?])(?=[^<>]*(?:<|\Z))")
_MARKDOWN_LINK = re.compile(r"\[([^\[\]\n]*)\]\(((?:\\.|[^()\s\\])*)(?:\s+\"[^\"\n]*\")?\)")
_AUTOMATIC_LINK = re.compile(r"<((?:https?|ftp|mailto):[^<>\s]+)>")
# html2text marks list-like "1." "+" "-" in text with a backslash, and doubles backslashes.
_MARKDOWN_MARKER_ESCAPE = re.compile(r"(?<!\\)\\([.+-])")
_MARKDOWN_BACKSLASH_ESCAPE = re.compile(r"\\\\(?=[\\`*_{}\[\]()#+\-.!])")

_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "text/plain": ".txt",
    "text/calendar": ".ics",
    "text/rfc822-headers": ".txt",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt",
}
# Only the built-in table, so attachment names do not depend on the host's mime.types.
_MIME_TYPES = mimetypes.MimeTypes()

_AUTOMATED_SENDERS = frozenset({"mailer-daemon", "postmaster"})
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
_SHOWN_HEADER_CHARS = 80


def parse_email(
    raw: bytes,
    *,
    received_at: datetime,
    mail_from: str = "",
    recipients: Sequence[str] = (),
    own_domain: str = "",
) -> InboundMessage:
    """Translate one received e-mail into an ``InboundMessage``.

    Never raises on malformed mail; raises ``IntakeError`` only for mail past
    ``MAX_MIME_DEPTH`` or ``MAX_MIME_PARTS``. ``mail_from`` and ``recipients`` are the SMTP
    envelope (pass ``"<>"`` for a null sender); ``own_domain`` is our support domain, for
    conversation tokens and mail loops.
    """
    try:
        return _parse(
            raw,
            received_at=received_at,
            mail_from=mail_from,
            recipients=recipients,
            own_domain=own_domain,
        )
    except IntakeError:
        raise
    except Exception:  # malformed mail must still be stored and shown, whatever broke
        return _unreadable(raw, received_at=received_at, mail_from=mail_from)


def _parse(
    raw: bytes,
    *,
    received_at: datetime,
    mail_from: str,
    recipients: Sequence[str],
    own_domain: str,
) -> InboundMessage:
    # The policy's message factory is EmailMessage (a MIMEPart); the parser's types say Message.
    message = cast(MIMEPart, _PARSER.parsebytes(raw))
    sender_address, sender_name = _sender(message, mail_from)
    subject = " ".join(_header(message, "Subject").split()) or "(no subject)"
    external_id = _message_id(message) or _synthetic_message_id(raw)
    replies_to = _replies_to(message)
    try:
        full_text, attachments = _body(message)
    except Exception:  # a part the parser cannot take apart: show the mail as it came
        full_text, attachments = tidy_lines(_decode_bytes(raw, None)), ()
    addresses = [*recipients, *_addresses(message, "To"), *_addresses(message, "Cc")]
    reason = _automated_reason(
        message,
        mail_from=mail_from,
        sender_address=sender_address,
        external_id=external_id,
        own_domain=own_domain,
    )
    return InboundMessage(
        channel=ChannelKind.EMAIL,
        external_id=external_id,
        sender_address=sender_address,
        sender_name=sender_name,
        subject=subject,
        # What a forward carries is the news, so only replies lose their quoted part.
        text=full_text if is_forward(subject) else strip_quotes(full_text),
        full_text=full_text,
        received_at=received_at,
        attachments=attachments,
        replies_to=replies_to,
        conversation_token=find_token(addresses, replies_to, domain=own_domain),
        is_automated=bool(reason),
        automated_reason=reason,
        raw=raw,
    )


def _unreadable(raw: bytes, *, received_at: datetime, mail_from: str) -> InboundMessage:
    sender = mail_from.strip().strip("<>").lower()
    text = tidy_lines(_decode_bytes(raw, None))
    reason = _envelope_reason(mail_from)
    return InboundMessage(
        channel=ChannelKind.EMAIL,
        external_id=_synthetic_message_id(raw),
        sender_address=sender,
        sender_name=sender.partition("@")[0],
        subject="(no subject)",
        text=text,
        full_text=text,
        received_at=received_at,
        is_automated=bool(reason),
        automated_reason=reason,
        raw=raw,
    )


def _envelope_reason(mail_from: str) -> str:
    # The null reverse-path is what bounces and other notifications are sent with (RFC 5321).
    return "automatic message (empty envelope sender)" if mail_from.strip() == "<>" else ""


def _synthetic_message_id(raw: bytes) -> str:
    return f"<sha256-{hashlib.sha256(raw).hexdigest()}@missing-message-id>"


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Text from bytes in a declared charset that may be unknown, wrong or missing."""
    label = (charset or "").strip().strip("\"'").lower()
    if label in _WESTERN_CHARSETS:
        # Real UTF-8 is often sent under these labels; when they say latin-1 they mean cp1252,
        # as the HTML standard reads them too.
        label = "cp1252"
        if (text := _as_utf8(data)) is not None:
            return text
    try:
        return data.decode(label)
    except (LookupError, ValueError, TypeError):  # unknown label, or bytes not in that charset
        pass
    text = _as_utf8(data)
    return text if text is not None else data.decode("cp1252", errors="replace")


def _as_utf8(data: bytes) -> str | None:
    """``data`` read as UTF-8, or None when it is not UTF-8.

    A stray bad byte in otherwise UTF-8 text costs one character; text with more broken bytes
    than UTF-8 sequences is another charset.
    """
    text = data.decode("utf-8", errors="replace")
    broken = text.count("\ufffd")
    if broken and len(_UTF8_SEQUENCE.findall(data)) <= broken:
        return None
    return text


def _raw_headers(message: MIMEPart, name: str) -> list[str]:
    """Every ``name`` header as text, unfolded, with raw 8-bit bytes decoded.

    ``raw_items`` gives headers as received: the policy's own decoding turns raw 8-bit bytes and
    encoded words in unknown charsets into U+FFFD, where a fallback charset reads them fine.
    """
    wanted = name.lower()
    values: list[str] = []
    for key, value in message.raw_items():
        if key.lower() != wanted:
            continue
        text = str(value)
        if any("\udc80" <= char <= "\udcff" for char in text):
            text = _decode_bytes(text.encode("utf-8", "surrogateescape"), None)
        values.append(re.sub(r"\r?\n", "", text).strip())
    return values


def _header(message: MIMEPart, name: str) -> str:
    """The first ``name`` header, RFC 2047 encoded words decoded; "" when absent."""
    values = _raw_headers(message, name)
    return _decode_words(values[0]) if values else ""


def _decode_words(value: str) -> str:
    """``value`` with RFC 2047 encoded words decoded, each in its charset or a fallback one."""
    pieces: list[str] = []
    run = bytearray()
    run_charset = ""
    last_end = 0
    for word in _ENCODED_WORD.finditer(value):
        data = _encoded_word_bytes(word[2], word[3])
        if data is None:
            continue
        gap = value[last_end : word.start()]
        charset = word[1].partition("*")[0].lower()
        # Whitespace between encoded words is not text (RFC 2047 section 6.2); some clients
        # split one character's bytes over two words, so a run is decoded as a whole.
        adjacent = last_end > 0 and not gap.strip()
        if run and not (adjacent and charset == run_charset):
            pieces.append(_decode_bytes(bytes(run), run_charset))
            run.clear()
        if not adjacent:
            pieces.append(gap)
        run += data
        run_charset = charset
        last_end = word.end()
    if run:
        pieces.append(_decode_bytes(bytes(run), run_charset))
    pieces.append(value[last_end:])
    return "".join(pieces)


def _encoded_word_bytes(encoding: str, text: str) -> bytes | None:
    data = text.encode("utf-8", "surrogateescape")
    try:
        if encoding in "bB":
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        return binascii.a2b_qp(data, header=True)
    except (binascii.Error, ValueError):
        return None


def _address_pairs(message: MIMEPart, name: str) -> list[tuple[str, str]]:
    """(display name, address) of every address in the ``name`` headers."""
    pairs: list[tuple[str, str]] = []
    for value in _raw_headers(message, name):
        # Split before decoding: a decoded display name may hold commas and angle brackets.
        for display_name, address in getaddresses([value]):
            decoded_name = " ".join(_decode_words(display_name).split())
            pairs.append((decoded_name, "".join(address.split())))
    return pairs


def _addresses(message: MIMEPart, name: str) -> list[str]:
    return [address for _, address in _address_pairs(message, name) if "@" in address]


def _sender(message: MIMEPart, mail_from: str) -> tuple[str, str]:
    """The sender's address (lowercase) and name, from From or else the envelope."""
    pairs = _address_pairs(message, "From")
    for display_name, address in sorted(pairs, key=lambda pair: "@" not in pair[1]):
        if address:
            address = address.lower()
            return address, display_name or address.partition("@")[0]
    envelope = mail_from.strip().strip("<>").lower()
    return envelope, envelope.partition("@")[0]


def _message_id(message: MIMEPart) -> str:
    for value in _raw_headers(message, "Message-ID"):
        compact = "".join(value.split())
        found = _ANGLE_ID.search(compact)
        if found:
            return found[0]
        if compact.strip("<>"):
            return f"<{compact.strip('<>')}>"
    return ""


def _ids(message: MIMEPart, name: str) -> list[str]:
    compact = "".join("".join(_raw_headers(message, name)).split())
    return _ANGLE_ID.findall(compact)


def _replies_to(message: MIMEPart) -> tuple[str, ...]:
    """In-Reply-To first, then References newest first (they are listed oldest first)."""
    ids = [*_ids(message, "In-Reply-To"), *reversed(_ids(message, "References"))]
    return tuple(dict.fromkeys(ids))


def _shown(value: str) -> str:
    value = " ".join(value.split())
    if len(value) > _SHOWN_HEADER_CHARS:
        return value[: _SHOWN_HEADER_CHARS - 1] + "…"
    return value


def _automated_reason(
    message: MIMEPart,
    *,
    mail_from: str,
    sender_address: str,
    external_id: str,
    own_domain: str,
) -> str:
    """Why no one should answer this mail automatically, or "" when a person wrote it."""
    loop = _header(message, "X-Switchboard-Loop")
    if loop:
        return f"mail loop (X-Switchboard-Loop: {_shown(loop)})"
    domain = own_domain.strip().lower()
    if domain and external_id.lower().endswith(f"@{domain}>"):
        return "mail loop (Message-ID in our own domain)"
    if _content_type(message) == "multipart/report":
        report_type = _param(message, "report-type").lower()
        if report_type == "delivery-status":
            return "bounce (delivery status notification)"
        if report_type == "disposition-notification":
            return "read receipt (disposition notification)"
        return f"automatic report (multipart/report; report-type={_shown(report_type)})"
    if sender_address.partition("@")[0] in _AUTOMATED_SENDERS:
        return f"bounce (from {sender_address})"
    auto_submitted = _header(message, "Auto-Submitted")
    kind = auto_submitted.partition(";")[0].strip().lower()
    if kind and kind != "no":
        what = "auto-reply" if kind == "auto-replied" else "automatic message"
        return f"{what} (Auto-Submitted: {_shown(auto_submitted)})"
    for name in ("X-Autoreply", "X-Autorespond"):
        if _raw_headers(message, name):
            return f"auto-reply ({name}: {_shown(_header(message, name))})"
    suppress = _header(message, "X-Auto-Response-Suppress")
    if {"all", "oof"} & set(re.split(r"[\s,;]+", suppress.lower())):
        return f"auto-reply (X-Auto-Response-Suppress: {_shown(suppress)})"
    if reason := _envelope_reason(mail_from):
        return reason
    precedence = _header(message, "Precedence").strip().lower()
    if precedence in _BULK_PRECEDENCE:
        return f"bulk mail (Precedence: {precedence})"
    list_id = _header(message, "List-Id")
    if list_id:
        return f"mailing list (List-Id: {_shown(list_id)})"
    if _raw_headers(message, "List-Unsubscribe"):
        return "mailing list (List-Unsubscribe)"
    return ""


def _body(message: MIMEPart) -> tuple[str, tuple[Attachment, ...]]:
    """The decoded body text (text/plain preferred over HTML) and every attachment."""
    bodies: list[str] = []
    attachments: list[Attachment] = []
    _walk(message, want_body=True, bodies=bodies, attachments=attachments)
    text = "\n\n".join(body for body in (tidy_lines(body) for body in bodies) if body)
    return text, tuple(attachments)


def _walk(
    part: MIMEPart, *, want_body: bool, bodies: list[str], attachments: list[Attachment]
) -> None:
    """Collect body texts and attachments from ``part`` and everything inside it.

    ``want_body`` is false inside the alternatives not chosen: their texts repeat the body, but
    an image they carry (an HTML alternative's inline picture) is still an attachment.
    """
    try:
        maintype = _content_type(part).partition("/")[0]
        if maintype == "multipart" and part.is_multipart():
            subparts = list(part.iter_parts())
            chosen = _preferred_alternative(subparts) if _is_alternative(part) else None
            for subpart in subparts:
                wanted = want_body and (chosen is None or subpart is chosen)
                _walk(subpart, want_body=wanted, bodies=bodies, attachments=attachments)
        elif maintype == "message" or not _is_body_text(part):
            attachments.append(_attachment(part, len(attachments) + 1))
        elif want_body:
            bodies.append(_part_text(part))
    except Exception:  # one unreadable part must not cost the rest of the message
        data = _payload_bytes(part)
        if want_body:
            bodies.append(_decode_bytes(data, None))
        else:
            attachments.append(
                Attachment(
                    f"attachment-{len(attachments) + 1}.bin", "application/octet-stream", data
                )
            )


def _content_type(part: MIMEPart) -> str:
    """The part's lowercase type; text/plain (the RFC 2045 default) when it cannot be read."""
    try:
        return part.get_content_type()
    except Exception:  # a Content-Type header the parser trips over
        return "text/plain"


def _param(part: MIMEPart, name: str) -> str:
    """A Content-Type parameter (RFC 2231 decoded), "" when absent or unreadable."""
    try:
        value = part.get_param(name)
    except Exception:  # a parameter list the parser trips over
        return ""
    if value is None:
        return ""
    return str(collapse_rfc2231_value(value)).strip()


def _is_alternative(part: MIMEPart) -> bool:
    return _content_type(part) == "multipart/alternative"


def _is_body_text(part: MIMEPart) -> bool:
    """Whether ``part`` is message text rather than an attached file.

    A multipart without a usable boundary counts as text: its raw content is all there is.
    """
    content_type = _content_type(part)
    if content_type not in ("text/plain", "text/html") and not content_type.startswith(
        "multipart/"
    ):
        return False
    return part.get_content_disposition() != "attachment" and not _filename(part)


def _preferred_alternative(subparts: list[MIMEPart]) -> MIMEPart | None:
    """Plain text when it says something, else the richest alternative (listed last)."""
    for subpart in subparts:
        if _content_type(subpart) == "text/plain" and _part_text(subpart).strip():
            return subpart
    for subpart in subparts[::-1]:
        content_type = _content_type(subpart)
        if content_type == "text/html" or content_type.startswith("multipart/"):
            return subpart
    return subparts[-1] if subparts else None


def _payload_bytes(part: MIMEPart) -> bytes:
    """The part's content with its transfer encoding undone, as far as it can be."""
    try:
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            return payload
    except Exception:  # a broken transfer encoding: the encoded text beats nothing
        pass
    raw_payload = part.get_payload()
    if isinstance(raw_payload, str):
        return raw_payload.encode("utf-8", "surrogateescape")
    return b""


def _part_text(part: MIMEPart) -> str:
    data = _payload_bytes(part)
    charset = _param(part, "charset")
    if _content_type(part) == "text/html":
        if not charset and (declared := _META_CHARSET.search(data[:4096])):
            charset = declared[1].decode("ascii", "replace")
        return _html_to_text(_decode_bytes(data, charset))
    text = _decode_bytes(data, charset).replace("\r\n", "\n").replace("\r", "\n")
    if _param(part, "format").lower() == "flowed":
        return _unflow(text, delsp=_param(part, "delsp").lower() == "yes")
    return text


def _unflow(text: str, *, delsp: bool) -> str:
    """Join the soft-wrapped lines of format=flowed text (RFC 3676) back into paragraphs."""
    lines: list[str] = []
    paragraph: str | None = None
    depth = 0
    for line in text.split("\n"):
        line_depth = len(line) - len(line.lstrip(">"))
        content = line[line_depth:]
        if content.startswith(" "):
            content = content[1:]
        if paragraph is not None and line_depth != depth:
            lines.append(_requoted(depth, paragraph))
            paragraph = None
        paragraph = content if paragraph is None else paragraph + content
        depth = line_depth
        if content.endswith(" ") and content != "-- ":
            if delsp:
                paragraph = paragraph[:-1]
            continue
        lines.append(_requoted(depth, paragraph))
        paragraph = None
    if paragraph is not None:
        lines.append(_requoted(depth, paragraph))
    return "\n".join(lines)


def _requoted(depth: int, text: str) -> str:
    return f"{'>' * depth} {text}" if depth else text


def _html_to_text(markup: str) -> str:
    """Readable text from HTML: no scripts or styles, links as "label (address)"."""
    markup = _HTML_SCRIPT.sub("", _HTML_COMMENT.sub("", markup))
    if len(markup) > _MAX_CONVERTED_HTML:
        return html.unescape(_HTML_TAG.sub(" ", markup))
    markup = _shallow(_UNCLOSED_TAG.sub("&lt;", _without_head(markup)))
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.unicode_snob = True
    try:
        text = converter.handle(markup)
    except Exception:  # html2text has tripped over odd markup; bare text still reads well
        text = ""
    if not text.strip():
        # Also when an unclosed <head> made html2text skip everything after it.
        return html.unescape(_HTML_TAG.sub(" ", markup))
    text = _AUTOMATIC_LINK.sub(r"\1", _MARKDOWN_LINK.sub(_link_as_text, text))
    text = _MARKDOWN_MARKER_ESCAPE.sub(r"\1", text)
    return _MARKDOWN_BACKSLASH_ESCAPE.sub(r"\\", text)


def _without_head(markup: str) -> str:
    """The markup without its <head> (title, meta, styles), left whole when it is unclosed."""
    # Searched for once each, not with one lazy pattern, which is quadratic in unclosed heads.
    start = _HTML_HEAD_START.search(markup)
    end = _HTML_HEAD_END.search(markup, start.end()) if start else None
    if start is None or end is None:
        return markup
    return markup[: start.start()] + markup[end.end() :]


def _shallow(markup: str) -> str:
    """The markup with lists and quotes nested deeper than ``_MAX_NESTING`` flattened."""
    depth = 0

    def kept(tag: re.Match[str]) -> str:
        nonlocal depth
        if tag[1]:
            depth = max(depth - 1, 0)
            return tag[0] if depth < _MAX_NESTING else ""
        depth += 1
        return tag[0] if depth <= _MAX_NESTING else ""

    return _NESTING_TAG.sub(kept, markup)


def _link_as_text(link: re.Match[str]) -> str:
    label = link[1].strip()
    url = re.sub(r"\\(.)", r"\1", link[2])
    shown = url.removeprefix("mailto:")
    if not url or label in (url, shown):
        return label or shown
    return f"{label} ({shown})" if label else shown


def _filename(part: MIMEPart) -> str:
    """The part's file name (RFC 2231 and RFC 2047 decoded), without any directory."""
    try:
        name = part.get_filename() or ""
    except Exception:  # a parameter the parser cannot read: the part is unnamed, not lost
        return ""
    if any("\udc80" <= char <= "\udcff" for char in name):
        name = _decode_bytes(name.encode("utf-8", "surrogateescape"), None)
    if "=?" in name:
        name = _decode_words(name)
    # A name is only a label: no path a later step could act on, no control characters.
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(char for char in name if char.isprintable()).strip()
    return "" if name in (".", "..") else name


def _attachment(part: MIMEPart, number: int) -> Attachment:
    content_type = _content_type(part)
    name = _filename(part)
    if not name:
        extension = _EXTENSIONS.get(content_type) or _MIME_TYPES.guess_extension(content_type)
        name = f"attachment-{number}{extension or '.bin'}"
    return Attachment(filename=name, content_type=content_type, data=_attachment_bytes(part))


def _attachment_bytes(part: MIMEPart) -> bytes:
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _payload_bytes(part)
    # message/rfc822 and delivery reports hold parsed messages: write them out as received.
    chunks: list[bytes] = []
    for enclosed in payload:
        try:
            if isinstance(enclosed, Message):
                chunks.append(enclosed.as_bytes(policy=_VERBATIM))
                continue
        except Exception:  # headers too broken to write out: keep their text
            pass
        chunks.append(str(enclosed).encode("utf-8", "surrogateescape"))
    data = b"".join(chunks)
    # Some clients encode an enclosed message although RFC 2046 forbids it; the parser then
    # took the encoded text for the message.
    encoding = _header(part, "Content-Transfer-Encoding").strip().lower()
    try:
        if encoding == "base64":
            return binascii.a2b_base64(data)
        if encoding == "quoted-printable":
            return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        pass
    return data
