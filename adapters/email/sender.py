"""Agents' replies out by e-mail, through the configured relay (aiosmtplib)."""

from __future__ import annotations

import aiosmtplib

from adapters.email.compose import compose_reply
from bot.errors import BlockedDeliveryError, PermanentDeliveryError, TransientDeliveryError
from bot.settings import EmailSettings
from bot.shapes import OutboundReply


class SmtpReplySender:
    """Implements ``bot.ports.ReplySender`` for e-mail."""

    def __init__(self, settings: EmailSettings) -> None:
        self.settings = settings

    async def send(self, reply: OutboundReply) -> str:
        message = compose_reply(
            reply,
            support_address=self.settings.support_address,
            support_name=self.settings.support_name,
        )
        relay = self.settings.relay
        try:
            await aiosmtplib.send(
                message,
                sender=self.settings.support_address,
                recipients=[reply.to_address],
                hostname=relay.host,
                port=relay.port,
                username=relay.username or None,
                password=relay.password or None,
                start_tls=relay.starttls,
                use_tls=relay.use_tls,
                timeout=relay.timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            reasons = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            raise PermanentDeliveryError(f"the mail server refused the address: {reasons}") from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise BlockedDeliveryError(
                f"the mail relay refused our login ({exc.code} {exc.message}): check "
                "[email.relay] username and password"
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            reason = f"the mail relay answered {exc.code} {exc.message}"
            if 500 <= exc.code < 600:
                raise PermanentDeliveryError(reason) from exc
            raise TransientDeliveryError(reason) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientDeliveryError(
                f"the mail relay {relay.host}:{relay.port} is unreachable ({exc})"
            ) from exc
        return str(message["Message-ID"])
