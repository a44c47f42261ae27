"""The one aiohttp app: Slack's requests, /healthz, /metrics and the messenger channels' routes.

Slack requests are verified at the door, on the raw bytes and before bolt parses a byte: an
unsigned, wrongly signed or stale request gets 401 and nothing is stored; a signed body that is
not a Slack payload gets 400. (bolt's own signature middleware checks again, but it parses the
body first and answers 500 to malformed input.)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from adapters.signing import TimestampedSignature
from bot.errors import DeliveryError
from bot.jobkinds import CATALOGUE
from bot.jobs import Clock, Waiting, queue_depth, utcnow, waiting_by_kind
from bot.metrics import JOB_OLDEST_WAITING, JOB_QUEUE_DEPTH
from models import Job

# Slack is asked at most this often by /healthz, so a tight probe does not hit its rate limit.
_SLACK_CHECK_SECONDS = 30.0
# Slack's request signing (its SignatureVerifier allows the same 5 minutes).
SLACK_SIGNING = TimestampedSignature(
    "X-Slack-Request-Timestamp", "X-Slack-Signature", prefix="v0=", before=b"v0:", between=b":"
)


def slack_signature_problem(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> str:
    """Why a request is not signed by Slack (v0 HMAC-SHA256), or "" when it is."""
    return SLACK_SIGNING.problem(secret, headers, body, now=now)


#: Kinds whose jobs carry a customer's message or an agent's reply: /healthz alerts on them.
CUSTOMER_WORK = frozenset(name for name, kind in CATALOGUE.items() if kind.may_park)


class HealthCheck:
    """Answers whether the database and Slack are reachable and customer work keeps moving.

    Unhealthy (503) when a check fails, or when a job of ``customer_kinds`` has waited longer
    than ``alert_after_seconds`` since it was created; the report says how many jobs of each
    kind wait and how old the oldest is.
    """

    def __init__(
        self,
        slack_check: Callable[[], Awaitable[None]],
        *,
        alert_after_seconds: float,
        customer_kinds: Collection[str] = CUSTOMER_WORK,
        clock: Clock = utcnow,
    ) -> None:
        self.slack_check = slack_check
        self.alert_after_seconds = alert_after_seconds
        self.customer_kinds = customer_kinds
        self.clock = clock
        self._slack_checked_at = 0.0
        self._slack_status = "unknown"

    async def report(self) -> tuple[bool, dict[str, object]]:
        checks: dict[str, str] = {}
        try:
            await Job.filter(id=0).exists()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {exc}"
        now = time.monotonic()
        if now - self._slack_checked_at > _SLACK_CHECK_SECONDS or self._slack_status != "ok":
            try:
                await self.slack_check()
                self._slack_status = "ok"
            except DeliveryError as exc:
                self._slack_status = f"unreachable: {exc.reason}"
            self._slack_checked_at = now
        checks["slack"] = self._slack_status
        waiting: dict[str, dict[str, float]] = {}
        if checks["database"] == "ok":
            ages = await self.waiting()
            waiting = {w.kind: {"count": w.count, "oldest_seconds": round(age)} for w, age in ages}
            checks["jobs"] = self._jobs_status(ages)
        else:
            checks["jobs"] = "unknown: the database is unreachable"
        healthy = all(status == "ok" for status in checks.values())
        return healthy, {**checks, "waiting": waiting}

    async def waiting(self) -> list[tuple[Waiting, float]]:
        """Due unfinished jobs by kind, with the age in seconds of each kind's oldest."""
        now = self.clock()
        found = await waiting_by_kind(now)
        return [(w, max(0.0, (now - w.oldest).total_seconds())) for w in found]

    def _jobs_status(self, ages: list[tuple[Waiting, float]]) -> str:
        late = [
            f"{w.count} {w.kind} (oldest {round(age)} s)"
            for w, age in sorted(ages, key=lambda pair: -pair[1])
            if w.kind in self.customer_kinds and age > self.alert_after_seconds
        ]
        if not late:
            return "ok"
        return f"customer work has waited longer than {self.alert_after_seconds:g} s: " + ", ".join(
            late
        )


def build_web_app(
    bolt: AsyncApp | None,
    health: HealthCheck,
    routes: Iterable[web.RouteDef] = (),
    *,
    slack_signing_secret: str = "",
) -> web.Application:
    """The service's HTTP routes, plus the ``routes`` of other channels (Telegram, webhooks)."""
    app = web.Application(client_max_size=2 * 1024 * 1024)

    async def slack(request: web.Request) -> web.Response:
        if bolt is None:
            raise web.HTTPNotFound(text="Slack runs in Socket Mode on this service")
        body = await request.read()
        problem = slack_signature_problem(slack_signing_secret, request.headers, body)
        if problem:
            return web.json_response({"error": problem}, status=401)
        try:
            bolt_request = AsyncBoltRequest(
                body=body.decode("utf-8"),
                query=request.query_string,
                headers=dict(request.headers),
            )
            # bolt's middleware reads event.type before any listener could refuse it.
            if not isinstance(bolt_request.body.get("event", {}), dict):
                raise ValueError("event is not an object")
        except (ValueError, RecursionError, AttributeError, TypeError):
            # Not UTF-8, not JSON, or JSON that is not an object: bolt cannot take it apart.
            return web.json_response({"error": "not a Slack request payload"}, status=400)
        return await to_aiohttp_response(await bolt.async_dispatch(bolt_request))

    async def healthz(request: web.Request) -> web.Response:
        healthy, report = await health.report()
        return web.json_response(report, status=200 if healthy else 503)

    async def metrics(request: web.Request) -> web.Response:
        JOB_QUEUE_DEPTH.set(await queue_depth())
        ages = {w.kind: age for w, age in await health.waiting()}
        # Every kind has a series, 0 while none of it waits, so an alert rule has one to read.
        JOB_OLDEST_WAITING.clear()
        for kind in sorted({*CATALOGUE, *ages}):
            JOB_OLDEST_WAITING.labels(kind).set(ages.get(kind, 0.0))
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_post("/slack/events", slack)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.add_routes(routes)
    return app
