"""Forgetting a customer leaves no job that names their conversations, whatever its kind.

Every kind in the catalogue gets a job about the customer's conversation; a kind added later
without a case here fails the test, so a new kind cannot be forgotten by ``forget``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bot.jobkinds import (
    CATALOGUE,
    THREAD_INBOUND,
    AlertPayload,
    CardPayload,
    ChangePayload,
    ErasePayload,
    MessagePayload,
    MovePayload,
    NoPayload,
    OthersPayload,
    RatingPayload,
    RulesPayload,
    SlaCheckPayload,
    SpikeCheckPayload,
    SpikePayload,
    StatusPayload,
    SurveyPayload,
    ThreadPayload,
    WaitingPayload,
    WakePayload,
    WebhookCallPayload,
)
from bot.privacy import CustomerAddress, Privacy
from bot.settings import RetentionSettings
from bot.shapes import ChannelKind
from models import Conversation, Customer, Direction, Identity, Job, JobState, Message

ADDRESS = "anna@kunde.example"


def payloads(conversation: int, message: int, audit: int) -> dict[str, Callable[[], Any]]:
    """A payload of each kind, about the customer's conversation where the kind names one."""
    return {
        "thread_inbound": lambda: ThreadPayload(message, f"email:{ADDRESS}"),
        "post_inbound": lambda: MessagePayload(message, conversation),
        "deliver_reply": lambda: MessagePayload(message, conversation),
        "show_change": lambda: ChangePayload(audit, conversation),
        "move_conversation": lambda: MovePayload(audit, conversation, "billing"),
        "wake_snoozed": lambda: WakePayload(conversation, "2026-12-24T09:00:00+00:00"),
        "check_waiting": lambda: WaitingPayload(conversation, message),
        "erase_thread": lambda: ErasePayload("C0SUPPORT", "1700000000.000100", "erased"),
        "purge_closed": lambda: NoPayload(),
        "show_status": lambda: StatusPayload("whatsapp", "wamid.HBgLMTY0Njcw", "delivered"),
        "show_others": lambda: OthersPayload(conversation, 1),
        "redraw_card": lambda: CardPayload(conversation),
        "sla_check": lambda: SlaCheckPayload(conversation),
        "post_alert": lambda: AlertPayload(conversation, "support-leads", "due", f"sla-{audit}"),
        "run_rules": lambda: RulesPayload(conversation, "message_in", f"message-{message}"),
        "call_webhook": lambda: WebhookCallPayload(conversation, "crm", {"event_id": "rule-1"}),
        "assign_fairly": lambda: CardPayload(conversation),
        "ask_survey": lambda: SurveyPayload(conversation),
        "show_rating": lambda: RatingPayload(audit, conversation),
        "check_spike": lambda: SpikeCheckPayload(conversation, message),
        # A spike is of many conversations and names none (its id is no conversation's).
        "post_spike": lambda: SpikePayload(conversation + 100),
    }


@pytest.mark.usefixtures("db")
async def test_forget_removes_the_jobs_of_every_kind_about_the_customer() -> None:
    customer = await Customer.create(name="Anna")
    identity = await Identity.create(
        customer=customer, channel=ChannelKind.EMAIL, address=ADDRESS, display_name="Anna"
    )
    conversation = await Conversation.create(
        token="K7Q2ABCD", customer=customer, identity=identity, channel=ChannelKind.EMAIL
    )
    message = await Message.create(
        conversation=conversation,
        direction=Direction.INBOUND,
        channel=ChannelKind.EMAIL,
        sender_address=ADDRESS,
        text="Meine Rechnung",
    )
    builders = payloads(conversation.id, message.id, audit=1)
    assert set(builders) == set(CATALOGUE), "every job kind needs a case in this test"
    for name, kind in CATALOGUE.items():
        await kind.enqueue(builders[name]())

    await Privacy(RetentionSettings()).forget(CustomerAddress(ChannelKind.EMAIL, ADDRESS))

    assert not await Job.filter(conversation_id=conversation.id).exists()
    left = await Job.all()
    for job in left:
        names_it = job.payload.get("message_id") == message.id or job.serial_key.endswith(
            f":{conversation.id}"
        )
        assert not names_it, f"{job.kind} job still names the forgotten conversation"
    # Only kinds that name no conversation stay: the thread erasure, the purge, a status (a
    # message id of WhatsApp's; it finds nothing of theirs any more) and a spike's alert (it
    # shows only the messages that still exist).
    kept = {"erase_thread", "purge_closed", "show_status", "post_spike"}
    assert {job.kind for job in left} <= kept


@pytest.mark.usefixtures("db")
async def test_a_job_waiting_behind_a_forgotten_customers_job_goes_on() -> None:
    """Two long addresses share a sender's serial key (cut to 64 characters): Ben's message
    waits behind Anna's; forgetting Anna deletes hers, and his must not wait behind nothing."""
    shared = "kundenservice.abteilung.rechnungen.und.zahlungen.nord"
    anna, ben = f"{shared}1@kunde.example", f"{shared}2@kunde.example"
    customer = await Customer.create(name="Anna")
    await Identity.create(customer=customer, channel=ChannelKind.EMAIL, address=anna)
    jobs = []
    for address in (anna, ben):
        message = await Message.create(
            direction=Direction.INBOUND,
            channel=ChannelKind.EMAIL,
            sender_address=address,
            text="Meine Rechnung",
        )
        jobs.append(await THREAD_INBOUND.enqueue(ThreadPayload(message.id, f"email:{address}")))
    assert jobs[0].serial_key == jobs[1].serial_key

    await Privacy(RetentionSettings()).forget(CustomerAddress(ChannelKind.EMAIL, anna))

    assert [job.state for job in await Job.all()] == [JobState.PENDING]
