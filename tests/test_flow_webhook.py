"""A web chat widget posts signed JSON to /webhooks/<source>; replies go to its callback URL."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.webhook.signing import signature_problem, signed_headers
from bot.errors import ConfigError
from bot.shapes import ChannelKind, DeliveryState
from models import Conversation, Identity, Message
from standins.callbacks import CallbackReceiver
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import Harness, SettingsFactory, eventually, running
from tests.test_flow_email_to_slack import all_text

SECRET = "widget-secret-0123456789abcdef"
OTHER_SECRET = "forms-secret-0123456789abcdef"


def event(text: str = "Hallo, wo bleibt meine Lieferung?", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": "evt-1001",
        "conversation_id": "chat-42",
        "sender": {"id": "visitor-7", "name": "Jonas Weber", "email": "jonas@example.org"},
        "text": text,
    }
    body.update(fields)
    return body


class WebhookHarness:
    """The service with a ``widget`` and a ``forms`` source, and the widget's callback receiver."""

    def __init__(self, harness: Harness, receiver: CallbackReceiver) -> None:
        self.harness = harness
        self.slack = harness.slack
        self.receiver = receiver
        self.base = f"http://127.0.0.1:{harness.service.http_port}"

    async def post(
        self,
        body: dict[str, Any] | bytes,
        *,
        source: str = "widget",
        secret: str | None = SECRET,
        timestamp: float | None = None,
    ) -> tuple[int, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers = signed_headers(secret, raw, now=timestamp)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.base}/webhooks/{source}", data=raw, headers=headers) as response,
        ):
            answer: dict[str, Any] = await response.json()
            return response.status, answer

    async def thread(self) -> list[dict[str, Any]]:
        return await self.harness.only_thread()

    async def agent_replies(self, text: str) -> str:
        return await self.harness.reply_in_only_conversation(text)


@asynccontextmanager
async def webhook_service(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    *,
    allow_private: bool = True,
) -> AsyncIterator[WebhookHarness]:
    async with CallbackReceiver(SECRET) as receiver:
        extra = f"""
[[webhooks]]
name = "widget"
callback_url = "{receiver.url}"
secret_env = "WEBHOOK_WIDGET_SECRET"
allow_private_attachment_urls = {str(allow_private).lower()}
max_attachment_bytes = 1000

[[webhooks]]
name = "forms"
callback_url = "http://127.0.0.1:9/never-called"
secret_env = "WEBHOOK_FORMS_SECRET"
"""
        env = {"WEBHOOK_WIDGET_SECRET": SECRET, "WEBHOOK_FORMS_SECRET": OTHER_SECRET}
        async with running(make_settings, slack, relay, extra=extra, env=env) as harness:
            yield WebhookHarness(harness, receiver)


@pytest.fixture
async def hook(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> AsyncIterator[WebhookHarness]:
    async with webhook_service(make_settings, slack, relay) as started:
        yield started


@pytest.fixture
async def files() -> AsyncIterator[str]:
    """A loopback file server: /invoice.pdf, /big.bin (2 KB), /gone (404), /moved (redirect)."""
    app = web.Application()

    async def invoice(request: web.Request) -> web.Response:
        return web.Response(body=b"%PDF invoice", content_type="application/pdf")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"0" * 2000, content_type="application/octet-stream")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/invoice.pdf")

    app.router.add_get("/invoice.pdf", invoice)
    app.router.add_get("/big.bin", big)
    app.router.add_get("/moved", moved)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_a_signed_message_is_committed_and_opens_a_thread(hook: WebhookHarness) -> None:
    status, answer = await hook.post(event())

    assert status == 200
    assert answer["ok"] is True
    # 200 means stored: the message and its job are there before Slack is involved.
    assert await Message.exists(id=answer["message_id"])
    root, posted = await hook.thread()
    assert "Jonas Weber (jonas@example.org)" in all_text(root)
    assert "Web" in all_text(root)
    assert "wo bleibt meine Lieferung" in all_text(posted)
    conversation = await Conversation.get()
    assert conversation.channel is ChannelKind.WEBHOOK
    assert conversation.thread_key == "widget:chat-42"
    identity = await Identity.get()
    assert identity.address == "widget:visitor-7"


@pytest.mark.parametrize(
    ("secret", "timestamp", "reason"),
    [
        (None, None, "headers are required"),
        ("not-the-widget-secret-at-all", None, "does not match"),
        (SECRET, time.time() - 3600, "away from now"),
        (SECRET, time.time() + 3600, "away from now"),
        (OTHER_SECRET, None, "does not match"),
    ],
)
async def test_unsigned_wrongly_signed_and_stale_requests_get_401(
    hook: WebhookHarness, secret: str | None, timestamp: float | None, reason: str
) -> None:
    status, answer = await hook.post(event(), secret=secret, timestamp=timestamp)

    assert status == 401
    assert reason in answer["error"]
    await hook.harness.settled()
    assert not await Message.exists()
    assert hook.slack.channel_messages("support") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({k: v for k, v in event().items() if k != "event_id"}).encode(), "event_id"),
        (json.dumps(event(conversation_id="")).encode(), "conversation_id"),
        (json.dumps(event(sender={"name": "Jonas"})).encode(), "sender.id"),
        (json.dumps(event(sender="Jonas")).encode(), "'sender'"),
        (json.dumps({k: v for k, v in event().items() if k != "text"}).encode(), "'text'"),
        (json.dumps({**event(), "text": 42}).encode(), "'text'"),
        (json.dumps(event(attachments="https://x.example/a")).encode(), "'attachments'"),
        (json.dumps(event(attachments=[{"href": "x"}])).encode(), "attachments[0]"),
    ],
)
async def test_malformed_requests_get_400_naming_the_field(
    hook: WebhookHarness, body: bytes, field: str
) -> None:
    status, answer = await hook.post(body)

    assert status == 400
    assert field in answer["error"]
    assert not await Message.exists()


async def test_an_unknown_source_gets_404(hook: WebhookHarness) -> None:
    status, _ = await hook.post(event(), source="nobody")
    assert status == 404


async def test_the_same_event_posted_twice_is_shown_once(hook: WebhookHarness) -> None:
    first = await hook.post(event())
    second = await hook.post(event())

    assert first[0] == second[0] == 200
    assert second[1]["duplicate"] is True
    assert len(await hook.thread()) == 2


async def test_the_same_ids_from_two_sources_are_two_conversations(hook: WebhookHarness) -> None:
    assert (await hook.post(event()))[0] == 200
    assert (await hook.post(event(), source="forms", secret=OTHER_SECRET))[0] == 200
    await hook.harness.settled()

    assert await Conversation.all().count() == 2
    assert await Identity.all().count() == 2


async def test_a_follow_up_joins_the_conversation(hook: WebhookHarness) -> None:
    assert (await hook.post(event()))[0] == 200
    assert (await hook.post(event("Noch da?", event_id="evt-1002")))[0] == 200

    assert len(await hook.thread()) == 3


async def test_linked_files_are_fetched_and_uploaded(hook: WebhookHarness, files: str) -> None:
    body = event(
        "Rechnung anbei",
        attachments=[f"{files}/invoice.pdf", {"url": f"{files}/moved", "filename": "again.pdf"}],
    )
    status, _ = await hook.post(body)

    assert status == 200
    thread = await hook.thread()
    uploaded = {
        f["name"]: hook.slack.file_content(f["id"]) for m in thread for f in m.get("files", [])
    }
    assert uploaded == {"invoice.pdf": b"%PDF invoice", "again.pdf": b"%PDF invoice"}


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/big.bin", "bigger than the limit"), ("/gone", "answered 404")],
)
async def test_a_refused_file_gets_400_and_nothing_is_stored(
    hook: WebhookHarness, files: str, path: str, reason: str
) -> None:
    status, answer = await hook.post(event(attachments=[f"{files}{path}"]))

    assert status == 400
    assert "attachments" in answer["error"]
    assert reason in answer["error"]
    assert not await Message.exists()


async def test_files_on_private_addresses_are_refused_by_default(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink, files: str
) -> None:
    async with webhook_service(make_settings, slack, relay, allow_private=False) as hook:
        for url in (
            f"{files}/invoice.pdf",
            "http://localhost/secret",
            "http://10.0.0.8/internal",
            "http://[::1]/x",
            "file:///etc/passwd",
        ):
            status, answer = await hook.post(event(attachments=[url]))
            assert status == 400, url
            assert "attachments" in answer["error"]
        assert not await Message.exists()


async def test_a_reply_goes_to_the_callback_signed(hook: WebhookHarness) -> None:
    assert (await hook.post(event()))[0] == 200
    await hook.harness.settled()
    ts = await hook.agent_replies("Hallo Jonas, morgen <b>sicher</b> & pünktlich.")

    (reply,) = await hook.receiver.wait_for(1)
    await hook.harness.settled()
    assert reply["type"] == "reply"
    assert reply["conversation_id"] == "chat-42"
    assert reply["recipient"] == {"id": "visitor-7"}
    assert reply["agent"] == {"name": "Anna"}
    assert reply["text"] == "Hallo Jonas, morgen <b>sicher</b> & pünktlich."
    stored = await Message.get(chat_ts=ts)
    assert stored.delivery_state is DeliveryState.SENT
    assert stored.external_id == reply["event_id"]


async def test_a_callback_outage_delays_the_reply_and_then_delivers_it(
    hook: WebhookHarness,
) -> None:
    assert (await hook.post(event()))[0] == 200
    await hook.harness.settled()
    hook.receiver.fail_next(503, count=2)
    ts = await hook.agent_replies("Trotz Ausfall")

    (reply,) = await hook.receiver.wait_for(1)
    assert reply["text"] == "Trotz Ausfall"
    assert hook.receiver.refused == [503, 503]
    await eventually(lambda: _state_is(ts, DeliveryState.SENT))


async def test_a_refusing_callback_fails_with_the_reason_in_the_thread(
    hook: WebhookHarness,
) -> None:
    assert (await hook.post(event()))[0] == 200
    await hook.harness.settled()
    hook.receiver.fail_next(410)
    ts = await hook.agent_replies("Hallo?")

    conversation = await Conversation.get()
    notice = await hook.slack.wait_for_message(
        "support",
        lambda m: "not delivered" in m.get("text", ""),
        thread_ts=conversation.chat_thread_ts,
    )
    assert "widget callback answered 410" in notice["text"]
    assert await _state_is(ts, DeliveryState.FAILED)


async def test_mentions_in_a_web_message_ping_nobody(hook: WebhookHarness) -> None:
    hostile = "<!channel> <!here> <@U0AGENT1> <https://evil.example|bank.example> & more"
    assert (await hook.post(event(hostile)))[0] == 200

    thread = await hook.thread()
    for message in thread:
        rendered = all_text(message)
        for command in ("<!channel>", "<!here>", "<@U0AGENT1>", "<https://evil"):
            assert command not in rendered
    assert "&lt;!channel&gt;" in all_text(thread[1])


def test_the_signature_covers_timestamp_and_body() -> None:
    body = b'{"event_id": "1"}'
    headers = signed_headers(SECRET, body, now=1_700_000_000)
    assert signature_problem(SECRET, headers, body, now=1_700_000_100) == ""
    assert signature_problem(SECRET, headers, body + b" ", now=1_700_000_100)
    assert signature_problem(SECRET, headers, body, now=1_700_000_400)
    moved = {**headers, "X-Switchboard-Timestamp": "1700000001"}
    assert signature_problem(SECRET, moved, body, now=1_700_000_100)


def test_a_source_without_its_secret_stops_start_up(make_settings: SettingsFactory) -> None:
    extra = """
[[webhooks]]
name = "widget"
callback_url = "https://chat.example.com/replies"
secret_env = "WEBHOOK_WIDGET_SECRET"
"""
    with pytest.raises(ConfigError) as problem:
        make_settings(extra=extra)
    assert problem.value.setting == "webhooks[0].secret_env"
    assert "WEBHOOK_WIDGET_SECRET" in problem.value.problem


async def _state_is(ts: str, state: DeliveryState) -> bool:
    message = await Message.get_or_none(chat_ts=ts)
    return message is not None and message.delivery_state is state
