"""Data protection: a customer is forgotten on request; old closed conversations are purged."""

from __future__ import annotations

import asyncio
import builtins
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from adapters.cli import main
from bot.database import open_database
from bot.errors import ActionRefused
from bot.jobkinds import CHECK_WAITING, PURGE_CLOSED
from bot.privacy import CustomerAddress, erase_note, parse_address
from bot.roles import Actor
from bot.shapes import ChannelKind
from models import (
    UNFINISHED,
    AuditEntry,
    Conversation,
    ConversationStatus,
    Customer,
    FormerThread,
    Identity,
    Job,
    JobState,
    Message,
    SkillExample,
    StoredAttachment,
    SurveyAnswer,
)
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from standins.telegram import TelegramSandbox
from tests.conftest import (
    AGENT,
    BOT_TOKEN,
    SIGNING_SECRET,
    Harness,
    SettingsFactory,
    eventually,
    running,
    toml_for,
)
from tests.test_flow_email_to_slack import all_text, mail
from tests.test_flow_telegram import MARIA, payload, telegram_service

LEAD = Actor("U0LEAD1", "Lena")
ANNA = "Anna Kunde <anna@kunde.example>"
BEN = "Ben Berger <ben@berger.example>"


def note() -> str:
    """What an erased post says when erased now (taken at the check, not at import: a run
    that starts before midnight checks after it)."""
    return erase_note(datetime.now(UTC))


def with_photo(text: str, *, subject: str, sender: str) -> EmailMessage:
    message = mail(text, subject=subject, sender=sender)
    message.add_attachment(
        b"\xff\xd8 a crushed parcel", maintype="image", subtype="jpeg", filename="paket.jpg"
    )
    return message


async def conversation_of(sender: str, subject: str) -> Conversation:
    return await Conversation.get(
        identity__address=sender.split("<")[1].rstrip(">"), subject=subject
    )


async def two_customers(harness: Harness) -> dict[str, Conversation]:
    """Anna: a parcel conversation (photo, agent reply, moved to billing) and a closed invoice
    one. Ben: one conversation."""
    await harness.send_mail(
        with_photo("Mein Paket 4711 ist kaputt.", subject="Paket kaputt", sender=ANNA)
    )
    await harness.send_mail(mail("Die Rechnung 99 ist falsch.", subject="Rechnung", sender=ANNA))
    await harness.send_mail(mail("Wo bleibt meine Lieferung?", subject="Lieferung", sender=BEN))
    await harness.settled()
    parcel = await conversation_of(ANNA, "Paket kaputt")
    invoice = await conversation_of(ANNA, "Rechnung")
    ben = await conversation_of(BEN, "Lieferung")
    assert parcel.chat_thread_ts is not None
    await harness.agent_replies("support", parcel.chat_thread_ts, "Anna, wir ersetzen es.")
    await harness.agent_replies("support", parcel.chat_thread_ts, "note: Kundin ist VIP")
    await harness.relay.wait_for(1)
    workflow = harness.service.workflow
    await workflow.reassign(LEAD, parcel, "billing")
    await workflow.close(LEAD, invoice)
    await harness.settled()
    return {"parcel": parcel, "invoice": invoice, "ben": ben}


def every_thread(slack: SlackSandbox) -> dict[str, list[dict[str, Any]]]:
    """Each thread in the support channels, keyed by channel and root ts."""
    threads = {}
    for channel in ("support", "support-billing"):
        for root in slack.channel_messages(channel):
            threads[f"{channel}/{root['ts']}"] = slack.thread(channel, root["ts"])
    return threads


def is_ours(message: dict[str, Any]) -> bool:
    return message.get("bot_id") is not None


async def test_forget_removes_one_customer_and_blanks_their_threads(harness: Harness) -> None:
    found = await two_customers(harness)
    privacy = harness.service.privacy
    anna = parse_address("Anna@Kunde.example")
    examples_before = await SkillExample.filter(source="reassignment").count()
    assert examples_before == 1
    slack_before = every_thread(harness.slack)
    messages_before = await Message.all().count()
    await SurveyAnswer.create(conversation=found["parcel"], rating=2, comment="Anna: zu langsam")
    await SurveyAnswer.create(conversation=found["ben"], rating=5)

    planned = await privacy.forget(anna, dry_run=True)

    assert planned.conversations == 2
    assert planned.messages == 3  # two mails and the agent's reply
    assert planned.attachments == 1
    assert planned.skill_examples == 1
    assert len(planned.threads) == 3  # the parcel's old and new thread, the invoice's
    assert planned.customers == ("Anna Kunde <email:anna@kunde.example>",)
    assert await Message.all().count() == messages_before
    assert every_thread(harness.slack) == slack_before

    removed = await privacy.forget(anna, actor="dpo")
    await harness.settled()

    assert removed.messages == 3
    assert removed.identities == 1
    assert not await Identity.filter(address="anna@kunde.example").exists()
    assert [c.name for c in await Customer.all()] == ["Ben Berger"]
    assert [c.id for c in await Conversation.all()] == [found["ben"].id]
    assert {m.conversation_id for m in await Message.all()} == {found["ben"].id}  # type: ignore[attr-defined]
    assert not await Message.filter(sender_address="anna@kunde.example").exists()
    assert not await StoredAttachment.exists()
    assert not await FormerThread.exists()
    assert [a.rating for a in await SurveyAnswer.all()] == [5]  # Anna's comment is gone
    assert not await SkillExample.filter(source="reassignment").exists()
    assert not await Job.filter(serial_key__contains="anna").exists()
    assert (
        not await Job.filter(
            serial_key__in=[f"conversation:{found['parcel'].id}", f"replies:{found['parcel'].id}"]
        )
        .exclude(kind="erase_thread")
        .exists()
    )
    (entry,) = await AuditEntry.all()
    assert entry.action == "forget"
    assert "anna" not in f"{entry.summary} {entry.detail}".lower()

    threads = every_thread(harness.slack)
    (bens,) = [k for k, t in slack_before.items() if "Wo bleibt meine Lieferung?" in all_text(t[1])]
    assert threads[bens] == slack_before[bens]
    annas = [t for k, t in threads.items() if k != bens]
    assert len(annas) == 3
    for thread in annas:
        ours = [m for m in thread if is_ours(m) and not m.get("files")]
        assert ours
        assert all(m["text"] == note() and note() in all_text(m) for m in ours)
        assert all(f["mode"] == "tombstone" for m in thread for f in m.get("files", []))
    everything = "\n".join(all_text(m) for t in annas for m in t if is_ours(m))
    for secret in ("Paket 4711", "Rechnung 99", "anna@kunde.example", "Anna Kunde"):
        assert secret not in everything
    # The agent's own messages stay: a bot token cannot change them.
    agents = [m for t in annas for m in t if m.get("user") == AGENT]
    assert [m["text"] for m in agents] == ["Anna, wir ersetzen es.", "note: Kundin ist VIP"]


async def test_forgetting_again_changes_nothing(harness: Harness) -> None:
    await two_customers(harness)
    anna = parse_address("anna@kunde.example")
    await harness.service.privacy.forget(anna)
    await harness.settled()
    calls = len(harness.slack.calls)
    slack_after = every_thread(harness.slack)

    again = await harness.service.privacy.forget(anna)
    await harness.settled()

    assert again.nothing
    assert again.erase_jobs == ()
    assert every_thread(harness.slack) == slack_after
    assert len(harness.slack.calls) == calls
    assert await AuditEntry.filter(action="forget").count() == 1

    # An erase job run again (a crash before it was marked done) changes nothing either.
    channel = harness.slack.channel_id("support")
    erased_roots = [m for m in harness.slack.channel_messages("support") if m["text"] == note()]
    assert len(erased_roots) == 2
    for root in erased_roots:
        erased = await harness.service.chat.erase_thread(channel, root["ts"], note())
        assert (erased.replaced, erased.files_deleted) == (0, 0)
    assert every_thread(harness.slack) == slack_after
    assert not [m for m, _ in harness.slack.calls[calls:] if m in ("chat.update", "files.delete")]


async def test_a_slack_outage_delays_the_erasure_and_a_rerun_of_the_job_finishes_it(
    harness: Harness,
) -> None:
    await harness.send_mail(mail("Bitte löschen Sie alles.", sender=ANNA))
    await harness.settled()
    harness.slack.fail_next("chat.update", status=500, count=1)

    await harness.service.privacy.forget(parse_address("anna@kunde.example"))
    await harness.settled()

    (root,) = harness.slack.channel_messages("support")
    thread = harness.slack.thread("support", root["ts"])
    assert [m["text"] for m in thread] == [note(), note()]
    assert harness.slack.failures_injected == 1
    assert await Job.filter(kind="erase_thread", state=JobState.DONE).count() == 1


async def test_a_message_not_threaded_yet_is_forgotten_too(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay, run_jobs=False) as harness:
        await harness.send_mail(mail("Noch nicht einsortiert.", sender=ANNA))
        assert await Job.filter(kind="thread_inbound").count() == 1

        removed = await harness.service.privacy.forget(parse_address("anna@kunde.example"))

        assert (removed.messages, removed.jobs, removed.threads) == (1, 1, ())
        assert not await Message.exists()
        assert not await Job.filter(kind="thread_inbound").exists()


async def test_forget_a_telegram_customer(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with (
        TelegramSandbox() as telegram,
        telegram_service(make_settings, slack, relay, telegram) as tg,
    ):
        assert await tg.deliver(payload("text")) == 200
        await tg.harness.settled()
        await tg.harness.send_mail(mail("Eine andere Kundin.", sender=ANNA))
        await tg.harness.settled()

        removed = await tg.harness.service.privacy.forget(parse_address(f"telegram:{MARIA}"))
        await tg.harness.settled()

        assert removed.customers == (f"Maria Schmidt (@maria_s) <telegram:{MARIA}>",)
        assert not await Identity.filter(channel=ChannelKind.TELEGRAM).exists()
        assert [i.address for i in await Identity.all()] == ["anna@kunde.example"]
        texts = ["\n".join(all_text(m) for m in t) for t in every_thread(slack).values()]
        assert sum(note() in t and "Bestellung 4711" not in t for t in texts) == 1
        assert sum("Eine andere Kundin." in t for t in texts) == 1


@pytest.mark.parametrize(
    ("text", "channel", "address"),
    [
        ("Anna@Kunde.Example", ChannelKind.EMAIL, "anna@kunde.example"),
        ("email:anna@kunde.example", ChannelKind.EMAIL, "anna@kunde.example"),
        ("telegram:5550001111", ChannelKind.TELEGRAM, "5550001111"),
        ("webhook:widget:visitor-7", ChannelKind.WEBHOOK, "widget:visitor-7"),
    ],
)
def test_customer_addresses(text: str, channel: ChannelKind, address: str) -> None:
    assert parse_address(text) == CustomerAddress(channel, address)


@pytest.mark.parametrize("text", ["anna", "telegram:@maria", "webhook:widget", "sms:123", ""])
def test_a_wrong_address_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ActionRefused, match=r"telegram:<user id>"):
        parse_address(text)


class Clock:
    """The service's clock, which the test moves on."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


async def backdate(conversation: Conversation, days: int) -> None:
    then = datetime.now(UTC) - timedelta(days=days)
    await Conversation.filter(id=conversation.id).update(updated_at=then)
    await Message.filter(conversation_id=conversation.id).update(created_at=then)


async def settled_but_the_hourly_purge() -> None:
    """No job waiting or running but the next purge and the waiting checks (hours away)."""

    async def idle() -> bool:
        busy = Job.filter(state__in=UNFINISHED)
        return not await busy.exclude(kind__in=(PURGE_CLOSED.name, CHECK_WAITING.name)).exists()

    await eventually(idle)


async def test_retention_purges_old_closed_conversations_hourly(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = Clock()
    retention = "[retention]\nclosed_conversations_days = 30\n"
    async with running(make_settings, slack, relay, clock=clock, extra=retention) as harness:
        for subject, sender in (
            ("Alt", ANNA),
            ("Neu", BEN),
            ("Offen", "Carla <carla@c.example>"),
        ):
            await harness.send_mail(
                mail(f"{subject}: bitte helfen", subject=subject, sender=sender)
            )
        await settled_but_the_hourly_purge()
        old, recent, still_open = [
            await Conversation.get(subject=s) for s in ("Alt", "Neu", "Offen")
        ]
        await harness.service.workflow.close(LEAD, old)
        await harness.service.workflow.close(LEAD, recent)
        await settled_but_the_hourly_purge()
        await backdate(old, days=35)
        await backdate(still_open, days=60)
        slack_before = every_thread(slack)

        planned = await harness.service.privacy.purge_closed(dry_run=True)
        assert (planned.conversations, len(planned.customers)) == (1, 1)
        assert await Conversation.all().count() == 3

        clock.ahead = timedelta(hours=1, minutes=1)  # the hourly purge is due
        harness.service.runner.notify()
        await eventually(lambda: _gone(old.id))
        await settled_but_the_hourly_purge()

        # Different senders are threaded in parallel, so ids follow no order: by subject.
        left = await Conversation.all().order_by("subject")
        assert [c.subject for c in left] == ["Neu", "Offen"]
        assert left[1].status is ConversationStatus.OPEN
        assert not await Message.filter(conversation_id=old.id).exists()
        assert not await Identity.filter(address="anna@kunde.example").exists()
        assert await Customer.all().count() == 2
        (entry,) = await AuditEntry.filter(action="retention")
        assert "1 conversation, 1 message," in entry.summary
        # Slack's own retention governs the threads.
        assert every_thread(slack) == slack_before
        # The purge's job queues the next one and ends a moment after the deletes commit.
        next_purge = Job.filter(kind=PURGE_CLOSED.name, state=JobState.PENDING)
        await eventually(next_purge.exists)
        (waiting,) = await next_purge
        assert waiting.run_at > clock() + timedelta(minutes=50)


async def _gone(conversation_id: int) -> bool:
    return not await Conversation.filter(id=conversation_id).exists()


def test_retention_days_are_checked() -> None:
    from tests.test_settings import problems_in

    text = '[[skills]]\nname = "general"\nchannel = "support"\n[retention]\n'
    assert problems_in(text + "closed_conversations_days = -1\n")[0] == (
        "retention.closed_conversations_days"
    )
    assert problems_in(text + 'closed_conversations_days = "30"\n')[0] == (
        "retention.closed_conversations_days"
    )
    assert problems_in(text + "closed_conversations_days = 30\n") == []


async def test_the_command_line_forgets_after_asking_and_purges(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with running(make_settings, slack, relay) as harness:
        await two_customers(harness)
        await harness.service.workflow.close(LEAD, await Conversation.get(subject="Lieferung"))
        await harness.settled()
    config = tmp_path / "switchboard.toml"
    retention = "[retention]\nclosed_conversations_days = 30\n"
    config.write_text(toml_for(extra=f'[slack]\napi_url = "{slack.api_url}"\n{retention}'))
    for name, value in (
        ("SLACK_BOT_TOKEN", BOT_TOKEN),
        ("SLACK_SIGNING_SECRET", SIGNING_SECRET),
        ("DATABASE_URL", database_url),
    ):
        monkeypatch.setenv(name, value)

    async def switchboard(*args: str) -> tuple[int, str]:
        status = await asyncio.to_thread(main, ["--config", str(config), *args])
        captured = capsys.readouterr()
        return status, captured.out + captured.err

    status, out = await switchboard("customers", "forget", "anna@kunde.example", "--dry-run")
    assert status == 0
    assert "Customer: Anna Kunde <email:anna@kunde.example>" in out
    assert "2 conversations, 3 messages, 1 attachment," in out
    assert "Slack: Switchboard's posts in 3 thread(s) would say" in out
    assert "Dry run: nothing was changed." in out

    monkeypatch.setattr(builtins, "input", lambda prompt: "n")
    status, out = await switchboard("customers", "forget", "anna@kunde.example")
    assert (status, out.splitlines()[-1]) == (1, "Nothing was changed.")

    status, out = await switchboard("customers", "forget", "anna@kunde.example", "--yes")
    assert status == 0
    assert "Removed: 1 customer, 1 identity, 2 conversations, 3 messages" in out
    # 10 posts, and the second conversation's pointer to the first one.
    assert "Slack: 11 post(s) now show the note; 1 file(s) deleted." in out
    assert "Slack: 2 message(s) agents wrote in those threads were left" in out
    assert "could not be changed" not in out
    bot_texts = [m["text"] for t in every_thread(slack).values() for m in t if is_ours(m)]
    assert sum(text == note() for text in bot_texts) >= 6

    status, out = await switchboard("customers", "forget", "anna@kunde.example", "--yes")
    assert (status, out.strip()) == (0, "Nothing is stored about email:anna@kunde.example.")

    status, out = await switchboard("customers", "purge", "--dry-run")
    assert (status, out.splitlines()[0].startswith("No closed conversation")) == (0, True)

    async with open_database(database_url, migrate_first=False):
        await Conversation.all().update(updated_at=datetime.now(UTC) - timedelta(days=31))
        await Message.all().update(created_at=datetime.now(UTC) - timedelta(days=31))
    status, out = await switchboard("customers", "purge")
    assert status == 0
    assert "Removed (no activity since" in out
    assert "1 conversation," in out
    async with open_database(database_url, migrate_first=False):
        assert not await Conversation.exists()
        assert not await Customer.exists()

    status, out = await switchboard("customers", "forget", "not-an-address")
    assert status == 2
    assert "telegram:<user id>" in out
