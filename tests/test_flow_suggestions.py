"""Text blocks, suggested replies, similar conversations and known problems, from Slack.

The service runs against the loopback Slack and mail relay; triage is a word-hashing stand-in
(tests/wordvectors.py) that embeds messages the way the transformer does, so vectors are
stored and searched through the real index.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import REGISTRY

from adapters.hnsw_index import HnswIndex
from adapters.service import Service
from bot.conversations import short_id
from bot.privacy import parse_address
from bot.vectors import MessageIndex, store_vector
from models import (
    AuditEntry,
    Conversation,
    Customer,
    Direction,
    Identity,
    KnownProblem,
    Message,
    MessageVector,
    SuggestionEvent,
    TextBlock,
)
from standins.mail import SmtpSink
from standins.slack import SlackEvents, SlackSandbox
from tests.conftest import AGENT, SIGNING_SECRET, Harness, SettingsFactory, eventually
from tests.test_flow_commands import LEAD, ask, root_of, settle
from tests.test_flow_email_to_slack import mail
from tests.wordvectors import WordVectorClassifier, word_vector

REFUND_BLOCK = (
    'blocks add "Refund on its way" '
    '"Hello {customer_first_name}, the refund for order {order} is on its way. {agent_name}" '
    '"Hallo {customer_first_name}, die Erstattung für Bestellung {order} ist unterwegs. '
    '{agent_name}"'
)


@asynccontextmanager
async def team(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> AsyncIterator[Harness]:
    """The service with a lead, triage that embeds, and no undo window."""
    slack.add_user(AGENT, "anna", real_name="Anna Agent", display_name="Anna")
    slack.add_user(LEAD, "lena", real_name="Lena Lead", display_name="Lena")
    roles = f'[roles]\nleads = ["{LEAD}"]\n'
    settings = make_settings(api_url=slack.api_url, relay_port=relay.port, extra=roles)
    service = Service(
        settings,
        classifier=WordVectorClassifier(settings.triage.default_skill),
        vector_poll_seconds=0.1,
    )
    async with service:
        events = SlackEvents(
            slack,
            events_url=f"http://127.0.0.1:{service.http_port}/slack/events",
            signing_secret=SIGNING_SECRET,
        )
        yield Harness(service, slack, relay, events)


async def customer_writes(
    h: Harness, text: str, *, sender: str, subject: str, message_id: str
) -> Conversation:
    await h.send_mail(mail(text, sender=sender, subject=subject, message_id=message_id))
    await settle(h)
    return await Conversation.get(messages__external_id=message_id)


async def suggestions_for(h: Harness, conversation: Conversation, user: str) -> dict[str, Any]:
    """Click Suggest reply on the card; returns the ephemeral answer."""
    shown = len(h.slack.ephemeral_messages(user))
    root = root_of(h, conversation)
    await h.events.click_button("support", root["ts"], user, "switchboard_suggest")
    await h.slack.wait_until(lambda: len(h.slack.ephemeral_messages(user)) > shown)
    return h.slack.ephemeral_messages(user)[-1]


def counter(source: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "switchboard_suggestions_total", {"source": source, "outcome": outcome}
    )
    return value or 0.0


async def test_a_text_block_is_suggested_filled_in_and_sent_only_when_the_agent_sends_it(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        assert "Text block `Refund on its way` added" in await ask(h, LEAD, REFUND_BLOCK)
        conversation = await customer_writes(
            h,
            "Hello, where is the refund for order 88123? I sent the parcel back on its way.",
            sender="Anna Kunde <anna@kunde.example>",
            subject="Refund",
            message_id="<refund-1@kunde.example>",
        )
        offered_before, used_before = counter("block", "offered"), counter("block", "used")

        note = await suggestions_for(h, conversation, AGENT)
        shown = json.dumps(note["blocks"])
        assert "Refund on its way" in shown
        assert "Hello Anna, the refund for order 88123 is on its way. Anna" in shown
        assert counter("block", "offered") == offered_before + 1
        # Offered is not sent: nothing reached the customer or the thread.
        assert relay.received == []
        outbound = Message.filter(conversation_id=conversation.id, direction=Direction.OUTBOUND)
        assert await outbound.count() == 0

        await h.events.click_button("support", note["ts"], AGENT, "switchboard_use_suggestion_1")
        await h.slack.wait_until(lambda: bool(h.slack.views))
        method, view = h.slack.views[-1]
        assert method == "views.open"
        text_input = view["blocks"][0]["element"]
        assert text_input["initial_value"] == (
            "Hello Anna, the refund for order 88123 is on its way. Anna"
        )
        assert relay.received == []

        edited = "Hello Anna, the refund for order 88123 is on its way: 3 days. Anna"
        response = await h.events.submit_view(view["id"], AGENT, {"reply": edited})
        assert response.status == 200
        await settle(h)
        await eventually(lambda: _sent(relay))

        (sent,) = relay.received
        assert "on its way: 3 days" in sent.message.get_content()
        reply = await outbound.get()
        assert reply.author_id == AGENT
        assert reply.text == edited
        assert reply.chat_ts is not None
        # Shown in the thread under the agent's name, with the delivery reaction of a reply.
        thread = slack.thread("support", conversation.chat_thread_ts or "")
        copy = next(m for m in thread if m["ts"] == reply.chat_ts)
        assert "Anna" in copy["text"]
        assert "3 days" in copy["text"]
        assert any(r["name"] == "white_check_mark" for r in copy.get("reactions", []))
        used = await SuggestionEvent.get(action="used")
        assert used.used_message_id == reply.id
        assert used.source.startswith("block:")
        assert counter("block", "used") == used_before + 1


async def _sent(relay: SmtpSink) -> bool:
    return len(relay.received) == 1


async def test_the_teams_past_answer_is_suggested_without_the_first_customers_data(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        first = await customer_writes(
            h,
            "My package never arrived although the tracking says it was delivered.",
            sender="Bob Baker <bob@example.org>",
            subject="Package missing",
            message_id="<pkg-1@example.org>",
        )
        second = await customer_writes(
            h,
            "The tracking says delivered but my package never arrived.",
            sender="Carla Cruz <carla@example.net>",
            subject="Where is my package",
            message_id="<pkg-2@example.net>",
        )
        before = await suggestions_for(h, second, AGENT)
        assert "No suggestions for this message yet" in before["text"]

        await h.agent_replies(
            "support",
            first.chat_thread_ts or "",
            "Hi Bob, sorry about that! I sent a new parcel for order #55512; write to "
            "bob@example.org or call +49 30 1234567 if it does not come.\n\nBest regards\nAnna",
        )
        await settle(h)

        after = await suggestions_for(h, second, AGENT)
        shown = json.dumps(after["blocks"], ensure_ascii=False)
        assert "answer to a similar message" in shown
        assert "Hi Carla, sorry about that! I sent a new parcel for order #[" in shown
        assert "carla@example.net" in shown
        for personal in ("Bob", "bob@example.org", "1234567", "55512"):
            assert personal not in shown
        assert "Best regards\\nAnna" in shown


async def test_similar_conversations_and_a_known_problem_show_on_later_cards(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        text = "Payment failed with an error at checkout, card declined again"
        first = await customer_writes(
            h, text, sender="a@example.org", subject="Payment", message_id="<p1@example.org>"
        )
        assert "similar:" not in json.dumps(root_of(h, first)["blocks"])
        refused = await ask(h, AGENT, f'problem {short_id(first)} "payment provider outage"')
        assert refused.startswith("Not allowed")
        linked = await ask(h, LEAD, f'problem {short_id(first)} "payment provider outage"')
        assert "linked to “payment provider outage”" in linked
        assert await AuditEntry.filter(action="problem", conversation_id=first.id).exists()

        second = await customer_writes(
            h,
            "Payment failed at checkout with an error, my card was declined",
            sender="b@example.org",
            subject="Payment",
            message_id="<p2@example.org>",
        )
        card = json.dumps(root_of(h, second)["blocks"], ensure_ascii=False)
        assert "Known problem: *payment provider outage*" in card
        assert "similar: 1 open · 0 closed this week" in card

        shown = len(slack.ephemeral_messages(AGENT))
        await h.events.click_button(
            "support", root_of(h, second)["ts"], AGENT, "switchboard_similar"
        )
        await slack.wait_until(lambda: len(slack.ephemeral_messages(AGENT)) > shown)
        listing = slack.ephemeral_messages(AGENT)[-1]["text"]
        assert f"`{short_id(first)}`" in listing
        assert "open" in listing
        assert "known problem “payment provider outage”" in listing
        assert "problem" in await ask(h, AGENT, "problems")

        unrelated = await customer_writes(
            h,
            "Please change the delivery address of my subscription",
            sender="c@example.org",
            subject="Address",
            message_id="<p3@example.org>",
        )
        assert "Known problem" not in json.dumps(root_of(h, unrelated)["blocks"])
        assert await KnownProblem.all().count() == 1


async def test_blocks_are_kept_by_leads_in_a_modal_and_every_change_is_audited(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        refused = await ask(h, AGENT, 'blocks add "Hi" "Hello"')
        assert refused.startswith("Not allowed")
        unknown = await ask(h, LEAD, 'blocks add "Typo" "Hello {custmer_name}"')
        assert "{custmer_name}, which Switchboard cannot fill" in unknown
        assert "{customer_first_name}" in unknown
        assert await TextBlock.all().count() == 0

        await h.events.send_slash_command(
            "/switchboard", "blocks add", user=LEAD, channel="support"
        )
        await slack.wait_until(lambda: bool(slack.views))
        _, view = slack.views[-1]
        assert [b.get("block_id") for b in view["blocks"][:4]] == [
            "title",
            "skill",
            "text_en",
            "text_de",
        ]
        refusal = await h.events.submit_view(
            view["id"], LEAD, {"title": "Delay", "text_en": "Sorry {nme}"}
        )
        assert "cannot fill" in refusal.body
        long_text = "Dear {customer_name},\n\n" + "we are sorry for the delay. " * 40
        ok = await h.events.submit_view(
            view["id"],
            LEAD,
            {
                "title": "Delay",
                "skill": "general",
                "text_en": long_text,
                "text_de": "Entschuldigung",
            },
        )
        assert ok.status == 200
        assert "errors" not in ok.body
        block = await TextBlock.get(title="Delay")
        assert block.text_en == long_text.strip()
        assert block.skill == "general"

        await h.events.send_slash_command(
            "/switchboard", "blocks edit Delay", user=LEAD, channel="support"
        )
        await slack.wait_until(lambda: len(slack.views) == 2)
        _, editor = slack.views[-1]
        assert editor["blocks"][2]["element"]["initial_value"] == long_text.strip()
        await h.events.submit_view(
            editor["id"], LEAD, {"title": "Delay", "text_en": "Sorry, {customer_first_name}."}
        )
        await settle(h)
        assert (await TextBlock.get(title="Delay")).text_en == "Sorry, {customer_first_name}."

        listing = await ask(h, AGENT, "blocks")
        assert "Delay" in listing
        assert await ask(h, LEAD, "blocks remove Delay") == "Text block `Delay` removed."
        entries = await AuditEntry.filter(action__startswith="block_").order_by("id")
        assert [e.action for e in entries] == ["block_add", "block_edit", "block_remove"]
        assert entries[1].detail["text_en"] == "Sorry, {customer_first_name}."


async def test_each_customer_message_gets_one_stored_vector_follow_ups_too(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        await h.send_mail(mail("Where is my invoice?", message_id="<v1@kunde.example>"))
        await settle(h)
        await h.send_mail(
            mail(
                "Still no invoice.",
                message_id="<v2@kunde.example>",
                in_reply_to="<v1@kunde.example>",
            )
        )
        await settle(h)
        conversation = await Conversation.get()
        inbound = await Message.filter(direction=Direction.INBOUND).values_list("id", flat=True)
        stored = await MessageVector.filter(conversation_id=conversation.id).values_list(
            "message_id", flat=True
        )
        assert sorted(stored) == sorted(inbound)
        assert len(stored) == 2
        assert len(h.service.index.index or []) == 2


async def test_forgetting_a_customer_removes_their_vectors_from_every_replicas_index(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        text = "My router keeps dropping the connection every evening"
        first = await customer_writes(
            h, text, sender="anna@kunde.example", subject="WLAN", message_id="<f1@kunde.example>"
        )
        await customer_writes(
            h, text, sender="bob@example.org", subject="WLAN", message_id="<f2@example.org>"
        )
        # Another replica: its own index, loaded from the same database.
        other = MessageIndex(HnswIndex)
        await other.load()
        query = word_vector(f"WLAN\n{text}")
        assert len(await other.nearest(query, 5)) == 2
        anna_message = (await MessageVector.get(conversation_id=first.id)).message_id

        await h.service.privacy.forget(parse_address("anna@kunde.example"))

        assert not await MessageVector.filter(conversation_id=first.id).exists()
        # Unfindable at once, before the other replica has looked for removals...
        found = await other.nearest(query, 5)
        assert [n.message_id for n in found] != []
        assert anna_message not in [n.message_id for n in found]
        assert other.index is not None
        assert anna_message in other.index
        # ...and gone from its index at its next look.
        await other.refresh()
        assert anna_message not in other.index
        assert len(other.index) == 1
        await eventually(lambda: _not_in(h.service.index, anna_message))


async def _not_in(index: MessageIndex, message_id: int) -> bool:
    return index.index is not None and message_id not in index.index


async def test_an_index_catches_up_with_vectors_other_replicas_store(db: str) -> None:
    replica = MessageIndex(HnswIndex)
    await replica.load()
    assert replica.index is None
    customer = await Customer.create(name="x")
    identity = await Identity.create(customer=customer, channel="email", address="x@example.org")
    conversation = await Conversation.create(
        token="t1", customer=customer, identity=identity, channel="email"
    )
    ids = []
    for number in range(3):
        message = await Message.create(
            conversation=conversation, direction=Direction.INBOUND, channel="email"
        )
        ids.append(message.id)
        assert await store_vector(message.id, conversation.id, word_vector(f"text {number}"))
    assert not await store_vector(ids[0], conversation.id, word_vector("again"))
    assert await replica.refresh() == 3
    assert await replica.refresh() == 0
    assert sorted(n.message_id for n in await replica.nearest(word_vector("text 1"), 5)) == ids


async def test_a_german_customer_is_offered_the_german_text(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with team(make_settings, slack, relay) as h:
        await ask(h, LEAD, REFUND_BLOCK)
        conversation = await customer_writes(
            h,
            "Wo ist die Erstattung für meine Bestellung 4711? Ich habe die Ware zurückgeschickt.",
            sender="Anna Kunde <anna@kunde.example>",
            subject="Erstattung",
            message_id="<de-1@kunde.example>",
        )
        assert conversation.language == "de"
        note = await suggestions_for(h, conversation, AGENT)
        shown = json.dumps(note["blocks"], ensure_ascii=False)
        assert "Hallo Anna, die Erstattung für Bestellung 4711 ist unterwegs. Anna" in shown
        assert "the refund" not in shown


async def test_a_vector_committed_after_a_newer_one_is_still_picked_up(db: str) -> None:
    """Ids are handed out before commit: a lower id can appear after the index read past it."""
    replica = MessageIndex(HnswIndex)
    customer = await Customer.create(name="x")
    identity = await Identity.create(customer=customer, channel="email", address="x@example.org")
    conversation = await Conversation.create(
        token="t1", customer=customer, identity=identity, channel="email"
    )
    early, late = [
        await Message.create(
            conversation=conversation, direction=Direction.INBOUND, channel="email"
        )
        for _ in range(2)
    ]
    await MessageVector.create(
        id=10, message=late, conversation_id=conversation.id, vector=word_vector("late")
    )
    assert await replica.refresh() == 1
    await MessageVector.create(
        id=7, message=early, conversation_id=conversation.id, vector=word_vector("early")
    )
    assert await replica.refresh() == 1
    assert replica.index is not None
    assert early.id in replica.index
