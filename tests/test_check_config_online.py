"""`check-config --online` asks Slack: the token, its scopes, the channels and the app in them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import pytest

from adapters.cli import main
from adapters.slack.preflight import MANIFEST_SCOPES
from standins.slack import SlackSandbox
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, SKILL_CHANNELS, toml_for

MANIFEST = Path(__file__).resolve().parents[1] / "config" / "slack-manifest.yml"
CheckConfig = Callable[[SlackSandbox], Awaitable[tuple[int, str, str]]]


@pytest.fixture
def check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> CheckConfig:
    """Runs ``check-config --online`` against a sandbox; returns status, stdout and stderr."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("DATABASE_URL", f"sqlite://{tmp_path / 'unused.sqlite3'}")

    async def run(slack: SlackSandbox) -> tuple[int, str, str]:
        config = tmp_path / "switchboard.toml"
        config.write_text(toml_for(extra=f'[slack]\napi_url = "{slack.api_url}"\n'))
        args = ["--config", str(config), "check-config", "--online"]
        status = await asyncio.to_thread(main, args)
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


@pytest.fixture
async def workspace() -> AsyncIterator[SlackSandbox]:
    """A Slack where the app was installed as the manifest says and invited to every channel."""
    async with sandbox() as slack:
        for channel in [*SKILL_CHANNELS.values(), "support-triage"]:
            slack.add_channel(channel, members=[slack.bot_user_id])
        yield slack


def sandbox(scopes: Iterable[str] = MANIFEST_SCOPES) -> SlackSandbox:
    """An empty Slack whose bot token has ``scopes``."""
    return SlackSandbox(bot_token=BOT_TOKEN, scopes=scopes)


async def test_a_ready_app_is_reported_ok(
    check_config: CheckConfig, workspace: SlackSandbox
) -> None:
    status, out, err = await check_config(workspace)
    assert (status, err) == (0, "")
    assert "  slack: token of bot @switchboard in workspace Sandbox" in out.splitlines()
    assert f"  slack: scopes: all {len(MANIFEST_SCOPES)} the manifest asks for" in out
    assert "  slack: channels: all 4 exist and have the app (@switchboard) in them" in out


async def test_a_wrong_token_is_reported_plainly(
    check_config: CheckConfig, workspace: SlackSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-typo")
    status, _, err = await check_config(workspace)
    assert status == 2
    assert err.splitlines()[1] == (
        "  - SLACK_BOT_TOKEN: Slack says invalid_auth: the token is wrong; export the Bot "
        "User OAuth Token (xoxb-...) from https://api.slack.com/apps > your app > "
        "OAuth & Permissions"
    )
    assert len(err.splitlines()) == 2  # nothing else is asked with a token Slack refuses


async def test_missing_scopes_are_named(check_config: CheckConfig) -> None:
    granted = [s for s in MANIFEST_SCOPES if s not in ("chat:write", "files:write")]
    async with sandbox(scopes=granted) as slack:
        for channel in [*SKILL_CHANNELS.values(), "support-triage"]:
            slack.add_channel(channel, members=[slack.bot_user_id])
        status, _, err = await check_config(slack)
    assert status == 2
    assert "SLACK_BOT_TOKEN: lacks the scopes chat:write, files:write: add them under" in err
    assert "reinstall the app" in err


async def test_a_missing_channel_and_one_without_the_app_are_named(
    check_config: CheckConfig,
) -> None:
    async with sandbox() as slack:
        slack.add_channel("support", members=[slack.bot_user_id])
        slack.add_channel("support-triage", members=[slack.bot_user_id])
        slack.add_channel("support-billing")  # the app was never invited
        status, out, err = await check_config(slack)
    assert status == 2
    problems = err.splitlines()[1:]
    assert problems == [
        "  - skills[1].channel: the app is not in #support-billing: invite it with "
        "/invite @Switchboard there (until then it does not hear the agents' replies in that "
        "channel)",
        "  - skills[2].channel: Slack has no channel support-tech the app can see: create it, "
        "or (a private channel) invite the app with /invite @Switchboard there, or name "
        "another channel",
    ]
    assert "scopes: all" in out


async def test_a_channel_named_by_id_is_looked_up(
    check_config: CheckConfig, workspace: SlackSandbox, tmp_path: Path
) -> None:
    billing = workspace.channel_id("support-billing")
    config = toml_for(extra=f'[slack]\napi_url = "{workspace.api_url}"\n')
    config = config.replace('"support-billing"', f'"{billing}"')
    (tmp_path / "by-id.toml").write_text(config)
    status = await asyncio.to_thread(
        main, ["--config", str(tmp_path / "by-id.toml"), "check-config", "--online"]
    )
    assert status == 0


def test_the_scopes_checked_are_the_manifests() -> None:
    lines = MANIFEST.read_text(encoding="utf-8").splitlines()
    start = lines.index("    bot:") + 1
    scopes = []
    for line in lines[start:]:
        if not line.startswith("      - "):
            break
        scopes.append(line.removeprefix("      - ").strip())
    assert tuple(scopes) == MANIFEST_SCOPES
