"""SMTP intake throughput: Switchboard's endpoint (durable commit) against a bare aiosmtpd.

Both servers run in this process, one after the other, on the same machine; the load comes
from a separate client process (aiosmtplib, concurrent connections) so that client and server
do not share an event loop. Prints JSON with both rates and their ratio:

    python -m bench.intake [--messages 1000] [--connections 20] [--rounds 5] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.service import Service
from bench.load import seconds_in_child
from bot.routing import FixedSkillClassifier
from bot.settings import settings_from_toml

SAMPLE_BODY = (
    "Hallo,\n\nmeine Rechnung vom 3. November ist doppelt abgebucht worden. "
    "Können Sie das bitte prüfen und mir den Betrag erstatten?\n\n"
    "Viele Grüße\nAnna Beispiel\n"
) * 4


def sample(index: int, run: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"Customer {index} <customer{index}@example.org>"
    message["To"] = "support@shop.example"
    message["Subject"] = f"Rechnung doppelt abgebucht #{index}"
    message["Message-ID"] = f"<bench-{run}-{index}@example.org>"
    message.set_content(SAMPLE_BODY)
    return message.as_bytes()


async def client_load(port: int, messages: int, connections: int, run: str) -> float:
    """Send ``messages`` over ``connections`` concurrent sessions; returns seconds taken."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(messages):
        queue.put_nowait(index)

    async def connection() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await smtp.connect()
        try:
            while not queue.empty():
                index = queue.get_nowait()
                await smtp.sendmail(
                    f"customer{index}@example.org", ["support@shop.example"], sample(index, run)
                )
        finally:
            await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return time.perf_counter() - started


def run_client(port: int, messages: int, connections: int, run: str) -> float:
    """Run the load in a child process and read back its duration."""
    return seconds_in_child(
        "bench.intake",
        *("--client-port", str(port), "--messages", str(messages)),
        *("--connections", str(connections), "--run", run),
    )


class NothingHandler:
    """The baseline: accepts every message and does nothing with it."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


async def measure_bare(messages: int, connections: int) -> float:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(NothingHandler(), loop=loop), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await asyncio.to_thread(run_client, port, messages, connections, "bare")
    finally:
        server.close()
        await server.wait_closed()


async def measure_switchboard(
    messages: int, connections: int, database_url: str, *, run: str = "switchboard"
) -> float:
    settings = settings_from_toml(
        """
[service]
http_port = 0
[email]
listen_port = 0
support_address = "support@shop.example"
[[skills]]
name = "general"
channel = "support"
""",
        {
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_SIGNING_SECRET": "x",
            "DATABASE_URL": database_url,
        },
    )
    # Neither jobs nor the model: this measures intake alone.
    classifier = FixedSkillClassifier("general")
    async with Service(settings, run_jobs=False, classifier=classifier) as service:
        return await asyncio.to_thread(run_client, service.smtp_port, messages, connections, run)


async def main(
    messages: int, connections: int, database_url: str | None, rounds: int
) -> dict[str, object]:
    # Rounds alternate the two servers, so that a slow spell of the machine hits both; the
    # medians are compared.
    bare: list[float] = []
    switchboard: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for number in range(rounds):
            url = database_url or f"sqlite://{Path(folder) / f'bench-{number}.sqlite3'}"
            bare.append(await measure_bare(messages, connections))
            switchboard.append(
                await measure_switchboard(messages, connections, url, run=f"round{number}")
            )
            print(f"round {number + 1}/{rounds} done", file=sys.stderr)
    bare_seconds, switchboard_seconds = statistics.median(bare), statistics.median(switchboard)
    return {
        "benchmark": "smtp_intake",
        "messages": messages,
        "connections": connections,
        "rounds": rounds,
        "database": url.split("://", 1)[0],
        "bare_aiosmtpd_per_second": round(messages / bare_seconds, 1),
        "switchboard_per_second": round(messages / switchboard_seconds, 1),
        "ratio": round(bare_seconds / switchboard_seconds, 3),
        "ratio_per_round": [round(b / s, 3) for b, s in zip(bare, switchboard, strict=True)],
        "target_ratio": 0.5,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    parser.add_argument("--client-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run", default="x", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_port:
        seconds = asyncio.run(
            client_load(args.client_port, args.messages, args.connections, args.run)
        )
        print(seconds)
        return
    result = asyncio.run(main(args.messages, args.connections, args.database_url, args.rounds))
    print(json.dumps(result))


if __name__ == "__main__":
    cli()
