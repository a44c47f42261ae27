"""WhatsApp subcommands: ``check`` asks the Graph API whether the token and number work."""

from __future__ import annotations

import argparse
import asyncio

import aiohttp

from adapters.whatsapp.graph import GraphClient
from adapters.whatsapp.webhook import WEBHOOK_PATH
from bot.errors import BlockedDeliveryError, ConfigError, DeliveryError, TransientDeliveryError
from bot.settings import Settings, config_path, load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``switchboard whatsapp ...``."""
    whatsapp = subparsers.add_parser("whatsapp", help="the WhatsApp Business number")
    commands = whatsapp.add_subparsers(dest="whatsapp_command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check", help="ask the Graph API whether WHATSAPP_TOKEN and phone_number_id work"
    )
    check.set_defaults(func=_check)


async def check_whatsapp(settings: Settings) -> tuple[bool, list[str]]:
    """Whether the token and phone number id work, and lines saying what was found or wrong."""
    whatsapp = settings.whatsapp
    if not whatsapp.enabled:
        raise ConfigError("whatsapp.enabled", "is false: set it to true to use WhatsApp")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        graph = GraphClient(whatsapp, session)
        try:
            number = await graph.phone_number()
        except DeliveryError as exc:
            return False, [_explain(exc, whatsapp.phone_number_id, whatsapp.api_url)]
    lines = [
        f"ok: phone number id {whatsapp.phone_number_id} is "
        f"{number.get('display_phone_number', '?')} ({number.get('verified_name', '?')}), "
        f"quality {number.get('quality_rating', 'unknown')}",
    ]
    public_url = settings.service.public_url.rstrip("/")
    if public_url:
        lines.append(
            f"webhook: enter {public_url}{WEBHOOK_PATH} as the Callback URL and "
            "WHATSAPP_VERIFY_TOKEN as the Verify token (WhatsApp > Configuration), and "
            "subscribe to the messages field"
        )
    else:
        lines.append(
            "webhook: set service.public_url to the service's https:// address; the Callback "
            f"URL is that address + {WEBHOOK_PATH}"
        )
    return True, lines


def _explain(exc: DeliveryError, phone_number_id: str, api_url: str) -> str:
    if isinstance(exc, BlockedDeliveryError):
        return (
            f"WhatsApp refuses WHATSAPP_TOKEN ({exc.reason.split(': check')[0]}): create a "
            "permanent token for a system user with the whatsapp_business_messaging and "
            "whatsapp_business_management permissions (Business settings > System users > "
            "Generate new token) and export it"
        )
    if isinstance(exc, TransientDeliveryError):
        return f"cannot reach the Graph API at {api_url}: {exc.reason}"
    return (
        f"phone number id {phone_number_id} does not work with this token ({exc.reason}): "
        "copy the Phone number ID from WhatsApp > API Setup in the Meta app (not the number)"
    )


def _check(args: argparse.Namespace) -> int:
    settings = load_settings(config_path(args.config))
    ok, lines = asyncio.run(check_whatsapp(settings))
    print("\n".join(lines))
    return 0 if ok else 1
