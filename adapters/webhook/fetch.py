"""Fetching the files a webhook message links to, without becoming a proxy into our network.

Only http(s) URLs, at most ``max_bytes``, at most three redirects. Unless a source allows it,
no address that is not globally routable: IP literals are checked here, and host names are
checked by the resolver, at connection time, so a name that changes its answer between a check
and the connection (DNS rebinding) cannot reach a private address either.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from bot.shapes import Attachment

_MAX_REDIRECTS = 3
_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)


class AttachmentRefused(Exception):
    """The URL is not one we fetch (scheme, private address, size): the caller's mistake."""


class AttachmentUnavailable(Exception):
    """The URL could not be fetched now (unreachable, 5xx): worth sending again later."""


class _PrivateAddress(OSError):
    pass


def is_public(address: str) -> bool:
    """Whether ``address`` is a globally routable IP address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_global and not ip.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """Resolves names like aiohttp does, dropping every address that is not public."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [result for result in found if is_public(result["host"])]
        if not public:
            raise _PrivateAddress(f"{host} resolves to a private or local address")
        return public

    async def close(self) -> None:
        await self._inner.close()


def _check_url(url: str, allow_private: bool) -> None:
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:  # an unclosed "[" of an IPv6 address
        raise AttachmentRefused(f"{url!r} is not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not hostname:
        raise AttachmentRefused(f"{url!r} is not an http(s) URL")
    if allow_private:
        return
    try:
        literal = ipaddress.ip_address(hostname)
    except ValueError:
        return
    if not is_public(str(literal)):
        raise AttachmentRefused(f"{url!r} points to a private or local address")


def _filename(url: str, response: aiohttp.ClientResponse, given: str) -> str:
    if given:
        return given
    disposition = response.content_disposition
    if disposition is not None and disposition.filename:
        return disposition.filename
    name = unquote(urlsplit(url).path.rpartition("/")[2])
    return name or "attachment"


async def fetch_attachment(
    url: str, *, filename: str = "", allow_private: bool, max_bytes: int
) -> Attachment:
    """The file at ``url``; raises ``AttachmentRefused`` or ``AttachmentUnavailable``."""
    connector_args: dict[str, Any] = {} if allow_private else {"resolver": PublicOnlyResolver()}
    connector = aiohttp.TCPConnector(**connector_args)
    async with aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT) as session:
        for _ in range(_MAX_REDIRECTS + 1):
            _check_url(url, allow_private)
            try:
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        url = urljoin(url, response.headers.get("Location", ""))
                        continue
                    return await _read(url, response, filename, max_bytes)
            except (aiohttp.InvalidURL, UnicodeError) as exc:
                # A port out of range, a host name IDNA cannot encode: sending again won't help.
                raise AttachmentRefused(f"{url!r} is not a valid URL") from exc
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _PrivateAddress):
                    raise AttachmentRefused(str(exc.os_error)) from exc
                raise AttachmentUnavailable(f"{url}: {exc}") from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise AttachmentUnavailable(f"{url}: {type(exc).__name__} {exc}") from exc
    raise AttachmentRefused(f"{url!r}: more than {_MAX_REDIRECTS} redirects")


async def _read(
    url: str, response: aiohttp.ClientResponse, filename: str, max_bytes: int
) -> Attachment:
    if response.status >= 500 or response.status == 429:
        raise AttachmentUnavailable(f"{url} answered {response.status}")
    if response.status >= 400:
        raise AttachmentRefused(f"{url} answered {response.status}")
    too_big = AttachmentRefused(f"{url} is bigger than the limit of {max_bytes} bytes")
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_big
    data = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > max_bytes:
            raise too_big
    return Attachment(
        filename=_filename(url, response, filename),
        content_type=response.content_type or "application/octet-stream",
        data=bytes(data),
    )
