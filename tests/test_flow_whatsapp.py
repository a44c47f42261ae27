"""A customer writes on WhatsApp; agents answer in the Slack thread and the number replies.

The service's Graph API client talks to the loopback Cloud API (standins/whatsapp.py) through
``[whatsapp] api_url``; webhooks are Meta's JSON (tests/payloads/whatsapp, and bodies the
sandbox builds the same way), posted signed with the app secret as Meta posts them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.whatsapp.webhook import WEBHOOK_PATH
from bot.jobkinds import DELIVER_REPLY
from bot.shapes import ChannelKind, DeliveryState
from models import Conversation, Identity, Job, JobState, Message
from standins.mail import SmtpSink
from standins.slack import SandboxFile, SlackSandbox
from standins.whatsapp import SentWhatsApp, WhatsAppSandbox
from tests.conftest import AGENT, Harness, SettingsFactory, eventually, running
from tests.test_flow_email_to_slack import all_text

PAYLOADS = Path(__file__).parent / "payloads" / "whatsapp"
MARIA = "4915112345678"
TEMPLATES = """
[[whatsapp.templates]]
name = "order_follow_up"
language = "en_US"
parameters = ["customer_name", "conversation"]
text = "Hello {{1}}, we have news about your request {{2}}. Reply to continue."

[[whatsapp.templates]]
name = "hello"
language = "de"
"""


def payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text(encoding="utf-8"))
    return data


class Clock:
    """The service's clock: real time, moved on by the test (the window is 24 hours)."""

    def __init__(self) -> None:
        self.ahead = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


@pytest.fixture
async def whatsapp() -> AsyncIterator[WhatsAppSandbox]:
    """The WhatsApp Cloud API on loopback."""
    async with WhatsAppSandbox() as sandbox:
        yield sandbox


class WhatsAppHarness:
    """The running service with Slack, the mail relay and the WhatsApp sandbox."""

    def __init__(self, harness: Harness, whatsapp: WhatsAppSandbox, clock: Clock) -> None:
        self.harness = harness
        self.slack = harness.slack
        self.wa = whatsapp
        self.clock = clock
        self.url = f"http://127.0.0.1:{harness.service.http_port}{WEBHOOK_PATH}"

    async def deliver(self, body: dict[str, Any] | bytes, **kwargs: Any) -> int:
        status, _ = await self.wa.deliver(self.url, body, **kwargs)
        return status

    async def text(self, body: str, **kwargs: Any) -> None:
        assert await self.deliver(self.wa.text(MARIA, "Maria Schmidt", body, **kwargs)) == 200

    async def thread(self) -> list[dict[str, Any]]:
        return await self.harness.only_thread()

    async def thread_text(self) -> str:
        return "\n".join(all_text(m) for m in await self.thread())

    async def agent_replies(self, text: str, files: list[SandboxFile] | None = None) -> str:
        if not files:
            return await self.harness.reply_in_only_conversation(text)
        conversation = await Conversation.get()
        posted = self.slack.post_as_user(
            "support", AGENT, text, thread_ts=conversation.chat_thread_ts, files=files
        )
        await self.harness.events.send_message_event("support", posted["ts"])
        return str(posted["ts"])

    async def sent(self, count: int) -> list[SentWhatsApp]:
        async def enough() -> bool:
            return len(self.wa.sent) >= count

        await eventually(enough)
        await self.harness.settled()
        return self.wa.sent

    def reactions(self, ts: str) -> set[str]:
        root = self.slack.channel_messages("support")[0]
        (message,) = [m for m in self.slack.thread("support", root["ts"]) if m["ts"] == ts]
        return {r["name"] for r in message.get("reactions", [])}

    async def command(self, text: str) -> str:
        user = AGENT
        shown = len(self.slack.ephemeral_messages(user))
        response = await self.harness.events.send_slash_command(
            "/switchboard", text, user=user, channel="support"
        )
        assert response.status == 200
        await self.slack.wait_until(lambda: len(self.slack.ephemeral_messages(user)) > shown)
        return str(self.slack.ephemeral_messages(user)[-1]["text"])


@asynccontextmanager
async def whatsapp_service(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    whatsapp: WhatsAppSandbox,
    *,
    extra: str = "",
) -> AsyncIterator[WhatsAppHarness]:
    clock = Clock()
    async with running(
        make_settings,
        slack,
        relay,
        extra=whatsapp.settings_toml(TEMPLATES) + extra,
        env=whatsapp.env(),
        clock=clock,
    ) as harness:
        yield WhatsAppHarness(harness, whatsapp, clock)


@pytest.fixture
async def wa(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    whatsapp: WhatsAppSandbox,
) -> AsyncIterator[WhatsAppHarness]:
    async with whatsapp_service(make_settings, slack, relay, whatsapp) as started:
        yield started


def files_of(thread: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for m in thread for f in m.get("files", [])]


async def state_of(ts: str) -> DeliveryState | None:
    return (await Message.get(chat_ts=ts)).delivery_state


async def test_meta_verifies_the_webhook_with_the_verify_token(wa: WhatsAppHarness) -> None:
    assert await wa.wa.verify(wa.url, challenge="1158201444") == (200, "1158201444")
    status, _ = await wa.wa.verify(wa.url, verify_token="not-the-token")
    assert status == 403


async def test_a_captured_text_message_opens_a_thread(wa: WhatsAppHarness) -> None:
    assert await wa.deliver(payload("text")) == 200

    root, posted = await wa.thread()
    assert "Maria Schmidt" in all_text(root)
    assert "WhatsApp" in all_text(root)
    assert "Meine Bestellung 4711 ist nicht angekommen" in all_text(posted)
    conversation = await Conversation.get()
    assert conversation.channel is ChannelKind.WHATSAPP
    assert conversation.thread_key == MARIA
    identity = await Identity.get()
    assert (identity.channel, identity.address, identity.display_name) == (
        ChannelKind.WHATSAPP,
        "+" + MARIA,
        "Maria Schmidt",
    )


@pytest.mark.parametrize("signature", ["", "sha256=00", "sha1=abc", "sha256=" + "a" * 64])
async def test_an_unsigned_or_badly_signed_webhook_gets_401_and_stores_nothing(
    wa: WhatsAppHarness, signature: str
) -> None:
    assert await wa.deliver(payload("text"), signature=signature) == 401
    await wa.harness.settled()
    assert not await Message.exists()
    assert wa.slack.channel_messages("support") == []


async def test_a_body_changed_after_signing_is_refused(wa: WhatsAppHarness) -> None:
    body = json.dumps(payload("text")).encode()
    signature = wa.wa.sign(body)
    assert await wa.deliver(body.replace(b"4711", b"4712"), signature=signature) == 401
    assert not await Message.exists()


async def test_a_retried_delivery_is_stored_and_shown_once(wa: WhatsAppHarness) -> None:
    assert await wa.deliver(payload("text")) == 200
    assert await wa.deliver(payload("text")) == 200

    assert len(await wa.thread()) == 2
    assert await Message.all().count() == 1


@pytest.mark.parametrize(
    ("kind", "content", "content_type", "extra", "name"),
    [
        ("image", b"\xff\xd8\xff\xe0 jpeg", "image/jpeg", {"caption": "Das Paket"}, "image_"),
        (
            "document",
            b"%PDF-1.7",
            "application/pdf",
            {"filename": "Rechnung.pdf", "caption": "Rechnung"},
            "Rechnung.pdf",
        ),
        ("audio", b"ID3 mp3", "audio/mpeg", {}, "audio_"),
        ("audio", b"OggS voice", "audio/ogg; codecs=opus", {"voice": True}, "voice_"),
        ("voice", b"OggS voice", "audio/ogg; codecs=opus", {}, "voice_"),
        ("video", b"\x00\x00\x00\x18ftypmp42", "video/mp4", {"caption": "Unboxing"}, "video_"),
        ("sticker", b"RIFF webp", "image/webp", {"animated": False}, "sticker_"),
    ],
)
async def test_media_is_fetched_through_the_media_endpoint_and_uploaded(
    wa: WhatsAppHarness,
    kind: str,
    content: bytes,
    content_type: str,
    extra: dict[str, Any],
    name: str,
) -> None:
    media_id = wa.wa.add_media(content, content_type)
    media = {"id": media_id, "mime_type": content_type, "sha256": "x", **extra}
    assert await wa.deliver(wa.wa.message(MARIA, "Maria", kind, media)) == 200

    thread = await wa.thread()
    (file,) = files_of(thread)
    assert file["name"].startswith(name)
    assert wa.slack.file_content(file["id"]) == content
    text = "\n".join(all_text(m) for m in thread)
    if extra.get("caption"):
        assert extra["caption"] in text
    if name == "voice_":
        assert "Voice message" in text
    if kind == "sticker":
        assert "[sticker]" in text
    assert [what for what, _ in wa.wa.calls] == ["node", "download"]


async def test_a_media_fetch_that_fails_for_now_gets_503_so_meta_retries(
    wa: WhatsAppHarness,
) -> None:
    media_id = wa.wa.add_media(b"jpeg", "image/jpeg")
    body = wa.wa.message(MARIA, "Maria", "image", {"id": media_id, "mime_type": "image/jpeg"})
    wa.wa.fail_next("download", 131000, status=500)
    assert await wa.deliver(body) == 503
    assert not await Message.exists()

    assert await wa.deliver(body) == 200
    (file,) = files_of(await wa.thread())
    assert wa.slack.file_content(file["id"]) == b"jpeg"


async def test_locations_and_contacts_are_written_out(wa: WhatsAppHarness) -> None:
    location = {
        "latitude": 52.520008,
        "longitude": 13.404954,
        "name": "Packstation 123",
        "address": "Alexanderplatz 1, Berlin",
    }
    contact = {
        "name": {"formatted_name": "Jonas Weber", "first_name": "Jonas"},
        "phones": [{"phone": "+49 30 1234567", "type": "WORK", "wa_id": "49301234567"}],
        "emails": [{"email": "jonas@example.org", "type": "WORK"}],
        "org": {"company": "Weber GmbH", "title": "Einkauf"},
    }
    assert await wa.deliver(wa.wa.message(MARIA, "Maria", "location", location)) == 200
    assert await wa.deliver(wa.wa.message(MARIA, "Maria", "contacts", [contact])) == 200

    text = await wa.thread_text()
    assert "📍 Packstation 123, Alexanderplatz 1, Berlin (52.520008, 13.404954)" in text
    assert "openstreetmap.org/?mlat=52.520008&amp;mlon=13.404954" in text
    assert (
        "Contact: Jonas Weber, +49 30 1234567 (WORK), jonas@example.org, Einkauf, Weber GmbH"
        in text
    )


async def test_replies_buttons_lists_and_reactions_are_readable(wa: WhatsAppHarness) -> None:
    first = wa.wa.new_wamid()
    await wa.text("Wo ist mein Paket 4711?", wamid=first)
    await wa.harness.settled()
    await wa.agent_replies("Es ist unterwegs.")
    (reply,) = await wa.sent(1)

    await wa.text("Danke! Und wann?", context={"from": MARIA, "id": reply.wamid})
    button = {"type": "button_reply", "button_reply": {"id": "yes", "title": "Ja, bitte"}}
    listed = {
        "type": "list_reply",
        "list_reply": {"id": "slot-2", "title": "Morgen", "description": "8-12 Uhr"},
    }
    for body in (
        wa.wa.message(MARIA, "Maria", "interactive", button),
        wa.wa.message(MARIA, "Maria", "interactive", listed),
        wa.wa.message(MARIA, "Maria", "button", {"payload": "p1", "text": "Rückruf"}),
        wa.wa.message(MARIA, "Maria", "reaction", {"message_id": first, "emoji": "👍"}),
        wa.wa.message(MARIA, "Maria", "unsupported", {}),
    ):
        assert await wa.deliver(body) == 200

    text = await wa.thread_text()
    assert "↩️ In reply to: “Es ist unterwegs.”\nDanke! Und wann?" in text
    assert "🔘 Chose: Ja, bitte" in text
    assert "📋 Chose from the list: Morgen (8-12 Uhr)" in text
    assert "🔘 Pressed: Rückruf" in text
    assert "Reacted 👍 to “Wo ist mein Paket 4711?”" in text
    assert "a type WhatsApp does not pass on (unsupported)" in text
    assert await Conversation.all().count() == 1


async def test_mentions_in_a_whatsapp_message_ping_nobody(wa: WhatsAppHarness) -> None:
    await wa.text("<!channel> <@U0AGENT1> <https://evil.example|bank>")

    text = await wa.thread_text()
    for command in ("<!channel>", "<@U0AGENT1>", "<https://evil"):
        assert command not in text
    assert "&lt;!channel&gt;" in text


async def test_a_reply_goes_out_as_text_and_statuses_show_as_reactions(
    wa: WhatsAppHarness,
) -> None:
    await wa.text("Hallo?")
    await wa.harness.settled()
    typed = "Hallo Maria, siehe https://track.example/4711 & *morgen*"
    ts = await wa.agent_replies(typed)

    (sent,) = await wa.sent(1)
    assert (sent.to, sent.kind, sent.text) == (MARIA, "text", typed)
    assert wa.wa.calls[-1][1]["text"] == {"preview_url": False, "body": typed}
    assert await state_of(ts) is DeliveryState.SENT
    assert wa.reactions(ts) == {"white_check_mark"}

    for status, reaction in (("delivered", "ballot_box_with_check"), ("read", "eyes")):
        assert await wa.deliver(wa.wa.status(sent.wamid, status, MARIA)) == 200
        await wa.harness.settled()
        assert wa.reactions(ts) == {reaction}
    # Late and repeated statuses do not move it back.
    assert await wa.deliver(wa.wa.status(sent.wamid, "delivered", MARIA)) == 200
    assert await wa.deliver(wa.wa.status(sent.wamid, "sent", MARIA)) == 200
    await wa.harness.settled()
    assert wa.reactions(ts) == {"eyes"}
    assert await state_of(ts) is DeliveryState.READ


async def test_a_failed_status_shows_the_error_code_in_the_thread(wa: WhatsAppHarness) -> None:
    await wa.text("Hallo?")
    await wa.harness.settled()
    ts = await wa.agent_replies("Wir melden uns.")
    (sent,) = await wa.sent(1)

    body = wa.wa.status(sent.wamid, "failed", MARIA, error_code=131026)
    assert await wa.deliver(body) == 200
    assert await wa.deliver(body) == 200
    await wa.harness.settled()

    assert wa.reactions(ts) == {"x"}
    assert await state_of(ts) is DeliveryState.FAILED
    text = await wa.thread_text()
    assert text.count("The reply above was not delivered") == 1
    assert "undeliverable" in text
    assert "WhatsApp error 131026" in text


async def test_a_long_reply_is_split_at_4096_characters(wa: WhatsAppHarness) -> None:
    await wa.text("Hallo?")
    await wa.harness.settled()
    paragraph = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30
    text = "\n".join([paragraph] * 6)
    ts = await wa.agent_replies(text)

    sent = await wa.sent(3)
    assert len(sent) == 3
    assert all(len(m.text) <= 4096 for m in sent)
    assert "\n".join(m.text for m in sent).split() == text.split()
    # Each part's statuses find the reply; it shows delivered once every part is.
    for part in sent[:2]:
        await wa.deliver(wa.wa.status(part.wamid, "delivered", MARIA))
    await wa.harness.settled()
    assert await state_of(ts) is DeliveryState.SENT
    await wa.deliver(wa.wa.status(sent[2].wamid, "delivered", MARIA))
    await wa.harness.settled()
    assert await state_of(ts) is DeliveryState.DELIVERED


async def test_agent_files_are_uploaded_and_sent_as_media(wa: WhatsAppHarness) -> None:
    await wa.text("Hallo?")
    await wa.harness.settled()
    jpeg = b"\xff\xd8\xff\xe0 label photo"
    await wa.agent_replies(
        "Etikett und Foto anbei",
        files=[
            SandboxFile("label.pdf", b"%PDF label", "application/pdf"),
            SandboxFile("lager.jpg", jpeg, "image/jpeg"),
        ],
    )

    sent = await wa.sent(3)
    assert [(m.kind, m.filename, m.content) for m in sent] == [
        ("text", "", b""),
        ("document", "label.pdf", b"%PDF label"),
        ("image", "lager.jpg", jpeg),
    ]
    assert [what for what, _ in wa.wa.calls].count("media") == 2


async def test_after_the_window_a_reply_is_held_and_a_template_goes_instead(
    wa: WhatsAppHarness,
) -> None:
    await wa.text("Wo bleibt mein Paket?")
    await wa.harness.settled()
    conversation = await Conversation.get()
    wa.clock.ahead += timedelta(hours=25)

    ts = await wa.agent_replies("Es kommt morgen.")
    await wa.harness.settled()
    assert wa.wa.sent == []
    assert await state_of(ts) is DeliveryState.FAILED
    assert wa.reactions(ts) == {"x"}
    text = await wa.thread_text()
    sid = conversation.token[:6]
    assert "24-hour window closed" in text
    assert f"/switchboard template {sid} <name>" in text
    assert "`order_follow_up`, `hello`" in text

    listing = await wa.command("templates")
    assert "`order_follow_up` (en_US; customer_name, conversation)" in listing
    answer = await wa.command(f"template {sid} order_follow_up")
    assert f"Hello Maria Schmidt, we have news about your request {sid}." in answer

    (sent,) = await wa.sent(1)
    assert sent.kind == "template"
    assert sent.template == {
        "name": "order_follow_up",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Maria Schmidt"},
                    {"type": "text", "text": sid},
                ],
            }
        ],
    }
    template = await Message.get(template__not_isnull=True)
    assert template.chat_ts is not None
    assert "sends a WhatsApp template" in await wa.thread_text()
    assert wa.reactions(template.chat_ts) == {"white_check_mark"}
    await wa.deliver(wa.wa.status(sent.wamid, "read", MARIA))
    await wa.harness.settled()
    assert wa.reactions(template.chat_ts) == {"eyes"}


async def test_template_commands_refuse_what_cannot_be_sent(wa: WhatsAppHarness) -> None:
    await wa.text("Hallo?")
    await wa.harness.settled()
    sid = (await Conversation.get()).token[:6]

    assert "There is no template `nope`" in await wa.command(f"template {sid} nope")
    assert "Usage: `template <conversation> <name>" in await wa.command("template")
    assert wa.wa.sent == []


async def test_meta_closing_the_window_is_told_like_ours(wa: WhatsAppHarness) -> None:
    await wa.text("Hallo?")
    await wa.harness.settled()
    wa.wa.fail_next("messages", 131047)
    ts = await wa.agent_replies("Antwort")
    await wa.harness.settled()

    assert await state_of(ts) is DeliveryState.FAILED
    assert "24-hour window closed" in await wa.thread_text()


async def test_rate_limits_are_retried_and_then_delivered(wa: WhatsAppHarness) -> None:
    await wa.text("Hallo?")
    await wa.harness.settled()
    wa.wa.fail_next("messages", 131056, count=1)
    wa.wa.fail_next("messages", 130429, count=1)
    wa.wa.fail_next("messages", 131000, status=500, count=1)
    ts = await wa.agent_replies("Kommt gleich")

    for attempts, pause in ((1, 60), (2, 5), (3, 0)):

        async def tried(attempts: int = attempts) -> bool:
            job = await Job.get(kind=DELIVER_REPLY.name)
            return job.attempts == attempts and job.state is JobState.PENDING

        await eventually(tried)
        job = await Job.get(kind=DELIVER_REPLY.name)
        # Meta's pause is kept: the pair limit 60 s, the throughput limit 5 s.
        assert job.run_at - wa.clock() >= timedelta(seconds=pause * 0.9)
        assert await state_of(ts) is DeliveryState.PENDING
        wa.clock.ahead += timedelta(seconds=pause + 1)

    async def sent() -> bool:
        return await state_of(ts) is DeliveryState.SENT

    await eventually(sent)
    assert len(wa.wa.sent) == 1
    assert [w for w, _ in wa.wa.calls].count("messages") == 4


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (100, "WhatsApp refused a parameter"),
        (131051, "does not support this kind of message"),
        (131026, "undeliverable"),
    ],
)
async def test_a_message_whatsapp_refuses_fails_with_the_reason_in_the_thread(
    wa: WhatsAppHarness, code: int, words: str
) -> None:
    await wa.text("Hallo?")
    await wa.harness.settled()
    wa.wa.fail_next("messages", code)
    ts = await wa.agent_replies("Antwort")
    await wa.harness.settled()

    assert await state_of(ts) is DeliveryState.FAILED
    text = await wa.thread_text()
    assert words in text
    assert f"WhatsApp error {code}" in text


async def test_a_refused_token_parks_the_reply_until_it_works(wa: WhatsAppHarness) -> None:
    await wa.text("Hallo?")
    await wa.harness.settled()
    wa.wa.fail_next("messages", 190, status=401)
    ts = await wa.agent_replies("Antwort")

    async def parked() -> bool:
        return await Job.filter(kind=DELIVER_REPLY.name, state=JobState.PARKED).exists()

    await eventually(parked)
    job = await Job.get(kind=DELIVER_REPLY.name)
    assert "WHATSAPP_TOKEN" in job.last_error
    assert await state_of(ts) is DeliveryState.PENDING


async def test_a_failed_status_for_the_closed_window_offers_the_templates(
    wa: WhatsAppHarness,
) -> None:
    await wa.text("Hallo?")
    await wa.harness.settled()
    ts = await wa.agent_replies("Antwort")
    (sent,) = await wa.sent(1)

    assert await wa.deliver(wa.wa.status(sent.wamid, "failed", MARIA, error_code=131047)) == 200
    await wa.harness.settled()

    assert await state_of(ts) is DeliveryState.FAILED
    text = await wa.thread_text()
    assert "24-hour window closed" in text
    assert "`order_follow_up`, `hello`" in text
