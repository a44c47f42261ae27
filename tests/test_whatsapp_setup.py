"""Setting WhatsApp up: the settings' checks and ``switchboard whatsapp check``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from adapters.cli.whatsapp import check_whatsapp
from bot.errors import ConfigError
from bot.settings import Settings, settings_from_toml
from standins.whatsapp import WhatsAppSandbox
from tests.conftest import toml_for


@pytest.fixture
async def whatsapp() -> AsyncIterator[WhatsAppSandbox]:
    async with WhatsAppSandbox() as sandbox:
        yield sandbox


def settings_for(table: str, env: dict[str, str], extra: str = "") -> Settings:
    return settings_from_toml(
        toml_for(extra=table + extra),
        {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", **env},
    )


def test_enabled_without_secrets_names_each_variable() -> None:
    table = '[whatsapp]\nenabled = true\nphone_number_id = "106540352242922"\n'
    with pytest.raises(ConfigError) as caught:
        settings_for(table, {})
    assert caught.value.setting == "WHATSAPP_TOKEN"
    assert "system user" in caught.value.problem
    with pytest.raises(ConfigError) as caught:
        settings_for(table, {"WHATSAPP_TOKEN": "t", "WHATSAPP_VERIFY_TOKEN": "v"})
    assert caught.value.setting == "WHATSAPP_APP_SECRET"


@pytest.mark.parametrize(
    ("line", "setting", "words"),
    [
        ('phone_number_id = "+1 555 0100"', "whatsapp.phone_number_id", "not the phone number"),
        ('api_version = "21"', "whatsapp.api_version", 'like "v21.0"'),
        (
            'phone_number_id = "1"\n[[whatsapp.templates]]\nname = "Hi There"\nlanguage = "en"',
            "whatsapp.templates[0].name",
            "lower-case",
        ),
        (
            'phone_number_id = "1"\n[[whatsapp.templates]]\nname = "hi"\nlanguage = "en"\n'
            'parameters = ["customer_nmae"]',
            "whatsapp.templates[0].parameters",
            "customer_name",
        ),
    ],
)
def test_wrong_whatsapp_settings_say_how_to_fix_them(line: str, setting: str, words: str) -> None:
    env = {"WHATSAPP_TOKEN": "t", "WHATSAPP_APP_SECRET": "s", "WHATSAPP_VERIFY_TOKEN": "v"}
    with pytest.raises(ConfigError) as caught:
        settings_for(f"[whatsapp]\nenabled = true\n{line}\n", env)
    assert caught.value.setting == setting
    assert words in caught.value.problem


async def test_check_says_the_number_works(whatsapp: WhatsAppSandbox) -> None:
    settings = settings_for(whatsapp.settings_toml(), whatsapp.env())
    settings = replace(settings, service=replace(settings.service, public_url="https://s.example"))
    ok, lines = await check_whatsapp(settings)
    assert ok
    assert lines[0] == (
        "ok: phone number id 106540352242922 is +1 555-010-0199 (Shop Support), quality GREEN"
    )
    assert "https://s.example/whatsapp/webhook" in lines[1]


async def test_check_says_the_token_is_refused(whatsapp: WhatsAppSandbox) -> None:
    env = {**whatsapp.env(), "WHATSAPP_TOKEN": "EAAG-wrong"}
    ok, (line,) = await check_whatsapp(settings_for(whatsapp.settings_toml(), env))
    assert not ok
    assert line.startswith("WhatsApp refuses WHATSAPP_TOKEN")
    assert "190" in line


async def test_check_says_the_phone_number_id_is_wrong(whatsapp: WhatsAppSandbox) -> None:
    table = whatsapp.settings_toml().replace(whatsapp.phone_number_id, "123456")
    ok, (line,) = await check_whatsapp(settings_for(table, whatsapp.env()))
    assert not ok
    assert line.startswith("phone number id 123456 does not work with this token")
    assert "API Setup" in line
