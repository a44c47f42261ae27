"""Typed settings: one TOML file for everything but secrets, which come from the environment.

``load_settings`` validates everything at start-up and raises ``ConfigError`` naming the first
wrong setting and how to fix it; ``check_settings`` collects every problem for
``switchboard check-config``. config/switchboard.example.toml is the commented template.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bot.errors import ConfigError

T = TypeVar("T")

DEFAULT_DATABASE_URL = "sqlite://var/switchboard.sqlite3"
_EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_SKILL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TELEGRAM_TOKEN_RE = re.compile(r"^[0-9]+:[A-Za-z0-9_-]{20,}$")
_TELEGRAM_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


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


@dataclass(frozen=True, slots=True)
class TriageSettings:
    default_skill: str = "general"
    model: str = ""
    min_confidence: float = 0.35


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
    poll_seconds: float = 0.5


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
    skills: tuple[SkillSettings, ...] = ()
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    webhooks: tuple[WebhookSourceSettings, ...] = ()

    def webhook(self, name: str) -> WebhookSourceSettings | None:
        """The webhook source called ``name``, if configured."""
        return next((w for w in self.webhooks if w.name == name), None)

    def skill(self, name: str) -> SkillSettings | None:
        """The skill called ``name``, if configured."""
        return next((s for s in self.skills if s.name == name), None)


class _Reader:
    """Reads one TOML table, remembering problems instead of stopping at the first."""

    def __init__(self, table: Mapping[str, Any], prefix: str, problems: list[ConfigError]):
        self.table = table
        self.prefix = prefix
        self.problems = problems

    def _name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def get(self, key: str, kind: type[T], default: T, hint: str = "") -> T:
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
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, "must be a table, like [" + self._name(key) + "]")
            value = {}
        return _Reader(value, self._name(key), self.problems)

    def fail(self, key: str, problem: str) -> None:
        self.problems.append(ConfigError(self._name(key), problem))

    def check(self, key: str, ok: bool, problem: str) -> None:
        if not ok:
            self.fail(key, problem)


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
    )
    tr.check("min_confidence", 0.0 <= triage.min_confidence <= 1.0, "must be between 0 and 1")

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
    )
    jb.check("workers", jobs.workers >= 1, "must be 1 or more")
    jb.check("max_attempts", jobs.max_attempts >= 1, "must be 1 or more")

    ro = root.table_at("roles")
    roles = RoleSettings(
        leads=ro.get("leads", tuple, (), '["U0123ABCD", "S0456EFGH"]'),
        admins=ro.get("admins", tuple, (), '["U0123ABCD"]'),
    )

    telegram = _read_telegram(root.table_at("telegram"), env)
    webhooks = _read_webhooks(data.get("webhooks", []), root, env)

    skills = _read_skills(data.get("skills", []), root)
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
        skills=tuple(skills),
        telegram=telegram,
        webhooks=tuple(webhooks),
    )
    return settings, problems


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
        reader = _Reader(table, f"webhooks[{index}]", root.problems)
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
        reader = _Reader(table, f"skills[{index}]", root.problems)
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
        skills.append(
            SkillSettings(
                name=name,
                channel=channel,
                description=reader.get("description", str, ""),
                examples=reader.get("examples", tuple, ()),
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
