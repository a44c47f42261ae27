"""A loopback callback receiver for the webhook channel: the other side in tests and the demo.

It checks the signature like a real receiver should (401 when it is wrong) and keeps every
reply it accepted. ``fail_next`` makes it answer an error for a while (an outage).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from aiohttp import web

from adapters.webhook.signing import signature_problem
from standins.loopback import Served, serve_on_loopback


class CallbackReceiver(Served):
    """Serves ``POST /callback`` on 127.0.0.1; ``received`` holds the accepted JSON bodies."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.refused: list[int] = []
        self._failures: deque[int] = deque()
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        """The callback URL to configure, like ``http://127.0.0.1:PORT/callback``."""
        if not self._url:
            raise RuntimeError("start the callback receiver first")
        return self._url

    def fail_next(self, status: int = 503, count: int = 1) -> None:
        """Answer ``status`` to the next ``count`` requests."""
        self._failures.extend([status] * count)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/callback", self._handle)
        self._runner, base_url = await serve_on_loopback(app, host, port)
        self._url = f"{base_url}callback"

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``count`` replies have been accepted."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.received) >= count), timeout
            )
        return self.received

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._failures:
            status = self._failures.popleft()
            self.refused.append(status)
            return web.json_response({"error": "unavailable"}, status=status)
        problem = signature_problem(self.secret, request.headers, body)
        if problem:
            self.refused.append(401)
            return web.json_response({"error": problem}, status=401)
        payload = json.loads(body)
        # A retried reply carries the same event id; a receiver keeps it once.
        if all(r["event_id"] != payload.get("event_id") for r in self.received):
            self.received.append(payload)
        async with self._arrived:
            self._arrived.notify_all()
        return web.json_response({"ok": True})
