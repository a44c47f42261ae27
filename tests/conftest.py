"""Fixtures: a fresh database per test (SQLite, or PostgreSQL when SWITCHBOARD_TEST_DB says so),
settings built from TOML, and the loopback stand-ins for Slack and the SMTP relay."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from adapters.email.sink import SmtpSink

from bot.database import open_database
from bot.settings import Settings, settings_from_toml
from tests.postgres_reachable import ADMIN_URL

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
SKILL_CHANNELS = {"general": "support", "billing": "support-billing", "technical": "support-tech"}

SettingsFactory = Callable[..., Settings]


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    """A database of its own for one test."""
    if os.environ.get("SWITCHBOARD_TEST_DB") != "postgres":
        yield f"sqlite://{tmp_path / 'switchboard.sqlite3'}"
        return
    name = f"switchboard_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[str]:
    """The test's database, migrated and connected."""
    async with open_database(database_url):
        yield database_url


def toml_for(*, relay_port: int = 25, extra: str = "", undo_seconds: float = 0) -> str:
    skills = "\n".join(
        f'[[skills]]\nname = "{name}"\nchannel = "{channel}"\n'
        for name, channel in SKILL_CHANNELS.items()
    )
    return f"""
[service]
http_port = 0
log_format = "text"

[email]
listen_port = 0
support_address = "support@shop.example"
support_name = "Shop Support"
accept_domains = ["help.shop.example"]

[email.relay]
host = "127.0.0.1"
port = {relay_port}
timeout_seconds = 5

[replies]
undo_seconds = {undo_seconds}

[jobs]
workers = 4
backoff_base_seconds = 0.05
backoff_max_seconds = 0.5
poll_seconds = 0.05
lease_seconds = 30

{extra}

{skills}
"""


@pytest.fixture
def make_settings(database_url: str) -> SettingsFactory:
    """Builds settings for the test's database; keyword arguments go to ``toml_for``."""

    def build(api_url: str = "", **kwargs: object) -> Settings:
        extra = str(kwargs.pop("extra", ""))
        if api_url:
            extra += f'\n[slack]\napi_url = "{api_url}"\n'
        text = toml_for(extra=extra, **kwargs)  # type: ignore[arg-type]
        env = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "DATABASE_URL": database_url,
        }
        return settings_from_toml(text, env)

    return build


@pytest.fixture
async def slack() -> AsyncIterator[SlackSandbox]:
    """The Slack Web API on loopback, with the skills' channels created."""
    from adapters.slack.sandbox import SlackSandbox
    sandbox = SlackSandbox(token=BOT_TOKEN)
    await sandbox.start()
    for channel in [*SKILL_CHANNELS.values(), "support-triage"]:
        sandbox.add_channel(channel)
    yield sandbox
    await sandbox.stop()


@pytest.fixture
async def relay() -> AsyncIterator[SmtpSink]:
    """The outbound mail relay on loopback; it keeps what it receives."""
    async with SmtpSink() as sink:
        yield sink
