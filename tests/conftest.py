"""Fixtures: a fresh database per test (SQLite, or PostgreSQL when SWITCHBOARD_TEST_DB says so),
settings built from TOML, and the loopback stand-ins for Slack and the SMTP relay."""

from __future__ import annotations

import asyncio
import os
import smtplib
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import settings as hypothesis_settings

from adapters.service import Service
from bot.conversations import new_token
from bot.database import open_database
from bot.jobs import Clock, utcnow
from bot.ports import Classifier
from bot.routing import FixedSkillClassifier
from bot.settings import Settings, settings_from_toml
from bot.shapes import ChannelKind
from models import Conversation, Customer, Identity
from standins.mail import SmtpSink
from standins.slack import SlackEvents, SlackSandbox
from tests.postgres_reachable import ADMIN_URL

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Property tests: the same examples on every run (a failure reproduces; `make test` stays
# quick), no per-example deadline (a shared 2-core machine makes timings noise). For a long
# random search: HYPOTHESIS_PROFILE=thorough.
hypothesis_settings.register_profile(
    "switchboard", derandomize=True, max_examples=40, deadline=None, database=None
)
hypothesis_settings.register_profile("thorough", max_examples=2000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "switchboard"))

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
SKILL_CHANNELS = {"general": "support", "billing": "support-billing", "technical": "support-tech"}

SettingsFactory = Callable[..., Settings]
LEASE_SECONDS = 30


async def stored_conversation(number: int, **fields: Any) -> Conversation:
    """Customer ``number`` (e-mail cNUMBER@example.org) with a conversation, stored directly;
    ``fields`` are the conversation's (subject, skill, priority, status, ...)."""
    customer = await Customer.create(name=f"Customer {number}")
    identity = await Identity.create(
        customer=customer,
        channel=ChannelKind.EMAIL,
        address=f"c{number}@example.org",
        display_name=f"C {number}",
    )
    fields.setdefault("subject", f"Subject {number}")
    return await Conversation.create(
        token=new_token(),
        customer=customer,
        identity=identity,
        channel=ChannelKind.EMAIL,
        **fields,
    )


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


def toml_for(
    *,
    relay_port: int = 25,
    extra: str = "",
    email_extra: str = "",
    jobs_extra: str = "",
    undo_seconds: float = 0,
) -> str:
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
{email_extra}

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
idle_poll_seconds = 0.05
lease_seconds = {LEASE_SECONDS}
{jobs_extra}

{extra}

{skills}
"""


@pytest.fixture
def make_settings(database_url: str) -> SettingsFactory:
    """Builds settings for the test's database; keyword arguments go to ``toml_for``."""

    def build(api_url: str = "", **kwargs: object) -> Settings:
        extra = str(kwargs.pop("extra", ""))
        # Lines for the [slack] table, which api_url opens too (TOML allows a table only once).
        slack_extra = str(kwargs.pop("slack_extra", ""))
        more_env = dict(kwargs.pop("env", None) or {})  # type: ignore[call-overload]
        if api_url or slack_extra:
            extra += f'\n[slack]\napi_url = "{api_url}"\n{slack_extra}\n'
        text = toml_for(extra=extra, **kwargs)  # type: ignore[arg-type]
        env = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "DATABASE_URL": database_url,
            **more_env,
        }
        return settings_from_toml(text, env)

    return build


@pytest.fixture
async def slack() -> AsyncIterator[SlackSandbox]:
    """The Slack Web API on loopback, with the skills' channels created."""
    sandbox = SlackSandbox(bot_token=BOT_TOKEN)
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


AGENT = "U0AGENT1"


@dataclass
class Harness:
    """A running service with its loopback Slack and mail relay, and ways to play people."""

    service: Service
    slack: SlackSandbox
    relay: SmtpSink
    events: SlackEvents

    async def send_mail(self, message: EmailMessage | bytes, *, to: str = "") -> None:
        """Deliver a mail to the service's SMTP port with smtplib (raises on refusal)."""

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", self.service.smtp_port, timeout=10) as client:
                if isinstance(message, bytes):
                    client.sendmail("customer@example.org", [to or "support@shop.example"], message)
                else:
                    client.send_message(message, to_addrs=[to or "support@shop.example"])

        await asyncio.to_thread(send)

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until no job is waiting or running."""
        await steadily(_queue_empty, timeout=timeout)

    async def only_thread(self, channel: str = "support") -> list[dict[str, Any]]:
        """The messages of the only conversation's thread in ``channel``, root first."""
        await self.settled()
        (root,) = self.slack.channel_messages(channel)
        return self.slack.thread(channel, root["ts"])

    async def reply_in_only_conversation(self, text: str) -> str:
        """An agent answers in the thread of the only conversation there is."""
        conversation = await Conversation.get()
        assert conversation.chat_thread_ts is not None
        return await self.agent_replies("support", conversation.chat_thread_ts, text)

    async def agent_replies(
        self, channel: str, thread_ts: str, text: str, *, user: str = AGENT
    ) -> str:
        """An agent writes in a thread (Slack records it, then sends the signed event)."""
        posted = self.slack.post_as_user(channel, user, text, thread_ts=thread_ts)
        response = await self.events.send_message_event(channel, posted["ts"])
        assert response.status == 200, response.body
        return str(posted["ts"])


async def _queue_empty() -> bool:
    from bot.jobs import queue_depth

    return await queue_depth() == 0


async def eventually(condition: Callable[[], Awaitable[bool]], *, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``timeout`` seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


async def steadily(condition: Callable[[], Awaitable[bool]], *, timeout: float = 10.0) -> None:
    """Like ``eventually``, but ``condition`` must still hold a moment later.

    For "no job is left": on a loaded machine with PostgreSQL, a check was seen to find the
    queue empty just as the next job of a conversation was being committed. ``timeout`` bounds
    the whole wait, however often the condition comes and goes.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await eventually(condition, timeout=max(0.0, deadline - loop.time()))
        await asyncio.sleep(0.1)
        if await condition():
            return


@asynccontextmanager
async def running(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    *,
    run_jobs: bool = True,
    classifier: Classifier | None = None,
    clock: Clock = utcnow,
    learning_sync_seconds: float = 30.0,
    **settings: object,
) -> AsyncIterator[Harness]:
    """The service on the test's database, talking to the loopback Slack and relay."""
    slack.add_user(AGENT, "anna", real_name="Anna Agent", display_name="Anna")
    built = make_settings(api_url=slack.api_url, relay_port=relay.port, **settings)
    classifier = classifier or FixedSkillClassifier(built.triage.default_skill)
    async with Service(
        built,
        run_jobs=run_jobs,
        classifier=classifier,
        clock=clock,
        learning_sync_seconds=learning_sync_seconds,
    ) as service:
        events = SlackEvents(
            slack,
            events_url=f"http://127.0.0.1:{service.http_port}/slack/events",
            signing_secret=SIGNING_SECRET,
        )
        yield Harness(service, slack, relay, events)


@pytest.fixture
async def harness(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> AsyncIterator[Harness]:
    """The service with default test settings (no undo window)."""
    async with running(make_settings, slack, relay) as started:
        yield started


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail, and do not hang, when a test left a database connection open.

    An unclosed SQLite connection keeps a worker thread alive that the interpreter would wait
    for forever at exit (a query after the service stopped reopens one lazily).
    """
    leaked = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if leaked:
        print(f"\nthreads left running (query after the service stopped?): {leaked}")
        sys.stdout.flush()
        os._exit(1)
