"""Webhook intake throughput: POST /webhooks/<source> and POST /whatsapp/webhook (verify,
parse, durable commit) against a bare aiohttp handler that answers 200 and does nothing.

Both servers run in this process, one after the other; the load comes from a separate client
process (aiohttp, concurrent requests, each signed with a fresh event id) so that client and
server do not share an event loop. On a small shared machine one short run of each is mostly
noise, so the pair is measured ``--rounds`` times, taking turns at going first, Switchboard on a
fresh database (or fresh event ids) every round; the ratio is the median of the rounds' ratios,
each taken from two runs side by side. Prints JSON with the medians and every round:

    python -m bench.webhook [--requests 2000] [--concurrency 20] [--rounds 3] [--database-url URL]

The WhatsApp endpoint gets Meta's webhook bodies (one text message each, a new wamid per post)
signed with ``X-Hub-Signature-256``; its ratio is taken against the same round's bare handler.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from adapters.service import Service
from adapters.webhook.signing import signed_headers
from adapters.whatsapp.webhook import SIGNATURE_HEADER, sign
from bench.load import seconds_in_child
from bot.routing import FixedSkillClassifier
from bot.settings import settings_from_toml

SECRET = "bench-webhook-secret-0123456789"
APP_SECRET = "bench-whatsapp-app-secret"
PHONE_NUMBER_ID = "106540352242922"
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


def whatsapp_body(index: int, run: str) -> bytes:
    """Meta's webhook body for one customer's text message."""
    sender = str(4915100000000 + index % 500)
    message = {
        "from": sender,
        "id": f"wamid.bench-{run}-{index}",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": SAMPLE_TEXT},
    }
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550100199", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": f"Customer {index % 500}"}, "wa_id": sender}],
        "messages": [message],
    }
    change = {"field": "messages", "value": value}
    entry = {"id": "102290129340398", "changes": [change]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


def signed_request(kind: str, index: int, run: str) -> tuple[bytes, dict[str, str]]:
    """A post of ``kind`` ("webhook" or "whatsapp") and its signature headers."""
    if kind == "whatsapp":
        raw = whatsapp_body(index, run)
        return raw, {SIGNATURE_HEADER: sign(APP_SECRET, raw), "Content-Type": "application/json"}
    raw = body(index, run)
    return raw, signed_headers(SECRET, raw)


async def client_load(
    url: str, requests: int, concurrency: int, run: str, kind: str = "webhook"
) -> float:
    """Send ``requests`` signed posts, ``concurrency`` at a time; returns seconds taken."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                raw, headers = signed_request(kind, index, run)
                async with session.post(url, data=raw, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"request {index}: HTTP {r.status}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class Run:
    seconds: float
    #: CPU time of this process (the server under load, all its threads) during the run.
    server_cpu: float


async def loaded(url: str, requests: int, concurrency: int, run: str, kind: str) -> Run:
    """Run the load in a child process; its duration and the server's CPU time meanwhile."""
    cpu = time.process_time()
    seconds = await asyncio.to_thread(
        seconds_in_child,
        "bench.webhook",
        *("--client-url", url, "--requests", str(requests)),
        *("--concurrency", str(concurrency), "--run", run, "--kind", kind),
    )
    return Run(seconds, time.process_time() - cpu)


async def measure_bare(requests: int, concurrency: int) -> Run:
    async def nothing(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/webhooks/{source}", nothing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/bench"
        return await loaded(url, requests, concurrency, "bare", "webhook")
    finally:
        await runner.cleanup()


async def measure_switchboard(
    requests: int,
    concurrency: int,
    database_url: str,
    run: str = "switchboard",
    kind: str = "webhook",
) -> Run:
    settings = settings_from_toml(
        f"""
[service]
http_port = 0
[email]
enabled = false
[whatsapp]
enabled = true
phone_number_id = "{PHONE_NUMBER_ID}"
api_url = "http://127.0.0.1:9/"
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
            "WHATSAPP_TOKEN": "bench-token",
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": "bench-verify",
        },
    )
    # Jobs off: this measures intake (verify, parse, thread, commit, answer), not Slack.
    classifier = FixedSkillClassifier("general")
    async with Service(settings, run_jobs=False, classifier=classifier) as service:
        path = "/whatsapp/webhook" if kind == "whatsapp" else "/webhooks/bench"
        url = f"http://127.0.0.1:{service.http_port}{path}"
        return await loaded(url, requests, concurrency, run, kind)


async def main(
    requests: int, concurrency: int, database_url: str | None, rounds: int = 3
) -> dict[str, object]:
    bare: list[Run] = []
    switchboard: list[Run] = []
    whatsapp: list[Run] = []
    with tempfile.TemporaryDirectory() as folder:
        for turn in range(rounds):
            # A new database (or new event ids) each round: every post is stored, none is a
            # duplicate answered from the dedup check.
            url = database_url or f"sqlite://{Path(folder) / f'bench-{turn}.sqlite3'}"
            wa_url = database_url or f"sqlite://{Path(folder) / f'bench-wa-{turn}.sqlite3'}"
            run = f"switchboard-{turn}"
            if turn % 2:
                switchboard.append(await measure_switchboard(requests, concurrency, url, run))
                whatsapp.append(
                    await measure_switchboard(requests, concurrency, wa_url, run, "whatsapp")
                )
                bare.append(await measure_bare(requests, concurrency))
            else:
                bare.append(await measure_bare(requests, concurrency))
                whatsapp.append(
                    await measure_switchboard(requests, concurrency, wa_url, run, "whatsapp")
                )
                switchboard.append(await measure_switchboard(requests, concurrency, url, run))
    ratios = [b.seconds / s.seconds for b, s in zip(bare, switchboard, strict=True)]
    wa_ratios = [b.seconds / w.seconds for b, w in zip(bare, whatsapp, strict=True)]

    def per_second(runs: list[Run]) -> float:
        return round(requests / statistics.median(r.seconds for r in runs), 1)

    def cpu_ms(runs: list[Run]) -> float:
        return round(1000 * statistics.median(r.server_cpu for r in runs) / requests, 3)

    return {
        "benchmark": "webhook_intake",
        "requests": requests,
        "concurrency": concurrency,
        "database": (database_url or "sqlite://").split("://", 1)[0],
        "rounds": rounds,
        "bare_aiohttp_per_second": per_second(bare),
        "switchboard_per_second": per_second(switchboard),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_per_round": [round(ratio, 3) for ratio in ratios],
        "whatsapp_per_second": per_second(whatsapp),
        "whatsapp_ratio": round(statistics.median(wa_ratios), 3),
        "whatsapp_ratio_per_round": [round(ratio, 3) for ratio in wa_ratios],
        # The server's CPU per request (all its threads; not the database server's).
        "server_cpu_ms_per_request": {
            "bare": cpu_ms(bare),
            "switchboard": cpu_ms(switchboard),
            "whatsapp": cpu_ms(whatsapp),
        },
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--client-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--run", default="x", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="webhook", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_url:
        seconds = asyncio.run(
            client_load(args.client_url, args.requests, args.concurrency, args.run, args.kind)
        )
        print(seconds)
        return
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    result = asyncio.run(main(args.requests, args.concurrency, args.database_url, args.rounds))
    print(json.dumps(result))


if __name__ == "__main__":
    cli()
