"""Fair assignment: round-robin in the skill's user group, skipping the away and the full."""

from __future__ import annotations

from bot.roles import Actor
from models import AuditEntry, Conversation
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import Harness, SettingsFactory, running
from tests.test_flow_commands import settle, thread_texts
from tests.test_flow_email_to_slack import mail

BEN, LENA, CARL = "U0BEN", "U0LENA", "U0CARL"


async def new(h: Harness, n: int) -> Conversation:
    await h.send_mail(mail(f"Frage {n}", subject=f"Frage {n}", sender=f"K{n} <k{n}@example.org>"))
    await settle(h)
    return await Conversation.get(subject=f"Frage {n}")


async def test_new_conversations_go_round_the_team_skipping_who_cannot_take_one(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    for user, name in ((BEN, "ben"), (LENA, "lena"), (CARL, "carl")):
        slack.add_user(user, name, display_name=name.title())
    team = slack.add_usergroup("general-team", [BEN, LENA, CARL])
    extra = f'[[assignment]]\nskill = "general"\nusergroup = "{team}"\nmax_open = 2\n'
    async with running(make_settings, slack, relay, extra=extra) as h:
        first, second = await new(h, 1), await new(h, 2)
        slack.set_status(CARL, "Vacation", ":palm_tree:")
        third = await new(h, 3)
        slack.set_presence(BEN, "away")
        fourth = await new(h, 4)
        fifth = await new(h, 5)
        nobody = thread_texts(h, fifth)[-1]
        await h.service.workflow.assign(Actor("U0LEAD", "Lead"), fifth, BEN)  # over the limit
        await settle(h)
        await fifth.refresh_from_db()
        why = [str(e.summary) for e in await AuditEntry.filter(action="assign").order_by("id")]

    assert [c.owner for c in (first, second, third, fourth)] == [BEN, LENA, BEN, LENA]
    assert why[:4] == [
        f"Fair assignment (general) assigned this to <@{BEN}>: next in turn, 1 of 2 open.",
        f"Fair assignment (general) assigned this to <@{LENA}>: next in turn, 1 of 2 open.",
        f"Fair assignment (general) assigned this to <@{BEN}>: first free in turn, 2 of 2 "
        f"open; skipped <@{CARL}>: status :palm_tree:.",
        f"Fair assignment (general) assigned this to <@{LENA}>: next in turn, 2 of 2 open.",
    ]
    assert nobody == (
        f"Nobody in <!subteam^{team}> is free to take this (<@{CARL}>: status :palm_tree:; "
        f"<@{BEN}>: away; <@{LENA}>: 2 of 2 open); it waits for someone to take it."
    )
    assert fifth.owner == BEN  # a lead can always assign
