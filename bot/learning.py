"""Replicas learn from each other: an example taught on one reaches every replica's triage.

A lead's reassignment is stored as a ``SkillExample`` and taught to the triage model of the
process that handled it. The other replicas look for examples they have not seen every
``every_seconds`` and learn them too, so all replicas converge on the team's taxonomy without
restarting. (Learning an example twice is harmless: the engine ignores repeats.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bot.ports import Learner
from models import SkillExample

log = logging.getLogger(__name__)


class SharedLearning:
    """Teaches ``learner`` the stored examples added after ``seen_up_to`` (a SkillExample id)."""

    def __init__(self, learner: Learner, *, seen_up_to: int, every_seconds: float) -> None:
        self.learner = learner
        self.seen_up_to = seen_up_to
        self.every_seconds = every_seconds
        self._task: asyncio.Task[None] | None = None

    async def catch_up(self) -> int:
        """Learn the examples stored since the last look; returns how many."""
        rows = (
            await SkillExample.filter(id__gt=self.seen_up_to)
            .exclude(source="config")
            .order_by("id")
            .values_list("id", "skill", "text")
        )
        for row_id, skill, text in rows:
            self.seen_up_to = max(self.seen_up_to, int(row_id))
            with contextlib.suppress(ValueError):  # a skill's example that is not learnable
                await self.learner.learn(str(skill), str(text))
        return len(rows)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="shared-learning")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_seconds)
            try:
                await self.catch_up()
            except Exception:
                log.exception("could not read the examples other replicas learned; trying again")


async def newest_example_id() -> int:
    """The id of the newest stored example (0 when there is none)."""
    newest = await SkillExample.all().order_by("-id").first()
    return newest.id if newest is not None else 0
