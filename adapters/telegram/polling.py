"""Long polling: for installs without a public URL, the service asks Telegram for updates.

The webhook is deleted first (Telegram refuses getUpdates while one is set). An update is
confirmed (the next offset) only after it is stored, so a crash or an outage of the database
makes Telegram hand it out again instead of losing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from telegram import Bot
from telegram.error import TelegramError

from adapters.telegram.updates import ALLOWED_UPDATES, MalformedUpdate, TelegramIntake

log = logging.getLogger(__name__)


class TelegramPoller:
    """Runs the getUpdates loop as a task between ``start`` and ``stop``."""

    def __init__(
        self,
        bot: Bot,
        updates: TelegramIntake,
        *,
        poll_timeout: float = 25.0,
        retry_seconds: float = 2.0,
    ) -> None:
        self.bot = bot
        self.updates = updates
        self.poll_timeout = poll_timeout
        self.retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="telegram-polling")

    async def stop(self) -> None:
        """Stop polling; an update being stored is cut off and comes again next start."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _loop(self) -> None:
        webhook_deleted = False
        offset: int | None = None
        while True:
            try:
                if not webhook_deleted:
                    await self.bot.delete_webhook()
                    webhook_deleted = True
                updates = await self.bot.get_updates(
                    offset=offset,
                    timeout=timedelta(seconds=self.poll_timeout),
                    allowed_updates=list(ALLOWED_UPDATES),
                )
            except TelegramError as exc:
                log.warning("Telegram getUpdates failed; retrying", extra={"reason": exc.message})
                await asyncio.sleep(self.retry_seconds)
                continue
            for update in updates:
                try:
                    await self.updates.take(update)
                except MalformedUpdate as exc:
                    # Fetching it again would stop every update after it: skip it.
                    log.warning("skipped a malformed Telegram update", extra={"reason": str(exc)})
                except Exception:
                    log.exception("could not store a Telegram update; it is fetched again")
                    await asyncio.sleep(self.retry_seconds)
                    break
                offset = update.update_id + 1
