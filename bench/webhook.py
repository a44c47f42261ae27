"""Webhook intake throughput: POST /webhooks/<source> (verify, parse, durable commit) against a
bare aiohttp handler that answers 200 and does nothing.

Both servers run in this process, one after the other; the load comes from a separate client
process (aiohttp, concurrent requests, each signed with a fresh event id) so that client and
server do not share an event loop. Prints JSON with both rates and their ratio:

    python -m bench.webhook [--requests 2000] [--concurrency 20] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from adapters.service import Service
from adapters.webhook.signing import signed_headers
from bench.load import seconds_in_child
from bot.routing import FixedSkillClassifier
from bot.settings import settings_from_toml

SECRET = "bench-webhook-secret-0123456789"
SAMPLE_TEXT = (
    "Hallo, meine Bestellung 4711 ist seit einer Woche unterwegs und der Link zur "
    "Sendungsverfolgung zeigt nichts an. Können Sie bitte nachsehen?"
)


def body(index: int, run: str) -> bytes:
    return json.dumps(
        {
            "event_id": f"bench-{run}-{index}",
            "conversation_id": f"chat-{index % 500}",
            "sender": {"id": f"visitor-{index % 500}", "name": f"Visitor {index % 500}"},
            "text": SAMPLE_TEXT,
        }
    ).encode()


async def client_load(url: str, requests: int, concurrency: int, run: str) -> float:
    """Send ``requests`` signed posts, ``concurrency`` at a time; returns seconds taken."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                raw = body(index, run)
                async with session.post(url, data=raw, headers=signed_headers(SECRET, raw)) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"request {index}: HTTP {r.status}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def run_client(url: str, requests: int, concurrency: int, run: str) -> float:
    """Run the load in a child process and read back its duration."""
    return seconds_in_child(
        "bench.webhook",
        *("--client-url", url, "--requests", str(requests)),
        *("--concurrency", str(concurrency), "--run", run),
    )


async def measure_bare(requests: int, concurrency: int) -> float:
    async def nothing(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/webhooks/{source}", nothing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/bench"
        return await asyncio.to_thread(run_client, url, requests, concurrency, "bare")
    finally:
        await runner.cleanup()


async def measure_switchboard(requests: int, concurrency: int, database_url: str) -> float:
    settings = settings_from_toml(
        """
[service]
http_port = 0
[email]
enabled = false
[[webhooks]]
name = "bench"
callback_url = "http://127.0.0.1:9/callback"
secret_env = "BENCH_WEBHOOK_SECRET"
[[skills]]
name = "general"
channel = "support"
""",
        {
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_SIGNING_SECRET": "x",
            "DATABASE_URL": database_url,
            "BENCH_WEBHOOK_SECRET": SECRET,
        },
    )
    # Jobs off: this measures intake (verify, parse, thread, commit, answer), not Slack.
    classifier = FixedSkillClassifier("general")
    async with Service(settings, run_jobs=False, classifier=classifier) as service:
        url = f"http://127.0.0.1:{service.http_port}/webhooks/bench"
        return await asyncio.to_thread(run_client, url, requests, concurrency, "switchboard")


async def main(requests: int, concurrency: int, database_url: str | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        url = database_url or f"sqlite://{Path(folder) / 'bench.sqlite3'}"
        bare = await measure_bare(requests, concurrency)
        switchboard = await measure_switchboard(requests, concurrency, url)
    return {
        "benchmark": "webhook_intake",
        "requests": requests,
        "concurrency": concurrency,
        "database": url.split("://", 1)[0],
        "bare_aiohttp_per_second": round(requests / bare, 1),
        "switchboard_per_second": round(requests / switchboard, 1),
        "ratio": round(bare / switchboard, 3),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--client-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--run", default="x", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_url:
        seconds = asyncio.run(
            client_load(args.client_url, args.requests, args.concurrency, args.run)
        )
        print(seconds)
        return
    print(json.dumps(asyncio.run(main(args.requests, args.concurrency, args.database_url))))


if __name__ == "__main__":
    cli()
