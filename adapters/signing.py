"""Requests signed with HMAC-SHA256 over a timestamp and the body: Slack's and our webhooks'.

Both put the Unix time in one header and the signature in another, and refuse a request whose
timestamp is more than five minutes from now, so a captured request cannot be replayed later.
They differ only in the header names and in how timestamp and body are joined.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimestampedSignature:
    """One such scheme: ``prefix`` + hex HMAC of ``before + timestamp + between + body``."""

    timestamp_header: str
    signature_header: str
    prefix: str
    before: bytes
    between: bytes
    max_age_seconds: int = 300

    def sign(self, secret: str, timestamp: str, body: bytes) -> str:
        """The signature header value for ``body`` sent at ``timestamp``."""
        signed = self.before + timestamp.encode() + self.between + body
        return self.prefix + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()

    def problem(
        self, secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> str:
        """Why the signature of a request is not valid, or "" when it is."""
        timestamp = headers.get(self.timestamp_header, "")
        given = headers.get(self.signature_header, "")
        if not timestamp or not given:
            return f"the {self.timestamp_header} and {self.signature_header} headers are required"
        # isdigit alone takes "²", which int() refuses.
        if not (timestamp.isascii() and timestamp.isdigit()):
            return f"{self.timestamp_header} must be Unix time in seconds"
        current = time.time() if now is None else now
        if abs(current - int(timestamp)) > self.max_age_seconds:
            return (
                f"{self.timestamp_header} is more than {self.max_age_seconds} s away from now "
                "(a replayed request, or a clock that is off)"
            )
        # surrogateescape: a header with bytes that are not UTF-8 is simply a wrong signature.
        expected = self.sign(secret, timestamp, body).encode()
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected):
            return "the signature does not match"
        return ""
