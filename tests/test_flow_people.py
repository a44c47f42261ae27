"""One person on several channels: recognised by strong evidence or linked by a lead.

Anna writes by e-mail, then on WhatsApp. A lead links the two (or the evidence does: the
address a widget sent, her own Telegram contact); her second thread points to the first, the
customer card shows both, replies go out on the channel each conversation uses, and forgetting
her forgets every identity.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from adapters.telegram.webhook import WEBHOOK_PATH as TELEGRAM_PATH
from adapters.webhook.signing import signed_headers
from bot.privacy import Privacy, parse_address
from bot.settings import RetentionSettings
from bot.shapes import ChannelKind
from models import AuditEntry, Conversation, Customer, CustomerDetail, CustomerLink, Identity
from standins.callbacks import CallbackReceiver
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from standins.telegram import TelegramSandbox
from standins.whatsapp import WhatsAppSandbox
from tests.conftest import AGENT, Harness, SettingsFactory, eventually, running
from tests.test_flow_email_to_slack import mail
from tests.test_privacy import backdate

LEAD = "U0LEAD01"
ANNA_PHONE = "4915112345678"
WIDGET_SECRET = "widget-secret-0123456789abcdef"
TELEGRAM_SECRET = "test-telegram-webhook-secret"
SIGNED_MAIL = """Hallo, meine Rechnung 4711 wurde doppelt abgebucht.

Mit freundlichen Grüßen
Anna Kunde
Leiterin Einkauf
Kunde Handels GmbH
Marktstraße 5
10115 Berlin
Tel.: +49 30 1234567
"""


class People:
    """The service with e-mail, WhatsApp, Telegram and a web widget, and a lead."""

    def __init__(
        self,
        harness: Harness,
        whatsapp: WhatsAppSandbox,
        telegram: TelegramSandbox,
    ) -> None:
        self.h = harness
        self.slack = harness.slack
        self.wa = whatsapp
        self.tg = telegram
        self.base = f"http://127.0.0.1:{harness.service.http_port}"

    async def whatsapp(self, text: str, phone: str = ANNA_PHONE) -> None:
        status, _ = await self.wa.deliver(
            f"{self.base}/whatsapp/webhook", self.wa.text(phone, "Anna K.", text)
        )
        assert status == 200
        await self.h.settled()

    async def email(self, text: str = SIGNED_MAIL) -> None:
        await self.h.send_mail(mail(text))
        await self.h.settled()

    async def widget(self, text: str, email: str) -> None:
        body = json.dumps(
            {
                "event_id": "evt-1",
                "conversation_id": "chat-1",
                "sender": {"id": "visitor-1", "name": "Anna", "email": email},
                "text": text,
            }
        ).encode()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.base}/webhooks/widget",
                data=body,
                headers=signed_headers(WIDGET_SECRET, body),
            ) as response,
        ):
            assert response.status == 200
        await self.h.settled()

    async def command(self, text: str, user: str = LEAD) -> str:
        shown = len(self.slack.ephemeral_messages(user))
        response = await self.h.events.send_slash_command(
            "/switchboard", text, user=user, channel="support"
        )
        assert response.status == 200
        await self.slack.wait_until(lambda: len(self.slack.ephemeral_messages(user)) > shown)
        await self.h.settled()
        return str(self.slack.ephemeral_messages(user)[-1]["text"])

    def thread_of(self, conversation: Conversation) -> list[str]:
        assert conversation.chat_thread_ts is not None
        thread = self.slack.thread("support", conversation.chat_thread_ts)
        return [json.dumps(m.get("blocks") or []) + str(m.get("text", "")) for m in thread]


@pytest.fixture
async def people(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> AsyncIterator[People]:
    slack.add_user(LEAD, "lena", real_name="Lena Lead", display_name="Lena")
    async with (
        WhatsAppSandbox() as whatsapp,
        TelegramSandbox() as telegram,
        CallbackReceiver(WIDGET_SECRET) as receiver,
    ):
        extra = (
            whatsapp.settings_toml()
            + f"""
[telegram]
enabled = true
api_url = "{telegram.url}"

[[webhooks]]
name = "widget"
callback_url = "{receiver.url}"
secret_env = "WEBHOOK_WIDGET_SECRET"

[roles]
leads = ["{LEAD}"]
"""
        )
        env = {
            **whatsapp.env(),
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
            "WEBHOOK_WIDGET_SECRET": WIDGET_SECRET,
        }
        async with running(make_settings, slack, relay, extra=extra, env=env) as harness:
            yield People(harness, whatsapp, telegram)


async def conversations() -> list[Conversation]:
    return list(await Conversation.all().order_by("id"))


async def test_a_lead_links_e_mail_and_whatsapp_and_replies_go_where_each_was_written(
    people: People,
) -> None:
    await people.email()
    await people.whatsapp("Hallo, hier nochmal Anna per WhatsApp.")
    first, second = await conversations()
    assert await Customer.all().count() == 2

    answer = await people.command(f"customer link anna@kunde.example whatsapp:+{ANNA_PHONE}")
    assert answer.startswith("Linked")
    assert await Customer.all().count() == 1
    assert {c.customer_id for c in await conversations()} == {first.customer_id}  # type: ignore[attr-defined]
    for conversation, other in ((first, second), (second, first)):
        thread = people.thread_of(conversation)
        assert any("linked this customer" in text for text in thread)
        # Each thread links to the other.
        assert any(
            "Other conversations of this customer" in text and other.token[:6] in text
            for text in thread
        )
    link = await CustomerLink.get()
    assert link.actor_id == LEAD
    assert await AuditEntry.filter(action="link", conversation=None).exists()

    # A reply in each thread goes out on that conversation's channel.
    assert second.chat_thread_ts is not None
    await people.h.agent_replies("support", second.chat_thread_ts, "Danke, per WhatsApp!")
    assert first.chat_thread_ts is not None
    await people.h.agent_replies("support", first.chat_thread_ts, "Danke, per Mail!")

    async def both_sent() -> bool:
        return bool(people.wa.sent) and bool(people.h.relay.received)

    await eventually(both_sent)
    assert [(s.to, s.text) for s in people.wa.sent] == [(ANNA_PHONE, "Danke, per WhatsApp!")]
    (sent_mail,) = people.h.relay.received
    assert sent_mail.rcpt_tos == ["anna@kunde.example"]

    # The lead can undo it.
    answer = await people.command(f"customer unlink whatsapp:+{ANNA_PHONE}")
    assert answer.startswith("Unlinked")
    assert await Customer.all().count() == 2
    assert (await CustomerLink.get()).undone_at is not None
    whatsapp_identity = await Identity.get(channel=ChannelKind.WHATSAPP)
    assert whatsapp_identity.customer_id != first.customer_id  # type: ignore[attr-defined]


async def test_the_customer_card_shows_every_channel_and_suggests_signature_data(
    people: People,
) -> None:
    await people.email()
    await people.whatsapp("Hallo, hier nochmal Anna.")
    await people.command(f"customer link anna@kunde.example whatsapp:+{ANNA_PHONE}")
    first, _ = await conversations()
    await people.command(f"close {first.token[:6]}")

    card = await people.command("customer anna@kunde.example", user=AGENT)
    assert "E-mail anna@kunde.example" in card
    assert f"WhatsApp +{ANNA_PHONE}" in card
    assert "2 conversations" in card
    assert "closed by Lena" in card
    assert "Suggested" in card
    assert "phone: +49301234567" in card
    assert "company: Kunde Handels GmbH" in card
    assert "address: Marktstraße 5, 10115 Berlin" in card
    assert "position: Leiterin Einkauf" in card
    assert not await CustomerDetail.exists()

    # The card's button stores the first suggestion.
    shown = people.slack.ephemeral_messages(AGENT)
    await people.h.events.click_button(
        "support", shown[-1]["ts"], AGENT, "switchboard_confirm_detail_0"
    )
    await people.slack.wait_until(lambda: len(people.slack.ephemeral_messages(AGENT)) > len(shown))
    assert str(people.slack.ephemeral_messages(AGENT)[-1]["text"]).startswith("Stored")
    detail = await CustomerDetail.get()
    assert detail.confirmed_by == AGENT
    card = await people.command("customer anna@kunde.example", user=AGENT)
    assert f"{detail.kind}: {detail.value} (signature of the e-mail of" in card

    # The same card from the button on a root message.
    root = people.slack.channel_messages("support")[-1]
    await people.h.events.click_button("support", root["ts"], AGENT, "switchboard_customer")
    await people.slack.wait_until(
        lambda: "2 conversations" in str(people.slack.ephemeral_messages(AGENT)[-1]["text"])
    )


async def test_the_address_a_widget_sends_links_it_to_the_e_mail_customer(
    people: People,
) -> None:
    await people.email("Wo ist meine Bestellung?")
    await people.widget("Hallo aus dem Chat", "Anna@Kunde.example")

    assert await Customer.all().count() == 1
    first, second = await conversations()
    thread = people.thread_of(second)
    assert any("This customer wrote before" in text and first.token[:6] in text for text in thread)
    link = await CustomerLink.get()
    assert link.actor_id == ""
    assert "anna@kunde.example" in link.reason


async def test_a_telegram_contact_and_a_whatsapp_number_are_one_person(people: People) -> None:
    contact = {
        "update_id": 851793205,
        "message": {
            "message_id": 416,
            "from": {"id": 5550001111, "is_bot": False, "first_name": "Anna"},
            "chat": {"id": 5550001111, "first_name": "Anna", "type": "private"},
            "date": 1730981850,
            "contact": {
                "phone_number": "+49 151 12345678",
                "first_name": "Anna",
                "user_id": 5550001111,
            },
        },
    }
    status = await people.tg.deliver(
        f"{people.base}{TELEGRAM_PATH}", contact, secret=TELEGRAM_SECRET
    )
    assert status == 200
    await people.h.settled()
    await people.whatsapp("Jetzt per WhatsApp")

    assert await Customer.all().count() == 1
    telegram_conversation, whatsapp_conversation = await conversations()
    thread = people.thread_of(whatsapp_conversation)
    assert any(telegram_conversation.token[:6] in text for text in thread)
    evidence = await CustomerDetail.get(kind="phone")
    assert (evidence.value, evidence.evidence) == (f"+{ANNA_PHONE}", True)
    assert "Telegram contact" in evidence.source


async def test_someone_else_s_contact_links_nobody(people: People) -> None:
    contact = {
        "update_id": 851793206,
        "message": {
            "message_id": 417,
            "from": {"id": 5550001111, "is_bot": False, "first_name": "Anna"},
            "chat": {"id": 5550001111, "first_name": "Anna", "type": "private"},
            "date": 1730981850,
            "contact": {"phone_number": f"+{ANNA_PHONE}", "first_name": "Bob", "user_id": 42},
        },
    }
    await people.tg.deliver(f"{people.base}{TELEGRAM_PATH}", contact, secret=TELEGRAM_SECRET)
    await people.h.settled()
    await people.whatsapp("Hallo")

    assert await Customer.all().count() == 2


async def test_forgetting_a_linked_person_forgets_every_identity(people: People) -> None:
    await people.email()
    await people.widget("Hallo aus dem Chat", "anna@kunde.example")
    await people.command("customer confirm 1.0", user=AGENT)
    assert await Identity.all().count() == 2

    privacy = Privacy(RetentionSettings())
    removal = await privacy.forget(parse_address("anna@kunde.example"))

    assert removal.identities == 2
    assert not await Identity.exists()
    assert not await Customer.exists()
    assert not await CustomerDetail.exists()
    assert not await CustomerLink.exists()


async def test_retention_keeps_a_linked_person_while_any_conversation_of_theirs_is_kept(
    people: People,
) -> None:
    await people.email()
    await people.whatsapp("Hallo, hier nochmal Anna.")
    await people.command(f"customer link anna@kunde.example whatsapp:+{ANNA_PHONE}")
    by_mail, by_whatsapp = await conversations()
    await people.command(f"close {by_mail.token[:6]}")
    await backdate(by_mail, days=35)
    privacy = Privacy(RetentionSettings(closed_conversations_days=30))

    removal = await privacy.purge_closed()

    assert removal.conversations == 1
    assert [c.id for c in await conversations()] == [by_whatsapp.id]
    # One person: both identities stay with the conversation that is kept.
    assert await Customer.all().count() == 1
    assert await Identity.all().count() == 2

    await people.command(f"close {by_whatsapp.token[:6]}")
    await backdate(by_whatsapp, days=35)
    removal = await privacy.purge_closed()

    assert removal.conversations == 1
    assert not await Customer.exists()
    assert not await Identity.exists()
    assert not await CustomerLink.exists()
