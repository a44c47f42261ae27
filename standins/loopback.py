"""Serving an aiohttp app on loopback: the local stand-ins for Slack, Telegram and callbacks."""

from __future__ import annotations

import ipaddress
from types import TracebackType
from typing import Self

from aiohttp import web


async def serve_on_loopback(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a loopback address (port 0 picks a free one).

    Returns the runner (``cleanup()`` stops it) and the base URL, like ``http://127.0.0.1:PORT/``.
    """
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"stand-in servers only listen on loopback addresses, not {host!r}")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    shown_host = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown_host}:{runner.addresses[0][1]}/"


class Served:
    """``async with`` for a stand-in server: ``start()`` on entry, ``stop()`` on exit."""

    __slots__ = ()

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
