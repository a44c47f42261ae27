"""An agent answers in the Slack thread; the customer gets a correctly threaded e-mail."""

from __future__ import annotations

import json
import time
from email.message import EmailMessage

from bot.shapes import DeliveryState
from models import Conversation, Message
from standins.mail import SmtpSink
from standins.slack import SandboxFile, SlackSandbox
from tests.conftest import AGENT, Harness, SettingsFactory, eventually, running
from tests.test_flow_email_to_slack import mail


async def open_conversation(harness: Harness, text: str = "Mein Paket fehlt.") -> Conversation:
    """A customer writes in, and the conversation's thread exists in #support."""
    first = mail(text, subject="Wo ist mein Paket?", message_id="<order-1@kunde.example>")
    first["References"] = "<older@kunde.example>"
    await harness.send_mail(first)
    await harness.settled()
    return await Conversation.get()


def reactions(slack: SlackSandbox, channel: str, ts: str) -> set[str]:
    (message,) = [m for m in slack.thread(channel, thread_root(slack, channel)) if m["ts"] == ts]
    return {r["name"] for r in message.get("reactions", [])}


def thread_root(slack: SlackSandbox, channel: str) -> str:
    return str(slack.channel_messages(channel)[0]["ts"])


async def test_a_thread_reply_reaches_the_customer_threaded(harness: Harness) -> None:
    conversation = await open_conversation(harness)
    assert conversation.chat_thread_ts is not None

    ts = await harness.agent_replies(
        "support", conversation.chat_thread_ts, "Hallo Anna, das Paket kommt morgen & heil an."
    )
    (received,) = await harness.relay.wait_for(1)
    await harness.settled()

    sent = received.message
    assert received.rcpt_tos == ["anna@kunde.example"]
    (sender,) = sent["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        "Anna (Shop Support)",
        "support@shop.example",
    )
    assert sent["To"] == "Anna Kunde <anna@kunde.example>"
    assert sent["Subject"] == "Re: Wo ist mein Paket?"
    assert sent["In-Reply-To"] == "<order-1@kunde.example>"
    assert sent["References"] == "<older@kunde.example> <order-1@kunde.example>"
    assert sent["Message-ID"].startswith(f"<sb.{conversation.token}.")
    assert sent["Reply-To"].addresses[0].addr_spec == f"support+{conversation.token}@shop.example"
    body = sent.get_body(("plain",))
    assert body is not None
    assert "das Paket kommt morgen & heil an." in body.get_content()

    reply = await Message.get(chat_ts=ts)
    assert reply.delivery_state is DeliveryState.SENT
    assert reply.external_id == sent["Message-ID"]
    assert "white_check_mark" in reactions(harness.slack, "support", ts)


async def test_the_customers_answer_to_our_reply_comes_back_to_the_thread(
    harness: Harness,
) -> None:
    conversation = await open_conversation(harness)
    assert conversation.chat_thread_ts is not None
    await harness.agent_replies("support", conversation.chat_thread_ts, "Bitte Bestellnummer?")
    (received,) = await harness.relay.wait_for(1)

    answer = mail("Die Nummer ist 4711.", subject="Re: Wo ist mein Paket?")
    answer["In-Reply-To"] = received.message["Message-ID"]
    await harness.send_mail(answer, to=received.message["Reply-To"].addresses[0].addr_spec)
    await harness.settled()

    assert await Conversation.all().count() == 1
    texts = [
        m.get("text", "")
        for m in harness.slack.thread("support", thread_root(harness.slack, "support"))
    ]
    assert any("Die Nummer ist 4711." in t for t in texts)


async def test_the_conversation_token_alone_finds_the_thread(harness: Harness) -> None:
    conversation = await open_conversation(harness)
    # A client that drops In-Reply-To, and a subject the customer rewrote.
    await harness.send_mail(
        mail("Noch was", subject="ganz anders"), to=f"support+{conversation.token}@shop.example"
    )
    await harness.settled()
    assert await Conversation.all().count() == 1


async def test_notes_bot_posts_and_top_level_messages_are_not_sent(harness: Harness) -> None:
    conversation = await open_conversation(harness)
    thread_ts = conversation.chat_thread_ts
    assert thread_ts is not None

    await harness.agent_replies("support", thread_ts, "note: Kunde ist VIP")
    await harness.agent_replies("support", thread_ts, "// intern: Lager fragen")
    top = harness.slack.post_as_user("support", AGENT, "Guten Morgen Team")
    await harness.events.send_message_event("support", top["ts"])
    bot_post = await harness.service.client.chat_postMessage(
        channel="support", thread_ts=thread_ts, text="a bot writing in the thread"
    )
    await harness.events.send_message_event("support", str(bot_post["ts"]))
    await harness.settled()

    assert harness.relay.received == []
    assert not await Message.filter(direction="out").exists()


async def test_slack_redelivering_an_event_sends_one_mail(harness: Harness) -> None:
    conversation = await open_conversation(harness)
    assert conversation.chat_thread_ts is not None
    posted = harness.slack.post_as_user(
        "support", AGENT, "Einmal bitte", thread_ts=conversation.chat_thread_ts
    )
    for retry in (0, 1):
        event = harness.events.message_event("support", posted["ts"])
        await harness.events.send_event(event, retry_num=retry)
    await harness.relay.wait_for(1)
    await harness.settled()
    assert len(harness.relay.received) == 1


async def test_unsigned_and_stale_requests_get_401_and_store_nothing(harness: Harness) -> None:
    conversation = await open_conversation(harness)
    assert conversation.chat_thread_ts is not None
    posted = harness.slack.post_as_user(
        "support", AGENT, "forged", thread_ts=conversation.chat_thread_ts
    )
    body = json.dumps(
        harness.events.event_callback(harness.events.message_event("support", posted["ts"]))
    )

    stale = await harness.events.send_message_event(
        "support", posted["ts"], timestamp=int(time.time()) - 3600
    )
    forged = await SlackEventsWithWrongSecret(harness).deliver(body)

    assert stale.status == 401
    assert forged == 401
    await harness.settled()
    assert not await Message.filter(direction="out").exists()


class SlackEventsWithWrongSecret:
    """Signs like Slack, with a secret that is not the app's."""

    def __init__(self, harness: Harness) -> None:
        from standins.slack import SlackEvents

        self.events = SlackEvents(
            harness.slack, events_url=harness.events.events_url, signing_secret="not-the-secret"
        )

    async def deliver(self, body: str) -> int:
        response = await self.events.deliver(self.events.events_url, body, "application/json")
        return response.status


async def test_undo_within_the_window_cancels_the_reply(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay, undo_seconds=30) as harness:
        conversation = await open_conversation(harness)
        assert conversation.chat_thread_ts is not None
        ts = await harness.agent_replies("support", conversation.chat_thread_ts, "Oops, falsch")

        await eventually(lambda: _has_ephemeral(slack, AGENT))
        undo_note = slack.ephemeral_messages(AGENT)[-1]
        response = await harness.events.click_button(
            "support", undo_note["ts"], AGENT, "switchboard_undo"
        )
        assert response.status == 200
        await eventually(lambda: _reply_state(ts, DeliveryState.CANCELLED))

        assert "Undone" in slack.ephemeral_messages(AGENT)[-1]["text"]
        assert "leftwards_arrow_with_hook" in reactions(slack, "support", ts)
    assert relay.received == []


async def test_a_reply_waits_for_the_undo_window(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay, undo_seconds=0.5) as harness:
        conversation = await open_conversation(harness)
        assert conversation.chat_thread_ts is not None
        ts = await harness.agent_replies("support", conversation.chat_thread_ts, "Gleich da")
        assert relay.received == []
        assert "hourglass_flowing_sand" in await _eventual_reactions(slack, ts)
        await relay.wait_for(1)
        await eventually(lambda: _reply_state(ts, DeliveryState.SENT))


async def test_a_relay_outage_delays_the_reply_and_then_delivers_it(harness: Harness) -> None:
    conversation = await open_conversation(harness)
    assert conversation.chat_thread_ts is not None
    harness.relay.refusing = True
    ts = await harness.agent_replies("support", conversation.chat_thread_ts, "Trotz Ausfall")
    await eventually(lambda: _attempts_at_least(ts, 2))
    assert harness.relay.received == []

    harness.relay.refusing = False
    (received,) = await harness.relay.wait_for(1)
    assert received.message["Subject"] == "Re: Wo ist mein Paket?"
    await eventually(lambda: _reply_state(ts, DeliveryState.SENT))


async def test_a_refused_address_fails_with_the_reason_in_the_thread(harness: Harness) -> None:
    conversation = await open_conversation(harness)
    assert conversation.chat_thread_ts is not None
    harness.relay.refuse_recipients = True
    ts = await harness.agent_replies("support", conversation.chat_thread_ts, "Hallo?")
    notice = await harness.slack.wait_for_message(
        "support",
        lambda m: "not delivered" in m.get("text", ""),
        thread_ts=conversation.chat_thread_ts,
    )
    assert "550" in notice["text"]
    assert "User unknown" in notice["text"]
    assert await _reply_state(ts, DeliveryState.FAILED)
    assert "x" in reactions(harness.slack, "support", ts)


async def test_files_an_agent_posts_are_attached_to_the_mail(harness: Harness) -> None:
    conversation = await open_conversation(harness)
    assert conversation.chat_thread_ts is not None
    posted = harness.slack.post_as_user(
        "support",
        AGENT,
        "Anbei das Etikett",
        thread_ts=conversation.chat_thread_ts,
        files=[SandboxFile("Rücksendeetikett.pdf", b"%PDF label", "application/pdf")],
    )
    await harness.events.send_message_event("support", posted["ts"])
    (received,) = await harness.relay.wait_for(1)

    attachments = list(received.message.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["Rücksendeetikett.pdf"]
    assert attachments[0].get_content() == b"%PDF label"


async def test_replies_to_a_bounce_are_refused_to_avoid_mail_loops(harness: Harness) -> None:
    bounce = EmailMessage()
    bounce["From"] = "MAILER-DAEMON@mx.kunde.example"
    bounce["To"] = "support@shop.example"
    bounce["Subject"] = "Undelivered Mail Returned to Sender"
    bounce["Auto-Submitted"] = "auto-replied"
    bounce.set_content("This is the mail system.")
    await harness.send_mail(bounce)
    await harness.settled()
    conversation = await Conversation.get()
    assert conversation.chat_thread_ts is not None

    ts = await harness.agent_replies("support", conversation.chat_thread_ts, "Hallo?")
    await eventually(lambda: _reply_state(ts, DeliveryState.FAILED))
    assert harness.relay.received == []
    reply = await Message.get(chat_ts=ts)
    assert "mail loop" in reply.delivery_error


async def _has_ephemeral(slack: SlackSandbox, user: str) -> bool:
    return bool(slack.ephemeral_messages(user))


async def _reply_state(ts: str, state: DeliveryState) -> bool:
    reply = await Message.get_or_none(chat_ts=ts, direction="out")
    return reply is not None and reply.delivery_state is state


async def _attempts_at_least(ts: str, attempts: int) -> bool:
    from models import Job

    reply = await Message.get_or_none(chat_ts=ts, direction="out")
    if reply is None:
        return False
    jobs = await Job.filter(kind="deliver_reply").all()
    return any(j.payload.get("message_id") == reply.id and j.attempts >= attempts for j in jobs)


async def _eventual_reactions(slack: SlackSandbox, ts: str) -> set[str]:
    found: set[str] = set()

    async def reacted() -> bool:
        found.update(reactions(slack, "support", ts))
        return bool(found)

    await eventually(reacted)
    return found
