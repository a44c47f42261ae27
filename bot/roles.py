"""Who may do what: agents (everyone), leads and admins.

Leads and admins are named in the config by Slack user id (``U...``) or user group id
(``S...``). Which groups a person is in is the adapter's business (it asks Slack and caches the
answer); the core gets it in ``Actor.groups``. An admin may do everything a lead may.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bot.settings import RoleSettings


class Role(enum.IntEnum):
    AGENT = 0
    LEAD = 1
    ADMIN = 2

    @property
    def title(self) -> str:
        """The role in a sentence ("for leads")."""
        return {Role.AGENT: "everyone", Role.LEAD: "leads", Role.ADMIN: "admins"}[self]


@dataclass(frozen=True, slots=True)
class Actor:
    """The person behind a command or a click."""

    user_id: str
    name: str = ""
    groups: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        """How the actor is named in audit lines."""
        return self.name or self.user_id


class Roles:
    """Answers whether an actor holds a role, and whom to ask when they do not."""

    def __init__(self, settings: RoleSettings) -> None:
        self.settings = settings

    @property
    def groups(self) -> tuple[str, ...]:
        """The user group ids the config names (the adapter resolves membership of these)."""
        return tuple(
            dict.fromkeys(g for g in (*self.settings.admins, *self.settings.leads) if _is_group(g))
        )

    def role_of(self, actor: Actor) -> Role:
        """The highest role ``actor`` holds."""
        if self._named(actor, self.settings.admins):
            return Role.ADMIN
        if self._named(actor, self.settings.leads):
            return Role.LEAD
        return Role.AGENT

    def allows(self, actor: Actor, needed: Role) -> bool:
        return self.role_of(actor) >= needed

    def who_to_ask(self, needed: Role) -> tuple[str, ...]:
        """The user and group ids that hold ``needed`` (admins count as leads)."""
        names = list(self.settings.admins)
        if needed is Role.LEAD:
            names = [*self.settings.leads, *names]
        return tuple(dict.fromkeys(names))

    @staticmethod
    def _named(actor: Actor, names: tuple[str, ...]) -> bool:
        return actor.user_id in names or any(group in actor.groups for group in names)


def _is_group(name: str) -> bool:
    return name.startswith("S")
