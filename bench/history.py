"""Flat cost with a year of history: the same service and mail stream on an empty database and
on one filled with a year of history.

Two scratch PostgreSQL databases are created and migrated; one is filled with history by bulk
SQL (bench/fill.py, default 1M messages). The real service (``python -m adapters serve``, the
bundled triage model) then runs against the empty database and against the filled one, one after
the other, with the loopback Slack and mail relay stand-ins. Customers offer mail over SMTP at a
steady rate (400 at 5/s, then 100 at 0.5/s; every customer writes a first mail and, later in the
stream, a reply to it). For each database it measures:

- the time from SMTP 250 to the message's post in its Slack thread (the post's ts, read from
  the Slack stand-in), p50 and p99;
- the throughput to Slack: posts per second from the first 250 to the last post;
- CPU per message of the service process (/proc) and of PostgreSQL: the backends connected to
  that database, sampled from /proc while the stream runs (other databases on the same server
  do not count; the server's shared writers and checkpointer are not counted either).

Then the operations whose cost grows with history are timed in this process on both databases,
through the code the service runs (median of a few runs, ms): finding a conversation from a
Slack ts, storing and delivering an agent's reply, the waiting check behind raised priority,
``/switchboard queue``, App Home, ``customer ...``, ``customers forget --dry-run`` for a usual and
for the heaviest customer, retention removing 200 closed conversations, and claiming a job among
16,000 and 160,000 pending jobs of other serial keys.

Prints JSON with both databases and their ratios (filled / empty); progress goes to stderr.
Both databases are dropped at the end:

    python -m bench.history [--messages 1000000] [--count 400] [--rate 5]
                            [--slow-count 100] [--slow-rate 0.5] [--quick] [--postgres URL]

``--quick`` (20,000 messages, a short stream) runs in a few minutes. Timings on a small machine
are noisy: compare the ratios within one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg

from adapters.slack.views import answer_text, home_view
from bench.chaos import (
    AGENT,
    CHANNELS,
    SUPPORT,
    TRIAGE_CHANNEL,
    ServiceProcess,
    free_port,
    process_cpu_seconds,
    skills_toml,
)
from bench.fill import fill_history
from bot.commands import Commands
from bot.database import apply_migrations, open_database
from bot.escalation import Escalation
from bot.jobs import JobRunner, utcnow
from bot.lookups import Lookups, conversation_of_message, find_conversation, reference_of
from bot.pipeline import DeliverReply
from bot.ports import ReplySender
from bot.privacy import Privacy, parse_address
from bot.relay import Outcome, Relay
from bot.roles import Actor, Roles
from bot.routing import FixedSkillClassifier
from bot.settings import PriorityRules, RetentionSettings, Settings, settings_from_toml
from bot.shapes import (
    AgentMessage,
    Attachment,
    ChannelKind,
    ConversationCard,
    CustomerPost,
    DeliveryState,
    OutboundReply,
    SpikeAlert,
    ThreadErasure,
)
from bot.workflow import Workflow
from models import Job, JobState
from standins.mail import SmtpSink
from standins.slack import SlackSandbox

ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
SIGNING_SECRET = "history-signing-secret"
# The stream's customers write from a domain of their own, so that none of them is taken for a
# customer of the filled history.
STREAM_DOMAIN = "stream.history.example"
# No \b before it: in JSON the token follows an escaped newline ("\nhist-...").
_TOKEN = re.compile(r"hist-[a-z]-\d{5}(?!\d)")
_BODIES = (
    "Hello,\n\nmy invoice of 3 November was charged twice. Could you check it and refund the "
    "second payment?\n\nThanks,\n{name}",
    "Hi,\n\nsince this morning I cannot log in: the page says my password is wrong, and the "
    "reset mail never arrives. Please help.\n\n{name}",
    "Hallo,\n\nmeine Bestellung ist seit einer Woche unterwegs und der Link zur "
    "Sendungsverfolgung zeigt nichts an. Können Sie bitte nachsehen?\n\nViele Grüße\n{name}",
    "Good afternoon,\n\ncan I change the delivery address of an order I placed yesterday? "
    "We are moving next week.\n\nBest regards,\n{name}",
)


@dataclass(frozen=True, slots=True)
class Plan:
    #: Messages of history in the filled database.
    messages: int = 1_000_000
    #: The steady stream: this many mails offered at ``rate`` per second.
    count: int = 400
    rate: float = 5.0
    #: Then a slow stream, as in quiet hours.
    slow_count: int = 100
    slow_rate: float = 0.5
    #: Mails sent and waited for before measuring (first queries, first model runs).
    warmup: int = 5
    #: How long to wait after a stream for its last posts, at most.
    settle_seconds: float = 900.0
    #: Runs of each timed operation (median); fewer once an operation took ``op_budget_seconds``.
    repetitions: int = 5
    op_budget_seconds: float = 10.0
    pending_jobs: tuple[int, ...] = (16_000, 160_000)
    retention_batch: int = 200


QUICK = Plan(messages=20_000, count=50, slow_count=10, settle_seconds=180.0, repetitions=3)


def say(text: str) -> None:
    """Progress, on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def service_config(*, http_port: int, smtp_port: int, relay_port: int, slack_url: str) -> str:
    skills = skills_toml()
    return f"""
[service]
http_host = "127.0.0.1"
http_port = {http_port}
log_level = "WARNING"

[email]
listen_host = "127.0.0.1"
listen_port = {smtp_port}
support_address = "{SUPPORT}"

[email.relay]
host = "127.0.0.1"
port = {relay_port}
timeout_seconds = 5

[slack]
api_url = "{slack_url}"
triage_channel = "{TRIAGE_CHANNEL}"

{skills}
"""


@dataclass(frozen=True, slots=True)
class Mail:
    token: str
    sender: str
    raw: bytes


def stream(run: str, count: int) -> list[Mail]:
    """``count`` mails: each customer's first mail, then (from the second half) their reply."""
    customers = max(math.ceil(count / 2), 1)
    mails = []
    for index in range(count):
        customer = index % customers
        token = f"hist-{run}-{index:05d}"
        sender = f"customer-{run}{customer}@{STREAM_DOMAIN}"
        message = EmailMessage()
        message["From"] = f"Customer {run.upper()}{customer} <{sender}>"
        message["To"] = SUPPORT
        message["Subject"] = ("Re: " if index >= customers else "") + f"Order {run}{customer}"
        message["Message-ID"] = f"<{token}@{STREAM_DOMAIN}>"
        if index >= customers:
            first = f"<hist-{run}-{customer:05d}@{STREAM_DOMAIN}>"
            message["In-Reply-To"] = first
            message["References"] = first
        body = _BODIES[customer % len(_BODIES)].format(name=f"Customer {customer}")
        message.set_content(f"{body}\n\n{token}\n")
        mails.append(Mail(token, sender, message.as_bytes()))
    return mails


async def offer(port: int, mails: Sequence[Mail], rate: float) -> dict[str, float]:
    """Send ``mails`` at ``rate`` per second, each on its own connection, whatever the answers
    take; returns the time.time() of each 250."""
    accepted: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def send(index: int, mail: Mail) -> None:
        await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
        try:
            await aiosmtplib.send(
                mail.raw,
                sender=mail.sender,
                recipients=[SUPPORT],
                hostname="127.0.0.1",
                port=port,
                timeout=120,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            say(f"{mail.token} was not accepted: {exc}")
            return
        accepted[mail.token] = time.time()

    await asyncio.gather(*(send(index, mail) for index, mail in enumerate(mails)))
    return accepted


class SlackPosts:
    """When each mail's message was posted in its Slack thread, read from the Slack stand-in."""

    def __init__(self, slack: SlackSandbox) -> None:
        self.slack = slack
        #: token -> the post's ts as a number (the stand-in's clock is time.time)
        self.posted: dict[str, float] = {}
        self._seen_calls = 0

    def _scan(self) -> None:
        calls = self.slack.calls
        while self._seen_calls < len(calls):
            method, arguments = calls[self._seen_calls]
            self._seen_calls += 1
            # A customer's message goes into its thread; the root card is posted without one.
            thread_ts = arguments.get("thread_ts")
            if method != "chat.postMessage" or not thread_ts:
                continue
            for token in set(_TOKEN.findall(json.dumps(arguments))) - self.posted.keys():
                channel = str(arguments["channel"])
                for message in self.slack.thread(channel, str(thread_ts))[1:]:
                    if message.get("bot_id") and token in json.dumps(message):
                        self.posted[token] = float(message["ts"])
                        break

    async def wait_for(self, tokens: Collection[str], timeout: float) -> None:
        """Until every one of ``tokens`` is posted, or ``timeout`` seconds have passed."""

        def all_posted() -> bool:
            self._scan()
            return all(token in self.posted for token in tokens)

        with contextlib.suppress(TimeoutError):
            await self.slack.wait_until(all_posted, timeout=timeout)


class DatabaseCpu:
    """CPU time of the PostgreSQL processes working for one database (its backends and its
    autovacuum workers), sampled from /proc while the block runs."""

    def __init__(self, admin_url: str, database: str, *, every: float = 0.5) -> None:
        self.admin_url = admin_url
        self.database = database
        self.every = every
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._admin: Any = None

    async def __aenter__(self) -> DatabaseCpu:
        self._admin = await asyncpg.connect(self.admin_url)
        for pid in await self._pids():
            self._start[pid] = self._last[pid] = process_cpu_seconds(pid)
        self._task = asyncio.create_task(self._sample_until_cancelled())
        return self

    async def __aexit__(self, *_: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._sample()
        await self._admin.close()

    @property
    def seconds(self) -> float:
        # A backend started meanwhile spent all of its time in the block.
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._last.items())

    async def _pids(self) -> list[int]:
        rows = await self._admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database
        )
        return [int(row["pid"]) for row in rows]

    async def _sample(self) -> None:
        for pid in await self._pids():
            cpu = process_cpu_seconds(pid)
            # A process that ended between the query and the read reads 0: keep what we had.
            self._last[pid] = max(cpu, self._last.get(pid, 0.0))

    async def _sample_until_cancelled(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self._sample()


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` 0.99 for p99)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


async def until_idle(pid: int, *, timeout: float = 120.0, window: float = 2.0) -> None:
    """Wait until the service is idle (start-up work done) before measuring it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = process_cpu_seconds(pid)
        await asyncio.sleep(window)
        if process_cpu_seconds(pid) - before < 0.05 * window:
            return


async def measure_stream(
    service: ServiceProcess,
    posts: SlackPosts,
    mails: Sequence[Mail],
    rate: float,
    plan: Plan,
    database: str,
    admin_url: str,
) -> dict[str, Any]:
    """Offer ``mails`` at ``rate``, wait for their posts; latency, throughput and CPU."""
    assert service.process is not None
    pid = service.process.pid
    async with DatabaseCpu(admin_url, database) as postgres:
        service_before = process_cpu_seconds(pid)
        started = time.time()
        accepted = await offer(service.smtp_port, mails, rate)
        await posts.wait_for(accepted, plan.settle_seconds)
        service_cpu = process_cpu_seconds(pid) - service_before
    posted = [token for token in accepted if token in posts.posted]
    latencies = [posts.posted[token] - accepted[token] for token in posted]
    last_post = max((posts.posted[token] for token in posted), default=started)
    first_accepted = min(accepted.values(), default=started)
    span = last_post - first_accepted
    per_message = 1000 / max(len(posted), 1)
    return {
        "offered": len(mails),
        "offered_per_second": rate,
        "accepted": len(accepted),
        "posted": len(posted),
        "not_posted": len(accepted) - len(posted),
        "seconds_to_post_p50": round(percentile(latencies, 0.5), 3) if latencies else None,
        "seconds_to_post_p99": round(percentile(latencies, 0.99), 3) if latencies else None,
        "seconds_to_post_max": round(max(latencies), 3) if latencies else None,
        "posts_per_second": round(len(posted) / span, 2) if span > 0 else None,
        "seconds": round(time.time() - started, 1),
        "cpu_ms_per_message": {
            "service": round(service_cpu * per_message, 1),
            "postgres": round(postgres.seconds * per_message, 1),
            "total": round((service_cpu + postgres.seconds) * per_message, 1),
        },
    }


async def run_service(
    url: str, plan: Plan, workdir: Path, label: str, *, tree: Path | None = None
) -> dict[str, Any]:
    """The real service on ``url``: warm-up, the steady stream, then the slow one.

    ``tree`` runs the service of another checkout instead (its code first on the path): the
    same stream against an earlier commit, for CPU per message in the same run.
    """
    database = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    async with SlackSandbox() as slack, SmtpSink() as relay:
        for channel in (*CHANNELS.values(), TRIAGE_CHANNEL):
            slack.add_channel(channel)
        slack.add_user(AGENT, "agent", real_name="Alex Agent")
        http_port, smtp_port = free_port(), free_port()
        config = workdir / f"{label}.toml"
        config.write_text(
            service_config(
                http_port=http_port,
                smtp_port=smtp_port,
                relay_port=relay.port,
                slack_url=slack.api_url,
            ),
            encoding="utf-8",
        )
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
        log = workdir / f"{label}.log"
        service = ServiceProcess(
            config, env, log, http_port=http_port, smtp_port=smtp_port, cwd=tree
        )
        say(f"{label}: starting the service")
        await service.start(timeout=300)
        try:
            assert service.process is not None
            await until_idle(service.process.pid)
            posts = SlackPosts(slack)
            warmup = stream("w", plan.warmup)
            accepted = await offer(service.smtp_port, warmup, plan.rate)
            await posts.wait_for(accepted, plan.settle_seconds)
            await until_idle(service.process.pid)
            results: dict[str, Any] = {}
            for name, run, count, rate in (
                ("steady", "a", plan.count, plan.rate),
                ("slow", "b", plan.slow_count, plan.slow_rate),
            ):
                say(f"{label}: {count} mails at {rate}/s")
                results[name] = await measure_stream(
                    service, posts, stream(run, count), rate, plan, database, admin_url
                )
                say(f"{label}: {name}: {json.dumps(results[name])}")
            return results
        finally:
            await service.stop()
            if service.process is not None and service.process.returncode not in (0, None):
                say(f"{label}: the service ended with {service.process.returncode}; see {log}")


class SilentChat:
    """A chat that shows nothing: the timed operations need one, and Slack is not what they
    time."""

    async def channel_id(self, name: str) -> str:
        return name

    async def post_root(self, chat_channel: str, card: ConversationCard, *, marker: str) -> str:
        return "1.000001"

    async def update_root(self, chat_channel: str, ts: str, card: ConversationCard) -> None:
        return None

    async def post_in_thread(
        self, chat_channel: str, thread_ts: str, post: CustomerPost, *, marker: str
    ) -> str:
        return "1.000002"

    async def upload_files(
        self, chat_channel: str, thread_ts: str, attachments: Sequence[Attachment]
    ) -> None:
        return None

    async def post_notice(
        self, chat_channel: str, thread_ts: str, text: str, *, marker: str = ""
    ) -> str:
        return "1.000003"

    async def permalink(self, chat_channel: str, ts: str) -> str:
        return f"https://sandbox.slack.com/archives/{chat_channel}/p{ts.replace('.', '')}"

    def mention(self, user_id: str) -> str:
        return f"<@{user_id}>"

    async def find_post(self, chat_channel: str, thread_ts: str | None, marker: str) -> str | None:
        return None

    async def show_delivery(self, chat_channel: str, ts: str, state: DeliveryState) -> None:
        return None

    async def offer_undo(
        self, chat_channel: str, thread_ts: str, user_id: str, undo_token: str, seconds: float
    ) -> None:
        return None

    async def erase_thread(self, chat_channel: str, thread_ts: str, note: str) -> ThreadErasure:
        return ThreadErasure()

    async def check(self) -> None:
        return None

    async def direct_channel(self, user_id: str) -> str:
        return user_id

    async def post_message(self, chat_channel: str, text: str, *, marker: str) -> str:
        return "1.0"

    async def post_rating(
        self, chat_channel: str, thread_ts: str, rating: int, comment: str, *, marker: str
    ) -> str:
        return "1.0"

    async def post_spike(self, chat_channel: str, alert: SpikeAlert, *, marker: str) -> str:
        return "1.0"

    async def post_agent_copy(
        self, chat_channel: str, thread_ts: str, author_name: str, text: str
    ) -> str:
        return "1.0"


class AcceptingSender:
    """Takes every reply, as a relay that answers at once would."""

    async def send(self, reply: OutboundReply) -> str:
        return f"<history-reply-{reply.reply_id}@{STREAM_DOMAIN}>"


@dataclass(slots=True)
class Samples:
    """What the timed operations ask about, picked from one database."""

    conversation_id: int = 0
    chat_channel: str = ""
    thread_ts: str = ""
    #: The Slack ts of a customer's message in that thread (not the root card).
    message_ts: str = ""
    #: The first message of the customer's unanswered streak there (or their last message).
    waiting_message_id: int = 0
    customer: str = ""
    heavy_customer: str = ""
    heavy_customer_conversations: int = 0
    home_user: str = AGENT
    rows: dict[str, int] = field(default_factory=dict)


async def pick_samples(db: Any) -> Samples:
    """An open, unanswered conversation from the second half of the history that is shown in
    Slack, its customer, the customer with the most conversations, and the person owning the
    most open ones."""
    samples = Samples()
    for table in ("customers", "conversations", "messages", "audit_entries", "jobs"):
        samples.rows[table] = int(await db.fetchval(f"SELECT count(*) FROM {table}"))
    row = await db.fetchrow(
        """
        SELECT m.conversation_id, m.chat_ts, c.chat_channel, c.chat_thread_ts, i.channel, i.address
        FROM messages m
        JOIN conversations c ON c.id = m.conversation_id
        JOIN identities i ON i.id = c.identity_id
        WHERE m.id >= (SELECT (min(id) + max(id)) / 2 FROM messages)
          AND m.direction = 'in' AND m.chat_ts IS NOT NULL AND c.chat_thread_ts IS NOT NULL
          AND m.chat_ts <> c.chat_thread_ts AND c.status = 'open'
          -- open and unanswered, so that the waiting check runs every one of its queries
          AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.conversation_id = m.conversation_id
                          AND o.direction = 'out' AND o.id > m.id)
        ORDER BY m.id
        LIMIT 1
        """
    )
    if row is None:
        raise RuntimeError("no conversation shown in Slack to time the operations with")
    samples.conversation_id = int(row["conversation_id"])
    samples.message_ts = str(row["chat_ts"])
    samples.chat_channel = str(row["chat_channel"])
    samples.thread_ts = str(row["chat_thread_ts"])
    samples.customer = f"{row['channel']}:{row['address']}"
    samples.waiting_message_id = int(
        await db.fetchval(
            """
            SELECT coalesce(min(id) FILTER (WHERE id > coalesce((
                       SELECT max(id) FROM messages
                       WHERE conversation_id = $1 AND direction = 'out'
                         AND coalesce(delivery_state, '') <> 'cancelled'), 0)),
                   max(id))
            FROM messages
            WHERE conversation_id = $1 AND direction = 'in' AND NOT is_automated
              AND chat_ts IS NOT NULL
            """,
            samples.conversation_id,
        )
    )
    heavy = await db.fetchrow(
        """
        SELECT c.customer_id, count(*) AS conversations,
               (SELECT channel || ':' || address FROM identities
                WHERE customer_id = c.customer_id ORDER BY id LIMIT 1) AS address
        FROM conversations c
        GROUP BY c.customer_id
        ORDER BY count(*) DESC, c.customer_id
        LIMIT 1
        """
    )
    samples.heavy_customer = str(heavy["address"])
    samples.heavy_customer_conversations = int(heavy["conversations"])
    owner = await db.fetchval(
        """
        SELECT owner FROM conversations WHERE owner <> '' AND status = 'open'
        GROUP BY owner ORDER BY count(*) DESC, owner LIMIT 1
        """
    )
    samples.home_user = str(owner or AGENT)
    return samples


Operation = Callable[[], Awaitable[object]]


async def timed(
    plan: Plan, operation: Operation, *, before: Operation | None = None, runs: int = 0
) -> dict[str, Any]:
    """Median milliseconds of ``operation`` (``before`` runs untimed ahead of each run)."""
    times: list[float] = []
    runs = runs or plan.repetitions
    try:
        while len(times) < runs and sum(times) < plan.op_budget_seconds:
            if before is not None:
                await before()
            started = time.perf_counter()
            await operation()
            times.append(time.perf_counter() - started)
    except Exception as exc:
        # The code under test may be mid-change: one broken operation must not cost the run.
        return {"error": f"{type(exc).__name__}: {exc}"[:300], "runs": len(times)}
    return {"ms": round(statistics.median(times) * 1000, 2), "runs": len(times)}


async def time_operations(
    url: str, settings: Settings, plan: Plan, label: str
) -> dict[str, dict[str, Any]]:
    """Each operation whose cost grows with history, through the service's own code."""
    db = await asyncpg.connect(url)
    try:
        samples = await pick_samples(db)
        say(f"{label}: timing operations on {json.dumps(asdict(samples))}")
        async with open_database(url, migrate_first=False):
            return await _operations(db, settings, plan, samples, label)
    finally:
        await db.close()


async def _operations(
    db: Any, settings: Settings, plan: Plan, samples: Samples, label: str
) -> dict[str, dict[str, Any]]:
    chat = SilentChat()
    workflow = Workflow(chat, settings, FixedSkillClassifier(settings.triage.default_skill))
    lookups = Lookups(settings)
    commands = Commands(workflow, lookups, Roles(settings.roles), settings.slack.command)
    actor = Actor(AGENT, "Alex Agent")
    # Rules that never raise: the check runs every query, and leaves the conversation as it is.
    never = PriorityRules(follow_ups_to_raise=0, waiting_hours_high=1e9, waiting_hours_urgent=1e9)
    escalation = Escalation(workflow, never)
    privacy = Privacy(settings.retention)
    results: dict[str, dict[str, Any]] = {}
    channel, thread_ts = samples.chat_channel, samples.thread_ts
    fresh_ts = (f"{1_900_000_000 + n}.000100" for n in itertools.count())

    async def of_thread() -> None:
        # An agent's new message in the thread, as on every agent reply.
        if await conversation_of_message(channel, next(fresh_ts), thread_ts) is None:
            raise LookupError("the sample thread names no conversation")

    async def of_link() -> None:
        # A link to a customer's message in the thread, without its thread_ts.
        link = (
            f"https://sandbox.slack.com/archives/{channel}/p{samples.message_ts.replace('.', '')}"
        )
        await find_conversation(reference_of(link))

    async def waiting_check() -> None:
        await escalation.check(samples.conversation_id, samples.waiting_message_id)

    async def queue() -> None:
        answer_text(await commands.run_text("queue", actor), utcnow())

    async def home() -> None:
        home_view(await lookups.home(samples.home_user), utcnow())

    async def customer() -> None:
        reply = await commands.run_text(f"customer {samples.customer}", actor)
        answer_text(reply, utcnow())

    async def forget(address: str) -> None:
        await privacy.forget(parse_address(address), dry_run=True)

    say(f"{label}: lookups")
    results["conversation_of_thread_ts"] = await timed(plan, of_thread)
    results["conversation_of_message_link"] = await timed(plan, of_link)
    results["waiting_check"] = await timed(plan, waiting_check)
    results["queue_command"] = await timed(plan, queue)
    results["app_home"] = await timed(plan, home)
    results["customer_command"] = await timed(plan, customer)
    say(f"{label}: forget, dry run")
    results["forget_dry_run"] = await timed(plan, lambda: forget(samples.customer))
    results["forget_dry_run_heavy_customer"] = await timed(
        plan, lambda: forget(samples.heavy_customer)
    ) | {"conversations": samples.heavy_customer_conversations}
    results.update(await _replies(plan, chat, settings, samples, label))
    for pending in plan.pending_jobs:
        say(f"{label}: claiming a job among {pending} pending")
        results[f"claim_job_{pending}_pending"] = await _claim_among(db, plan, settings, pending)
    say(f"{label}: retention")
    results["retention_purge"] = await _retention(db, plan)
    return results


async def _replies(
    plan: Plan, chat: SilentChat, settings: Settings, samples: Samples, label: str
) -> dict[str, dict[str, Any]]:
    """An agent's reply stored from its Slack message, then delivered to the customer."""
    say(f"{label}: agent replies")
    relay = Relay(chat, settings.replies)
    senders: dict[ChannelKind, ReplySender] = {kind: AcceptingSender() for kind in ChannelKind}
    deliver = DeliverReply(chat, senders)
    jobs: list[int] = []
    fresh_ts = (f"{1_950_000_000 + n}.000200" for n in itertools.count())

    async def store() -> None:
        result = await relay.on_agent_message(
            AgentMessage(
                chat_channel=samples.chat_channel,
                thread_ts=samples.thread_ts,
                ts=next(fresh_ts),
                user_id=AGENT,
                user_name="Alex Agent",
                text="Thank you, we are looking into it and will write again today.",
            )
        )
        if result.outcome is not Outcome.QUEUED or result.job_id is None:
            raise LookupError(f"the reply was not queued: {result.outcome.value}")
        jobs.append(result.job_id)

    stored = await timed(plan, store)
    queued = list(jobs)
    delivering: list[Job] = []

    async def next_job() -> None:
        delivering[:] = [await Job.get(id=jobs.pop())]

    async def delivered() -> None:
        await deliver.run(delivering[0])

    results = {"agent_reply_stored": stored}
    if queued:
        results["reply_delivered"] = await timed(
            plan, delivered, before=next_job, runs=min(len(queued), plan.repetitions)
        )
    else:
        results["reply_delivered"] = {"error": "no reply was stored to deliver", "runs": 0}
    # Nothing runs these jobs here: marked done, they stay out of the claims timed next.
    await Job.filter(id__in=queued).update(state=JobState.DONE)
    return results


async def _claim_among(db: Any, plan: Plan, settings: Settings, pending: int) -> dict[str, Any]:
    """``JobRunner.claim`` finding the one due job among ``pending`` jobs of other keys, due
    later (as the waiting checks and snoozes of open conversations are)."""
    run = uuid.uuid4().hex[:8]
    await db.execute(
        """
        INSERT INTO jobs (kind, payload, serial_key, state, run_at, attempts, locked_by,
                          last_error, created_at, updated_at)
        SELECT 'check_waiting', '{}'::jsonb, 'history-' || $2 || ':' || g, 'pending',
               now() + interval '1 day' + g * interval '1 second', 0, '', '', now(), now()
        FROM generate_series(1, $1::int) AS g
        """,
        pending,
        run,
    )
    due = await db.fetchval(
        """
        INSERT INTO jobs (kind, payload, serial_key, state, run_at, attempts, locked_by,
                          last_error, created_at, updated_at)
        VALUES ('check_waiting', '{}'::jsonb, 'history-' || $1 || ':due', 'pending',
                now() - interval '1 second', 0, '', '', now(), now())
        RETURNING id
        """,
        run,
    )
    await db.execute("ANALYZE jobs")
    runner = JobRunner({}, settings.jobs)
    claimed: list[int] = []

    async def claim() -> None:
        claimed[:] = [job.id for job in await runner.claim(1)]

    async def release() -> None:
        # Claimed jobs go back as they were, so that every run finds the same queue.
        if claimed:
            await db.execute(
                """
                UPDATE jobs SET state = 'pending', locked_until = NULL, locked_by = '',
                                attempts = attempts - 1
                WHERE id = ANY($1::bigint[])
                """,
                claimed,
            )

    try:
        result = await timed(plan, claim, before=release)
        await release()
        return result | {"claimed_the_due_job": claimed == [due]}
    finally:
        await db.execute("DELETE FROM jobs WHERE serial_key LIKE 'history-' || $1 || ':%'", run)


def stopped_clock(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


async def _retention(db: Any, plan: Plan) -> dict[str, Any]:
    """``Privacy.purge_closed`` removing the ``retention_batch`` oldest closed conversations:
    its clock is set so that just these are past the retention period."""
    batch = plan.retention_batch
    wanted = batch * plan.repetitions
    closed = int(await db.fetchval("SELECT count(*) FROM conversations WHERE status = 'closed'"))
    if closed < wanted:
        # A young database has closed nothing yet: close its oldest conversations, and end
        # the waiting checks they still have, as time would have.
        ids = await db.fetchval(
            """
            WITH oldest AS (SELECT id FROM conversations WHERE status = 'open'
                            ORDER BY updated_at, id LIMIT $1
            ), closed AS (UPDATE conversations SET status = 'closed'
                         WHERE id IN (SELECT id FROM oldest) RETURNING id)
            SELECT array_agg(id) FROM closed
            """,
            wanted - closed,
        )
        await db.execute(
            """
            UPDATE jobs SET state = 'done'
            WHERE conversation_id = ANY($1::int[]) AND state NOT IN ('done', 'failed', 'cancelled')
            """,
            list(ids or []),
        )
    runs: list[tuple[float, int]] = []
    try:
        while len(runs) < plan.repetitions and sum(t for t, _ in runs) < plan.op_budget_seconds:
            # Past the newest change and the newest message of the oldest closed conversations.
            cutoff: datetime | None = await db.fetchval(
                """
                WITH oldest AS (SELECT id, updated_at FROM conversations WHERE status = 'closed'
                                ORDER BY updated_at, id LIMIT $1)
                SELECT greatest((SELECT max(updated_at) FROM oldest),
                                (SELECT max(created_at) FROM messages
                                 WHERE conversation_id IN (SELECT id FROM oldest)))
                """,
                batch,
            )
            if cutoff is None:
                break
            moment = cutoff + timedelta(milliseconds=1) + timedelta(days=1)
            privacy = Privacy(
                RetentionSettings(closed_conversations_days=1), clock=stopped_clock(moment)
            )
            started = time.perf_counter()
            removal = await privacy.purge_closed(batch=batch)
            runs.append((time.perf_counter() - started, removal.conversations))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300], "runs": len(runs)}
    removing = [(seconds, removed) for seconds, removed in runs if removed]
    if not removing:
        return {"error": "no closed conversation was removed", "runs": len(runs)}
    return {
        "ms": round(statistics.median(s for s, _ in removing) * 1000, 2),
        "ms_per_conversation": round(statistics.median(s / n for s, n in removing) * 1000, 3),
        "runs": len(runs),
        "removed": [removed for _, removed in runs],
    }


@contextlib.asynccontextmanager
async def scratch_databases(admin_url: str, *labels: str) -> AsyncIterator[list[str]]:
    """New, empty PostgreSQL databases next to ``admin_url``'s, dropped afterwards."""
    run = uuid.uuid4().hex[:8]
    names = [f"switchboard_history_{run}_{label}" for label in labels]
    admin = await asyncpg.connect(admin_url)
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield [admin_url.rsplit("/", 1)[0] + f"/{name}" for name in names]
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            for name in names:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def tidy(url: str) -> None:
    """Statistics up to date and dirty pages written, as on a database that has been running:
    neither autovacuum nor a checkpoint should land in the middle of a measurement."""
    db = await asyncpg.connect(url)
    try:
        await db.execute("VACUUM (ANALYZE)")
        await db.execute("CHECKPOINT")
    finally:
        await db.close()


def ratio(filled: Any, empty: Any) -> float | None:
    if not isinstance(filled, int | float) or not isinstance(empty, int | float) or not empty:
        return None
    return round(filled / empty, 2)


def ratios(empty: dict[str, Any], filled: dict[str, Any]) -> dict[str, Any]:
    """Filled / empty for each figure both databases have."""
    result: dict[str, Any] = {}
    for name, stream_empty in empty["stream"].items():
        stream_filled = filled["stream"][name]
        result[name] = {
            key: ratio(stream_filled.get(key), stream_empty.get(key))
            for key in ("seconds_to_post_p50", "seconds_to_post_p99", "posts_per_second")
        } | {
            f"cpu_per_message_{part}": ratio(
                stream_filled["cpu_ms_per_message"][part], stream_empty["cpu_ms_per_message"][part]
            )
            for part in ("service", "postgres", "total")
        }
    # Retention compares the time per conversation removed: the young database has fewer.
    result["operations"] = {
        name: ratio(
            filled["operations_ms"][name].get(
                "ms_per_conversation", filled["operations_ms"][name].get("ms")
            ),
            timing.get("ms_per_conversation", timing.get("ms")),
        )
        for name, timing in empty["operations_ms"].items()
    }
    return result


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets at this size, met or not (they are meant for 1M messages)."""
    steady = result["ratios"]["steady"]
    operations = result["filled"]["operations_ms"]
    heavy = "forget_dry_run_heavy_customer"
    slow_ops = sorted(
        name
        for name, timing in operations.items()
        if timing.get("ms") is None or timing["ms"] >= (5000 if name == heavy else 50)
    )
    return {
        "p99_ratio_at_most_1_5": (steady["seconds_to_post_p99"] or math.inf) <= 1.5,
        "throughput_ratio_at_least_0_9": (steady["posts_per_second"] or 0.0) >= 0.9,
        "operations_under_50_ms_heavy_forget_under_5_s": not slow_ops,
        "operations_over_target": slow_ops,
    }


async def main(
    plan: Plan, admin_url: str, command: str, baseline: Path | None = None
) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": "history",
        "command": command,
        "cores": os.cpu_count(),
        "plan": asdict(plan),
    }
    with tempfile.TemporaryDirectory(prefix="switchboard-history-") as workdir:
        async with scratch_databases(admin_url, "empty", "filled") as (empty_url, filled_url):
            for url in (empty_url, filled_url):
                await apply_migrations(url)
            say(f"filling a database with {plan.messages} messages of history")
            fill_started = time.monotonic()
            await fill_history(
                filled_url, plan.messages, progress=lambda text: say(f"fill: {text}")
            )
            result["fill_seconds"] = round(time.monotonic() - fill_started, 1)
            say(f"filled in {result['fill_seconds']} s; vacuum and analyze")
            for url in (empty_url, filled_url):
                await tidy(url)
            for label, url in (("empty", empty_url), ("filled", filled_url)):
                result[label] = {"stream": await run_service(url, plan, Path(workdir), label)}
            for label, url in (("empty", empty_url), ("filled", filled_url)):
                env = {
                    "DATABASE_URL": url,
                    "SLACK_BOT_TOKEN": "xoxb-history",
                    "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                }
                settings = settings_from_toml(
                    service_config(http_port=0, smtp_port=0, relay_port=2525, slack_url=""), env
                )
                await tidy(url)
                result[label]["operations_ms"] = await time_operations(url, settings, plan, label)
        if baseline is not None:
            async with scratch_databases(admin_url, "baseline") as (baseline_url,):
                say(f"baseline: the service of {baseline} on an empty database")
                result["baseline_empty"] = {
                    "tree": str(baseline),
                    "stream": await run_service(
                        baseline_url, plan, Path(workdir), "baseline", tree=baseline
                    ),
                }
    result["ratios"] = ratios(result["empty"], result["filled"])
    if baseline is not None:
        result["ratios"]["cpu_per_message_vs_baseline"] = {
            name: {
                part: ratio(
                    result["empty"]["stream"][name]["cpu_ms_per_message"][part],
                    result["baseline_empty"]["stream"][name]["cpu_ms_per_message"][part],
                )
                for part in ("service", "postgres", "total")
            }
            for name in ("steady", "slow")
        }
    result["targets"] = targets(result)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Plan()
    parser.add_argument("--messages", type=int, help=f"history to fill ({defaults.messages})")
    parser.add_argument("--count", type=int, help=f"mails in the steady stream ({defaults.count})")
    parser.add_argument("--rate", type=float, help=f"their mails per second ({defaults.rate})")
    parser.add_argument("--slow-count", type=int, help=f"mails after ({defaults.slow_count})")
    parser.add_argument("--slow-rate", type=float, help=f"their rate ({defaults.slow_rate})")
    parser.add_argument(
        "--repetitions", type=int, help=f"runs of each timed operation ({defaults.repetitions})"
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        help=f"wait at most this long for a stream's last posts ({defaults.settle_seconds})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.messages} messages and a short stream: a try in a few minutes",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=ADMIN_URL,
        help=f"the scratch databases are created next to this one ({ADMIN_URL})",
    )
    parser.add_argument(
        "--baseline",
        metavar="TREE",
        type=Path,
        help="also run the empty database's stream with the service of this checkout (e.g. "
        "`git worktree add /tmp/base HEAD~1`) and compare CPU per message",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else defaults
    chosen = {
        "messages": args.messages,
        "count": args.count,
        "rate": args.rate,
        "slow_count": args.slow_count,
        "slow_rate": args.slow_rate,
        "repetitions": args.repetitions,
        "settle_seconds": args.settle_seconds,
    }
    plan = replace(plan, **{key: value for key, value in chosen.items() if value is not None})
    command = " ".join(["python -m bench.history", *sys.argv[1:]])
    # Stopped with SIGTERM, it still drops its databases and stops the service.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(json.dumps(asyncio.run(main(plan, args.postgres, command, args.baseline)), indent=2))


if __name__ == "__main__":
    cli()
