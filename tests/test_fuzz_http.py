"""Every HTTP route of the running service against forged, replayed, malformed and oversized input.

Each example sends one hostile request and then a valid one. The hostile request gets a clear
4xx answer (never a 5xx), stores nothing unless it was authenticated, and the valid request
right after it still works.

Hypothesis runs the examples against one running service per test, so the function-scoped
fixtures are shared on purpose: that the service outlives every example unchanged is the
property under test (hence the suppressed ``function_scoped_fixture`` health check).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from urllib.parse import urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.slack.render import escape
from adapters.telegram.webhook import SECRET_HEADER, WEBHOOK_PATH
from adapters.webhook.signing import signed_headers
from models import Job, Message
from standins.callbacks import CallbackReceiver
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from standins.telegram import TelegramSandbox
from tests.conftest import SIGNING_SECRET, Harness, SettingsFactory, running

TELEGRAM_SECRET = "fuzz-telegram-webhook-secret"
WEBHOOK_SECRET = "fuzz-widget-secret-0123456789abcdef"
TOO_BIG = 3 * 1024 * 1024  # the app takes bodies up to 2 MiB

shared_service = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class Answer:
    status: int
    body: bytes


class Door:
    """The running service with Slack, Telegram and a ``widget`` webhook source, and a client."""

    def __init__(self, harness: Harness, telegram: TelegramSandbox, http: aiohttp.ClientSession):
        self.harness = harness
        self.telegram = telegram
        self.http = http
        self.base = f"http://127.0.0.1:{harness.service.http_port}"

    async def request(
        self, path: str, body: bytes = b"", headers: dict[str, str] | None = None, method: str = ""
    ) -> Answer:
        async with self.http.request(
            method or ("POST" if body or headers else "GET"),
            self.base + path,
            # aiohttp warns about big bodies given as bytes (and warnings are errors here).
            data=io.BytesIO(body) if len(body) > 1024 * 1024 else body,
            headers=headers or {},
        ) as response:
            return Answer(response.status, await response.read())

    async def stored(self) -> tuple[int, int]:
        return await Message.all().count(), await Job.all().count()

    async def slack_still_answers(self) -> None:
        challenge = f"c{time.monotonic_ns()}"
        body = json.dumps({"token": "t", "challenge": challenge, "type": "url_verification"})
        answer = await self.request("/slack/events", body.encode(), slack_headers(body.encode()))
        assert answer.status == 200
        assert challenge.encode() in answer.body

    async def telegram_still_stores(self) -> None:
        before, _ = await self.stored()
        update = self.telegram.text_update("Wo bleibt mein Paket?")
        answer = await self.request(
            WEBHOOK_PATH, json.dumps(update).encode(), {SECRET_HEADER: TELEGRAM_SECRET}
        )
        assert answer.status == 200, answer.body
        assert (await self.stored())[0] == before + 1

    async def webhook_still_stores(self) -> None:
        before, _ = await self.stored()
        event = {
            "event_id": f"evt-{time.monotonic_ns()}",
            "conversation_id": "chat-1",
            "sender": {"id": "visitor-1", "name": "Jonas"},
            "text": "Hallo",
        }
        body = json.dumps(event).encode()
        answer = await self.request("/webhooks/widget", body, signed_headers(WEBHOOK_SECRET, body))
        assert answer.status == 200, answer.body
        assert (await self.stored())[0] == before + 1


@asynccontextmanager
async def door_service(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink, *, run_jobs: bool
) -> AsyncIterator[Door]:
    """The service with every inbound channel open: SMTP, Slack, Telegram, a webhook source."""
    async with TelegramSandbox() as telegram, CallbackReceiver(WEBHOOK_SECRET) as receiver:
        extra = f"""
[telegram]
enabled = true
mode = "webhook"
api_url = "{telegram.url}"

[[webhooks]]
name = "widget"
callback_url = "{receiver.url}"
secret_env = "WEBHOOK_WIDGET_SECRET"
"""
        env = {
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
            "WEBHOOK_WIDGET_SECRET": WEBHOOK_SECRET,
        }
        async with (
            running(make_settings, slack, relay, run_jobs=run_jobs, extra=extra, env=env) as h,
            aiohttp.ClientSession() as http,
        ):
            yield Door(h, telegram, http)


@pytest.fixture
async def door(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> AsyncIterator[Door]:
    # Jobs do not run: what counts is what each request stores.
    async with door_service(make_settings, slack, relay, run_jobs=False) as started:
        yield started


def slack_signature(body: bytes, timestamp: str, secret: str = SIGNING_SECRET) -> str:
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return f"v0={digest.hexdigest()}"


def slack_headers(
    body: bytes, *, timestamp: int | None = None, content_type: str = "application/json"
) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": slack_signature(body, stamp),
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
NASTY_BODIES = [
    b"",
    b"{",
    b'{"a": ',
    b"[" * 50_000 + b"]" * 50_000,  # deeper than the JSON parser's recursion limit
    b'{"update_id": 1, "n": ' + b"9" * 5000 + b"}",  # more digits than int() takes
    b"\xff\xfe{\x00}\x00",
    b'{"text": "\xc3\x28"}',  # not UTF-8
    b"\x00" * 100,
    b"payload=%7B",
    b"payload=%FF%FE",
    b"payload=" + b"%5B" * 10_000,
    b"[1, 2, 3]",
    b'"just a string"',
    b"NaN",
    b'{"type": "event_callback", "event": "not an object"}',
    b'{"type": "event_callback", "event": {"type": "message", "channel": 5, "ts": []}}',
    b'{"type": "url_verification"}',
    b'{"type": "event_callback", "event": {"type": "app_home_opened"}}',  # no user
    b'{"update_id": 1, "message": {"message_id": 1, "date": 0, "text": [null]}}',
]
slack_shaped = st.one_of(
    st.builds(
        lambda event: {"type": "event_callback", "team_id": "T1", "event": event},
        st.fixed_dictionaries(
            {"type": st.sampled_from(["message", "app_home_opened", "app_mention", "x"])},
            optional={
                "channel": json_values,
                "ts": json_values,
                "thread_ts": json_values,
                "user": json_values,
                "text": json_values,
                "subtype": json_values,
            },
        ),
    ).map(lambda data: json.dumps(data).encode()),
    json_values.map(lambda value: urlencode({"payload": json.dumps(value)}).encode()),
    st.fixed_dictionaries(
        {"command": st.just("/switchboard"), "text": st.text(max_size=40)},
        optional={"user_id": st.text(max_size=12), "channel_id": st.text(max_size=12)},
    ).map(lambda fields: urlencode(fields).encode()),
)
bodies = st.one_of(
    st.binary(max_size=400),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.sampled_from(NASTY_BODIES),
    slack_shaped,
)
header_text = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=70)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain; charset=bogus",
        "application/json; charset=utf-16",
        "multipart/form-data",
    ]
)


@st.composite
def forged_slack_headers(draw: st.DrawFn, body: bytes) -> dict[str, str]:
    """Headers Slack did not send: none, a wrong secret, a replay, a timestamp in garbage."""
    now = int(time.time())
    kind = draw(st.sampled_from(["none", "wrong secret", "replay", "future", "garbage", "other"]))
    headers = {"Content-Type": draw(content_types)}
    if kind == "none":
        return headers
    if kind == "wrong secret":
        stamp = str(now)
        signature = slack_signature(body, stamp, secret="not-the-signing-secret")
    elif kind in ("replay", "future"):
        # Correctly signed, but outside Slack's five minutes: a captured request played again.
        offset = draw(st.integers(310, 10**9))  # clear of the clock ticking meanwhile
        stamp = str(now - offset if kind == "replay" else now + offset)
        signature = slack_signature(body, stamp)
    elif kind == "garbage":
        stamp = draw(header_text)
        signature = draw(header_text)
    else:  # signed for another body
        stamp = str(now)
        signature = slack_signature(body + b" ", stamp)
    return {**headers, "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}


@shared_service
@given(data=st.data(), body=bodies)
async def test_slack_requests_not_signed_by_slack_get_401_and_store_nothing(
    door: Door, data: st.DataObject, body: bytes
) -> None:
    headers = data.draw(forged_slack_headers(body), label="headers")

    answer = await door.request("/slack/events", body, headers)

    assert answer.status == 401, answer.body
    assert await door.stored() == (0, 0)
    await door.slack_still_answers()


@shared_service
@given(body=bodies, content_type=content_types)
async def test_signed_slack_requests_with_bodies_bolt_cannot_use_get_4xx(
    door: Door, body: bytes, content_type: str
) -> None:
    headers = slack_headers(body, content_type=content_type)

    answer = await door.request("/slack/events", body, headers)

    # 200 for what bolt takes (an ack, or a slash command's answer), 4xx for the rest.
    assert answer.status == 200 or 400 <= answer.status < 500, (answer.status, answer.body)
    assert await door.stored() == (0, 0)
    await door.slack_still_answers()


@shared_service
@given(body=bodies, secret=st.none() | header_text.filter(lambda s: s != TELEGRAM_SECRET))
async def test_telegram_updates_without_the_secret_get_403_and_store_nothing(
    door: Door, body: bytes, secret: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    before = await door.stored()

    answer = await door.request(WEBHOOK_PATH, body, headers)

    assert answer.status == 403
    assert await door.stored() == before
    await door.telegram_still_stores()


telegram_shaped = st.one_of(
    bodies,
    st.fixed_dictionaries(
        {"update_id": st.integers(0, 2**40)},
        optional={
            "message": json_values,
            "edited_message": json_values,
            "callback_query": json_values,
            "channel_post": json_values,
        },
    ).map(lambda update: json.dumps(update).encode()),
    st.fixed_dictionaries(
        {
            "update_id": st.integers(0, 2**40),
            "message": st.fixed_dictionaries(
                {"message_id": st.integers(), "date": st.integers(0, 2**31)},
                optional={
                    "chat": json_values,
                    "from": json_values,
                    "text": json_values,
                    "photo": json_values,
                    "document": json_values,
                },
            ),
        }
    ).map(lambda update: json.dumps(update).encode()),
)


@shared_service
@given(body=telegram_shaped)
async def test_malformed_updates_with_the_secret_get_4xx_and_store_nothing(
    door: Door, body: bytes
) -> None:
    headers = {"Content-Type": "application/json", SECRET_HEADER: TELEGRAM_SECRET}
    before = await door.stored()

    answer = await door.request(WEBHOOK_PATH, body, headers)

    # Telegram's own secret, so a well-formed update may be stored (200); a malformed one is 400.
    assert answer.status in (200, 400), (answer.status, answer.body)
    if answer.status == 400:
        assert await door.stored() == before
    await door.telegram_still_stores()


@st.composite
def forged_webhook_headers(draw: st.DrawFn, body: bytes) -> dict[str, str]:
    kind = draw(st.sampled_from(["none", "wrong secret", "replay", "garbage", "other body"]))
    if kind == "none":
        return {"Content-Type": "application/json"}
    if kind == "wrong secret":
        return signed_headers("not-the-widget-secret", body)
    if kind == "replay":
        return signed_headers(WEBHOOK_SECRET, body, now=time.time() - draw(st.integers(310, 10**9)))
    if kind == "other body":
        return signed_headers(WEBHOOK_SECRET, body + b" ")
    return {
        "X-Switchboard-Timestamp": draw(header_text),
        "X-Switchboard-Signature": draw(header_text),
    }


@shared_service
@given(data=st.data(), body=bodies)
async def test_webhook_posts_not_signed_by_the_source_get_401_and_store_nothing(
    door: Door, data: st.DataObject, body: bytes
) -> None:
    headers = data.draw(forged_webhook_headers(body), label="headers")
    before = await door.stored()

    answer = await door.request("/webhooks/widget", body, headers)
    unknown = await door.request("/webhooks/nobody", body, signed_headers(WEBHOOK_SECRET, body))

    assert answer.status == 401, answer.body
    assert unknown.status == 404
    assert await door.stored() == before
    await door.webhook_still_stores()


webhook_shaped = st.one_of(
    bodies,
    st.fixed_dictionaries(
        {},
        optional={
            "event_id": json_values,
            "conversation_id": json_values,
            "sender": json_values,
            "text": json_values,
            "subject": json_values,
            # Only URLs nobody is asked for: refused before a connection (no DNS, no network).
            "attachments": st.lists(
                st.sampled_from(
                    ["ftp://x/y", "http://[", "http://x:99999/", "http://a..b/", "file:///etc"]
                )
                | json_values,
                max_size=3,
            ),
        },
    ).map(lambda event: json.dumps(event).encode()),
)


@shared_service
@given(body=webhook_shaped)
async def test_signed_webhook_posts_with_malformed_bodies_get_400_and_store_nothing(
    door: Door, body: bytes
) -> None:
    before = await door.stored()

    answer = await door.request("/webhooks/widget", body, signed_headers(WEBHOOK_SECRET, body))

    assert answer.status == 400, (answer.status, answer.body)
    assert json.loads(answer.body)["error"]
    assert await door.stored() == before
    await door.webhook_still_stores()


@shared_service
@given(
    path=st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#"))
    .map(lambda text: "/" + text.lstrip("/"))
    .filter(lambda path: path.rstrip("/") not in ("/healthz", "/metrics", "/slack/events")),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
)
async def test_other_paths_and_methods_get_4xx(door: Door, path: str, method: str) -> None:
    answer = await door.request(path, b"x" if method != "GET" else b"", method=method)

    assert 400 <= answer.status < 500
    assert await door.stored() == (0, 0)
    assert (await door.request("/healthz")).status == 200


async def test_health_and_metrics_answer_and_refuse_other_methods(door: Door) -> None:
    health = await door.request("/healthz")
    metrics = await door.request("/metrics")

    assert health.status == 200
    assert json.loads(health.body) == {
        "database": "ok",
        "slack": "ok",
        "jobs": "ok",
        "waiting": {},
    }
    assert metrics.status == 200
    assert b"switchboard_job_queue_depth" in metrics.body
    for path in ("/healthz", "/metrics"):
        assert (await door.request(path, b"{}", method="POST")).status == 405
    assert (await door.request("/slack/events", method="GET")).status == 405


async def test_oversized_bodies_get_413_on_every_route(door: Door) -> None:
    big = b"{" + b" " * TOO_BIG + b"}"
    routes = {
        "/slack/events": slack_headers(big),
        WEBHOOK_PATH: {SECRET_HEADER: TELEGRAM_SECRET},
        "/webhooks/widget": signed_headers(WEBHOOK_SECRET, big),
    }

    for path, headers in routes.items():
        assert (await door.request(path, big, headers)).status == 413, path
    # Without the secret, Telegram's route refuses before it reads the body.
    assert (await door.request(WEBHOOK_PATH, big, {"X-Other": "1"})).status == 403
    assert await door.stored() == (0, 0)
    await door.slack_still_answers()
    await door.telegram_still_stores()
    await door.webhook_still_stores()


async def raw_exchange(door: Door, request: bytes, *, then_give_up: bool = False) -> bytes:
    """Send bytes to the HTTP port as they are; the answer, or b"" when it just hangs up.

    ``then_give_up`` closes the sending side afterwards, as a client that gives up would: a
    request still waiting for the rest of its body must then be answered or dropped.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", door.harness.service.http_port)
    try:
        writer.write(request)
        await writer.drain()
        if then_give_up:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(65536), timeout=10)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()
        await writer.wait_closed()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.") else 0


@pytest.mark.parametrize(
    ("path", "header"),
    [
        ("/slack/events", b"X-Slack-Signature: v0=\xff\xfe"),
        ("/slack/events", b"X-Slack-Request-Timestamp: \xc2\xb2"),  # "²" passes isdigit()
        (WEBHOOK_PATH, b"X-Telegram-Bot-Api-Secret-Token: \xff\xfe"),
        ("/webhooks/widget", b"X-Switchboard-Signature: sha256=\xff\nX-Switchboard-Timestamp: 1"),
        ("/webhooks/widget", b"X-Switchboard-Timestamp: \xc2\xb2\r\nX-Switchboard-Signature: x"),
    ],
)
async def test_header_bytes_that_are_not_utf8_are_refused_not_a_crash(
    door: Door, path: str, header: bytes
) -> None:
    header = header.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    request = (
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nConnection: close\r\n"
        ).encode()
        + header
        + b"\r\n\r\n{}"
    )

    status = status_of(await raw_exchange(door, request))

    assert status in (400, 401, 403), status
    assert await door.stored() == (0, 0)
    await door.slack_still_answers()


@shared_service
@given(garbage=st.binary(min_size=1, max_size=300))
async def test_bytes_that_are_not_http_get_400_or_a_hang_up(door: Door, garbage: bytes) -> None:
    response = await raw_exchange(door, garbage + b"\r\n\r\n", then_give_up=True)

    assert response == b"" or 400 <= status_of(response) < 500, response[:200]
    assert await door.stored() == (0, 0)
    assert (await door.request("/healthz")).status == 200


async def test_every_nasty_body_gets_4xx_on_every_route_that_reads_json(door: Door) -> None:
    for body in NASTY_BODIES:
        answers = {
            "slack": await door.request("/slack/events", body, slack_headers(body)),
            "telegram": await door.request(WEBHOOK_PATH, body, {SECRET_HEADER: TELEGRAM_SECRET}),
            "webhook": await door.request(
                "/webhooks/widget", body, signed_headers(WEBHOOK_SECRET, body)
            ),
        }
        # Slack answers 200 to what bolt acknowledges without a listener (url_verification).
        assert answers["slack"].status in (200, 400, 404), (body[:40], answers["slack"])
        assert answers["telegram"].status == 400, (body[:40], answers["telegram"])
        assert answers["webhook"].status == 400, (body[:40], answers["webhook"])
    assert await door.stored() == (0, 0)


@pytest.mark.parametrize(
    "url",
    ["http://[", "http://[::1/x", "http://x:99999/", "http://a..b/", "ftp://x/y", "http:///x"],
)
async def test_attachment_urls_that_cannot_be_fetched_ever_get_400(door: Door, url: str) -> None:
    event = {
        "event_id": "evt-1",
        "conversation_id": "chat-1",
        "sender": {"id": "visitor-1"},
        "text": "see the file",
        "attachments": [url],
    }
    body = json.dumps(event).encode()

    answer = await door.request("/webhooks/widget", body, signed_headers(WEBHOOK_SECRET, body))

    assert answer.status == 400
    assert "field 'attachments'" in json.loads(answer.body)["error"]
    assert await door.stored() == (0, 0)


HOSTILE = (
    "<!channel> <!here> <@U123> <!subteam^S1> <https://evil.example|https://bank.example> *bold*"
)
COMMANDS = ("<!channel>", "<!here>", "<@U123>", "<!subteam^S1>", "<https://evil.example")


async def hostile_mail(door: Door) -> list[str]:
    message = EmailMessage()
    message["To"] = "support@shop.example"
    message["Subject"] = f"subject {HOSTILE}"
    message.set_content(f"body {HOSTILE}")
    # A file name is cut at "/" (no paths), so it carries the commands without the link.
    filename = "file <!channel> <!here> <@U123> <!subteam^S1> *bold*.pdf"
    message.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename=filename)
    # Written out by hand: the standard library drops the quotes around such a display name.
    sender = f'From: "name {HOSTILE}" <kim@customer.example.org>\r\n'.encode()
    await door.harness.send_mail(sender + message.as_bytes(policy=policy.SMTP))
    return [f"name {HOSTILE}", f"subject {HOSTILE}", f"body {HOSTILE}", filename]


async def hostile_telegram(door: Door) -> list[str]:
    # Shown together as "first last (@username)", and names are kept to 255 characters.
    first, last = "first <!channel> <!subteam^S1> *bold*", "last <@U123> <!here>"
    username = "<https://evil.example|https://bank.example>"
    text = door.telegram.text_update(
        f"text {HOSTILE}", first_name=first, last_name=last, username=username
    )
    document = door.telegram.text_update("", first_name=first, last_name=last, username=username)
    del document["message"]["text"]
    filename = "file <!channel> <@U123> *bold*.pdf"
    ids = door.telegram.add_file(b"%PDF", extension="pdf")
    document["message"]["document"] = {
        **ids,
        "file_name": filename,
        "mime_type": "application/pdf",
    }
    document["message"]["caption"] = f"caption {HOSTILE}"
    for update in (text, document):
        assert (
            await door.telegram.deliver(door.base + WEBHOOK_PATH, update, secret=TELEGRAM_SECRET)
            == 200
        )
    return [first, last, username, f"text {HOSTILE}", f"caption {HOSTILE}", filename]


async def hostile_web_message(door: Door) -> list[str]:
    event = {
        "event_id": "evt-hostile",
        "conversation_id": "chat-1",
        "sender": {"id": "visitor-1", "name": f"name {HOSTILE}"},
        "subject": f"subject {HOSTILE}",
        "text": f"text {HOSTILE}",
    }
    body = json.dumps(event).encode()
    answer = await door.request("/webhooks/widget", body, signed_headers(WEBHOOK_SECRET, body))
    assert answer.status == 200, answer.body
    return [f"name {HOSTILE}", f"subject {HOSTILE}", f"text {HOSTILE}"]


@pytest.mark.parametrize(
    "deliver",
    [hostile_mail, hostile_telegram, hostile_web_message],
    ids=["e-mail", "telegram", "webhook"],
)
async def test_mentions_and_disguised_links_from_customers_reach_slack_as_text(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    deliver: Callable[[Door], Awaitable[list[str]]],
) -> None:
    async with door_service(make_settings, slack, relay, run_jobs=True) as started:
        fields = await deliver(started)
        await started.harness.settled()

        posted = [
            message
            for root in slack.channel_messages("support")
            for message in slack.thread("support", root["ts"])
        ]
    rendered = "\n".join(str(m.get("text", "")) + json.dumps(m.get("blocks", [])) for m in posted)

    assert posted
    for command in COMMANDS:
        assert command not in rendered
    # Every field the customer wrote is there, escaped: shown as typed, pinging nobody.
    for field in fields:
        assert json.dumps(escape(field))[1:-1] in rendered, field
    assert "*bold*" in rendered
