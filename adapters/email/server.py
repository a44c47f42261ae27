"""Switchboard's own SMTP endpoint (aiosmtpd), served in the service's event loop.

It is not an open relay: a recipient outside the configured addresses and domains gets 550 at
RCPT. A message is answered 250 only after it and its job are committed; when the database is
unreachable the sender gets a 451 and tries again later, so nothing is lost. One client address
cannot hold more than ``max_connections_per_client`` sessions open, nor all clients together more
than ``max_connections``: the connection over the limit is greeted with 421 and closed.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.email.parse import parse_email
from bot.errors import IntakeError
from bot.intake import Intake
from bot.settings import EmailSettings

log = logging.getLogger(__name__)

# Parsing a big message takes long enough to stall other connections; do it in a thread.
_PARSE_IN_THREAD_BYTES = 512 * 1024


class ConnectionLimits:
    """Counts the open SMTP sessions, per client address and in all."""

    def __init__(self, *, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self._open: collections.Counter[str] = collections.Counter()

    def admit(self, address: str) -> str:
        """Count a new session from ``address``; the reason it is refused, or "" if admitted."""
        if self._open[address] >= self.per_client:
            return "4.7.0 Too many connections from your address, try again later"
        if self._open.total() >= self.total:
            return "4.3.2 Too many connections, try again later"
        self._open[address] += 1
        return ""

    def release(self, address: str) -> None:
        """An admitted session from ``address`` has ended."""
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]


class TolerantSMTP(SMTP):
    """aiosmtpd's SMTP, taking the long lines that real mail clients send, within limits.

    RFC 5321 caps a line at 1,000 octets, but mail with HTML on one line is common and
    refusing it would lose a customer's message; a 64 KiB line still bounds memory. A session
    over the ``limits`` is answered 421 instead of the greeting (RFC 5321 section 3.1) and
    closed, so one client cannot use up the endpoint for the others.
    """

    line_length_limit = 64 * 1024

    def __init__(
        self, handler: object, *, limits: ConnectionLimits | None = None, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._limits = limits
        self._admitted: str | None = None
        self._refusal = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again with the TLS transport after STARTTLS: the session was counted already.
        if self.transport is None and self._limits is not None:
            address = _client_address(transport)
            self._refusal = self._limits.admit(address)
            if not self._refusal:
                self._admitted = address
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._limits is not None and self._admitted is not None:
            self._limits.release(self._admitted)
            self._admitted = None
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if not self._refusal:
            await super()._handle_client()
            return
        log.warning("refused an SMTP connection", extra={"reason": self._refusal})
        await self.push(f"421 {self._refusal}")
        assert self.transport is not None
        self.transport.close()


def _client_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


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
    limits = ConnectionLimits(
        per_client=settings.max_connections_per_client, total=settings.max_connections
    )

    def protocol() -> SMTP:
        return TolerantSMTP(
            handler,
            limits=limits,
            data_size_limit=settings.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=hostname or settings.domain,
            tls_context=context,
            timeout=120,
            loop=loop,
        )

    return await loop.create_server(protocol, settings.listen_host, settings.listen_port)
