"""The team as Slack knows it, for fair assignment: user groups, presence and status."""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import TransientDeliveryError


class SlackTeamDirectory:
    """Implements ``bot.ports.TeamDirectory`` with usergroups.users.list, users.getPresence and
    users.profile.get."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def _ask(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self.client.api_call(method, params=kwargs)
        except SlackApiError as exc:
            # Retried by the job: a group or person Slack cannot tell about now.
            raise TransientDeliveryError(
                f"Slack refused {method} ({exc.response.get('error')})"
            ) from exc
        return dict(response.data) if isinstance(response.data, dict) else {}

    async def group_members(self, usergroup: str) -> tuple[str, ...]:
        response = await self._ask("usergroups.users.list", usergroup=usergroup)
        return tuple(str(user) for user in response.get("users") or [])

    async def is_away(self, user_id: str) -> bool:
        response = await self._ask("users.getPresence", user=user_id)
        return response.get("presence") != "active"

    async def status(self, user_id: str) -> tuple[str, str]:
        profile = (await self._ask("users.profile.get", user=user_id)).get("profile") or {}
        return str(profile.get("status_text") or ""), str(profile.get("status_emoji") or "")
