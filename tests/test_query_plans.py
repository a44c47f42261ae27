"""The hot paths read indexes, not whole tables, on a year of history (PostgreSQL only).

The database is filled with 50,000 messages by ``bench.fill`` (the proportions of a million:
five messages a conversation, four conversations a customer, a heavy customer, done jobs).
Each hot path then runs through the real code while tortoise's query log is read, and
PostgreSQL plans every statement it sent: none may read messages, conversations, audit entries
or jobs whole. Plans, not timings: a plan says how the work grows with the history, on any
machine.

At this size PostgreSQL rightly reads a small table whole rather than use an index, so the
plans are made with sequential scans priced out (``enable_seqscan = off``): a plan that still
reads a table whole, or walks a whole index without a condition on it, has no index to use.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from slack_sdk.web.async_client import AsyncWebClient
from tortoise import connections

from adapters.hnsw_index import HnswIndex
from adapters.slack.chat import SlackChat
from bench.fill import SKILLS, fill_history
from bot.conversations import find_conversation as thread_of
from bot.conversations import short_id
from bot.errors import ActionRefused
from bot.escalation import Escalation
from bot.jobs import JobRunner, queue_depth, utcnow, waiting_by_kind
from bot.lookups import ByText, Lookups, conversation_of_message, find_conversation
from bot.pipeline import customer_message_number, outbound_reply
from bot.privacy import CustomerAddress, Privacy
from bot.relay import Relay
from bot.reports import Reports
from bot.roles import Actor
from bot.routing import FixedSkillClassifier
from bot.settings import RetentionSettings, Settings, SpikeSettings
from bot.shapes import AgentMessage, ChannelKind, InboundMessage
from bot.similar import Similar
from bot.spikes import Spikes
from bot.vectors import MessageIndex, store_vector
from bot.workflow import Workflow, first_words
from models import (
    Conversation,
    ConversationStatus,
    Direction,
    FormerThread,
    Identity,
    Message,
    Skill,
)
from tests.conftest import SettingsFactory
from tests.wordvectors import word_vector

pytestmark = pytest.mark.skipif(
    os.environ.get("SWITCHBOARD_TEST_DB") != "postgres",
    reason="plans are PostgreSQL's; SQLite has no history to speak of",
)

HISTORY = 50_000
WATCHED = frozenset({"messages", "conversations", "audit_entries", "jobs"})
# What bench.fill names them: customer 1 is the heaviest, customer 1234 an ordinary one.
HEAVY = CustomerAddress(ChannelKind.EMAIL, "customer1@example1.org")
ORDINARY = CustomerAddress(ChannelKind.EMAIL, "customer1234@example234.org")
LEAD = Actor("U0LEAD", "Lea")

HotPath = Callable[[], Awaitable[object]]


class _Statements(logging.Handler):
    """Collects the statements tortoise sends, with their parameters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sent: list[tuple[str, list[Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 2):
            return
        query, values = args
        if isinstance(query, str) and query.lstrip().upper().startswith(
            ("SELECT", "UPDATE", "DELETE")
        ):
            self.sent.append((query, list(values) if isinstance(values, list) else []))


async def _statements_of(path: HotPath) -> list[tuple[str, list[Any]]]:
    logger = logging.getLogger("tortoise.db_client")
    handler = _Statements()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        await path()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return handler.sent


def _whole_reads(plan: dict[str, Any]) -> Iterator[str]:
    """How a plan (or any plan below it) reads a watched table whole, if it does."""
    table = plan.get("Relation Name")
    node = plan.get("Node Type")
    if table in WATCHED and node == "Seq Scan":
        yield f"Seq Scan on {table}"
    if table in WATCHED and node in ("Index Scan", "Index Only Scan") and "Index Cond" not in plan:
        yield f"{node} on {table} using {plan.get('Index Name')}, without a condition"
    for below in plan.get("Plans", []):
        yield from _whole_reads(below)


def _hot_paths(settings: Settings, sample: dict[str, Any]) -> dict[str, HotPath]:
    """Each hot path of the issue, by name, as the service runs it."""
    lookups = Lookups(settings)
    # Never called: these paths only read and write the database.
    chat = SlackChat(AsyncWebClient(token="xoxb-unused", base_url="http://127.0.0.1:9/"))
    workflow = Workflow(chat, settings, FixedSkillClassifier("general"))
    escalation = Escalation(workflow, settings.triage.priority)
    conversation: Conversation = sample["open"]
    reply: Message = sample["reply"]
    inbound: Message = sample["inbound"]
    email: Identity = sample["email_identity"]
    chat_identity: Identity = sample["telegram_identity"]
    oldest = sample["oldest"]
    # Only the oldest week of the year is past this retention period.
    privacy = Privacy(
        RetentionSettings(closed_conversations_days=30),
        clock=lambda: oldest + timedelta(days=37),
    )
    runner = JobRunner({}, settings.jobs)
    reports = Reports(settings)

    def mail(**fields: Any) -> InboundMessage:
        return InboundMessage(
            channel=fields.pop("channel", ChannelKind.EMAIL),
            external_id="<new@mail.example.org>",
            sender_address=fields.pop("sender_address", email.address),
            sender_name="Customer",
            subject=fields.pop("subject", "Where is my parcel? #3"),
            text="Any news?",
            full_text="Any news?",
            received_at=utcnow(),
            **fields,
        )

    async def thread(message: InboundMessage, identity: Identity) -> None:
        conn = connections.get("default")
        await thread_of(message, identity, settings.threading, utcnow(), conn)

    async def threading() -> None:
        await thread(mail(replies_to=(str(reply.external_id),)), email)
        await thread(mail(conversation_token=conversation.token), email)
        await thread(mail(), email)
        telegram = mail(channel=ChannelKind.TELEGRAM, thread_key=chat_identity.address)
        await thread(telegram, chat_identity)

    async def refuse_removing_a_busy_skill() -> None:
        with pytest.raises(ActionRefused):
            await workflow.remove_skill(LEAD, "billing")

    async def agent_note() -> None:
        assert conversation.chat_channel is not None
        assert conversation.chat_thread_ts is not None
        note = AgentMessage(
            conversation.chat_channel, conversation.chat_thread_ts, "1.000001", "U0A", "// x"
        )
        await Relay(chat, settings.replies).on_agent_message(note)

    async def deliver_reply() -> None:
        message = await Message.get(id=reply.id).prefetch_related("conversation__identity")
        assert message.conversation is not None
        await outbound_reply(message, message.conversation)

    async def customer_wrote() -> None:
        await workflow.customer_wrote(conversation, inbound)
        await escalation.customer_wrote(conversation, inbound)
        await escalation.check(conversation.id, inbound.id)

    async def spike_check() -> None:
        await store_vector(inbound.id, conversation.id, word_vector(inbound.text))
        index = MessageIndex(HnswIndex)
        await index.load()
        spikes = Spikes(index, SpikeSettings(enabled=True, channel="leads"), Similar(index))
        await spikes.check(inbound.id)

    return {
        "an agent writes in a conversation thread": agent_note,
        "a link to a message of a thread": lambda: conversation_of_message(
            str(conversation.chat_channel), str(reply.chat_ts)
        ),
        "a message of a former thread": lambda: conversation_of_message(
            sample["former"].chat_channel, sample["former"].chat_thread_ts
        ),
        "a message of no conversation": lambda: conversation_of_message(
            "C0ELSEWHERE", "1111111111.000100"
        ),
        "a conversation by its short id": lambda: find_conversation(ByText(short_id(conversation))),
        "threading a customer's message": threading,
        "delivering a reply": deliver_reply,
        "the customer wrote (snooze, reopening, waiting rules)": customer_wrote,
        "a follow-up's number (the card names the message its mood was read from)": lambda: (
            customer_message_number(conversation.id, inbound.id)
        ),
        "a spike check (the topic and all messages, now and in the last week)": spike_check,
        "/switchboard queue": lookups.queue,
        "/switchboard queue billing": lambda: lookups.queue("billing"),
        "App Home": lambda: lookups.home("U0AGENT3"),
        "customer, an ordinary one": lambda: lookups.customer(ORDINARY.address),
        "customer, the heaviest": lambda: lookups.customer(HEAVY.address),
        "skills": lookups.skills,
        "log": lambda: lookups.log(conversation),
        "first words (what a reassignment teaches)": lambda: first_words(conversation.id),
        "skills remove, refused for open conversations": refuse_removing_a_busy_skill,
        "customers forget --dry-run, the heaviest": lambda: privacy.forget(HEAVY, dry_run=True),
        "customers forget": lambda: privacy.forget(ORDINARY),
        "retention": privacy.purge_closed,
        "claiming jobs": lambda: runner.claim(4),
        "/switchboard report (this week)": lambda: reports.report(reports.period("week")),
        "/switchboard report (this week, one skill)": lambda: reports.report(
            reports.period("week"), "billing"
        ),
        "queue depth and waiting jobs": lambda: _both(queue_depth(), waiting_by_kind()),
    }


async def _both(first: Awaitable[object], second: Awaitable[object]) -> None:
    await first
    await second


async def _sample() -> dict[str, Any]:
    """Rows of the filled history the hot paths start from."""
    conversation = (
        await Conversation.filter(status=ConversationStatus.OPEN, chat_thread_ts__isnull=False)
        .order_by("-id")
        .offset(20)
        .first()
    )
    assert conversation is not None
    messages = await Message.filter(conversation_id=conversation.id).order_by("-id")
    oldest = await Conversation.all().order_by("id").first()
    assert oldest is not None
    return {
        "open": conversation,
        "reply": next(m for m in messages if m.direction is Direction.OUTBOUND),
        "inbound": next(m for m in messages if m.direction is Direction.INBOUND),
        "former": await FormerThread.all().first(),
        "email_identity": await Identity.get(address=HEAVY.address),
        "telegram_identity": await Identity.filter(channel=ChannelKind.TELEGRAM).first(),
        "oldest": oldest.created_at,
    }


async def test_hot_paths_read_no_whole_table_on_a_year_of_history(
    db: str, make_settings: SettingsFactory
) -> None:
    await fill_history(db, HISTORY)
    for name in SKILLS:
        await Skill.create(name=name, chat_channel=f"support-{name}")
    paths = _hot_paths(make_settings(), await _sample())
    explain = await asyncpg.connect(db.replace("asyncpg://", "postgres://", 1))
    whole_reads = []
    try:
        await explain.execute("SET enable_seqscan = off")
        for name, path in paths.items():
            statements = await _statements_of(path)
            assert statements, f"{name}: sent no statement"
            for query, values in statements:
                plan = await explain.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *values)
                for read in _whole_reads(json.loads(plan)[0]["Plan"]):
                    whole_reads.append(f"{name}: {read} in\n    {query[:300]}")
    finally:
        await explain.close()
    assert not whole_reads, "\n".join(whole_reads)
