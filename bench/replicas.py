"""Throughput of one replica against two on PostgreSQL, and where the CPU time goes.

Each round runs the chaos harness without kills or Slack failures (bench/chaos.py): customers
send mail over SMTP to any replica as fast as it is taken (a new conversation and one
follow-up each), agents answer one conversation in four, and the clock stops when every
message is in Slack and every reply delivered. One replica and two alternate, each
on a scratch database, so drift of this machine hits both alike. Prints JSON with messages per
second for each, their ratio, and the CPU seconds of the service processes, of PostgreSQL and
of the harness (the Slack, Telegram and relay stand-ins and the customers) per message:

    python -m bench.replicas [--mails 400] [--rounds 2] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.chaos import ChaosPlan, process_cpu_seconds, run_chaos, scratch_postgres

ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def postgres_cpu_seconds() -> float:
    """CPU time of all PostgreSQL processes, ended backends included (through the postmaster)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "comm").read_text().strip()
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if command == "postgres":
            # The postmaster (parent is not postgres) also counts its ended children.
            is_postmaster = not _is_postgres(parent)
            total += process_cpu_seconds(int(entry.name), with_children=is_postmaster)
    return total


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except OSError:
        return False


async def one_round(replicas: int, mails: int, admin_url: str) -> dict[str, Any]:
    # Customers write as fast as the SMTP endpoints take it, so that posting is what limits.
    plan = ChaosPlan(
        mails=mails,
        telegram=0,
        kills=0,
        slack_failure_rate=0.0,
        replicas=replicas,
        mails_per_customer=2,
        pause_between_mails=0.0,
        connections=16,
        seed=replicas,
    )
    with tempfile.TemporaryDirectory(prefix="switchboard-replicas-") as workdir:
        async with scratch_postgres(admin_url) as url:
            harness_before, postgres_before = time.process_time(), postgres_cpu_seconds()
            report = await run_chaos(plan, url, Path(workdir))
            harness = time.process_time() - harness_before
            postgres = postgres_cpu_seconds() - postgres_before
    if not report.ok:
        raise RuntimeError(f"the run lost or doubled messages: {report}")
    per_message = 1000 / report.accepted
    return {
        "messages_per_second": report.messages_per_second,
        "seconds": report.seconds,
        "cpu_ms_per_message": {
            "service": round(report.service_cpu_seconds * per_message, 1),
            "postgres": round(postgres * per_message, 1),
            "harness": round(harness * per_message, 1),
        },
    }


async def main(mails: int, rounds: int, admin_url: str) -> dict[str, Any]:
    results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for number in range(rounds):
        for replicas in (1, 2) if number % 2 == 0 else (2, 1):
            results[replicas].append(await one_round(replicas, mails, admin_url))

    def median(replicas: int, *keys: str) -> float:
        values = []
        for result in results[replicas]:
            value: Any = result
            for key in keys:
                value = value[key]
            values.append(float(value))
        return round(statistics.median(values), 1)

    summary = {
        f"replicas_{n}": {
            "messages_per_second": median(n, "messages_per_second"),
            "cpu_ms_per_message": {
                part: median(n, "cpu_ms_per_message", part)
                for part in ("service", "postgres", "harness")
            },
            "rounds": results[n],
        }
        for n in (1, 2)
    }
    one, two = median(1, "messages_per_second"), median(2, "messages_per_second")
    return {
        "mails": mails,
        "rounds": rounds,
        "cores": os.cpu_count(),
        **summary,
        "ratio_2_to_1": round(two / one, 2) if one else 0.0,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--postgres", default=ADMIN_URL, metavar="URL")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.mails, args.rounds, args.postgres)), indent=2))
