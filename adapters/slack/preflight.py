"""``check-config --online``: asks Slack whether the configured app can do its work.

Three questions, each answered with what to fix: does Slack accept the bot token (auth.test),
does the token have the scopes config/slack-manifest.yml asks for (Slack names a token's scopes
in the ``x-oauth-scopes`` header of every answer), and does each configured channel exist with
the app in it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.errors import ConfigError
from bot.settings import Settings

#: The bot token scopes config/slack-manifest.yml asks for (a test keeps the two the same).
MANIFEST_SCOPES = (
    "channels:history",
    "channels:join",
    "channels:read",
    "chat:write",
    "commands",
    "files:read",
    "files:write",
    "groups:history",
    "groups:read",
    "im:write",
    "reactions:read",
    "reactions:write",
    "usergroups:read",
    "users:read",
    "users.profile:read",
)
_TOKEN_PAGE = "https://api.slack.com/apps > your app > OAuth & Permissions"
_COPY_TOKEN = f"export the Bot User OAuth Token (xoxb-...) from {_TOKEN_PAGE}"
_TOKEN_FIX = {
    "invalid_auth": f"the token is wrong; {_COPY_TOKEN}",
    "not_authed": f"no token was sent; {_COPY_TOKEN}",
    "token_revoked": f"the token was revoked; reinstall the app, then {_COPY_TOKEN}",
    "token_expired": f"the token expired; turn token rotation off, then {_COPY_TOKEN}",
    "account_inactive": f"the app was uninstalled or deactivated; reinstall it, then {_COPY_TOKEN}",
    "not_allowed_token_type": f"this is not a bot token; {_COPY_TOKEN}",
}


@dataclass(slots=True)
class SlackReport:
    """What Slack said: ``problems`` to fix (none means ready), ``facts`` to show."""

    problems: list[ConfigError] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)


async def check_slack(settings: Settings) -> SlackReport:
    """Ask Slack, with the configured token and API URL, whether the app is set up right."""
    client = AsyncWebClient(
        token=settings.slack.bot_token,
        base_url=settings.slack.api_url or AsyncWebClient.BASE_URL,
        timeout=15,
    )
    report = SlackReport()
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        error = str(exc.response.get("error", "")) or f"HTTP {exc.response.status_code}"
        fix = _TOKEN_FIX.get(error, "see https://api.slack.com/methods/auth.test")
        report.problems.append(ConfigError("SLACK_BOT_TOKEN", f"Slack says {error}: {fix}"))
        return report
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        where = settings.slack.api_url or AsyncWebClient.BASE_URL
        setting = "slack.api_url" if settings.slack.api_url else "Slack"
        report.problems.append(
            ConfigError(setting, f"cannot reach {where}: {type(exc).__name__}: {exc}")
        )
        return report
    report.facts.append(f"token of bot @{auth.get('user')} in workspace {auth.get('team')}")
    _check_scopes(auth, report)
    await _check_channels(client, settings, str(auth.get("user", "")), report)
    return report


def _check_scopes(auth: AsyncSlackResponse, report: SlackReport) -> None:
    header = auth.headers.get("x-oauth-scopes")
    if header is None:
        report.facts.append("scopes: not checked (Slack did not name the token's scopes)")
        return
    granted = {scope.strip() for scope in str(header).split(",")}
    missing = [scope for scope in MANIFEST_SCOPES if scope not in granted]
    if missing:
        report.problems.append(
            ConfigError(
                "SLACK_BOT_TOKEN",
                f"lacks the scopes {', '.join(missing)}: add them under {_TOKEN_PAGE} > "
                "Scopes > Bot Token Scopes (or paste config/slack-manifest.yml into the app's "
                "manifest), reinstall the app, and export the token it shows then",
            )
        )
    else:
        report.facts.append(f"scopes: all {len(MANIFEST_SCOPES)} the manifest asks for")


async def _check_channels(
    client: AsyncWebClient, settings: Settings, bot_user: str, report: SlackReport
) -> None:
    wanted = [(f"skills[{i}].channel", s.channel) for i, s in enumerate(settings.skills)]
    wanted.append(("slack.triage_channel", settings.slack.triage_channel))
    unique = _unique(wanted)
    problems: list[ConfigError] = []
    try:
        visible = await _visible_channels(client)
        for setting, channel in unique:
            found = visible.get(channel.lstrip("#"))
            problem = _channel_problem(channel, found)
            if problem:
                problems.append(ConfigError(setting, problem))
    except SlackApiError as exc:
        error = exc.response.get("error", "") or f"HTTP {exc.response.status_code}"
        problems.append(
            ConfigError("SLACK_BOT_TOKEN", f"Slack says {error} when asked for channels")
        )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        problems.append(
            ConfigError("Slack", f"asking for channels failed: {type(exc).__name__}: {exc}")
        )
    report.problems += problems
    if not problems:
        report.facts.append(
            f"channels: all {len(unique)} exist and have the app (@{bot_user}) in them"
        )


def _unique(wanted: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each channel once, under the first setting that names it."""
    seen: set[str] = set()
    unique: list[tuple[str, str]] = []
    for setting, channel in wanted:
        if channel not in seen:
            seen.add(channel)
            unique.append((setting, channel))
    return unique


def _channel_problem(channel: str, found: dict[str, Any] | None) -> str:
    """Why the app cannot work in ``channel``, or "" when it can."""
    if found is None:
        return (
            f"Slack has no channel {channel} the app can see: create it, or (a private "
            "channel) invite the app with /invite @Switchboard there, or name another channel"
        )
    if found.get("is_archived"):
        return f"#{found['name']} is archived: unarchive it or name another channel"
    if not found.get("is_member"):
        return (
            f"the app is not in #{found['name']}: invite it with /invite @Switchboard there "
            "(until then it does not hear the agents' replies in that channel)"
        )
    return ""


async def _visible_channels(client: AsyncWebClient) -> dict[str, dict[str, Any]]:
    """The channels the app can see (public ones, and private ones it is in), by name and id."""
    channels: dict[str, dict[str, Any]] = {}
    cursor = ""
    while True:
        page = await client.conversations_list(
            types="public_channel,private_channel", limit=1000, cursor=cursor or None
        )
        listed: list[dict[str, Any]] = page.get("channels", [])
        for channel in listed:
            channels[str(channel["name"])] = channels[str(channel["id"])] = channel
        cursor = (page.get("response_metadata") or {}).get("next_cursor", "")
        if not cursor:
            return channels
