"""The signature of the webhook channel, both ways: HMAC-SHA256 over ``"<timestamp>.<body>"``.

A request carries ``X-Switchboard-Timestamp`` (Unix seconds) and
``X-Switchboard-Signature: sha256=<hex digest>``, keyed with the source's secret. Signing the
timestamp with the body makes a captured request useless after ``MAX_AGE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
SIGNATURE_HEADER = "X-Switchboard-Signature"
MAX_AGE_SECONDS = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The headers that sign ``body`` now."""
    timestamp = str(int(time.time() if now is None else now))
    return {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        "Content-Type": "application/json",
    }


def signature_problem(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> str:
    """Why the signature of a request is not valid, or "" when it is."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    if not timestamp or not given:
        return f"the {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers are required"
    # isdigit alone takes "²", which int() refuses.
    if not (timestamp.isascii() and timestamp.isdigit()):
        return f"{TIMESTAMP_HEADER} must be Unix time in seconds"
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > MAX_AGE_SECONDS:
        return f"{TIMESTAMP_HEADER} is more than {MAX_AGE_SECONDS} s away from now"
    # surrogateescape: a header with bytes that are not UTF-8 is simply a wrong signature.
    expected = signature(secret, timestamp, body).encode()
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected):
        return "the signature does not match"
    return ""
