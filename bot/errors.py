"""Switchboard's exceptions, one tree.

SwitchboardError
├── ConfigError          a setting is missing or wrong; names the setting and the fix
├── IntakeError          an inbound message cannot be accepted (the sender gets a clear answer)
├── ActionRefused        a person's command or click was not carried out; ``reason`` says why
└── DeliveryError        a call to an outside system (Slack, SMTP relay, Telegram, callback) failed
    ├── TransientDeliveryError   worth retrying; ``retry_after`` is the server's hint in seconds
    └── PermanentDeliveryError   retrying will not help (bad address, blocked bot, unknown channel)

Adapters translate foreign errors into these with ``raise ... from exc`` so the core never has to
know which library failed.
"""

from __future__ import annotations


class SwitchboardError(Exception):
    """Base of every error Switchboard raises on purpose."""


class ConfigError(SwitchboardError):
    """A setting is missing or wrong."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class IntakeError(SwitchboardError):
    """An inbound message was refused; ``reason`` is safe to show to the sender."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ActionRefused(SwitchboardError):
    """A command or click was refused and nothing changed; ``reason`` is shown to its author."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveryError(SwitchboardError):
    """A call to an outside system failed; ``reason`` is shown to agents in Slack."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientDeliveryError(DeliveryError):
    """Worth retrying later; ``retry_after`` (seconds) is the server's hint, if it gave one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help; the failure is shown in the thread."""
