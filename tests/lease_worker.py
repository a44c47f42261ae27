"""A job worker in its own process, for the lease tests: it claims the slow job and hangs.

``python -m tests.lease_worker DATABASE_URL STARTED_FILE`` runs a runner whose handler writes
``STARTED_FILE`` and then works for a minute; the test kills the process with SIGKILL mid-job.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bot.database import open_database
from bot.jobs import JobRunner
from models import Job
from tests.test_job_leases import SETTINGS, SLOW


class HangsMidJob:
    def __init__(self, started: Path) -> None:
        self.started = started

    async def run(self, job: Job) -> None:
        self.started.write_text(str(job.id))
        await asyncio.sleep(60)

    async def give_up(self, job: Job, reason: str) -> None:
        """Never reached: the process is killed first."""


async def main(database_url: str, started: Path) -> None:
    async with open_database(database_url, migrate_first=False):
        runner = JobRunner({SLOW: HangsMidJob(started)}, SETTINGS, only_own_kinds=True)
        await runner.start()
        await asyncio.sleep(120)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
