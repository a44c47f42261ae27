"""The signature of the webhook channel, both ways: HMAC-SHA256 over ``"<timestamp>.<body>"``.

A request carries ``X-Switchboard-Timestamp`` (Unix seconds) and
``X-Switchboard-Signature: sha256=<hex digest>``, keyed with the source's secret. Signing the
timestamp with the body makes a captured request useless after ``MAX_AGE_SECONDS``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from adapters.signing import TimestampedSignature

TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
SIGNATURE_HEADER = "X-Switchboard-Signature"
MAX_AGE_SECONDS = 300
SCHEME = TimestampedSignature(
    TIMESTAMP_HEADER,
    SIGNATURE_HEADER,
    prefix="sha256=",
    before=b"",
    between=b".",
    max_age_seconds=MAX_AGE_SECONDS,
)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    return SCHEME.sign(secret, timestamp, body)


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
    return SCHEME.problem(secret, headers, body, now=now)
