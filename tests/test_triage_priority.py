"""Priority rules on top of the model's reading, and language detection."""

from __future__ import annotations

import pytest

from bot.shapes import Priority
from bot.triage import PriorityRules, PrioritySignals, decide_priority
from bot.triage.language import LanguageDetector
from bot.triage.priority import readable

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


def test_a_keyword_over_a_reading_of_nothing_to_do_names_only_the_keyword() -> None:
    idle = (("nothing to do", 0.9), ("request", 0.1))
    assert decide("urgent: log in here", concerns=idle) == (Priority.URGENT, "urgent: 'urgent'")


def test_a_keyword_denied_or_naming_another_case_does_not_count() -> None:
    for said in ("Nicht dringend, nur eine Frage zur Rechnung.", "This is not urgent at all."):
        assert decide(said) == (Priority.NORMAL, "")
    assert decide("Es ist kein Notfall, aber bitte prüfen Sie das.") == (Priority.NORMAL, "")
    # Out-of-office replies and signatures name the case in which to call someone else.
    for case in (
        "Bis 3. Juni bin ich nicht im Büro. In dringenden Fällen wenden Sie sich an Frau Weber.",
        "I am away this week. For urgent matters please contact our front desk.",
        "Im Notfall erreichen Sie mich unter 0171 2345678.",
    ):
        assert decide(case) == (Priority.NORMAL, ""), case
    # Said of itself, the same words still count.
    assert decide("Dringend: die Kasse bucht nichts mehr.")[0] == Priority.URGENT
    assert decide("It is urgent, not a joke.")[0] == Priority.URGENT
    assert decide("Login not working, urgent!")[0] == Priority.URGENT
    assert decide("Nicht so dringend, danke.") == (Priority.NORMAL, "")
    assert decide("Das ist ein Notfall!")[0] == Priority.URGENT


def test_a_keyword_for_a_case_named_loosely_or_in_quotes_does_not_count() -> None:
    for said in (
        "I am on leave. For anything urgent regarding orders, write to orders@shop.example.",
        "Ruf mich an, falls es dringend ist.",
        "Please call me if urgent.",
        'Bei der Aktion "Notfall-Set gratis" habe ich die Frist verpasst. Macht nichts.',
        "Ihre Mail „Dringend: neue AGB“ habe ich gelesen, alles klar.",
    ):
        assert decide(said) == (Priority.NORMAL, ""), said
    # Outside the quotes it still counts.
    assert decide('Dringend! Das "Kassensystem" startet nicht.')[0] == Priority.URGENT


def test_the_customer_saying_nothing_is_pressing_outweighs_the_models_reading() -> None:
    said = "Just confirming I received the invoice, no action needed on your side."
    assert decide(said, concerns=OUTAGE) == (Priority.NORMAL, "")
    assert decide(said) == (Priority.LOW, "low: 'no action needed'")
    # A keyword still counts.
    assert decide("Server down! No action needed from you, we restart it.")[0] == Priority.URGENT


OUTAGE = (("outage", 0.55), ("blocked work", 0.3), ("request", 0.1), ("nothing to do", 0.05))


@pytest.mark.parametrize(
    "text",
    [
        "Never mind my last email, the firewall on our side was blocking the port.",
        "Please ignore my previous message, the backup was in another folder after all.",
        "Hat sich erledigt, der Server läuft wieder. Danke trotzdem!",
        "Bitte ignorieren Sie meine letzte Mail, das Passwort hat doch funktioniert.",
    ],
)
def test_a_customer_withdrawing_a_question_is_not_pressed_by_its_problem_words(text: str) -> None:
    # What they report is over: the model's reading of an outage does not make it high.
    assert decide(text, concerns=OUTAGE) == (Priority.NORMAL, "")
    assert decide(text)[0] == Priority.LOW


def test_the_reason_names_the_concerns_the_model_saw() -> None:
    high = decide("Everything stopped", concerns=OUTAGE)
    sure = decide(
        "Everything stopped", concerns=OUTAGE, model_priority=Priority.URGENT, model_confidence=0.8
    )
    unsure = decide(
        "Everything stopped", concerns=OUTAGE, model_priority=Priority.URGENT, model_confidence=0.3
    )

    assert high == (Priority.HIGH, "high: outage, blocked work")
    assert sure == (Priority.URGENT, "urgent: outage, blocked work")
    assert unsure == high


def test_pressing_concerns_add_up_and_a_plain_request_stays_normal() -> None:
    spread = (("lost money", 0.3), ("security", 0.25), ("request", 0.45))
    plain = (("outage", 0.1), ("request", 0.8), ("nothing to do", 0.1))

    assert decide("Strange charge", concerns=spread) == (
        Priority.HIGH,
        "high: lost money, security",
    )
    assert decide("Where is my parcel?", concerns=plain) == (Priority.NORMAL, "")


def test_an_urgent_tone_alone_is_no_reason() -> None:
    # The urgency head counts where a pressing concern is in sight, and names it.
    vague = (("request", 0.6), ("deadline", 0.15), ("nothing to do", 0.25))
    unsure = decide(
        "Please hurry", concerns=vague, model_priority=Priority.URGENT, model_confidence=0.9
    )
    no_concern = decide("Please hurry", model_priority=Priority.URGENT, model_confidence=0.9)

    assert unsure == (Priority.URGENT, "urgent: deadline")
    assert no_concern == (Priority.NORMAL, "")


def test_messages_that_need_nothing_are_low() -> None:
    thanks = (("nothing to do", 0.7), ("request", 0.3))
    auto = (("automatic reply", 0.8), ("outage", 0.1), ("request", 0.1))

    assert decide("Thanks, all good", concerns=thanks) == (Priority.LOW, "low: nothing to do")
    assert decide("I am out of office", concerns=auto) == (Priority.LOW, "low: automatic reply")
    # An automatic reply asks nothing: read as one, a question is still a person's.
    asked = "My refills never came and I have two days left. Can you send them?"
    assert decide(asked, concerns=auto) == (Priority.NORMAL, "")
    assert decide("Where are my refills?! Two days left.", concerns=auto)[0] == Priority.NORMAL
    encoded = decide("=?UTF-8?B?w6TDtsO8?= out of office", concerns=auto)
    assert encoded == (Priority.LOW, "low: automatic reply")


def test_automatic_mail_is_low_whatever_it_says() -> None:
    signals = {
        "concerns": OUTAGE,
        "model_priority": Priority.URGENT,
        "model_confidence": 0.99,
        "sentiment": "anger",
        "sentiment_confidence": 0.99,
        "sender_address": "it@bigcorp.example",
        "follow_ups": 5,
        "waiting_hours": 100.0,
    }

    out_of_office = decide("URGENT: server down, call me", automated=True, **signals)

    assert out_of_office == (Priority.LOW, "low: automatic mail")
    assert decide("URGENT: server down, call me", **signals)[0] == Priority.URGENT


def test_unreadable_text_never_raises_the_priority() -> None:
    garbage = "urgent \ufffd\ufffd\ufffd asap \ufffd\ufffd\ufffd\ufffd"

    priority, reason = decide(
        garbage,
        readable=False,
        concerns=OUTAGE,
        model_priority=Priority.URGENT,
        model_confidence=0.99,
        sentiment="anger",
        sentiment_confidence=0.99,
    )

    assert (priority, reason) == (Priority.NORMAL, "normal: unreadable text")
    # The conversation's own rules still count: a customer waiting is waiting.
    assert decide(garbage, readable=False, waiting_hours=30.0)[0] == Priority.HIGH


@pytest.mark.parametrize(
    ("text", "legible"),
    [
        ("", False),
        ("   \n\t ", False),
        ("Ã¤Ã¶Ã¼ 0x1f 0x8b ÿþ Ð Ï à¡± á", False),
        ("=?UTF-8?B?w6TDtsO8?= \ufffd\ufffdJ\ufffd\ufffdZ\ufffdx", False),
        ("ok", True),
        ("Rechnung 2291-22 bis 12.05. bitte!", True),
        ("https://shop.example/order/5512", True),
    ],
)
def test_readable_text_is_told_from_noise(text: str, legible: bool) -> None:
    assert readable(text) is legible


def test_an_angry_customer_is_named_and_raised_one_step() -> None:
    assert decide("You again!", sentiment="anger", sentiment_confidence=0.9) == (
        Priority.HIGH,
        "high: angry customer",
    )
    assert decide("Not again", sentiment="frustration", sentiment_confidence=0.9) == (
        Priority.HIGH,
        "high: frustrated customer",
    )
    assert decide("Thank you!", sentiment="gratitude", sentiment_confidence=0.9) == (
        Priority.NORMAL,
        "",
    )


def test_negative_sentiment_raises_one_step_but_not_to_urgent() -> None:
    angry = decide("This is unacceptable.", sentiment="negative", sentiment_confidence=0.9)
    angrier = decide(
        "This is unacceptable.",
        concerns=(("lost money", 0.9), ("request", 0.1)),
        sentiment="negative",
        sentiment_confidence=0.9,
    )

    assert angry == (Priority.HIGH, "high: negative sentiment")
    assert angrier == (Priority.HIGH, "high: lost money, negative sentiment")


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
