"""Replicas learn from each other: what a lead teaches on one replica reaches the others."""

from __future__ import annotations

from bot.routing import FixedSkillClassifier
from bot.shapes import InboundMessage, Triage
from models import SkillExample
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import SettingsFactory, eventually, running


class LearningClassifier:
    """Tags everything as general and remembers what it was taught."""

    def __init__(self) -> None:
        self.fixed = FixedSkillClassifier("general")
        self.learned: list[tuple[str, str]] = []

    async def triage(self, message: InboundMessage) -> Triage:
        return await self.fixed.triage(message)

    async def learn(self, skill: str, text: str) -> None:
        self.learned.append((skill, text))


async def test_examples_another_replica_stored_are_learned_here_too(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    classifier = LearningClassifier()
    async with running(
        make_settings, slack, relay, classifier=classifier, learning_sync_seconds=0.05
    ):
        # What the other replica stores when a lead reassigns there, and an admin's example in
        # the config, which every replica reads at start anyway.
        await SkillExample.create(skill="billing", text="Rechnung doppelt", source="reassignment")
        await SkillExample.create(skill="billing", text="invoice", source="config")

        async def learned() -> bool:
            return bool(classifier.learned)

        await eventually(learned)
        # Later examples are found by a later look; the earlier ones are not learned again.
        await SkillExample.create(skill="technical", text="Login kaputt", source="reassignment")
        await eventually(lambda: _has(classifier, ("technical", "Login kaputt")))

    assert classifier.learned == [("billing", "Rechnung doppelt"), ("technical", "Login kaputt")]


async def _has(classifier: LearningClassifier, example: tuple[str, str]) -> bool:
    return example in classifier.learned
