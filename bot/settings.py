"""Typed settings: one TOML file for everything but secrets, which come from the environment.

``load_settings`` validates everything at start-up and raises ``ConfigError`` naming the first
wrong setting and how to fix it; ``check_settings`` collects every problem for
``switchboard check-config``. config/switchboard.example.toml is the commented template.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

from bot.businesstime import ALWAYS, BusinessHours, CalendarError, parse_week
from bot.errors import ConfigError
from bot.shapes import Priority

T = TypeVar("T")

DEFAULT_DATABASE_URL = "sqlite://var/switchboard.sqlite3"
_EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_SKILL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TELEGRAM_TOKEN_RE = re.compile(r"^[0-9]+:[A-Za-z0-9_-]{20,}$")
_TELEGRAM_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")
_DOMAIN_RE = re.compile(r"^[^\s@.]+(\.[^\s@.]+)+$")
_USERGROUP_RE = re.compile(r"^S[A-Z0-9]+$")


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_url: str = ""
    log_format: str = "json"
    log_level: str = "INFO"


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """The SMTP server that carries our outbound mail."""

    host: str = "127.0.0.1"
    port: int = 25
    username: str = ""
    password: str = ""
    starttls: bool = False
    use_tls: bool = False
    timeout_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class EmailSettings:
    enabled: bool = True
    listen_host: str = "127.0.0.1"
    listen_port: int = 2525
    support_address: str = "support@example.com"
    support_name: str = "Support"
    accept_addresses: tuple[str, ...] = ()
    accept_domains: tuple[str, ...] = ()
    max_message_bytes: int = 25 * 1024 * 1024
    max_recipients: int = 20
    max_connections_per_client: int = 20
    max_connections: int = 200
    tls_cert: str = ""
    tls_key: str = ""
    relay: RelaySettings = field(default_factory=RelaySettings)

    @property
    def domain(self) -> str:
        return self.support_address.rpartition("@")[2].lower()

    def accepts(self, address: str) -> bool:
        """Whether mail to ``address`` is ours to take (everything else is refused at RCPT)."""
        address = address.strip().lower()
        local, _, domain = address.rpartition("@")
        base = local.split("+", 1)[0] + "@" + domain
        return (
            base in self.accept_addresses
            or base == self.support_address.lower()
            or domain in self.accept_domains
        )


@dataclass(frozen=True, slots=True)
class SlackSettings:
    bot_token: str = ""
    signing_secret: str = ""
    app_token: str = ""
    mode: str = "http"
    api_url: str = ""
    triage_channel: str = "support-triage"
    command: str = "/switchboard"


@dataclass(frozen=True, slots=True)
class SkillSettings:
    name: str
    channel: str
    description: str = ""
    examples: tuple[str, ...] = ()
    #: The Slack user group (``S…`` id) paged when a conversation of the skill is urgent.
    oncall: str = ""


@dataclass(frozen=True, slots=True)
class PriorityRules:
    """``[triage.priority]``: the team's rules on top of the model (bot/triage/priority.py).

    Keywords match case-insensitively at the start of a word, so "dringend" also finds
    "dringender"; write German compounds out ("serverausfall"). A keyword list in the settings
    replaces the built-in one below.
    """

    vip_domains: tuple[str, ...] = ()
    vip_customers: tuple[str, ...] = ()
    urgent_keywords: tuple[str, ...] = (
        "server down",
        "site down",
        "is down",
        "outage",
        "data loss",
        "security incident",
        "hacked",
        "emergency",
        "urgent",
        "asap",
        "dringend",
        "notfall",
        "serverausfall",
        "systemausfall",
        "totalausfall",
        "datenverlust",
        "gehackt",
        "sicherheitsvorfall",
        "geht gar nichts",
    )
    high_keywords: tuple[str, ...] = (
        "lawyer",
        "legal action",
        "chargeback",
        "cancel my contract",
        "third time",
        "anwalt",
        "rechtliche schritte",
        "kündige",
        "dritten mal",
    )
    #: Words saying nothing is pressing: they make a plain message low and keep the model's
    #: pressing reading at normal (a keyword above still counts).
    low_keywords: tuple[str, ...] = (
        "no rush",
        "no hurry",
        "no action needed",
        "no action required",
        "nothing else needed",
        "keine eile",
        "kein handlungsbedarf",
        "muss nichts passieren",
        # The customer withdraws what they asked: their problem words describe the past.
        "never mind",
        "ignore my last",
        "ignore my previous",
        "disregard my last",
        "disregard my previous",
        "problem solved",
        "hat sich erledigt",
        "problem gelöst",
        "ignorieren sie meine",
        "ignoriert meine",
        "vergessen sie meine",
        "unsubscribe",
        "abmelden",
    )
    #: The model's urgency counts from this probability on.
    model_min_confidence: float = 0.5
    #: Negative sentiment this sure raises the priority one step, at most to high.
    negative_min_confidence: float = 0.6
    #: This many follow-ups (customer messages after the first, unanswered) raise one step.
    follow_ups_to_raise: int = 2
    waiting_hours_high: float = 24.0
    waiting_hours_urgent: float = 72.0


@dataclass(frozen=True, slots=True)
class TriageSettings:
    default_skill: str = "general"
    model: str = ""
    min_confidence: float = 0.35
    #: Fine-tune the encoder on the skill examples (minutes of CPU at the first start and when
    #: the examples in the config change; cached after that).
    fine_tune: bool = False
    #: Blend a vote of the nearest examples into the skill classifier (helps with thousands of
    #: examples, and often with ``fine_tune``; hurts with a few per skill on an untuned encoder).
    neighbour_vote: bool = False
    #: Threads one encoding may use. One costs the least CPU per message (a second thread made
    #: a short message's encoding 7% faster for 34% more CPU on a 2-core machine); more help
    #: only when a team's messages are long and the machine has idle cores.
    encoder_threads: int = 1
    priority: PriorityRules = field(default_factory=PriorityRules)


@dataclass(frozen=True, slots=True)
class ThreadingSettings:
    subject_window_hours: float = 72.0


@dataclass(frozen=True, slots=True)
class ReplySettings:
    undo_seconds: float = 10.0
    note_prefixes: tuple[str, ...] = ("note:", "//")


@dataclass(frozen=True, slots=True)
class JobSettings:
    workers: int = 4
    lease_seconds: float = 120.0
    max_attempts: int = 25
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 900.0
    #: An idle runner looks for due jobs after this long, then after twice that, and so on up
    #: to ``idle_poll_seconds`` (``idle_wait_limit``) while nothing is due. Jobs added by this
    #: process wake it at once.
    poll_seconds: float = 0.5
    idle_poll_seconds: float = 2.0
    #: A parked job (waiting on a token, a channel or an outage) is tried again this often.
    park_retry_seconds: float = 300.0
    #: Finished jobs are deleted this many days after they finished.
    keep_done_days: float = 7.0
    #: /healthz answers 503 once a customer's message or an agent's reply waited this long.
    alert_after_seconds: float = 900.0

    @property
    def idle_wait_limit(self) -> float:
        """The longest an idle runner waits between looks (never below ``poll_seconds``)."""
        return max(self.poll_seconds, self.idle_poll_seconds)


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """How long stored conversations are kept; 0 keeps them for ever."""

    closed_conversations_days: int = 0


@dataclass(frozen=True, slots=True)
class SurveySettings:
    """``[survey]``: one question to the customer after a conversation is closed."""

    enabled: bool = False
    #: Skills whose customers are never asked (a complaints desk, say).
    skip_skills: tuple[str, ...] = ()
    #: A customer is asked at most once in this many days.
    ask_again_after_days: int = 30
    #: How long the links in a survey work.
    valid_days: int = 14
    #: The question goes out this long after the close (a quick reopen cancels it).
    delay_minutes: int = 10
    #: Signs the links; ``SURVEY_SECRET``, else derived from the Slack signing secret.
    secret: str = ""


@dataclass(frozen=True, slots=True)
class RoleSettings:
    leads: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TelegramSettings:
    """The Telegram bot: webhook (Telegram calls us) or long polling (we call Telegram)."""

    enabled: bool = False
    mode: str = "webhook"
    bot_token: str = ""
    webhook_secret: str = ""
    api_url: str = ""
    new_conversation_after_close: bool = True

    @property
    def bot_id(self) -> str:
        """The bot's numeric id: the part of the token before the colon."""
        return self.bot_token.partition(":")[0]


@dataclass(frozen=True, slots=True)
class WebhookSourceSettings:
    """One caller of ``POST /webhooks/<name>`` (a web chat widget, a form, a messenger bridge)."""

    name: str
    callback_url: str
    secret_env: str
    secret: str = field(default="", repr=False)
    allow_private_attachment_urls: bool = False
    max_attachment_bytes: int = 10 * 1024 * 1024


#: What a template parameter can be filled from (bot/whatsapp.py fills them).
TEMPLATE_SOURCES = ("customer_name", "conversation", "subject", "agent_name")


@dataclass(frozen=True, slots=True)
class TemplateSettings:
    """A message template approved in WhatsApp Manager, as agents may send it.

    ``parameters`` names the source of each ``{{n}}`` of its body, in order; ``text`` is the
    body as approved, shown to agents with the parameters filled in.
    """

    name: str
    language: str
    parameters: tuple[str, ...] = ()
    text: str = ""


@dataclass(frozen=True, slots=True)
class WhatsAppSettings:
    """The WhatsApp Business number on Meta's Cloud API (Graph API)."""

    enabled: bool = False
    phone_number_id: str = ""
    api_version: str = "v21.0"
    api_url: str = "https://graph.facebook.com/"
    access_token: str = field(default="", repr=False)
    app_secret: str = field(default="", repr=False)
    verify_token: str = field(default="", repr=False)
    templates: tuple[TemplateSettings, ...] = ()

    def template(self, name: str) -> TemplateSettings | None:
        """The template called ``name``, if configured."""
        return next((t for t in self.templates if t.name == name), None)


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    service: ServiceSettings = field(default_factory=ServiceSettings)
    email: EmailSettings = field(default_factory=EmailSettings)
    slack: SlackSettings = field(default_factory=SlackSettings)
    triage: TriageSettings = field(default_factory=TriageSettings)
    threading: ThreadingSettings = field(default_factory=ThreadingSettings)
    replies: ReplySettings = field(default_factory=ReplySettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    roles: RoleSettings = field(default_factory=RoleSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    skills: tuple[SkillSettings, ...] = ()
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    webhooks: tuple[WebhookSourceSettings, ...] = ()
    whatsapp: WhatsAppSettings = field(default_factory=WhatsAppSettings)
    sla: SlaSettings = field(default_factory=lambda: SlaSettings())
    rules: tuple[RuleSettings, ...] = ()
    outgoing_webhooks: tuple[OutgoingWebhookSettings, ...] = ()
    assignment: tuple[AssignmentSettings, ...] = ()
    survey: SurveySettings = field(default_factory=SurveySettings)
    spikes: SpikeSettings = field(default_factory=lambda: SpikeSettings())

    def webhook(self, name: str) -> WebhookSourceSettings | None:
        """The webhook source called ``name``, if configured."""
        return next((w for w in self.webhooks if w.name == name), None)

    def skill(self, name: str) -> SkillSettings | None:
        """The skill called ``name``, if configured."""
        return next((s for s in self.skills if s.name == name), None)


class _Reader:
    """Reads one TOML table, remembering problems instead of stopping at the first.

    Every key asked for is a valid name there, whether the file sets it or not; what the file
    sets and nothing asks for is reported by ``unknown_keys`` once everything was read.
    """

    def __init__(
        self,
        table: Mapping[str, Any],
        prefix: str,
        problems: list[ConfigError],
        readers: list[_Reader] | None = None,
    ):
        self.table = table
        self.prefix = prefix
        self.problems = problems
        self.asked: set[str] = set()
        #: Every reader of the file, this one included, shared by the readers of its tables.
        self.readers: list[_Reader] = [] if readers is None else readers
        self.readers.append(self)

    def _name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def get(self, key: str, kind: type[T], default: T, hint: str = "") -> T:
        self.asked.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is tuple:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(value)  # type: ignore[return-value]
            example = hint or '["a", "b"]'
            self.fail(key, f"must be a list of strings, like {example}")
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(key, f"must be {_kind_name(kind)}{', like ' + hint if hint else ''}")
            return default
        return value

    def table_at(self, key: str) -> _Reader:
        self.asked.add(key)
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, "must be a table, like [" + self._name(key) + "]")
            value = {}
        return _Reader(value, self._name(key), self.problems, self.readers)

    def raw(self, key: str, default: object) -> object:
        """The value as TOML gave it, for the caller to check (arrays of tables)."""
        self.asked.add(key)
        return self.table.get(key, default)

    def entry(self, table: Mapping[str, Any], prefix: str) -> _Reader:
        """A reader for one table of an array of tables, like ``skills[0]``."""
        return _Reader(table, prefix, self.problems, self.readers)

    def fail(self, key: str, problem: str) -> None:
        self.problems.append(ConfigError(self._name(key), problem))

    def check(self, key: str, ok: bool, problem: str) -> None:
        if not ok:
            self.fail(key, problem)

    def unknown_keys(self) -> None:
        """Report every key of every table read that nothing asked for, with the nearest name."""
        for reader in self.readers:
            valid = sorted(reader.asked)
            for key in sorted(set(reader.table) - reader.asked):
                nearest = difflib.get_close_matches(key, valid, n=1)
                if nearest:
                    hint = f"did you mean {nearest[0]}?"
                elif valid:
                    hint = f"the settings here are {', '.join(valid)}"
                else:
                    hint = "this table takes no settings"
                reader.fail(key, f"unknown setting; {hint}")


def _kind_name(kind: type[Any]) -> str:
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}.get(
        kind, kind.__name__
    )


def _read(data: Mapping[str, Any], env: Mapping[str, str]) -> tuple[Settings, list[ConfigError]]:
    problems: list[ConfigError] = []
    root = _Reader(data, "", problems)

    svc = root.table_at("service")
    service = ServiceSettings(
        http_host=svc.get("http_host", str, "127.0.0.1"),
        http_port=svc.get("http_port", int, 8080, "8080"),
        public_url=svc.get("public_url", str, "", '"https://support.example.com"'),
        log_format=svc.get("log_format", str, "json"),
        log_level=svc.get("log_level", str, "INFO").upper(),
    )
    svc.check("http_port", 0 <= service.http_port < 65536, "must be a port between 0 and 65535")
    svc.check("log_format", service.log_format in ("json", "text"), 'must be "json" or "text"')
    svc.check(
        "log_level",
        service.log_level in ("DEBUG", "INFO", "WARNING", "ERROR"),
        'must be one of "debug", "info", "warning", "error"',
    )

    em = root.table_at("email")
    rl = em.table_at("relay")
    relay = RelaySettings(
        host=rl.get("host", str, "127.0.0.1"),
        port=rl.get("port", int, 25, "587"),
        username=rl.get("username", str, ""),
        password=env.get("SMTP_RELAY_PASSWORD", ""),
        starttls=rl.get("starttls", bool, False),
        use_tls=rl.get("use_tls", bool, False),
        timeout_seconds=rl.get("timeout_seconds", float, 30.0),
    )
    if relay.username and not relay.password:
        rl.fail("username", "is set, so the environment variable SMTP_RELAY_PASSWORD must be too")
    email = EmailSettings(
        enabled=em.get("enabled", bool, True),
        listen_host=em.get("listen_host", str, "127.0.0.1"),
        listen_port=em.get("listen_port", int, 2525, "2525"),
        support_address=em.get("support_address", str, "support@example.com").lower(),
        support_name=em.get("support_name", str, "Support"),
        accept_addresses=tuple(
            a.lower() for a in em.get("accept_addresses", tuple, (), '["help@example.com"]')
        ),
        accept_domains=tuple(
            d.lower() for d in em.get("accept_domains", tuple, (), '["support.example.com"]')
        ),
        max_message_bytes=em.get("max_message_bytes", int, 25 * 1024 * 1024),
        max_recipients=em.get("max_recipients", int, 20),
        max_connections_per_client=em.get("max_connections_per_client", int, 20),
        max_connections=em.get("max_connections", int, 200),
        tls_cert=em.get("tls_cert", str, ""),
        tls_key=em.get("tls_key", str, ""),
        relay=relay,
    )
    em.check(
        "support_address",
        bool(_EMAIL_RE.match(email.support_address)),
        'must be an e-mail address, like "support@example.com"',
    )
    em.check("max_message_bytes", email.max_message_bytes > 0, "must be more than 0")
    em.check("max_recipients", email.max_recipients > 0, "must be more than 0")
    em.check(
        "max_connections_per_client",
        email.max_connections_per_client > 0,
        "must be more than 0",
    )
    em.check(
        "max_connections",
        email.max_connections >= email.max_connections_per_client,
        "must be at least email.max_connections_per_client",
    )
    if bool(email.tls_cert) != bool(email.tls_key):
        em.fail("tls_cert", "and email.tls_key must be set together (PEM files) for STARTTLS")
    for key in ("tls_cert", "tls_key"):
        path = getattr(email, key)
        em.check(key, not path or Path(path).is_file(), f"file {path!r} does not exist")

    sl = root.table_at("slack")
    slack = SlackSettings(
        bot_token=env.get("SLACK_BOT_TOKEN", ""),
        signing_secret=env.get("SLACK_SIGNING_SECRET", ""),
        app_token=env.get("SLACK_APP_TOKEN", ""),
        mode=sl.get("mode", str, "http"),
        api_url=sl.get("api_url", str, ""),
        triage_channel=sl.get("triage_channel", str, "support-triage").lstrip("#"),
        command=sl.get("command", str, "/switchboard", '"/switchboard"'),
    )
    sl.check("mode", slack.mode in ("http", "socket"), 'must be "http" or "socket"')
    sl.check(
        "command",
        bool(re.fullmatch(r"/[a-z0-9_-]{1,31}", slack.command)),
        'must be the slash command as in the Slack app, like "/switchboard"',
    )
    if not slack.bot_token:
        problems.append(
            ConfigError(
                "SLACK_BOT_TOKEN",
                "is not set: export the app's Bot User OAuth Token (xoxb-...) from "
                "https://api.slack.com/apps > your app > OAuth & Permissions",
            )
        )
    if slack.mode == "http" and not slack.signing_secret:
        problems.append(
            ConfigError(
                "SLACK_SIGNING_SECRET",
                "is not set: export the app's Signing Secret (Basic Information page); "
                "HTTP mode refuses unsigned requests",
            )
        )
    if slack.mode == "socket" and not slack.app_token.startswith("xapp-"):
        problems.append(
            ConfigError(
                "SLACK_APP_TOKEN",
                "must be an app-level token (xapp-...) with connections:write for Socket Mode",
            )
        )

    tr = root.table_at("triage")
    triage = TriageSettings(
        default_skill=tr.get("default_skill", str, "general"),
        model=tr.get("model", str, ""),
        min_confidence=tr.get("min_confidence", float, 0.35),
        fine_tune=tr.get("fine_tune", bool, False),
        neighbour_vote=tr.get("neighbour_vote", bool, False),
        encoder_threads=tr.get("encoder_threads", int, 1),
        priority=_read_priority(tr.table_at("priority")),
    )
    tr.check("min_confidence", 0.0 <= triage.min_confidence <= 1.0, "must be between 0 and 1")
    tr.check("encoder_threads", 1 <= triage.encoder_threads <= 64, "must be between 1 and 64")

    th = root.table_at("threading")
    threading = ThreadingSettings(
        subject_window_hours=th.get("subject_window_hours", float, 72.0),
    )
    th.check("subject_window_hours", threading.subject_window_hours >= 0, "must be 0 or more")

    rp = root.table_at("replies")
    replies = ReplySettings(
        undo_seconds=rp.get("undo_seconds", float, 10.0),
        note_prefixes=rp.get("note_prefixes", tuple, ("note:", "//"), '["note:", "//"]'),
    )
    rp.check("undo_seconds", 0 <= replies.undo_seconds <= 300, "must be between 0 and 300")

    jb = root.table_at("jobs")
    jobs = JobSettings(
        workers=jb.get("workers", int, 4),
        lease_seconds=jb.get("lease_seconds", float, 120.0),
        max_attempts=jb.get("max_attempts", int, 25),
        backoff_base_seconds=jb.get("backoff_base_seconds", float, 2.0),
        backoff_max_seconds=jb.get("backoff_max_seconds", float, 900.0),
        poll_seconds=jb.get("poll_seconds", float, 0.5),
        idle_poll_seconds=jb.get("idle_poll_seconds", float, 2.0),
        park_retry_seconds=jb.get("park_retry_seconds", float, 300.0),
        keep_done_days=jb.get("keep_done_days", float, 7.0),
        alert_after_seconds=jb.get("alert_after_seconds", float, 900.0),
    )
    jb.check("workers", jobs.workers >= 1, "must be 1 or more")
    jb.check("max_attempts", jobs.max_attempts >= 1, "must be 1 or more")
    jb.check("lease_seconds", jobs.lease_seconds >= 1, "must be 1 or more")
    jb.check("poll_seconds", jobs.poll_seconds > 0, "must be more than 0")
    jb.check(
        "idle_poll_seconds",
        0 < jobs.idle_poll_seconds <= 60,
        "must be more than 0 and at most 60 (seconds)",
    )
    jb.check("park_retry_seconds", jobs.park_retry_seconds > 0, "must be more than 0")
    jb.check("keep_done_days", jobs.keep_done_days >= 0, "must be 0 or more")
    jb.check("alert_after_seconds", jobs.alert_after_seconds > 0, "must be more than 0")

    ro = root.table_at("roles")
    roles = RoleSettings(
        leads=ro.get("leads", tuple, (), '["U0123ABCD", "S0456EFGH"]'),
        admins=ro.get("admins", tuple, (), '["U0123ABCD"]'),
    )

    rt = root.table_at("retention")
    retention = RetentionSettings(
        closed_conversations_days=rt.get("closed_conversations_days", int, 0, "365"),
    )
    rt.check(
        "closed_conversations_days",
        0 <= retention.closed_conversations_days <= 36_500,
        "must be a number of days from 1 to 36500, or 0 to keep conversations for ever",
    )

    sv = root.table_at("survey")
    survey = SurveySettings(
        enabled=sv.get("enabled", bool, False),
        skip_skills=tuple(s.strip().lower() for s in sv.get("skip_skills", tuple, (), '["legal"]')),
        ask_again_after_days=sv.get("ask_again_after_days", int, 30, "30"),
        valid_days=sv.get("valid_days", int, 14, "14"),
        delay_minutes=sv.get("delay_minutes", int, 10, "10"),
        secret=env.get("SURVEY_SECRET", "")
        or hashlib.sha256(
            b"switchboard survey:" + env.get("SLACK_SIGNING_SECRET", "").encode()
        ).hexdigest(),
    )
    sv.check(
        "ask_again_after_days",
        0 <= survey.ask_again_after_days <= 3650,
        "must be a number of days from 0 (ask after every conversation) to 3650",
    )
    sv.check("valid_days", 1 <= survey.valid_days <= 365, "must be a number of days from 1 to 365")
    sv.check("delay_minutes", 0 <= survey.delay_minutes <= 10_080, "must be minutes, 0 to 10080")

    telegram = _read_telegram(root.table_at("telegram"), env)
    webhooks = _read_webhooks(root.raw("webhooks", []), root, env)
    whatsapp = _read_whatsapp(root.table_at("whatsapp"), env)

    skills = _read_skills(root.raw("skills", []), root)
    names = [s.name for s in skills]
    if triage.default_skill not in names:
        tr.fail(
            "default_skill",
            f"names no configured skill ({', '.join(names) or 'none configured'}); "
            "add a [[skills]] entry with that name or pick one of them",
        )

    database_url = env.get("DATABASE_URL", "") or DEFAULT_DATABASE_URL
    if not database_url.startswith(("sqlite://", "postgres://", "postgresql://", "psycopg://")):
        problems.append(
            ConfigError(
                "DATABASE_URL",
                "must start with sqlite:// or postgres:// "
                "(like postgres://user@127.0.0.1:5432/switchboard)",
            )
        )
    sla = _read_sla(root, skills)
    outgoing_webhooks = _read_outgoing_webhooks(root, env)
    rules = _read_rules(root, skills, outgoing_webhooks)
    assignment = _read_assignment(root, skills)
    spikes = _read_spikes(root, sla)
    # Last, when every table has been read: a misspelt key would otherwise be ignored silently.
    root.unknown_keys()

    settings = Settings(
        database_url=database_url,
        service=service,
        email=email,
        slack=slack,
        triage=triage,
        threading=threading,
        replies=replies,
        jobs=jobs,
        roles=roles,
        retention=retention,
        skills=tuple(skills),
        telegram=telegram,
        webhooks=tuple(webhooks),
        whatsapp=whatsapp,
        sla=sla,
        rules=rules,
        outgoing_webhooks=outgoing_webhooks,
        assignment=assignment,
        survey=survey,
        spikes=spikes,
    )
    return settings, problems


def _read_priority(pr: _Reader) -> PriorityRules:
    built_in = PriorityRules()

    def words(key: str, default: tuple[str, ...], example: str) -> tuple[str, ...]:
        found = pr.get(key, tuple, default, example)
        pr.check(key, all(w.strip() for w in found), f"must not hold empty words, like {example}")
        return tuple(w.strip().lower() for w in found if w.strip())

    rules = PriorityRules(
        vip_domains=tuple(
            d.lstrip("@") for d in words("vip_domains", (), '["bigcustomer.example"]')
        ),
        vip_customers=words("vip_customers", (), '["ceo@customer.example"]'),
        urgent_keywords=words(
            "urgent_keywords", built_in.urgent_keywords, '["server down", "dringend"]'
        ),
        high_keywords=words("high_keywords", built_in.high_keywords, '["lawyer", "anwalt"]'),
        low_keywords=words("low_keywords", built_in.low_keywords, '["no rush", "keine eile"]'),
        model_min_confidence=pr.get("model_min_confidence", float, built_in.model_min_confidence),
        negative_min_confidence=pr.get(
            "negative_min_confidence", float, built_in.negative_min_confidence
        ),
        follow_ups_to_raise=pr.get("follow_ups_to_raise", int, built_in.follow_ups_to_raise),
        waiting_hours_high=pr.get("waiting_hours_high", float, built_in.waiting_hours_high),
        waiting_hours_urgent=pr.get("waiting_hours_urgent", float, built_in.waiting_hours_urgent),
    )
    bad_domains = [d for d in rules.vip_domains if not _DOMAIN_RE.match(d)]
    pr.check(
        "vip_domains",
        not bad_domains,
        f'must list domains, like ["bigcustomer.example"]; not {", ".join(bad_domains)}',
    )
    bad_senders = [c for c in rules.vip_customers if any(ch.isspace() for ch in c)]
    pr.check(
        "vip_customers",
        not bad_senders,
        'must list sender addresses, like ["ceo@customer.example"]; not '
        + ", ".join(repr(c) for c in bad_senders),
    )
    for key in ("model_min_confidence", "negative_min_confidence"):
        pr.check(key, 0.0 <= getattr(rules, key) <= 1.0, "must be between 0 and 1")
    pr.check(
        "follow_ups_to_raise",
        rules.follow_ups_to_raise >= 0,
        "must be 0 (follow-ups never raise the priority) or more",
    )
    pr.check("waiting_hours_high", rules.waiting_hours_high > 0, "must be more than 0")
    pr.check(
        "waiting_hours_urgent",
        rules.waiting_hours_urgent >= rules.waiting_hours_high,
        f"must be at least triage.priority.waiting_hours_high ({rules.waiting_hours_high:g})",
    )
    return rules


def _read_telegram(tg: _Reader, env: Mapping[str, str]) -> TelegramSettings:
    telegram = TelegramSettings(
        enabled=tg.get("enabled", bool, False),
        mode=tg.get("mode", str, "webhook"),
        bot_token=env.get("TELEGRAM_BOT_TOKEN", ""),
        webhook_secret=env.get("TELEGRAM_WEBHOOK_SECRET", ""),
        api_url=tg.get("api_url", str, ""),
        new_conversation_after_close=tg.get("new_conversation_after_close", bool, True),
    )
    tg.check("mode", telegram.mode in ("webhook", "polling"), 'must be "webhook" or "polling"')
    tg.check(
        "api_url",
        not telegram.api_url or telegram.api_url.startswith(("http://", "https://")),
        'must be an http(s) URL of a Bot API server, like "http://127.0.0.1:8081/", or empty',
    )
    if not telegram.enabled:
        return telegram
    if not _TELEGRAM_TOKEN_RE.match(telegram.bot_token):
        tg.problems.append(
            ConfigError(
                "TELEGRAM_BOT_TOKEN",
                "is not set or not a bot token (like 123456789:AAE...): export the token "
                "@BotFather gave you for the bot, or set telegram.enabled = false",
            )
        )
    if telegram.mode == "webhook" and not _TELEGRAM_SECRET_RE.match(telegram.webhook_secret):
        tg.problems.append(
            ConfigError(
                "TELEGRAM_WEBHOOK_SECRET",
                "must be set to 16 to 256 characters of A-Z, a-z, 0-9, _ and - in webhook "
                "mode (Telegram sends it with every update), for example the output of "
                "`openssl rand -hex 32`",
            )
        )
    return telegram


def _read_webhooks(
    raw: object, root: _Reader, env: Mapping[str, str]
) -> list[WebhookSourceSettings]:
    if not isinstance(raw, list):
        root.fail("webhooks", "must be [[webhooks]] entries with name, callback_url, secret_env")
        return []
    sources: list[WebhookSourceSettings] = []
    for index, entry in enumerate(raw):
        table = entry if isinstance(entry, dict) else {}
        reader = root.entry(table, f"webhooks[{index}]")
        name = reader.get("name", str, "")
        callback_url = reader.get("callback_url", str, "", '"https://chat.example.com/replies"')
        secret_env = reader.get("secret_env", str, "", '"WEBHOOK_WIDGET_SECRET"')
        reader.check(
            "name",
            bool(_SKILL_RE.match(name)),
            'must be a lower-case word (letters, digits, "-", "_"), like "widget"; '
            "callers post to /webhooks/<name>",
        )
        if any(s.name == name for s in sources):
            reader.fail("name", f"{name!r} is configured twice")
        reader.check(
            "callback_url",
            callback_url.startswith(("http://", "https://")),
            'must be the http(s) URL replies are posted to, like "https://chat.example.com/replies"',
        )
        secret = env.get(secret_env, "") if secret_env else ""
        if not secret_env:
            reader.fail(
                "secret_env",
                "must name the environment variable that holds the signing secret, like "
                '"WEBHOOK_WIDGET_SECRET"',
            )
        elif len(secret) < 16:
            reader.fail(
                "secret_env",
                f"names {secret_env}, which must be set to a secret of at least 16 characters "
                "(for example the output of `openssl rand -hex 32`)",
            )
        source = WebhookSourceSettings(
            name=name,
            callback_url=callback_url,
            secret_env=secret_env,
            secret=secret,
            allow_private_attachment_urls=reader.get("allow_private_attachment_urls", bool, False),
            max_attachment_bytes=reader.get(
                "max_attachment_bytes", int, 10 * 1024 * 1024, "10485760"
            ),
        )
        reader.check("max_attachment_bytes", source.max_attachment_bytes > 0, "must be more than 0")
        sources.append(source)
    return sources


_WHATSAPP_SECRETS = (
    ("WHATSAPP_TOKEN", "the permanent token of a system user with whatsapp_business_messaging"),
    ("WHATSAPP_APP_SECRET", "the app's App Secret (App settings > Basic), to check signatures"),
    ("WHATSAPP_VERIFY_TOKEN", "the Verify token you type into the app's webhook settings"),
)


def _read_whatsapp(wa: _Reader, env: Mapping[str, str]) -> WhatsAppSettings:
    whatsapp = WhatsAppSettings(
        enabled=wa.get("enabled", bool, False),
        phone_number_id=wa.get("phone_number_id", str, "", '"106540352242922"').strip(),
        api_version=wa.get("api_version", str, "v21.0", '"v21.0"').strip(),
        api_url=wa.get("api_url", str, "https://graph.facebook.com/"),
        access_token=env.get("WHATSAPP_TOKEN", ""),
        app_secret=env.get("WHATSAPP_APP_SECRET", ""),
        verify_token=env.get("WHATSAPP_VERIFY_TOKEN", ""),
        templates=tuple(_read_templates(wa.raw("templates", []), wa)),
    )
    wa.check(
        "api_url",
        whatsapp.api_url.startswith(("http://", "https://")),
        'must be the http(s) URL of the Graph API, like "https://graph.facebook.com/"',
    )
    wa.check(
        "api_version",
        bool(re.match(r"^v[0-9]+\.[0-9]+$", whatsapp.api_version)),
        'must be a Graph API version, like "v21.0"',
    )
    if not whatsapp.enabled:
        return whatsapp
    wa.check(
        "phone_number_id",
        whatsapp.phone_number_id.isdigit(),
        "must be the Phone number ID of the business number (WhatsApp > API Setup in the "
        'Meta app, digits only, like "106540352242922"), not the phone number itself',
    )
    for variable, what in _WHATSAPP_SECRETS:
        if not env.get(variable, ""):
            wa.problems.append(
                ConfigError(
                    variable,
                    f"is not set: export {what}, or set whatsapp.enabled = false",
                )
            )
    return whatsapp


def _read_templates(raw: object, wa: _Reader) -> list[TemplateSettings]:
    if not isinstance(raw, list):
        wa.fail("templates", "must be [[whatsapp.templates]] entries with name and language")
        return []
    templates: list[TemplateSettings] = []
    for index, entry in enumerate(raw):
        table = entry if isinstance(entry, dict) else {}
        reader = wa.entry(table, f"whatsapp.templates[{index}]")
        template = TemplateSettings(
            name=reader.get("name", str, "", '"order_follow_up"'),
            language=reader.get("language", str, "", '"en_US"'),
            parameters=reader.get("parameters", tuple, (), '["customer_name", "conversation"]'),
            text=reader.get("text", str, ""),
        )
        reader.check(
            "name",
            bool(re.match(r"^[a-z0-9_]{1,512}$", template.name)),
            "must be the template's name as approved in WhatsApp Manager (lower-case letters, "
            'digits and _), like "order_follow_up"',
        )
        reader.check(
            "language",
            bool(re.match(r"^[a-z]{2,3}(_[A-Z]{2})?$", template.language)),
            'must be the language code it was approved in, like "en_US" or "de"',
        )
        wrong = [p for p in template.parameters if p not in TEMPLATE_SOURCES]
        reader.check(
            "parameters",
            not wrong,
            f"names unknown sources ({', '.join(wrong)}); each is one of "
            f"{', '.join(TEMPLATE_SOURCES)}",
        )
        if any(t.name == template.name for t in templates):
            reader.fail("name", f"{template.name!r} is configured twice")
        templates.append(template)
    return templates


def _read_skills(raw: object, root: _Reader) -> list[SkillSettings]:
    if not isinstance(raw, list) or not raw:
        root.fail(
            "skills",
            'needs at least one [[skills]] entry with name and channel, like name = "general", '
            'channel = "support"',
        )
        return []
    skills: list[SkillSettings] = []
    for index, entry in enumerate(raw):
        table = entry if isinstance(entry, dict) else {}
        reader = root.entry(table, f"skills[{index}]")
        name = reader.get("name", str, "")
        channel = reader.get("channel", str, "").lstrip("#")
        reader.check(
            "name",
            bool(_SKILL_RE.match(name)),
            'must be a lower-case word (letters, digits, "-", "_"), like "billing"',
        )
        reader.check("channel", bool(channel), 'must name a Slack channel, like "support-billing"')
        if any(s.name == name for s in skills):
            reader.fail("name", f"{name!r} is configured twice")
        oncall = reader.get("oncall", str, "", '"S0123ABCD"').strip()
        reader.check(
            "oncall",
            not oncall or bool(_USERGROUP_RE.match(oncall)),
            'must be the id of a Slack user group, like "S0123ABCD" (S and capital letters and '
            "digits; in Slack: People > User groups > the group > Copy group ID), or empty",
        )
        skills.append(
            SkillSettings(
                name=name,
                channel=channel,
                description=reader.get("description", str, ""),
                examples=reader.get("examples", tuple, ()),
                oncall=oncall,
            )
        )
    return skills


def config_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The settings file to read: the explicit one, $SWITCHBOARD_CONFIG, or ./switchboard.toml."""
    env = os.environ if env is None else env
    return Path(explicit or env.get("SWITCHBOARD_CONFIG") or "switchboard.toml")


def check_settings(
    path: Path, env: Mapping[str, str] | None = None
) -> tuple[Settings | None, list[ConfigError]]:
    """Every problem with the settings in ``path`` (an empty list means they are fine)."""
    env = os.environ if env is None else env
    if not path.is_file():
        return None, [
            ConfigError(
                "config file",
                f"{path} does not exist: copy config/switchboard.example.toml to {path} "
                "and edit it, or pass --config PATH",
            )
        ]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return None, [ConfigError("config file", f"{path} is not valid TOML: {exc}")]
    settings, problems = _read(data, env)
    return (settings if not problems else None), problems


def settings_from_toml(text: str, env: Mapping[str, str]) -> Settings:
    """Settings from TOML text, or ``ConfigError`` for the first problem (tests, the demo)."""
    settings, problems = _read(tomllib.loads(text), env)
    if problems:
        raise problems[0]
    return settings


def load_settings(path: Path, env: Mapping[str, str] | None = None) -> Settings:
    """The validated settings, or ``ConfigError`` for the first problem."""
    settings, problems = check_settings(path, env)
    if problems:
        raise problems[0]
    assert settings is not None
    return settings


@dataclass(frozen=True, slots=True)
class SlaTargets:
    """Working time allowed for the first reply, each next reply, and resolving."""

    first_response: timedelta
    next_response: timedelta
    resolution: timedelta
    #: Page the skill's on-call group (``[[skills]] oncall``) when one of these is breached.
    page_oncall_on_breach: bool = False


#: Targets per priority where no ``[[sla.policies]]`` entry says otherwise.
DEFAULT_SLA_TARGETS = {
    Priority.URGENT: SlaTargets(timedelta(hours=1), timedelta(hours=2), timedelta(hours=8)),
    Priority.HIGH: SlaTargets(timedelta(hours=2), timedelta(hours=4), timedelta(hours=16)),
    Priority.NORMAL: SlaTargets(timedelta(hours=4), timedelta(hours=8), timedelta(hours=40)),
    Priority.LOW: SlaTargets(timedelta(hours=8), timedelta(hours=16), timedelta(hours=80)),
}


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """A ``[[sla.policies]]`` entry: targets for a skill and/or a priority ("" is any)."""

    skill: str = ""
    priority: str = ""
    first_response: timedelta | None = None
    next_response: timedelta | None = None
    resolution: timedelta | None = None
    page_oncall_on_breach: bool | None = None

    def fits(self, skill: str, priority: Priority) -> bool:
        return self.skill in ("", skill) and self.priority in ("", priority.value)

    @property
    def specificity(self) -> int:
        return (2 if self.skill else 0) + (1 if self.priority else 0)


@dataclass(frozen=True, slots=True)
class SlaTeam:
    """A ``[[sla.teams]]`` entry: skills that keep other business hours than the default."""

    name: str
    skills: tuple[str, ...]
    hours: BusinessHours
    leads_channel: str = ""


@dataclass(frozen=True, slots=True)
class SlaSettings:
    """``[sla]``: deadlines in business time, alerts before and at a breach."""

    enabled: bool = False
    hours: BusinessHours = ALWAYS
    #: A warning goes out when this share of a target's time is used up.
    warning_percent: int = 75
    #: Where warnings go for conversations without an owner, and every breach.
    leads_channel: str = ""
    page_oncall_on_breach: bool = False
    policies: tuple[SlaPolicy, ...] = ()
    teams: tuple[SlaTeam, ...] = ()

    def team_of(self, skill: str) -> SlaTeam | None:
        return next((t for t in self.teams if skill in t.skills), None)

    def hours_for(self, skill: str) -> BusinessHours:
        """The business hours deadlines of ``skill`` are counted in."""
        team = self.team_of(skill)
        return team.hours if team is not None else self.hours

    def leads_channel_for(self, skill: str) -> str:
        team = self.team_of(skill)
        return (team.leads_channel if team is not None else "") or self.leads_channel

    def targets_for(self, skill: str, priority: Priority) -> SlaTargets:
        """The targets of a conversation: the most specific policy's, then the defaults."""
        default = DEFAULT_SLA_TARGETS[priority]
        found = SlaTargets(
            default.first_response,
            default.next_response,
            default.resolution,
            self.page_oncall_on_breach,
        )
        fitting = sorted(
            (p for p in self.policies if p.fits(skill, priority)), key=lambda p: p.specificity
        )
        for policy in fitting:  # least specific first, so the most specific wins
            found = SlaTargets(
                policy.first_response or found.first_response,
                policy.next_response or found.next_response,
                policy.resolution or found.resolution,
                found.page_oncall_on_breach
                if policy.page_oncall_on_breach is None
                else policy.page_oncall_on_breach,
            )
        return found


_WORKING_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?:in)?)?$")


def _working_duration(reader: _Reader, key: str) -> timedelta | None:
    text = reader.get(key, str, "", '"4h", "30m" or "1h30m"').replace(" ", "").lower()
    if not text:
        return None
    match = _WORKING_DURATION.match(text)
    if match is None or not any(match.groups()):
        reader.fail(key, 'must be working time in hours and minutes, like "4h", "30m" or "1h30m"')
        return None
    hours, minutes = (int(g or 0) for g in match.groups())
    duration = timedelta(hours=hours, minutes=minutes)
    reader.check(key, duration > timedelta(), "must be more than 0")
    return duration if duration > timedelta() else None


def _business_hours(reader: _Reader) -> BusinessHours:
    timezone = reader.get("timezone", str, "UTC", '"Europe/Berlin"')
    week_text = reader.get("week", str, "24/7", '"mon-fri 09:00-12:30,13:30-18:00"')
    country = reader.get("holidays", str, "", '"DE/BY"')
    extra: set[date] = set()
    for text in reader.get("extra_holidays", tuple, (), '["2026-12-24", "2026-12-31"]'):
        try:
            extra.add(date.fromisoformat(text))
        except ValueError:
            reader.fail("extra_holidays", f"{text!r} is not a date; write it like 2026-12-24")
    try:
        week = parse_week(week_text)
    except CalendarError as exc:
        reader.fail("week", str(exc))
        week = ALWAYS.week
    try:
        return BusinessHours(timezone, week, holidays=country, extra_holidays=frozenset(extra))
    except CalendarError as exc:
        reader.fail("timezone" if "time zone" in str(exc) else "holidays", str(exc))
        return ALWAYS


def _read_sla(root: _Reader, skills: list[SkillSettings]) -> SlaSettings:
    configured = "sla" in root.table
    sl = root.table_at("sla")
    names = {s.name for s in skills}
    policies: list[SlaPolicy] = []
    raw = sl.raw("policies", [])
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        reader = sl.entry(entry if isinstance(entry, dict) else {}, f"sla.policies[{index}]")
        policy = SlaPolicy(
            skill=reader.get("skill", str, ""),
            priority=reader.get("priority", str, "").lower(),
            first_response=_working_duration(reader, "first_response"),
            next_response=_working_duration(reader, "next_response"),
            resolution=_working_duration(reader, "resolution"),
            page_oncall_on_breach=(
                reader.get("page_oncall_on_breach", bool, False)
                if "page_oncall_on_breach" in reader.table
                else None
            ),
        )
        reader.check(
            "skill",
            not policy.skill or policy.skill in names,
            f"names no configured skill ({', '.join(sorted(names))}); leave it out for every skill",
        )
        reader.check(
            "priority",
            policy.priority in ("", *(p.value for p in Priority)),
            'must be "urgent", "high", "normal" or "low"; leave it out for every priority',
        )
        policies.append(policy)
    if not isinstance(raw, list):
        sl.fail("policies", "must be [[sla.policies]] entries with skill, priority and targets")
    teams: list[SlaTeam] = []
    raw_teams = sl.raw("teams", [])
    for index, entry in enumerate(raw_teams if isinstance(raw_teams, list) else []):
        reader = sl.entry(entry if isinstance(entry, dict) else {}, f"sla.teams[{index}]")
        team = SlaTeam(
            name=reader.get("name", str, f"team {index + 1}"),
            skills=reader.get("skills", tuple, (), '["billing"]'),
            hours=_business_hours(reader),
            leads_channel=reader.get("leads_channel", str, "").lstrip("#"),
        )
        unknown = [s for s in team.skills if s not in names]
        reader.check("skills", not unknown, f"names skills that are not configured: {unknown}")
        teams.append(team)
    settings = SlaSettings(
        enabled=sl.get("enabled", bool, configured),
        hours=_business_hours(sl),
        warning_percent=sl.get("warning_percent", int, 75, "75"),
        leads_channel=sl.get("leads_channel", str, "", '"support-leads"').lstrip("#"),
        page_oncall_on_breach=sl.get("page_oncall_on_breach", bool, False),
        policies=tuple(policies),
        teams=tuple(teams),
    )
    sl.check("warning_percent", 1 <= settings.warning_percent <= 99, "must be from 1 to 99")
    return settings


#: What a rule can react to (``[[rules]] when.event``).
RULE_EVENTS = {
    "message_in": "a customer's message is in its thread",
    "negative": "a customer's message in a conversation whose sentiment is negative or angry",
    "vip": "a message from a VIP (triage.priority.vip_domains, vip_customers)",
    "keyword": "a message containing one of when.keywords",
    "sla_warning": "a deadline's warning",
    "sla_breach": "a deadline's breach",
    "reopened": "a conversation reopened (when.times: at least that many times)",
    "unassigned": "a new conversation still without an owner after when.minutes",
    "moved": "a conversation moved to another skill",
}


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """A ``[[rules]]`` entry: ``when`` an event and its conditions hold, ``then`` act."""

    name: str
    event: str
    skills: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    customer_domains: tuple[str, ...] = ()
    #: True: only in the skill's business hours; False: only outside them; None: always.
    business_hours: bool | None = None
    keywords: tuple[str, ...] = ()
    times: int = 1
    minutes: int = 0
    set_priority: str = ""
    assign: str = ""
    move_to: str = ""
    page_oncall: bool = False
    post_to: str = ""
    add_tag: str = ""
    webhook: str = ""

    @property
    def actions(self) -> tuple[str, ...]:
        """The actions in words, for listings."""
        return tuple(
            text
            for text, present in (
                (f"set priority {self.set_priority}", self.set_priority),
                (f"assign to {self.assign}", self.assign),
                (f"move to {self.move_to}", self.move_to),
                ("page on-call", self.page_oncall),
                (f"post to #{self.post_to}", self.post_to),
                (f"tag {self.add_tag}", self.add_tag),
                (f"call webhook {self.webhook}", self.webhook),
            )
            if present
        )


@dataclass(frozen=True, slots=True)
class OutgoingWebhookSettings:
    """An ``[[outgoing_webhooks]]`` entry: a CRM or ERP that rules can call (signed POST)."""

    name: str
    url: str
    secret_env: str
    secret: str = field(default="", repr=False)


def _read_outgoing_webhooks(
    root: _Reader, env: Mapping[str, str]
) -> tuple[OutgoingWebhookSettings, ...]:
    raw = root.raw("outgoing_webhooks", [])
    found: list[OutgoingWebhookSettings] = []
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        reader = root.entry(entry if isinstance(entry, dict) else {}, f"outgoing_webhooks[{index}]")
        hook = OutgoingWebhookSettings(
            name=reader.get("name", str, ""),
            url=reader.get("url", str, "", '"https://crm.example.com/switchboard"'),
            secret_env=reader.get("secret_env", str, "", '"CRM_WEBHOOK_SECRET"'),
        )
        reader.check("name", bool(_SKILL_RE.match(hook.name)), 'must be a word, like "crm"')
        reader.check("url", hook.url.startswith(("http://", "https://")), "must be an http(s) URL")
        secret = env.get(hook.secret_env, "") if hook.secret_env else ""
        reader.check(
            "secret_env",
            len(secret) >= 16,
            "must name an environment variable holding a secret of at least 16 characters "
            "(for example the output of `openssl rand -hex 32`)",
        )
        found.append(OutgoingWebhookSettings(hook.name, hook.url, hook.secret_env, secret))
    return tuple(found)


def _read_rules(
    root: _Reader,
    skills: list[SkillSettings],
    webhooks: tuple[OutgoingWebhookSettings, ...],
) -> tuple[RuleSettings, ...]:
    raw = root.raw("rules", [])
    names = {s.name for s in skills}
    priorities = {p.value for p in Priority}
    rules: list[RuleSettings] = []
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        reader = root.entry(entry if isinstance(entry, dict) else {}, f"rules[{index}]")
        when, then = reader.table_at("when"), reader.table_at("then")
        rule = RuleSettings(
            name=reader.get("name", str, f"rule {index + 1}"),
            event=when.get("event", str, "", '"message_in"'),
            skills=when.get("skills", tuple, (), '["billing"]'),
            channels=when.get("channels", tuple, (), '["email", "telegram", "webhook"]'),
            priorities=tuple(p.lower() for p in when.get("priorities", tuple, (), '["urgent"]')),
            languages=tuple(x.lower() for x in when.get("languages", tuple, (), '["de"]')),
            customer_domains=tuple(
                d.lower().lstrip("@") for d in when.get("customer_domains", tuple, ())
            ),
            business_hours=(
                when.get("business_hours", bool, True) if "business_hours" in when.table else None
            ),
            keywords=tuple(k.lower() for k in when.get("keywords", tuple, (), '["refund"]')),
            times=when.get("times", int, 1, "3"),
            minutes=when.get("minutes", int, 0, "30"),
            set_priority=then.get("set_priority", str, "", '"urgent"').lower(),
            assign=then.get("assign", str, "", '"U0123ABCD"'),
            move_to=then.get("move_to", str, "", '"billing"'),
            page_oncall=then.get("page_oncall", bool, False),
            post_to=then.get("post_to", str, "", '"support-leads"').lstrip("#"),
            add_tag=then.get("add_tag", str, "", '"vip"'),
            webhook=then.get("webhook", str, "", '"crm"'),
        )
        when.check(
            "event",
            rule.event in RULE_EVENTS,
            f"must be one of {', '.join(RULE_EVENTS)}",
        )
        unknown = [s for s in (*rule.skills, rule.move_to) if s and s not in names]
        reader.check("when", not unknown, f"names skills that are not configured: {unknown}")
        bad = [p for p in (*rule.priorities, rule.set_priority) if p and p not in priorities]
        reader.check("then", not bad, f"priorities are urgent, high, normal or low; not {bad}")
        when.check("keywords", rule.event != "keyword" or bool(rule.keywords), "must list words")
        when.check("minutes", rule.event != "unassigned" or rule.minutes > 0, "must be 1 or more")
        then.check(
            "webhook",
            not rule.webhook or any(w.name == rule.webhook for w in webhooks),
            "must name an [[outgoing_webhooks]] entry",
        )
        then.check(
            "assign",
            not rule.assign or bool(_USER_ID_RE.match(rule.assign)),
            'must be a Slack user id, like "U0123ABCD"',
        )
        reader.check("then", bool(rule.actions), "has no action: give at least one")
        if any(r.name == rule.name for r in rules):
            reader.fail("name", f"{rule.name!r} is used twice")
        rules.append(rule)
    return tuple(rules)


_USER_ID_RE = re.compile(r"^[UW][A-Z0-9]+$")


@dataclass(frozen=True, slots=True)
class AssignmentSettings:
    """An ``[[assignment]]`` entry: new conversations of ``skill`` go round-robin to its team."""

    skill: str
    #: The Slack user group (``S…``) of the agents who take the skill's conversations.
    usergroup: str
    #: Nobody gets more open conversations than this from the round (0: no limit).
    max_open: int = 0
    #: A status with one of these emoji or containing one of these words: not taking any.
    away_emoji: tuple[str, ...] = (":palm_tree:", ":no_entry:", ":face_with_thermometer:")
    away_words: tuple[str, ...] = ("not taking", "vacation", "out of office", "urlaub")


def _read_assignment(root: _Reader, skills: list[SkillSettings]) -> tuple[AssignmentSettings, ...]:
    raw = root.raw("assignment", [])
    names = {s.name for s in skills}
    found: list[AssignmentSettings] = []
    built_in = AssignmentSettings("", "")
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        reader = root.entry(entry if isinstance(entry, dict) else {}, f"assignment[{index}]")
        item = AssignmentSettings(
            skill=reader.get("skill", str, "", '"billing"'),
            usergroup=reader.get("usergroup", str, "", '"S0123ABCD"').strip(),
            max_open=reader.get("max_open", int, 0, "8"),
            away_emoji=reader.get("away_emoji", tuple, built_in.away_emoji, '[":palm_tree:"]'),
            away_words=tuple(
                w.lower()
                for w in reader.get("away_words", tuple, built_in.away_words, '["vacation"]')
            ),
        )
        reader.check(
            "skill", item.skill in names, f"must name a configured skill ({sorted(names)})"
        )
        reader.check(
            "usergroup",
            bool(_USERGROUP_RE.match(item.usergroup)),
            'must be the id of a Slack user group, like "S0123ABCD" (People > User groups > '
            "the group > Copy group ID)",
        )
        reader.check("max_open", item.max_open >= 0, "must be 0 (no limit) or more")
        if any(a.skill == item.skill for a in found):
            reader.fail("skill", f"{item.skill!r} has two [[assignment]] entries")
        found.append(item)
    return tuple(found)


@dataclass(frozen=True, slots=True)
class SpikeSettings:
    """``[spikes]``: one alert when messages about one thing come far above their usual rate.

    bot/spikes.py says how the usual rate is computed (README, "Spike alerts").
    """

    enabled: bool = False
    #: Where the alert goes: the leads' channel (``sla.leads_channel`` unless set here).
    channel: str = ""
    #: The recent window a topic's messages are counted in.
    window_minutes: int = 60
    #: The history a topic's usual share of all messages is read from (before the window).
    history_days: int = 7
    #: At least this many conversations of the topic in the window (one customer is one).
    min_messages: int = 10
    #: The topic's share of the window's messages, over its share of the history's.
    ratio: float = 4.0
    #: Messages at least this alike (cosine of their vectors) are about the same thing.
    similarity: float = 0.65
    #: How many nearest messages a check looks at.
    neighbours: int = 200

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.window_minutes)

    @property
    def history(self) -> timedelta:
        return timedelta(days=self.history_days)


def _read_spikes(root: _Reader, sla: SlaSettings) -> SpikeSettings:
    sp = root.table_at("spikes")
    built_in = SpikeSettings()
    channel = sp.get("channel", str, "", '"support-leads"').lstrip("#") or sla.leads_channel
    settings = SpikeSettings(
        enabled=sp.get("enabled", bool, bool(channel)),
        channel=channel,
        window_minutes=sp.get("window_minutes", int, built_in.window_minutes, "60"),
        history_days=sp.get("history_days", int, built_in.history_days, "7"),
        min_messages=sp.get("min_messages", int, built_in.min_messages, "10"),
        ratio=sp.get("ratio", float, built_in.ratio, "4.0"),
        similarity=sp.get("similarity", float, built_in.similarity, "0.65"),
        neighbours=sp.get("neighbours", int, built_in.neighbours, "200"),
    )
    sp.check(
        "enabled",
        not settings.enabled or bool(settings.channel),
        'needs a channel for the alerts: set spikes.channel (like "support-leads") or '
        "sla.leads_channel, or set enabled = false",
    )
    sp.check(
        "window_minutes", 5 <= settings.window_minutes <= 1440, "must be from 5 to 1440 minutes"
    )
    sp.check(
        "history_days",
        1 <= settings.history_days <= 90 and settings.history > settings.window * 4,
        "must be from 1 to 90 days and more than four windows (spikes.window_minutes)",
    )
    sp.check("min_messages", settings.min_messages >= 2, "must be 2 or more")
    sp.check("ratio", settings.ratio > 1.0, "must be more than 1 (4.0: four times the usual)")
    sp.check(
        "similarity",
        0.0 < settings.similarity < 1.0,
        "must be between 0 and 1 (the cosine of two messages' vectors, like 0.65)",
    )
    sp.check("neighbours", 10 <= settings.neighbours <= 2000, "must be from 10 to 2000")
    return settings
