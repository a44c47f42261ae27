"""Switchboard's own SMTP endpoint (aiosmtpd), served in the service's event loop.

It is not an open relay: a recipient outside the configured addresses and domains gets 550 at
RCPT. A message is answered 250 only after it and its job are committed; when the database is
unreachable the sender gets a 451 and tries again later, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime

from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.email.parse import parse_email
from bot.errors import IntakeError
from bot.intake import Intake
from bot.settings import EmailSettings

log = logging.getLogger(__name__)

# Parsing a big message takes long enough to stall other connections; do it in a thread.
_PARSE_IN_THREAD_BYTES = 512 * 1024


class TolerantSMTP(SMTP):
    """aiosmtpd's SMTP, taking the long lines that real mail clients send.

    RFC 5321 caps a line at 1,000 octets, but mail with HTML on one line is common and
    refusing it would lose a customer's message; a 64 KiB line still bounds memory.
    """

    line_length_limit = 64 * 1024


class IntakeHandler:
    """aiosmtpd's handler hooks: check recipients, then store each message durably."""

    def __init__(
        self,
        settings: EmailSettings,
        intake: Intake,
        *,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.intake = intake
        self.on_message = on_message

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.settings.accepts(address):
            return f"550 5.7.1 <{address}>: relay access denied (not a mailbox of this service)"
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parse = functools.partial(
            parse_email,
            raw,
            received_at=datetime.now(UTC),
            mail_from=envelope.mail_from or "<>",
            recipients=tuple(envelope.rcpt_tos),
            own_domain=self.settings.domain,
        )
        try:
            message = (
                await asyncio.to_thread(parse) if len(raw) > _PARSE_IN_THREAD_BYTES else parse()
            )
            accepted = await self.intake.accept(message)
        except IntakeError as exc:
            return f"554 5.6.0 {exc.reason}"
        except Exception:
            log.exception("could not store an inbound e-mail")
            return "451 4.3.0 Temporary failure storing the message, please try again later"
        if self.on_message is not None:
            self.on_message("duplicate" if accepted.duplicate else "accepted")
        return f"250 2.0.0 Message accepted as #{accepted.message_id}"


def tls_context(settings: EmailSettings) -> ssl.SSLContext | None:
    """The context for STARTTLS, when a certificate is configured."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def start_smtp_server(
    settings: EmailSettings, handler: IntakeHandler, *, hostname: str | None = None
) -> asyncio.Server:
    """Listen on the configured address; close the returned server to stop."""
    loop = asyncio.get_running_loop()
    context = tls_context(settings)

    def protocol() -> SMTP:
        return TolerantSMTP(
            handler,
            data_size_limit=settings.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=hostname or settings.domain,
            tls_context=context,
            timeout=120,
            loop=loop,
        )

    return await loop.create_server(protocol, settings.listen_host, settings.listen_port)
