"""Crash safety under load: SIGKILLs, a flaky Slack, and nothing lost or shown twice.

The real service runs as a subprocess (``python -m adapters serve``) against loopback stand-ins
for Slack (failing a share of Web API calls with 500 or 429 + Retry-After), Telegram (long
polling), WhatsApp (signed webhooks, Graph API) and the mail relay. Customers send mail over
SMTP and write on Telegram and WhatsApp, agents answer in the Slack threads, and meanwhile the
service is killed with SIGKILL at random moments and started again. Then:

- every message the service accepted (SMTP 250, a Telegram update it confirmed, a WhatsApp
  webhook it answered 200) is in Slack exactly once, in the one thread of its customer;
- every agent reply the service acknowledged reached its customer exactly once;
- each customer's messages are in their thread in the order the customer wrote them.

In the middle of it Slack refuses the token for a while (every Web API call answers
``invalid_auth``, as after a revoked token that is later restored) while mail keeps arriving.
The service parks the work that would post it and resumes when auth.test answers again; the
report says how long the backlog took to reach Slack after that. Kills wait from the start of
that outage until its backlog is in Slack, so the figure is the service's, not a restart's.

With ``--replicas N`` (PostgreSQL), N processes share the database behind a stand-in load
balancer: each mail, Slack event, Telegram update (webhook mode) and WhatsApp webhook goes to
any replica, some
events and updates a second time to another one, and kills hit any replica.

    python -m bench.chaos [--mails 1000] [--telegram 200] [--whatsapp 100] [--kills 10]
                          [--replicas N]
                          [--auth-outage SECONDS] [--postgres URL]

prints the report as JSON. tests/test_chaos.py runs small versions on SQLite and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterable
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import aiosmtplib

from adapters.telegram.webhook import WEBHOOK_PATH
from adapters.whatsapp.webhook import WEBHOOK_PATH as WHATSAPP_PATH
from standins.mail import SmtpSink
from standins.slack import SlackEvents, SlackSandbox
from standins.telegram import TelegramSandbox
from standins.whatsapp import WhatsAppSandbox

SUPPORT = "support@shop.example"
SIGNING_SECRET = "chaos-signing-secret"
AGENT = "U0AGENT"
CHANNELS = {"general": "support", "billing": "support-billing", "technical": "support-tech"}
TRIAGE_CHANNEL = "support-triage"
TELEGRAM_SECRET = "chaos-telegram-webhook-secret"
_TOKEN = re.compile(r"\b(mail|tg|wa|reply)-(\d{5})\b")
#: What the Slack stand-in expects while it refuses the service's token.
_REVOKED_TOKEN = "xoxb-revoked-by-the-chaos-run"
#: The service's log line for a job that parks (counted in the report).
_PARKED = "job parked until its cause is fixed"


@dataclass(frozen=True, slots=True)
class ChaosPlan:
    mails: int = 1000
    telegram: int = 200
    whatsapp: int = 100
    kills: int = 10
    #: Share of Slack Web API calls that fail (half 500, half 429 with Retry-After: 1).
    slack_failure_rate: float = 0.1
    mails_per_customer: int = 4
    telegram_users: int = 20
    whatsapp_users: int = 10
    #: Agents answer one conversation in this many.
    answer_every: int = 4
    connections: int = 10
    #: A customer waits up to this long (uniformly drawn) before writing again.
    pause_between_mails: float = 0.5
    #: The seconds between a restart and the next kill are drawn from this range.
    kill_gap: tuple[float, float] = (1.0, 4.0)
    settle_seconds: float = 600.0
    seed: int = 0
    #: Service processes sharing the database (PostgreSQL for more than one). Mail, Slack
    #: events and Telegram updates go to any of them, as through a load balancer; with more
    #: than one, Telegram uses its webhook (only one process may long-poll a bot).
    replicas: int = 1
    #: Share of Slack events and Telegram updates sent a second time to another replica, as
    #: when the sender retries after a slow answer.
    redelivery_rate: float = 0.1
    #: How long Slack answers every Web API call with ``invalid_auth`` (0: never).
    auth_outage_seconds: float = 10.0
    #: The outage begins once this share of the messages was accepted, so mail arrives during it.
    auth_outage_after_share: float = 0.25
    #: ``[jobs] park_retry_seconds``: how often parked work tries again on its own.
    park_retry_seconds: float = 2.0


@dataclass(slots=True)
class ChaosReport:
    database: str
    messages_sent: int = 0
    accepted: int = 0
    posted: int = 0
    duplicates: int = 0
    lost: int = 0
    misthreaded: int = 0
    #: Messages shown after one their customer wrote later (in the same thread).
    out_of_order: int = 0
    extra_root_cards: int = 0
    replies_queued: int = 0
    replies_delivered: int = 0
    reply_duplicates: int = 0
    replies_to_wrong_customer: int = 0
    reply_resends_same_message_id: int = 0
    kills: int = 0
    replicas: int = 1
    redeliveries: int = 0
    slack_calls: int = 0
    slack_failures_injected: int = 0
    #: How long Slack refused the token, the calls it answered ``invalid_auth`` meanwhile, the
    #: messages accepted meanwhile, and the jobs the service parked (from its log).
    auth_outage_seconds: float = 0.0
    auth_refusals: int = 0
    accepted_during_auth_outage: int = 0
    jobs_parked: int = 0
    #: From the token working again until every message accepted before that was in Slack
    #: (-1: not within ``settle_seconds``).
    auth_backlog_drain_seconds: float = 0.0
    seconds: float = 0.0
    #: CPU time the service processes used after start-up, all replicas and restarts together.
    service_cpu_seconds: float = 0.0
    messages_per_second: float = 0.0
    service_log: str = ""
    #: The first few lost messages and undelivered replies, to look for in the service log.
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.accepted == self.messages_sent
            and self.posted == self.accepted
            and not (self.duplicates or self.lost or self.misthreaded or self.extra_root_cards)
            and not self.out_of_order
            and self.auth_backlog_drain_seconds >= 0
            and self.replies_delivered == self.replies_queued
            and not (self.reply_duplicates or self.replies_to_wrong_customer)
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def skills_toml() -> str:
    """The ``[[skills]]`` tables of ``CHANNELS``."""
    return "\n".join(
        f'[[skills]]\nname = "{name}"\nchannel = "{channel}"\n'
        for name, channel in CHANNELS.items()
    )


def service_config(
    *,
    http_port: int,
    smtp_port: int,
    relay_port: int,
    slack_url: str,
    telegram_url: str,
    telegram_mode: str,
    park_retry_seconds: float,
    whatsapp: str = "",
) -> str:
    skills = skills_toml()
    return f"""
[service]
http_port = {http_port}
log_level = "WARNING"

[email]
listen_port = {smtp_port}
support_address = "{SUPPORT}"

[email.relay]
port = {relay_port}
timeout_seconds = 5

[slack]
api_url = "{slack_url}"
triage_channel = "{TRIAGE_CHANNEL}"

[telegram]
enabled = true
mode = "{telegram_mode}"
api_url = "{telegram_url}"

{whatsapp}

[replies]
undo_seconds = 0

[jobs]
workers = 4
lease_seconds = 10
backoff_base_seconds = 0.2
backoff_max_seconds = 3
poll_seconds = 0.2
park_retry_seconds = {park_retry_seconds}

{skills}
"""


def process_cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """User plus system CPU time of a running process (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # After the command name: utime, stime, cutime, cstime are fields 12 to 15.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


class ServiceProcess:
    """``python -m adapters serve`` as a child process that can be killed and started again."""

    def __init__(
        self,
        config: Path,
        env: dict[str, str],
        log: Path,
        *,
        http_port: int,
        smtp_port: int,
        cwd: Path | None = None,
    ) -> None:
        self.config = config
        # ``python -m`` puts the working directory first on the path: the code that runs is
        # the checkout it starts in.
        self.cwd = cwd
        self.env = env
        self.log = log
        self.http_port = http_port
        self.smtp_port = smtp_port
        self.process: asyncio.subprocess.Process | None = None
        #: CPU time spent serving (start-ups not counted), over all runs of the process.
        self.cpu_seconds = 0.0
        self._cpu_at_start = 0.0

    async def start(self, timeout: float = 120.0) -> None:
        """Start the service and wait until its SMTP endpoint answers."""
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "adapters",
                "-c",
                str(self.config),
                "serve",
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=self.cwd,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"the service exited at start:\n{self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.smtp_port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            self._cpu_at_start = process_cpu_seconds(self.process.pid)
            return
        raise TimeoutError(f"the service did not start in {timeout} s:\n{self.log_tail()}")

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a machine dies."""
        assert self.process is not None
        self.cpu_seconds += process_cpu_seconds(self.process.pid) - self._cpu_at_start
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM, as an orchestrator stops it; SIGKILL if it has not ended in 30 s."""
        if self.process is None or self.process.returncode is not None:
            return
        self.cpu_seconds += process_cpu_seconds(self.process.pid) - self._cpu_at_start
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            await self.kill()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class Fleet:
    """The replicas, and a load balancer's choice among them."""

    def __init__(self, replicas: list[ServiceProcess], rng: random.Random) -> None:
        self.replicas = replicas
        self.rng = rng

    def any(self) -> ServiceProcess:
        return self.rng.choice(self.replicas)

    def other_than(self, replica: ServiceProcess) -> ServiceProcess:
        return self.rng.choice([r for r in self.replicas if r is not replica] or self.replicas)

    async def start(self) -> None:
        await asyncio.gather(*(replica.start() for replica in self.replicas))

    async def stop(self) -> None:
        await asyncio.gather(*(replica.stop() for replica in self.replicas))


def _event(*, is_set: bool) -> asyncio.Event:
    event = asyncio.Event()
    if is_set:
        event.set()
    return event


@dataclass(slots=True)
class _Run:
    """What the customers and agents did, to check Slack and the outboxes against."""

    plan: ChaosPlan
    rng: random.Random
    fleet: Fleet
    #: token -> the customer who wrote it ("mail:3", "tg:555000004")
    written: dict[str, str] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    #: agent reply token -> the customer it must reach
    replies: dict[str, str] = field(default_factory=dict)
    #: threads the agents have looked at (each is answered or passed over once)
    seen_threads: set[str] = field(default_factory=set)
    redeliveries: int = 0
    #: Set once the share of messages that starts Slack's auth outage was accepted.
    outage_due: asyncio.Event = field(default_factory=asyncio.Event)
    #: Cleared from the start of the auth outage until its backlog is in Slack.
    kills_allowed: asyncio.Event = field(default_factory=lambda: _event(is_set=True))
    auth_refused: bool = False
    accepted_during_outage: int = 0

    def accept(self, token: str) -> None:
        """A customer's message was accepted by the service."""
        self.accepted.add(token)
        self.accepted_during_outage += self.auth_refused
        total = self.plan.mails + self.plan.telegram + self.plan.whatsapp
        if len(self.accepted) >= self.plan.auth_outage_after_share * total:
            self.outage_due.set()

    def redeliver(self) -> bool:
        """Whether to send this event or update again to another replica."""
        if len(self.fleet.replicas) < 2 or self.rng.random() >= self.plan.redelivery_rate:
            return False
        self.redeliveries += 1
        return True


def _customer_address(customer: int) -> str:
    return f"customer{customer}@example.org"


def _mail(customer: int, number: int, token: str, previous: list[str]) -> bytes:
    message = EmailMessage()
    message["From"] = f"Customer {customer} <{_customer_address(customer)}>"
    message["To"] = SUPPORT
    message["Subject"] = ("Re: " if previous else "") + f"Order {customer}"
    message["Message-ID"] = f"<{token}@example.org>"
    if previous:
        message["In-Reply-To"] = previous[-1]
        message["References"] = " ".join(previous)
    message.set_content(f"Message {number} about my order: {token}\n\nCustomer {customer}\n")
    return message.as_bytes()


async def _send_until_accepted(fleet: Fleet, raw: bytes, sender: str) -> None:
    """Send one mail, again and again while no replica takes it, until one answers 250."""
    while True:
        try:
            await aiosmtplib.send(
                raw,
                sender=sender,
                recipients=[SUPPORT],
                hostname="127.0.0.1",
                port=fleet.any().smtp_port,
                timeout=30,
            )
            return
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        await asyncio.sleep(0.2)


async def _customers_mail(run: _Run) -> None:
    plan = run.plan
    slots = asyncio.Semaphore(plan.connections)
    customers = -(-plan.mails // plan.mails_per_customer)

    async def customer(number: int) -> None:
        previous: list[str] = []
        first = number * plan.mails_per_customer
        for index in range(first, min(first + plan.mails_per_customer, plan.mails)):
            token = f"mail-{index:05d}"
            run.written[token] = f"mail:{number}"
            raw = _mail(number, index - first, token, previous)
            async with slots:
                await _send_until_accepted(run.fleet, raw, _customer_address(number))
            run.accept(token)
            previous.append(f"<{token}@example.org>")
            await asyncio.sleep(run.rng.uniform(0, plan.pause_between_mails))

    await asyncio.gather(*(customer(n) for n in range(customers)))


async def _customers_telegram(run: _Run, telegram: TelegramSandbox) -> None:
    for index in range(run.plan.telegram):
        user = 555_000_000 + index % run.plan.telegram_users
        token = f"tg-{index:05d}"
        run.written[token] = f"tg:{user}"
        update = telegram.text_update(
            f"Frage {index}: {token}", user_id=user, first_name=f"Kunde{user % 1000}"
        )
        if len(run.fleet.replicas) == 1:
            # Telegram keeps an update until a later getUpdates confirms it: queued is accepted.
            await telegram.queue_update(update)
        else:
            await _post_until_acknowledged(run, telegram, update)
        run.accept(token)
        await asyncio.sleep(run.rng.uniform(0, 0.05))


async def _customers_whatsapp(run: _Run, whatsapp: WhatsAppSandbox) -> None:
    for index in range(run.plan.whatsapp):
        wa_id = str(4915100000000 + index % run.plan.whatsapp_users)
        token = f"wa-{index:05d}"
        run.written[token] = f"wa:{wa_id}"
        body = whatsapp.text(wa_id, f"Kundin {wa_id[-3:]}", f"Frage {index}: {token}")
        await _post_whatsapp_until_acknowledged(run, whatsapp, body)
        run.accept(token)
        await asyncio.sleep(run.rng.uniform(0, 0.05))


async def _post_whatsapp_until_acknowledged(
    run: _Run, whatsapp: WhatsAppSandbox, body: dict[str, object]
) -> None:
    """Post a webhook to a replica as Meta does: again until one answers 200."""

    async def deliver(replica: ServiceProcess) -> int:
        url = f"http://127.0.0.1:{replica.http_port}{WHATSAPP_PATH}"
        status, _ = await whatsapp.deliver(url, body)
        return status

    await _until_acknowledged(run, deliver)


async def _post_until_acknowledged(
    run: _Run, telegram: TelegramSandbox, update: dict[str, object]
) -> None:
    """Post an update to a replica's webhook as Telegram does: again until one answers 200."""

    async def deliver(replica: ServiceProcess) -> int:
        url = f"http://127.0.0.1:{replica.http_port}{WEBHOOK_PATH}"
        return await telegram.deliver(url, update, secret=TELEGRAM_SECRET)

    await _until_acknowledged(run, deliver)


async def _until_acknowledged(
    run: _Run, deliver: Callable[[ServiceProcess], Awaitable[int]]
) -> None:
    """Deliver to any replica until one answers 200; sometimes again to another, as senders
    do when an answer got lost."""
    replica = run.fleet.any()
    while True:
        try:
            if await deliver(replica) == 200:
                break
        except (OSError, TimeoutError, aiohttp.ClientError):
            pass
        await asyncio.sleep(0.3)
        replica = run.fleet.any()
    if run.redeliver():
        with contextlib.suppress(OSError, TimeoutError, aiohttp.ClientError):
            await deliver(run.fleet.other_than(replica))


async def _deliver_until_acknowledged(run: _Run, events: SlackEvents, body: str) -> None:
    """Send a Slack event the way Slack does: again, marked as a retry, until it gets a 200."""
    attempt = 0
    replica = run.fleet.any()
    while True:
        url = f"http://127.0.0.1:{replica.http_port}/slack/events"
        try:
            response = await events.deliver(url, body, "application/json", retry_num=attempt)
            if response.status == 200:
                break
        except (OSError, TimeoutError, aiohttp.ClientError):
            pass
        attempt += 1
        await asyncio.sleep(0.3)
        replica = run.fleet.any()
    if run.redeliver():
        # Slack retrying an event whose answer it missed; the retry lands on another replica.
        url = f"http://127.0.0.1:{run.fleet.other_than(replica).http_port}/slack/events"
        with contextlib.suppress(OSError, TimeoutError, aiohttp.ClientError):
            await events.deliver(url, body, "application/json", retry_num=attempt + 1)


async def _agents(run: _Run, slack: SlackSandbox, events: SlackEvents, stop: asyncio.Event) -> None:
    """Answer one new thread in ``answer_every``, as an agent typing in Slack."""
    while not stop.is_set():
        for channel, root_ts, tokens in _threads(slack, skip=run.seen_threads):
            customers = {run.written[token] for token in tokens if token in run.written}
            if len(customers) != 1:
                continue
            run.seen_threads.add(root_ts)
            if len(run.seen_threads) % run.plan.answer_every:
                continue
            token = f"reply-{len(run.replies):05d}"
            posted = slack.post_as_user(
                channel, AGENT, f"Danke, wir kümmern uns: {token}", thread_ts=root_ts
            )
            body = json.dumps(events.event_callback(events.message_event(channel, posted["ts"])))
            await _deliver_until_acknowledged(run, events, body)
            run.replies[token] = next(iter(customers))
        await asyncio.sleep(0.5)


def _threads(
    slack: SlackSandbox, *, skip: Container[str] = ()
) -> Iterable[tuple[str, str, set[str]]]:
    """Each conversation thread in Slack (but those in ``skip``) with the tokens posted in it."""
    for channel in (*CHANNELS.values(), TRIAGE_CHANNEL):
        for root in slack.channel_messages(channel):
            if root["ts"] in skip:
                continue
            tokens: set[str] = set()
            for message in slack.thread(channel, root["ts"])[1:]:
                if message.get("bot_id"):
                    tokens.update(
                        f"{kind}-{number}" for kind, number in _TOKEN.findall(message["text"])
                    )
            yield channel, root["ts"], tokens


def _posted_tokens(slack: SlackSandbox) -> tuple[Counter[str], dict[str, set[str]], int]:
    """How often each customer token is in a thread, the threads per token, and empty roots."""
    counts: Counter[str] = Counter()
    threads: dict[str, set[str]] = defaultdict(set)
    empty_roots = 0
    for channel in (*CHANNELS.values(), TRIAGE_CHANNEL):
        for root in slack.channel_messages(channel):
            found = False
            for message in slack.thread(channel, root["ts"])[1:]:
                if not message.get("bot_id"):
                    continue
                for kind, number in _TOKEN.findall(message["text"]):
                    if kind in ("mail", "tg", "wa"):
                        token = f"{kind}-{number}"
                        counts[token] += 1
                        threads[token].add(f"{channel}/{root['ts']}")
                        found = True
            empty_roots += not found
    return counts, threads, empty_roots


def _out_of_order(run: _Run, slack: SlackSandbox) -> int:
    """Messages shown in a thread after a message their customer wrote later.

    A customer's tokens are numbered in the order the customer wrote them (each mail is sent
    after the one before was accepted; a Telegram user's updates are queued one after another).
    """
    shown_late = 0
    for channel, root_ts, _ in _threads(slack):
        latest: dict[str, int] = {}
        seen: set[str] = set()
        for message in slack.thread(channel, root_ts)[1:]:
            if not message.get("bot_id"):
                continue
            for kind, number in _TOKEN.findall(message["text"]):
                token = f"{kind}-{number}"
                if kind == "reply" or token in seen or token not in run.written:
                    continue
                seen.add(token)
                customer = run.written[token]
                if int(number) < latest.get(customer, -1):
                    shown_late += 1
                latest[customer] = max(int(number), latest.get(customer, -1))
    return shown_late


def _delivered(
    relay: SmtpSink, telegram: TelegramSandbox, whatsapp: WhatsAppSandbox
) -> tuple[Counter[str], list[str], int]:
    """Agent reply tokens as the customers got them, who got them, and repeated Message-IDs."""
    counts: Counter[str] = Counter()
    recipients: list[str] = []
    message_ids: Counter[str] = Counter()
    for mail in relay.received:
        message = mail.message
        message_ids[str(message["Message-ID"])] += 1
        if message_ids[str(message["Message-ID"])] > 1:
            continue
        body = message.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        for token in re.findall(r"reply-\d{5}", text):
            counts[token] += 1
            number = re.sub(r"\D", "", mail.rcpt_tos[0].split("@")[0])
            recipients.append(f"{token}=mail:{number}")
    for sent in telegram.sent:
        for token in re.findall(r"reply-\d{5}", sent.text or ""):
            counts[token] += 1
            recipients.append(f"{token}=tg:{sent.chat_id}")
    for wa_sent in whatsapp.sent:
        for token in re.findall(r"reply-\d{5}", wa_sent.text):
            counts[token] += 1
            recipients.append(f"{token}=wa:{wa_sent.to}")
    resends = sum(count - 1 for count in message_ids.values())
    return counts, recipients, resends


async def _killer(run: _Run, report: ChaosReport) -> None:
    for _ in range(run.plan.kills):
        await asyncio.sleep(run.rng.uniform(*run.plan.kill_gap))
        await run.kills_allowed.wait()
        victim = run.fleet.any()
        await victim.kill()
        report.kills += 1
        await asyncio.sleep(run.rng.uniform(0, 0.5))
        await victim.start()


async def _auth_outage(
    run: _Run,
    slack: SlackSandbox,
    report: ChaosReport,
    restored: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Slack refuses the service's token for a while; then time how long the backlog takes.

    The stand-in is told to expect another bot token, so every Web API call the service makes
    (auth.test included) answers ``{"ok": false, "error": "invalid_auth"}``; the service keeps
    its token, and replicas started meanwhile start with it. Then the token works again.
    """
    plan = run.plan
    if plan.auth_outage_seconds <= 0:
        restored.set()
        return
    await run.outage_due.wait()
    run.kills_allowed.clear()
    try:
        await _refuse_auth(run, slack, report, restored)
        await _time_backlog(run, slack, report, stop)
    finally:
        run.kills_allowed.set()


async def _refuse_auth(
    run: _Run, slack: SlackSandbox, report: ChaosReport, restored: asyncio.Event
) -> None:
    """Every Web API call answers invalid_auth for ``auth_outage_seconds``, then none does."""
    token = slack.bot_token
    calls, injected = len(slack.calls), slack.failures_injected
    began = time.monotonic()
    slack.bot_token = _REVOKED_TOKEN
    run.auth_refused = True
    try:
        await asyncio.sleep(run.plan.auth_outage_seconds)
    finally:
        slack.bot_token = token
        run.auth_refused = False
        report.auth_outage_seconds = round(time.monotonic() - began, 1)
        # Injected 500s and 429s come before the token is looked at; every other call is refused.
        report.auth_refusals = len(slack.calls) - calls - (slack.failures_injected - injected)
        restored.set()


async def _time_backlog(
    run: _Run, slack: SlackSandbox, report: ChaosReport, stop: asyncio.Event
) -> None:
    """How long until every message accepted so far is in Slack (-1: not in settle_seconds)."""
    backlog = set(run.accepted)
    back = time.monotonic()
    report.auth_backlog_drain_seconds = -1
    while time.monotonic() - back < run.plan.settle_seconds:
        counts, _, _ = _posted_tokens(slack)
        if all(counts[token] for token in backlog):
            report.auth_backlog_drain_seconds = round(time.monotonic() - back, 1)
            return
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


def _all_arrived(
    run: _Run, slack: SlackSandbox, relay: SmtpSink, tg: TelegramSandbox, wa: WhatsAppSandbox
) -> bool:
    counts, _, _ = _posted_tokens(slack)
    if any(counts[token] == 0 for token in run.accepted):
        return False
    delivered, _, _ = _delivered(relay, tg, wa)
    return all(delivered[token] for token in run.replies)


@contextlib.asynccontextmanager
async def _stand_ins(
    plan: ChaosPlan,
) -> AsyncIterator[tuple[SlackSandbox, TelegramSandbox, SmtpSink, WhatsAppSandbox]]:
    async with (
        SlackSandbox() as slack,
        TelegramSandbox() as telegram,
        SmtpSink() as relay,
        WhatsAppSandbox() as whatsapp,
    ):
        for channel in (*CHANNELS.values(), TRIAGE_CHANNEL):
            slack.add_channel(channel)
        slack.add_user(AGENT, "agent", real_name="Alex Agent")
        slack.failure_rate(plan.slack_failure_rate, seed=plan.seed)
        yield slack, telegram, relay, whatsapp


async def run_chaos(plan: ChaosPlan, database_url: str, workdir: Path) -> ChaosReport:
    """Run the plan against services on ``database_url`` (an empty database)."""
    if plan.replicas > 1 and not database_url.startswith("postgres"):
        raise ValueError("several replicas need PostgreSQL: SQLite is one process's database")
    report = ChaosReport(database=database_url.split(":", 1)[0], replicas=plan.replicas)
    rng = random.Random(plan.seed)
    async with _stand_ins(plan) as (slack, telegram, relay, whatsapp):
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
            **whatsapp.env(),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        replicas = []
        for number in range(plan.replicas):
            http_port, smtp_port = free_port(), free_port()
            config = workdir / f"replica-{number}.toml"
            config.write_text(
                service_config(
                    http_port=http_port,
                    smtp_port=smtp_port,
                    relay_port=relay.port,
                    slack_url=slack.api_url,
                    telegram_url=telegram.url,
                    telegram_mode="polling" if plan.replicas == 1 else "webhook",
                    park_retry_seconds=plan.park_retry_seconds,
                    whatsapp=whatsapp.settings_toml(),
                ),
                encoding="utf-8",
            )
            log = workdir / f"replica-{number}.log"
            replicas.append(
                ServiceProcess(config, env, log, http_port=http_port, smtp_port=smtp_port)
            )
        fleet = Fleet(replicas, rng)
        run = _Run(plan, rng, fleet)
        report.service_log = " ".join(str(replica.log) for replica in replicas)
        # Slack sends to one URL; the fleet picks the replica for each delivery.
        events = SlackEvents(
            slack,
            events_url=f"http://127.0.0.1:{replicas[0].http_port}/slack/events",
            signing_secret=SIGNING_SECRET,
        )
        agents_stop = asyncio.Event()
        agents: asyncio.Task[None] | None = None
        restored = asyncio.Event()
        outage: asyncio.Task[None] | None = None
        try:
            await fleet.start()
            started = time.monotonic()
            agents = asyncio.create_task(_agents(run, slack, events, agents_stop))
            outage = asyncio.create_task(_auth_outage(run, slack, report, restored, agents_stop))
            await asyncio.gather(
                _customers_mail(run),
                _customers_telegram(run, telegram),
                _customers_whatsapp(run, whatsapp),
                _killer(run, report),
            )
            run.outage_due.set()  # at the latest now (a plan with no messages)
            await restored.wait()
            deadline = time.monotonic() + plan.settle_seconds
            while time.monotonic() < deadline:
                if _all_arrived(run, slack, relay, telegram, whatsapp):
                    report.seconds = round(time.monotonic() - started, 1)
                    # Let agents answer the threads opened last, then wait for those replies.
                    await asyncio.sleep(1.0)
                    if _all_arrived(run, slack, relay, telegram, whatsapp):
                        break
                # Checking walks every thread in the stand-in: not too often.
                await asyncio.sleep(0.5)
            else:
                report.seconds = round(time.monotonic() - started, 1)
        finally:
            agents_stop.set()
            if outage is not None:
                if not restored.is_set():
                    outage.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await outage
            if agents is not None:
                await agents
            await fleet.stop()
            report.service_cpu_seconds = round(sum(r.cpu_seconds for r in replicas), 1)
        report.redeliveries = run.redeliveries
        report.accepted_during_auth_outage = run.accepted_during_outage
        report.jobs_parked = sum(
            replica.log.read_text(encoding="utf-8", errors="replace").count(_PARKED)
            for replica in replicas
            if replica.log.exists()
        )
        _score(report, run, slack, relay, telegram, whatsapp)
    return report


def _score(
    report: ChaosReport,
    run: _Run,
    slack: SlackSandbox,
    relay: SmtpSink,
    tg: TelegramSandbox,
    wa: WhatsAppSandbox,
) -> None:
    counts, threads, empty_roots = _posted_tokens(slack)
    report.messages_sent = len(run.written)
    report.accepted = len(run.accepted)
    report.posted = sum(1 for token in run.accepted if counts[token])
    report.duplicates = sum(count - 1 for count in counts.values() if count > 1)
    report.lost = sum(1 for token in run.accepted if not counts[token])
    customer_threads: dict[str, set[str]] = defaultdict(set)
    for token, places in threads.items():
        customer_threads[run.written[token]].update(places)
    thread_customers: dict[str, set[str]] = defaultdict(set)
    for customer, places in customer_threads.items():
        for place in places:
            thread_customers[place].add(customer)
    report.misthreaded = sum(1 for places in customer_threads.values() if len(places) > 1) + sum(
        1 for customers in thread_customers.values() if len(customers) > 1
    )
    report.out_of_order = _out_of_order(run, slack)
    report.extra_root_cards = empty_roots
    delivered, recipients, resends = _delivered(relay, tg, wa)
    report.replies_queued = len(run.replies)
    report.replies_delivered = sum(1 for token in run.replies if delivered[token])
    report.reply_duplicates = sum(count - 1 for count in delivered.values() if count > 1)
    report.reply_resends_same_message_id = resends
    report.missing = sorted(
        [token for token in run.accepted if not counts[token]]
        + [token for token in run.replies if not delivered[token]]
    )[:10]
    report.replies_to_wrong_customer = sum(
        1 for entry in recipients if entry.partition("=")[2] != run.replies.get(entry.split("=")[0])
    )
    report.slack_calls = len(slack.calls)
    report.slack_failures_injected = slack.failures_injected
    report.messages_per_second = round(report.accepted / report.seconds, 1) if report.seconds else 0


@contextlib.asynccontextmanager
async def scratch_postgres(admin_url: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database next to ``admin_url``'s, dropped afterwards."""
    import asyncpg

    name = f"switchboard_chaos_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _main(args: argparse.Namespace) -> ChaosReport:
    plan = ChaosPlan(
        mails=args.mails,
        telegram=args.telegram,
        whatsapp=args.whatsapp,
        kills=args.kills,
        seed=args.seed,
        replicas=args.replicas,
        auth_outage_seconds=args.auth_outage,
        park_retry_seconds=args.park_retry_seconds,
    )
    with tempfile.TemporaryDirectory(prefix="switchboard-chaos-") as tmp:
        workdir = Path(args.keep_dir or tmp)
        if args.postgres:
            async with scratch_postgres(args.postgres) as url:
                return await run_chaos(plan, url, workdir)
        return await run_chaos(plan, f"sqlite://{workdir / 'chaos.sqlite3'}", workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--telegram", type=int, default=200)
    parser.add_argument("--whatsapp", type=int, default=100)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="service processes sharing the database (PostgreSQL)",
    )
    parser.add_argument(
        "--auth-outage",
        type=float,
        default=ChaosPlan().auth_outage_seconds,
        metavar="SECONDS",
        help="how long Slack answers every call with invalid_auth, from a quarter of the "
        "messages on (0: not at all)",
    )
    parser.add_argument(
        "--park-retry-seconds",
        type=float,
        default=ChaosPlan().park_retry_seconds,
        metavar="SECONDS",
        help="the service's [jobs] park_retry_seconds",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default="",
        help="run on PostgreSQL: a scratch database is created next to this one "
        "(like postgres://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument("--keep-dir", default="", help="keep the config and service log here")
    args = parser.parse_args()
    if args.keep_dir:
        Path(args.keep_dir).mkdir(parents=True, exist_ok=True)
    report = asyncio.run(_main(args))
    print(json.dumps(asdict(report) | {"ok": report.ok}, indent=2))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
