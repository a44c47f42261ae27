"""Settings of deadlines, rules and assignment: the documented examples hold, mistakes are named."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from bot.settings import settings_from_toml
from bot.shapes import Priority
from tests.test_settings import ENV, EXAMPLE, MINIMAL, problems_in

SKILLS = MINIMAL + '[[skills]]\nname = "technical"\nchannel = "support-tech"\n'
SKILLS += '[[skills]]\nname = "billing"\nchannel = "support-billing"\n'


def test_the_commented_examples_are_valid_settings() -> None:
    text = EXAMPLE.read_text()
    start = text.index("# Deadlines in business time")
    examples = "\n".join(
        line[2:] for line in text[start:].splitlines() if re.match(r"^# (\[|[a-z_]+ = )", line)
    )
    env = {**ENV, "CRM_WEBHOOK_SECRET": "0123456789abcdef0123"}
    settings = settings_from_toml(text[:start] + examples.replace("S0123ABCD", "S0TEAM"), env)
    sla = settings.sla
    assert sla.enabled
    assert sla.hours.holidays == "DE/BY"
    assert sla.targets_for("technical", Priority.URGENT).first_response == timedelta(minutes=30)
    assert sla.targets_for("technical", Priority.URGENT).page_oncall_on_breach
    assert sla.targets_for("billing", Priority.URGENT).first_response == timedelta(hours=1)
    assert sla.targets_for("billing", Priority.NORMAL).resolution == timedelta(hours=40)
    assert sla.hours_for("technical").timezone == "America/New_York"
    assert sla.leads_channel_for("technical") == "support-us-leads"
    assert [r.name for r in settings.rules] == [
        "Angry VIP at night",
        "Nobody took it",
        "Breaches to the CRM",
    ]
    assert settings.assignment[0].max_open == 8


def test_without_an_sla_table_there_are_no_deadlines() -> None:
    assert not settings_from_toml(MINIMAL, ENV).sla.enabled
    assert settings_from_toml(MINIMAL + "[sla]\n", ENV).sla.enabled


@pytest.mark.parametrize(
    ("extra", "setting", "hint"),
    [
        ('[sla]\nweek = "mon-fri 9-18"\n', "sla.week", "hours are written like"),
        ('[sla]\ntimezone = "Berlin"\n', "sla.timezone", "Europe/Berlin"),
        ('[sla]\nholidays = "XX"\n', "sla.holidays", "country"),
        ('[sla]\nextra_holidays = ["24.12."]\n', "sla.extra_holidays", "2026-12-24"),
        ("[sla]\nwarning_percent = 100\n", "sla.warning_percent", "from 1 to 99"),
        (
            '[[sla.policies]]\npriority = "asap"\n',
            "sla.policies[0].priority",
            '"urgent", "high"',
        ),
        ('[[sla.policies]]\nfirst_response = "4 hours"\n', "sla.policies[0].first_response",
         '"4h"'),
        ('[[rules]]\nname = "x"\nwhen = { event = "mail" }\nthen = { add_tag = "x" }\n',
         "rules[0].when.event", "message_in"),
        ('[[rules]]\nname = "x"\nwhen = { event = "vip" }\n', "rules[0].then", "no action"),
        ('[[rules]]\nname = "x"\nwhen = { event = "vip" }\nthen = { webhook = "crm" }\n',
         "rules[0].then.webhook", "[[outgoing_webhooks]]"),
        ('[[assignment]]\nskill = "general"\nusergroup = "team"\n',
         "assignment[0].usergroup", "S0123ABCD"),
    ],
)  # fmt: skip
def test_a_wrong_setting_is_named_with_how_to_fix_it(extra: str, setting: str, hint: str) -> None:
    found = problems_in(SKILLS + extra)
    assert found[0] == setting
    assert hint in found[1]
