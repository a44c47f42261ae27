"""The team as Slack knows it, for fair assignment: user groups, presence and status."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import TransientDeliveryError


class SlackTeamDirectory:
    """Implements ``bot.ports.TeamDirectory`` with usergroups.users.list, users.getPresence and
    users.profile.get."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def group_members(self, usergroup: str) -> tuple[str, ...]:
        try:
            response = await self.client.usergroups_users_list(usergroup=usergroup)
        except SlackApiError as exc:
            raise TransientDeliveryError(
                f"Slack did not list the user group {usergroup}: {exc.response.get('error')}"
            ) from exc
        return tuple(str(user) for user in response.get("users") or [])

    async def is_away(self, user_id: str) -> bool:
        try:
            response = await self.client.users_getPresence(user=user_id)
        except SlackApiError as exc:
            raise TransientDeliveryError(
                f"Slack did not tell the presence of {user_id}: {exc.response.get('error')}"
            ) from exc
        return response.get("presence") != "active"

    async def status(self, user_id: str) -> tuple[str, str]:
        try:
            response = await self.client.users_profile_get(user=user_id)
        except SlackApiError as exc:
            raise TransientDeliveryError(
                f"Slack did not give the profile of {user_id}: {exc.response.get('error')}"
            ) from exc
        profile = response.get("profile") or {}
        return str(profile.get("status_text") or ""), str(profile.get("status_emoji") or "")
