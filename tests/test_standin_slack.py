"""The Slack sandbox: the real slack_sdk client against it, and requests signed as Slack signs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from standins.slack import SandboxFile, SlackEvents, SlackSandbox

PAYLOADS = Path(__file__).parent / "payloads" / "slack"
SIGNING_SECRET = "sandbox-signing-secret"
AGENT = "U0AGENT1"
LEAD = "U0LEAD01"
CARD_BLOCKS: list[dict[str, Any]] = [
    {"type": "section", "block_id": "card", "text": {"type": "mrkdwn", "text": "*Refund*"}},
    {
        "type": "actions",
        "block_id": "conversation-actions",
        "elements": [
            {
                "type": "button",
                "action_id": "reassign",
                "text": {"type": "plain_text", "text": "Reassign", "emoji": True},
                "value": "K7Q2",
            }
        ],
    },
]


@dataclass(frozen=True)
class Received:
    """One request as the service saw it."""

    headers: dict[str, str]
    body: str
    content_type: str

    def form(self) -> dict[str, str]:
        """The body as form fields."""
        return dict(parse_qsl(self.body))


class FakeService:
    """An events endpoint that verifies signatures with slack_sdk, as bolt does, and records."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.verifier = SignatureVerifier(SIGNING_SECRET)
        self.answer: dict[str, Any] | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        """Refuse unsigned or stale requests; echo a challenge; otherwise answer ``answer``."""
        body = await request.text()
        if not self.verifier.is_valid_request(body, dict(request.headers)):
            return web.Response(status=401)
        self.received.append(Received(dict(request.headers), body, request.content_type))
        if request.content_type == "application/json":
            sent = json.loads(body)
            if sent["type"] == "url_verification":
                return web.json_response({"challenge": sent["challenge"]})
        if self.answer is not None:
            return web.json_response(self.answer)
        return web.Response()


def load(name: str) -> dict[str, Any]:
    """A captured payload from tests/payloads/slack."""
    loaded: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
    return loaded


def shape_differences(built: Any, captured: Any, path: str = "") -> list[str]:
    """Where two payloads differ in their keys, level by level (dicts and first list items)."""
    if isinstance(captured, list) and captured and isinstance(built, list) and built:
        return shape_differences(built[0], captured[0], f"{path}[0]")
    if not isinstance(captured, dict) or not isinstance(built, dict):
        return []
    differences = [f"{path}.{key}" for key in built.keys() ^ captured.keys()]
    for key in built.keys() & captured.keys():
        differences += shape_differences(built[key], captured[key], f"{path}.{key}")
    return differences


@pytest.fixture
async def sandbox() -> AsyncIterator[SlackSandbox]:
    async with SlackSandbox() as running:
        running.add_user(AGENT, "ana", real_name="Ana Silva", display_name="ana.s")
        running.add_user(LEAD, "lena", real_name="Lena Berg")
        yield running


@pytest.fixture
def client(sandbox: SlackSandbox) -> AsyncWebClient:
    return AsyncWebClient(token=sandbox.bot_token, base_url=sandbox.api_url)


@pytest.fixture
async def service() -> AsyncIterator[FakeService]:
    fake = FakeService()
    app = web.Application()
    app.router.add_post("/slack/events", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    yield fake
    await runner.cleanup()


@pytest.fixture
def events(sandbox: SlackSandbox, service: FakeService) -> SlackEvents:
    return SlackEvents(sandbox, events_url=service.url, signing_secret=SIGNING_SECRET)


async def download(url: str, token: str) -> tuple[str, bytes]:
    """Fetch a private file URL as a service would; returns content type and bytes."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.content_type, await response.read()


async def test_auth_test_names_the_bot(client: AsyncWebClient, sandbox: SlackSandbox) -> None:
    answer = await client.auth_test()

    assert answer["bot_id"] == sandbox.bot_id
    assert answer["user_id"] == sandbox.bot_user_id
    assert answer["team_id"] == sandbox.team_id


async def test_a_wrong_token_is_refused(sandbox: SlackSandbox) -> None:
    stranger = AsyncWebClient(token="xoxb-not-the-token", base_url=sandbox.api_url)

    with pytest.raises(SlackApiError) as refused:
        await stranger.chat_postMessage(channel="#support", text="hello")

    assert refused.value.response["error"] == "invalid_auth"
    with pytest.raises(KeyError):
        sandbox.channel_id("support")


async def test_root_post_creates_the_channel_by_name(
    client: AsyncWebClient, sandbox: SlackSandbox
) -> None:
    first = await client.chat_postMessage(channel="#support-billing", text="first")
    second = await client.chat_postMessage(channel="support-billing", text="second")

    assert first["channel"] == second["channel"] == sandbox.channel_id("support-billing")
    assert first["channel"].startswith("C")
    assert float(first["ts"]) < float(second["ts"])
    texts = [m["text"] for m in sandbox.channel_messages("#support-billing")]
    assert texts == ["first", "second"]
    listed = await client.conversations_list()
    assert [c["name"] for c in listed["channels"]] == ["support-billing"]


async def test_unknown_channel_ids_and_threads_are_refused(client: AsyncWebClient) -> None:
    root = await client.chat_postMessage(channel="#support", text="root")

    with pytest.raises(SlackApiError) as no_channel:
        await client.conversations_history(channel="C9999")
    with pytest.raises(SlackApiError) as no_thread:
        await client.chat_postMessage(channel=root["channel"], thread_ts="1.000001", text="hi")

    assert no_channel.value.response["error"] == "channel_not_found"
    assert no_thread.value.response["error"] == "thread_not_found"


async def test_reply_metadata_comes_back_only_when_asked_for(client: AsyncWebClient) -> None:
    root = await client.chat_postMessage(channel="#support", text="New conversation")
    metadata = {"event_type": "switchboard_post", "event_payload": {"message_id": 41}}
    reply = await client.chat_postMessage(
        channel=root["channel"], thread_ts=root["ts"], text="Customer wrote", metadata=metadata
    )

    with_metadata = await client.conversations_replies(
        channel=root["channel"], ts=root["ts"], include_all_metadata=True
    )
    without = await client.conversations_replies(channel=root["channel"], ts=root["ts"])

    parent, posted = with_metadata["messages"]
    assert parent["ts"] == root["ts"]
    assert parent["reply_count"] == 1
    assert posted["ts"] == reply["ts"]
    assert posted["thread_ts"] == root["ts"]
    assert posted["metadata"] == metadata
    assert "metadata" not in without["messages"][1]


async def test_history_pages_newest_first(client: AsyncWebClient, sandbox: SlackSandbox) -> None:
    channel = sandbox.add_channel("support")
    posted = [
        (await client.chat_postMessage(channel=channel, text=f"m{n}"))["ts"] for n in range(3)
    ]

    first = await client.conversations_history(channel=channel, limit=2)
    rest = await client.conversations_history(
        channel=channel, limit=2, cursor=first["response_metadata"]["next_cursor"]
    )
    newer = await client.conversations_history(channel=channel, oldest=posted[0])

    assert [m["text"] for m in first["messages"]] == ["m2", "m1"]
    assert first["has_more"] is True
    assert [m["text"] for m in rest["messages"]] == ["m0"]
    assert rest["has_more"] is False
    assert [m["text"] for m in newer["messages"]] == ["m2", "m1"]


async def test_the_bot_edits_and_deletes_only_its_own_posts(
    client: AsyncWebClient, sandbox: SlackSandbox, events: SlackEvents
) -> None:
    root = await client.chat_postMessage(channel="#support", text="open")
    agent = await events.post_agent_reply("support", root["ts"], AGENT, "on it")

    await client.chat_update(channel=root["channel"], ts=root["ts"], text="closed")
    with pytest.raises(SlackApiError) as refused:
        await client.chat_update(channel=root["channel"], ts=agent.ts, text="edited")
    await client.chat_delete(channel=root["channel"], ts=root["ts"])

    assert refused.value.response["error"] == "cant_update_message"
    parent, reply = sandbox.thread("support", root["ts"])
    assert parent["subtype"] == "tombstone"
    assert reply["text"] == "on it"


async def test_reactions_are_added_listed_and_removed(client: AsyncWebClient) -> None:
    root = await client.chat_postMessage(channel="#support", text="reply")
    channel, ts = root["channel"], root["ts"]

    await client.reactions_add(channel=channel, timestamp=ts, name="white_check_mark")
    with pytest.raises(SlackApiError) as twice:
        await client.reactions_add(channel=channel, timestamp=ts, name="white_check_mark")
    listed = await client.reactions_get(channel=channel, timestamp=ts)
    await client.reactions_remove(channel=channel, timestamp=ts, name="white_check_mark")
    after = await client.reactions_get(channel=channel, timestamp=ts)

    assert twice.value.response["error"] == "already_reacted"
    assert listed["message"]["reactions"] == [
        {"name": "white_check_mark", "users": ["U0BOT"], "count": 1}
    ]
    assert "reactions" not in after["message"]


async def test_files_upload_v2_shares_the_file_in_the_thread(
    client: AsyncWebClient, sandbox: SlackSandbox
) -> None:
    root = await client.chat_postMessage(channel="#support", text="root")
    content = b"%PDF-1.7 invoice 117"

    uploaded = await client.files_upload_v2(
        channel=root["channel"],
        thread_ts=root["ts"],
        filename="invoice-117.pdf",
        content=content,
        initial_comment="Attachment from the customer",
    )

    _, shared = sandbox.thread("support", root["ts"])
    (file,) = shared["files"]
    assert uploaded["file"]["id"] == file["id"]
    assert shared["text"] == "Attachment from the customer"
    assert (file["name"], file["mimetype"], file["size"]) == (
        "invoice-117.pdf",
        "application/pdf",
        len(content),
    )
    assert await download(file["url_private"], sandbox.bot_token) == ("application/pdf", content)
    assert sandbox.file_content(file["id"]) == content
    assert [name for name, _ in sandbox.calls][-2:] == [
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]


async def test_users_and_usergroups_are_configurable(
    client: AsyncWebClient, sandbox: SlackSandbox
) -> None:
    leads = sandbox.add_usergroup("support-leads", [LEAD])

    ana = await client.users_info(user=AGENT)
    members = await client.usergroups_users_list(usergroup=leads)
    with pytest.raises(SlackApiError) as unknown:
        await client.users_info(user="U0NOBODY")

    assert ana["user"]["real_name"] == "Ana Silva"
    assert ana["user"]["profile"]["display_name"] == "ana.s"
    assert members["users"] == [LEAD]
    assert unknown.value.response["error"] == "user_not_found"


async def test_ephemeral_messages_are_kept_per_user(
    client: AsyncWebClient, sandbox: SlackSandbox
) -> None:
    await client.chat_postEphemeral(channel="#support", user=AGENT, text="Sending in 10 s")

    assert [m["text"] for m in sandbox.ephemeral_messages(AGENT)] == ["Sending in 10 s"]
    assert sandbox.ephemeral_messages(LEAD) == []
    assert sandbox.channel_messages("support") == []


async def test_rate_limit_surfaces_with_retry_after_and_changes_nothing(
    client: AsyncWebClient, sandbox: SlackSandbox
) -> None:
    sandbox.fail_next("chat.postMessage", status=429, retry_after=7)

    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel="#support", text="hello")

    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    assert limited.value.response["error"] == "ratelimited"
    with pytest.raises(KeyError):
        sandbox.channel_messages("support")
    await client.chat_postMessage(channel="#support", text="hello")
    assert len(sandbox.channel_messages("support")) == 1


async def test_slack_sdk_retry_handler_waits_out_a_rate_limit(sandbox: SlackSandbox) -> None:
    patient = AsyncWebClient(
        token=sandbox.bot_token,
        base_url=sandbox.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    sandbox.fail_next("chat.postMessage", status=429, retry_after=0)

    await patient.chat_postMessage(channel="#support", text="hello")

    assert [name for name, _ in sandbox.calls] == ["chat.postMessage", "chat.postMessage"]
    assert len(sandbox.channel_messages("support")) == 1


async def test_random_failures_leave_no_trace(
    client: AsyncWebClient, sandbox: SlackSandbox
) -> None:
    channel = sandbox.add_channel("support")
    sandbox.failure_rate(0.5, seed=7, methods={"chat.postMessage"})
    statuses: list[int] = []

    for n in range(20):
        try:
            await client.chat_postMessage(channel=channel, text=f"m{n}")
        except SlackApiError as failed:
            statuses.append(failed.response.status_code)

    assert set(statuses) == {429, 500}
    assert len(sandbox.channel_messages("support")) == 20 - len(statuses)
    assert len(sandbox.calls) == 20


async def test_signed_requests_verify_and_stale_ones_do_not(
    events: SlackEvents, service: FakeService
) -> None:
    answered = await events.send_url_verification("c-123")
    stale = await events.send_url_verification(timestamp=int(time.time()) - 10 * 60)

    assert answered.status == 200
    assert answered.json() == {"challenge": "c-123"}
    assert stale.status == 401
    (request,) = service.received
    assert request.headers["X-Slack-Signature"].startswith("v0=")
    verifier = SignatureVerifier(SIGNING_SECRET)
    assert verifier.is_valid_request(request.body, request.headers)


async def test_an_agent_reply_is_recorded_and_delivered_as_slack_does(
    client: AsyncWebClient, sandbox: SlackSandbox, events: SlackEvents, service: FakeService
) -> None:
    root = await client.chat_postMessage(channel="#support", text="New conversation")
    attachment = SandboxFile("label.png", b"\x89PNG label")

    reply = await events.post_agent_reply("support", root["ts"], AGENT, "a < b & c", [attachment])

    assert reply.response.status == 200
    event = json.loads(service.received[0].body)["event"]
    assert event["ts"] == reply.ts
    assert (event["channel"], event["thread_ts"], event["user"]) == (
        root["channel"],
        root["ts"],
        AGENT,
    )
    # Slack escapes what people type in the event text; the rich text keeps it raw.
    assert event["text"] == "a &lt; b &amp; c"
    assert event["blocks"][0]["elements"][0]["elements"][0]["text"] == "a < b & c"
    (file,) = event["files"]
    assert event["subtype"] == "file_share"
    assert file["url_private"].startswith(sandbox.url)
    assert await download(file["url_private_download"], sandbox.bot_token) == (
        "image/png",
        b"\x89PNG label",
    )
    assert (await download(file["url_private"], "xoxb-wrong"))[0] == "text/html"
    assert sandbox.thread("support", root["ts"])[1]["ts"] == reply.ts


async def test_a_button_click_comes_as_form_payload_and_can_be_answered(
    client: AsyncWebClient, sandbox: SlackSandbox, events: SlackEvents, service: FakeService
) -> None:
    root = await client.chat_postMessage(channel="#support", text="card", blocks=CARD_BLOCKS)

    await events.click_button("support", root["ts"], LEAD, "reassign")

    (request,) = service.received
    assert request.content_type == "application/x-www-form-urlencoded"
    payload = json.loads(request.form()["payload"])
    assert payload["actions"][0]["value"] == "K7Q2"
    assert payload["container"]["message_ts"] == root["ts"]
    async with (
        aiohttp.ClientSession() as session,
        session.post(payload["response_url"], json={"text": "Only leads can reassign."}),
    ):
        pass
    assert [m["text"] for m in sandbox.ephemeral_messages(LEAD)] == ["Only leads can reassign."]
    opened = await client.views_open(
        trigger_id=payload["trigger_id"],
        view={"type": "modal", "title": {"type": "plain_text", "text": "Reassign"}, "blocks": []},
    )
    assert sandbox.views == [("views.open", opened["view"])]


async def test_a_slash_command_answer_is_shown_to_its_user_only(
    sandbox: SlackSandbox, events: SlackEvents, service: FakeService
) -> None:
    sandbox.add_channel("support")
    service.answer = {"response_type": "ephemeral", "text": "Only leads may reassign."}

    await events.send_slash_command("/switchboard", "reassign K7Q2", user=AGENT, channel="support")

    fields = service.received[0].form()
    assert (fields["command"], fields["text"], fields["user_id"]) == (
        "/switchboard",
        "reassign K7Q2",
        AGENT,
    )
    assert [m["text"] for m in sandbox.ephemeral_messages(AGENT)] == ["Only leads may reassign."]


async def test_builders_have_the_shape_of_captured_payloads(
    client: AsyncWebClient, sandbox: SlackSandbox, events: SlackEvents
) -> None:
    card = await client.chat_postMessage(channel="#support", text="card", blocks=CARD_BLOCKS)
    root = await client.chat_postMessage(channel="#support", text="root")
    reply = sandbox.post_as_user("support", AGENT, "on it", thread_ts=root["ts"])
    shared = sandbox.post_as_user(
        "support", AGENT, "invoice", thread_ts=root["ts"], files=[SandboxFile("a.pdf", b"%PDF")]
    )

    thread_event = events.event_callback(events.message_event("support", reply["ts"]))
    file_event = events.event_callback(events.message_event("support", shared["ts"]))
    click = events.block_actions("support", card["ts"], LEAD, "reassign")
    command = events.slash_command("/switchboard", "help", user=LEAD, channel="support")

    assert shape_differences(thread_event, load("message_in_thread.json")) == []
    assert shape_differences(file_event, load("message_file_share.json")) == []
    assert shape_differences(click, load("block_actions_button.json")) == []
    assert command.keys() == load("slash_command.json").keys()
    assert events.url_verification("x").keys() == load("url_verification.json").keys()


async def test_an_edit_is_delivered_as_message_changed(
    sandbox: SlackSandbox, events: SlackEvents, service: FakeService
) -> None:
    root = sandbox.post_as_user("support", LEAD, "root")
    reply = await events.post_agent_reply("support", root["ts"], AGENT, "Friday")

    await events.edit_agent_reply("support", reply.ts, "Thursday")

    delivered = json.loads(service.received[-1].body)
    assert shape_differences(delivered, load("message_changed.json")) == []
    assert delivered["event"]["message"]["text"] == "Thursday"
    assert delivered["event"]["previous_message"]["text"] == "Friday"


async def test_a_captured_bot_message_is_delivered_signed(
    events: SlackEvents, service: FakeService
) -> None:
    captured = load("message_bot_message.json")["event"]

    answered = await events.send_event(captured)

    assert answered.status == 200
    assert json.loads(service.received[0].body)["event"] == captured


async def test_wait_for_message_returns_once_the_post_lands(
    client: AsyncWebClient, sandbox: SlackSandbox
) -> None:
    async def post_later() -> None:
        await asyncio.sleep(0.05)
        await client.chat_postMessage(channel="#support", text="late")

    posting = asyncio.create_task(post_later())
    seen = await sandbox.wait_for_message("support", lambda m: m["text"] == "late", timeout=2)
    await posting

    assert seen["text"] == "late"


async def test_render_text_shows_channels_threads_files_and_reactions(
    client: AsyncWebClient, sandbox: SlackSandbox, events: SlackEvents
) -> None:
    metadata = {"event_type": "switchboard_post", "event_payload": {"id": 1}}
    root = await client.chat_postMessage(
        channel="#support", text="card", blocks=CARD_BLOCKS, metadata=metadata
    )
    reply = sandbox.post_as_user(
        "support", AGENT, "see attached", thread_ts=root["ts"], files=[SandboxFile("a.txt", b"hi")]
    )
    await client.reactions_add(channel=root["channel"], timestamp=reply["ts"], name="eyes")

    shown = sandbox.render_text()

    assert f"#support ({root['channel']})" in shown
    assert "switchboard [bot]" in shown
    assert "[metadata: switchboard_post]" in shown
    assert "[Reassign]" in shown
    assert "      > ana.s" in shown
    assert "file: a.txt (2 bytes, text/plain)" in shown
    assert "reactions: :eyes: 1" in shown


async def test_menu_shortcut_and_modal_builders_have_the_shape_of_captured_payloads(
    client: AsyncWebClient, sandbox: SlackSandbox, events: SlackEvents
) -> None:
    captured_select = load("block_actions_static_select.json")
    blocks = captured_select["message"]["blocks"]
    card = await client.chat_postMessage(channel="#support", text="card", blocks=blocks)
    select = events.select_actions("support", card["ts"], LEAD, "switchboard_priority", "urgent")
    reply = await client.chat_postMessage(channel="#support", text="hi", thread_ts=card["ts"])
    modal = load("view_submission.json")["view"]
    shortcut = events.message_action("support", reply["ts"], LEAD, "switchboard_reassign")
    opened = await client.views_open(
        trigger_id=shortcut["trigger_id"],
        view={k: modal[k] for k in ("type", "title", "submit", "close", "blocks", "callback_id")},
    )

    submission = events.view_submission(opened["view"]["id"], LEAD, {"skill": "billing"})
    home = events.event_callback(events.app_home_opened(AGENT))

    assert shape_differences(select, captured_select) == []
    assert shape_differences(shortcut, load("message_action.json")) == []
    assert submission.keys() == load("view_submission.json").keys()
    assert shape_differences(submission["view"]["state"], modal["state"]) == []
    assert home["event"].keys() == load("app_home_opened.json")["event"].keys()
    assert select["actions"][0]["selected_option"]["value"] == "urgent"
    assert shortcut["message"]["thread_ts"] == card["ts"]
