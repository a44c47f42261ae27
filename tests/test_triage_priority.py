"""Priority rules on top of the model's reading, and language detection."""

from __future__ import annotations

import pytest

from bot.shapes import Priority
from bot.triage import PriorityRules, PrioritySignals, decide_priority
from bot.triage.language import LanguageDetector

RULES = PriorityRules(vip_domains=("bigcorp.example",), vip_customers=("ceo@smallshop.example",))


def decide(text: str, **signals: object) -> tuple[Priority, str]:
    return decide_priority(PrioritySignals(text=text, **signals), RULES)  # type: ignore[arg-type]


def test_a_plain_message_is_normal_without_a_reason() -> None:
    assert decide("Can I get a copy of my invoice?") == (Priority.NORMAL, "")


def test_an_urgent_keyword_from_a_vip_domain_names_both() -> None:
    priority, reason = decide("Server down since 8 am!", sender_address="it@BigCorp.example")

    assert priority == Priority.URGENT
    assert reason == "urgent: 'Server down', VIP domain"


def test_keywords_match_at_the_start_of_words_in_both_languages() -> None:
    assert decide("Das ist dringender als alles andere")[0] == Priority.URGENT
    assert decide("Sonst schalte ich meinen Anwalt ein.") == (Priority.HIGH, "high: 'Anwalt'")
    assert decide("Keine Eile, nur eine Frage.") == (Priority.LOW, "low: 'Keine Eile'")
    # "down" alone is no keyword: a download is not an outage.
    assert decide("The download link is broken")[0] == Priority.NORMAL


def test_the_model_counts_only_when_it_is_sure() -> None:
    sure = decide("Everything stopped", model_priority=Priority.URGENT, model_confidence=0.8)
    unsure = decide("Everything stopped", model_priority=Priority.URGENT, model_confidence=0.3)

    assert sure == (Priority.URGENT, "urgent: urgent tone")
    assert unsure == (Priority.NORMAL, "")


def test_negative_sentiment_raises_one_step_but_not_to_urgent() -> None:
    angry = decide("This is unacceptable.", sentiment="negative", sentiment_confidence=0.9)
    angrier = decide(
        "This is unacceptable.",
        model_priority=Priority.HIGH,
        model_confidence=0.9,
        sentiment="negative",
        sentiment_confidence=0.9,
    )

    assert angry == (Priority.HIGH, "high: negative sentiment")
    assert angrier == (Priority.HIGH, "high: pressing tone, negative sentiment")


def test_a_vip_customer_is_raised_even_from_low() -> None:
    priority, reason = decide("No rush, just a small idea.", sender_address="CEO@smallshop.example")

    assert priority == Priority.NORMAL
    assert reason == "normal: 'No rush', VIP customer"


@pytest.mark.parametrize(
    ("follow_ups", "waiting_hours", "expected"),
    [
        (1, 0.0, (Priority.NORMAL, "")),
        (2, 0.0, (Priority.HIGH, "high: 2 follow-ups")),
        (0, 30.0, (Priority.HIGH, "high: waiting 30 h")),
        (3, 80.0, (Priority.URGENT, "urgent: 3 follow-ups, waiting 80 h")),
    ],
)
def test_follow_ups_and_waiting_time_raise_the_priority(
    follow_ups: int, waiting_hours: float, expected: tuple[Priority, str]
) -> None:
    assert decide("Any news?", follow_ups=follow_ups, waiting_hours=waiting_hours) == expected


def test_rules_are_configurable() -> None:
    rules = PriorityRules(urgent_keywords=("stillstand",), follow_ups_to_raise=0)

    priority, reason = decide_priority(
        PrioritySignals(text="Produktionsstillstand! Server down", follow_ups=5), rules
    )

    assert (priority, reason) == (Priority.NORMAL, "")
    assert decide_priority(PrioritySignals(text="Stillstand in Halle 3"), rules)[0] == (
        Priority.URGENT
    )


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Guten Tag, meine Rechnung ist leider falsch.", "de"),
        ("Hello, my invoice is wrong, could you check it?", "en"),
        ("Bonjour, ma facture est incorrecte.", "fr"),
        ("", ""),
    ],
)
def test_the_language_is_detected_offline(text: str, language: str) -> None:
    assert LanguageDetector().detect(text) == language
