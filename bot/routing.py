"""Where a conversation is shown (the Slack channel of its skill) and who is paged for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bot.database import Prepared
from bot.settings import Settings
from bot.shapes import TRIAGE_SKILL, InboundMessage, Priority, Triage
from models import Skill


@dataclass(frozen=True, slots=True)
class FixedSkillClassifier:
    """Tags every message with one skill; used when no model is loaded."""

    skill: str

    async def triage(self, message: InboundMessage) -> Triage:
        return Triage(skill=self.skill, confidence=1.0)


async def sync_skills(settings: Settings) -> None:
    """Create the configured skills that are not stored yet.

    Stored skills win over the file afterwards, so a channel an admin mapped in Slack stays
    mapped across restarts.
    """
    for skill in settings.skills:
        await Skill.get_or_create(
            name=skill.name,
            defaults={"chat_channel": skill.channel, "description": skill.description},
        )


# Read for every new conversation: its SQL built once.
_SKILL_CHANNELS = Prepared(lambda: Skill.all().order_by("name").values_list("name", "chat_channel"))


async def stored_skills() -> dict[str, str]:
    """Every stored skill's Slack channel, by skill name in order (one query: a short table)."""
    rows = await _SKILL_CHANNELS()
    return {str(name): str(channel) for name, channel in rows}


def route(skill: str, settings: Settings, skills: Mapping[str, str]) -> tuple[str, str]:
    """The (skill, Slack channel) a conversation tagged ``skill`` goes to, among ``skills``."""
    if skill == TRIAGE_SKILL:
        return skill, settings.slack.triage_channel
    for name in (skill, settings.triage.default_skill):
        if name in skills:
            return name, skills[name]
    return TRIAGE_SKILL, settings.slack.triage_channel


async def channel_for(skill: str, settings: Settings) -> tuple[str, str]:
    """The (skill, Slack channel) a conversation tagged ``skill`` goes to."""
    return route(skill, settings, await stored_skills())


async def skill_names() -> tuple[str, ...]:
    """The stored skills' names, sorted."""
    return tuple(await stored_skills())


def oncall_for(skill: str, priority: Priority, settings: Settings) -> str:
    """The user group to page for a conversation: its skill's on-call group while urgent."""
    configured = settings.skill(skill)
    if priority is not Priority.URGENT or configured is None:
        return ""
    return configured.oncall
