"""Switchboard's exceptions, one tree.

SwitchboardError
├── ConfigError          a setting is missing or wrong; names the setting and the fix
├── MissingPackages      optional packages a command needs are not installed; names them all
├── IntakeError          an inbound message cannot be accepted (the sender gets a clear answer)
├── ActionRefused        a person's command or click was not carried out; ``reason`` says why
├── LeaseLost            a job's claim ran out while it ran; its worker stops without committing
└── DeliveryError        a call to an outside system (Slack, SMTP relay, Telegram, callback) failed
    ├── TransientDeliveryError   worth retrying; ``retry_after`` is the server's hint in seconds
    │   └── BlockedDeliveryError waits on something a person fixes (token, scope, channel):
    │                            work carrying a customer's message or a reply parks on it
    └── PermanentDeliveryError   retrying can never help (blocked bot, malformed message)
        ├── DeliveryRefused      Switchboard itself will not send it (a mail loop): expected
        └── WindowClosed         WhatsApp's 24-hour window closed: only a template may go

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


class MissingPackages(SwitchboardError):
    """Packages a command needs are not installed; ``packages`` names every one (pip names)."""

    def __init__(self, what: str, packages: list[str]) -> None:
        names = " ".join(packages)
        super().__init__(
            f"{what} needs {', '.join(packages)}, not installed here: run 'pip install {names}' "
            "(they come from PyPI), then try again"
        )
        self.packages = packages


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


class BlockedDeliveryError(TransientDeliveryError):
    """Waits on something an operator fixes (a token, a scope, a channel, the bot's membership).

    Work that carries a customer's message or an agent's reply parks on it and resumes by
    itself once the cause is gone; it never fails for good because of it.
    """


class LeaseLost(SwitchboardError):
    """This worker's claim on a job ran out and another worker may hold it: stop, commit nothing."""


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help; the failure is shown in the thread."""


class DeliveryRefused(PermanentDeliveryError):
    """Switchboard itself will not send this (answering auto-replies starts mail loops).

    An expected refusal, shown in the thread like any failure but not logged as an error.
    """


class WindowClosed(PermanentDeliveryError):
    """A free-form WhatsApp reply after the 24-hour window; ``reason`` offers the templates."""
