"""A customer writes to the Telegram bot; agents answer in the Slack thread and the bot replies.

python-telegram-bot talks to the loopback Bot API (standins/telegram.py) through its
base_url setting; updates are captured Update JSON (tests/payloads/telegram) posted to the
webhook the way Telegram posts them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from adapters.cli.telegram import set_webhook
from adapters.telegram.sender import split_text
from adapters.telegram.webhook import WEBHOOK_PATH
from bot.shapes import ChannelKind, DeliveryState
from models import Conversation, ConversationStatus, Identity, Message
from standins.mail import SmtpSink
from standins.slack import SandboxFile, SlackSandbox
from standins.telegram import TelegramSandbox
from tests.conftest import AGENT, Harness, SettingsFactory, eventually, running
from tests.test_flow_email_to_slack import all_text

PAYLOADS = Path(__file__).parent / "payloads" / "telegram"
SECRET = "test-telegram-webhook-secret"
MARIA = 5550001111
PHOTO_JPEG = b"\xff\xd8\xff\xe0 photo of a crushed parcel"


def payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramSandbox]:
    """The Telegram Bot API on loopback."""
    async with TelegramSandbox() as sandbox:
        yield sandbox


class TelegramHarness:
    """The running service with Slack, the mail relay and the Telegram sandbox."""

    def __init__(self, harness: Harness, telegram: TelegramSandbox) -> None:
        self.harness = harness
        self.slack = harness.slack
        self.telegram = telegram
        self.webhook_url = f"http://127.0.0.1:{harness.service.http_port}{WEBHOOK_PATH}"

    async def deliver(self, update: dict[str, Any], *, secret: str | None = SECRET) -> int:
        return await self.telegram.deliver(self.webhook_url, update, secret=secret)

    async def thread(self) -> list[dict[str, Any]]:
        return await self.harness.only_thread()

    async def agent_replies(self, text: str) -> str:
        return await self.harness.reply_in_only_conversation(text)


@asynccontextmanager
async def telegram_service(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    telegram: TelegramSandbox,
    *,
    mode: str = "webhook",
    settings: str = "",
) -> AsyncIterator[TelegramHarness]:
    extra = f"""
[telegram]
enabled = true
mode = "{mode}"
api_url = "{telegram.url}"
{settings}
"""
    env = {"TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_WEBHOOK_SECRET": SECRET}
    async with running(make_settings, slack, relay, extra=extra, env=env) as harness:
        yield TelegramHarness(harness, telegram)


@pytest.fixture
async def tg(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    telegram: TelegramSandbox,
) -> AsyncIterator[TelegramHarness]:
    async with telegram_service(make_settings, slack, relay, telegram) as started:
        yield started


def thread_text(thread: list[dict[str, Any]]) -> str:
    return "\n".join(all_text(m) for m in thread)


def thread_files(thread: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for m in thread for f in m.get("files", [])]


async def test_a_text_message_opens_a_thread_in_the_skill_channel(tg: TelegramHarness) -> None:
    assert await tg.deliver(payload("text")) == 200

    root, posted = await tg.thread()
    assert "Maria Schmidt (@maria_s)" in all_text(root)
    assert "Telegram" in all_text(root)
    assert "Bestellung 4711 ist noch nicht angekommen" in all_text(posted)
    conversation = await Conversation.get().prefetch_related("identity")
    assert conversation.channel is ChannelKind.TELEGRAM
    assert conversation.thread_key == str(MARIA)
    identity = await Identity.get()
    assert (identity.channel, identity.address, identity.display_name) == (
        ChannelKind.TELEGRAM,
        str(MARIA),
        "Maria Schmidt (@maria_s)",
    )


@pytest.mark.parametrize("secret", [None, "", "not-the-secret"])
async def test_a_wrong_or_missing_secret_gets_403_and_stores_nothing(
    tg: TelegramHarness, secret: str | None
) -> None:
    assert await tg.deliver(payload("text"), secret=secret) == 403
    await tg.harness.settled()
    assert not await Message.exists()
    assert tg.slack.channel_messages("support") == []


async def test_the_same_update_delivered_twice_is_shown_once(tg: TelegramHarness) -> None:
    assert await tg.deliver(payload("text")) == 200
    assert await tg.deliver(payload("text")) == 200

    assert len(await tg.thread()) == 2
    assert await Message.all().count() == 1


async def test_a_photo_is_uploaded_with_its_caption(tg: TelegramHarness) -> None:
    update = payload("photo_caption")
    biggest = update["message"]["photo"][-1]
    tg.telegram.add_file(
        PHOTO_JPEG,
        kind="photos",
        extension="jpg",
        file_id=biggest["file_id"],
        file_unique_id=biggest["file_unique_id"],
    )
    assert await tg.deliver(update) == 200

    thread = await tg.thread()
    assert "So sah das Paket bei der Lieferung aus" in thread_text(thread)
    (file,) = thread_files(thread)
    assert file["name"] == "photo_AQADJOExG51haUl9.jpg"
    assert tg.slack.file_content(file["id"]) == PHOTO_JPEG
    assert [m for m, _ in tg.telegram.calls] == ["getMe", "getFile"]


async def test_documents_voice_notes_and_videos_are_attachments(tg: TelegramHarness) -> None:
    for name, field, content in (
        ("document", "document", b"%PDF-1.7 Rechnung"),
        ("voice", "voice", b"OggS voice"),
        ("video", "video", b"\x00\x00\x00\x18ftypmp42 video"),
    ):
        update = payload(name)
        ids = update["message"][field]
        tg.telegram.add_file(content, file_id=ids["file_id"], file_unique_id=ids["file_unique_id"])
        assert await tg.deliver(update) == 200

    thread = await tg.thread()
    names = {f["name"]: tg.slack.file_content(f["id"]) for f in thread_files(thread)}
    assert names == {
        "Rechnung_2024-1187.pdf": b"%PDF-1.7 Rechnung",
        "voice_AgADlVYAAp1haUk.ogg": b"OggS voice",
        "unboxing.mp4": b"\x00\x00\x00\x18ftypmp42 video",
    }
    assert "Voice message" in thread_text(thread)


async def test_contacts_and_locations_are_readable(tg: TelegramHarness) -> None:
    assert await tg.deliver(payload("contact")) == 200
    assert await tg.deliver(payload("location")) == 200

    text = thread_text(await tg.thread())
    assert "Contact: Maria Schmidt, +4915112345678" in text
    assert "Location: 52.520008, 13.404954" in text
    assert "openstreetmap.org/?mlat=52.520008&amp;mlon=13.404954" in text


async def test_an_edited_message_is_shown_as_an_edit_in_the_same_thread(
    tg: TelegramHarness,
) -> None:
    assert await tg.deliver(payload("text")) == 200
    assert await tg.deliver(payload("edited_message")) == 200

    _, first, edit = await tg.thread()
    assert "4711" in all_text(first)
    assert "Edited message" in all_text(edit)
    assert "4712" in all_text(edit)
    assert await Conversation.all().count() == 1


async def test_mentions_in_a_telegram_message_ping_nobody(tg: TelegramHarness) -> None:
    update = tg.telegram.text_update("<!channel> <@U0AGENT1> <https://evil.example|bank> & co")
    assert await tg.deliver(update) == 200

    for message in await tg.thread():
        rendered = all_text(message)
        for command in ("<!channel>", "<@U0AGENT1>", "<https://evil"):
            assert command not in rendered
    assert "&lt;!channel&gt;" in thread_text(await tg.thread())


async def test_a_thread_reply_reaches_the_customer_as_plain_text(tg: TelegramHarness) -> None:
    assert await tg.deliver(payload("text")) == 200
    await tg.harness.settled()
    # Slack hands the text over with &, < and > escaped; Telegram gets what the agent typed.
    typed = "Hallo Maria, siehe https://track.example/4711 & *morgen* <b>bald</b> _x_"
    ts = await tg.agent_replies(typed)

    (sent,) = await tg.telegram.wait_for_sent(1)
    await tg.harness.settled()
    assert sent.chat_id == MARIA
    assert sent.kind == "text"
    assert sent.parse_mode == ""
    assert sent.text == typed
    reply = await Message.get(chat_ts=ts)
    assert reply.delivery_state is DeliveryState.SENT
    assert reply.external_id == "1"


async def test_a_long_reply_is_split_at_telegrams_limit(tg: TelegramHarness) -> None:
    assert await tg.deliver(payload("text")) == 200
    await tg.harness.settled()
    paragraph = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30
    text = "\n".join([paragraph] * 6)
    await tg.agent_replies(text)

    sent = await tg.telegram.wait_for_sent(3)
    await tg.harness.settled()
    assert len(sent) == 3
    assert all(len(m.text) <= 4096 for m in sent)
    # Cut at line breaks; only the whitespace at a cut is dropped.
    assert "\n".join(m.text for m in sent).split() == text.split()


def test_split_text_cuts_at_spaces_and_never_loses_characters() -> None:
    text = "ab " * 3000
    parts = split_text(text, 100)
    assert all(len(p) <= 100 for p in parts)
    assert " ".join(parts) == text.strip()
    assert split_text("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]


async def test_slack_files_go_as_photo_and_document(tg: TelegramHarness) -> None:
    assert await tg.deliver(payload("text")) == 200
    await tg.harness.settled()
    conversation = await Conversation.get()
    posted = tg.slack.post_as_user(
        "support",
        AGENT,
        "Etikett und Foto anbei",
        thread_ts=conversation.chat_thread_ts,
        files=[
            SandboxFile("label.pdf", b"%PDF label", "application/pdf"),
            SandboxFile("lager.jpg", PHOTO_JPEG, "image/jpeg"),
        ],
    )
    await tg.harness.events.send_message_event("support", posted["ts"])

    sent = await tg.telegram.wait_for_sent(3)
    assert [(m.kind, m.filename, m.content) for m in sent[1:]] == [
        ("document", "label.pdf", b"%PDF label"),
        ("photo", "lager.jpg", PHOTO_JPEG),
    ]


async def test_flood_control_delays_the_reply_and_then_delivers_it(tg: TelegramHarness) -> None:
    assert await tg.deliver(payload("text")) == 200
    await tg.harness.settled()
    tg.telegram.fail_next("sendMessage", status=429, retry_after=1)
    ts = await tg.agent_replies("Kommt gleich")

    (sent,) = await tg.telegram.wait_for_sent(1)
    assert sent.text == "Kommt gleich"
    await eventually(lambda: _state_is(ts, DeliveryState.SENT))
    attempts = [m for m, _ in tg.telegram.calls if m == "sendMessage"]
    assert len(attempts) == 2


async def test_a_customer_who_blocked_the_bot_gets_a_clear_failure_in_slack(
    tg: TelegramHarness,
) -> None:
    assert await tg.deliver(payload("text")) == 200
    await tg.harness.settled()
    tg.telegram.block(MARIA)
    ts = await tg.agent_replies("Sind Sie noch da?")

    conversation = await Conversation.get()
    notice = await tg.slack.wait_for_message(
        "support",
        lambda m: "not delivered" in m.get("text", ""),
        thread_ts=conversation.chat_thread_ts,
    )
    assert "blocked the Telegram bot" in notice["text"]
    assert await _state_is(ts, DeliveryState.FAILED)
    # Permanent: tried once, not retried until the job gives up.
    assert [m for m, _ in tg.telegram.calls].count("sendMessage") == 1


async def test_after_a_conversation_is_closed_the_next_message_opens_a_new_one(
    tg: TelegramHarness,
) -> None:
    assert await tg.deliver(payload("text")) == 200
    await tg.harness.settled()
    await Conversation.all().update(status=ConversationStatus.CLOSED)
    assert await tg.deliver(tg.telegram.text_update("Noch eine Frage", user_id=MARIA)) == 200
    await tg.harness.settled()

    assert await Conversation.all().count() == 2
    assert len(tg.slack.channel_messages("support")) == 2


async def test_reopening_closed_chats_is_a_setting(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    telegram: TelegramSandbox,
) -> None:
    async with telegram_service(
        make_settings, slack, relay, telegram, settings="new_conversation_after_close = false"
    ) as tg:
        assert await tg.deliver(payload("text")) == 200
        await tg.harness.settled()
        await Conversation.all().update(status=ConversationStatus.CLOSED)
        assert await tg.deliver(tg.telegram.text_update("Noch eine Frage", user_id=MARIA)) == 200
        thread = await tg.thread()
        conversation = await Conversation.get()

    assert len(thread) == 3
    assert conversation.status is ConversationStatus.OPEN


async def test_polling_mode_takes_updates_without_a_webhook(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    telegram: TelegramSandbox,
) -> None:
    telegram.webhook.url = "https://old.example/telegram/webhook"
    async with telegram_service(make_settings, slack, relay, telegram, mode="polling") as tg:
        await telegram.queue_update(payload("text"))
        await eventually(lambda: Message.exists())
        thread = await tg.thread()
        await tg.agent_replies("Wir schauen nach.")
        (sent,) = await telegram.wait_for_sent(1)
        # The next getUpdates confirms the stored update.
        await eventually(_async(lambda: telegram.pending_updates == 0))
        # No webhook route in polling mode.
        assert await telegram.deliver(tg.webhook_url, payload("contact"), secret=SECRET) == 404

    assert "Bestellung 4711" in thread_text(thread)
    assert sent.text == "Wir schauen nach."
    assert telegram.webhook.url == ""


async def test_set_webhook_registers_the_public_url_and_secret(
    make_settings: SettingsFactory, telegram: TelegramSandbox
) -> None:
    settings = make_settings(
        extra=f"""
[telegram]
enabled = true
api_url = "{telegram.url}"
""",
        env={"TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_WEBHOOK_SECRET": SECRET},
    )
    settings = replace(
        settings, service=replace(settings.service, public_url="https://support.example.com/")
    )
    url = await set_webhook(settings)

    assert url == "https://support.example.com/telegram/webhook"
    assert telegram.webhook.url == url
    assert telegram.webhook.secret_token == SECRET
    assert telegram.webhook.allowed_updates == ["message", "edited_message"]


async def _state_is(ts: str, state: DeliveryState) -> bool:
    message = await Message.get_or_none(chat_ts=ts)
    return message is not None and message.delivery_state is state


def _async(check: Any) -> Any:
    async def condition() -> bool:
        return bool(check())

    return condition
