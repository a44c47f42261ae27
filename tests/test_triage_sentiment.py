"""Sentiment: the shipped heads, their files, the data they learn from, and progress lines."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from adapters.cli import main
from bot.settings import TriageSettings
from bot.triage import TriageEngine, ngrams
from bot.triage.classifier import Prediction
from bot.triage.encoder import Embeddings, EncoderInfo, Feed, SentenceEncoder
from bot.triage.ngrams import with_ngrams
from bot.triage.progress import Progress, duration
from bot.triage.sentiment import (
    HEADS_DIR,
    SENTIMENT_LABELS,
    SentimentHead,
    head_path,
    language_weights,
    load_sentiment_head,
    polarity,
    sentiment_corpora,
    shown_threshold,
    split_corpora,
)
from tests.test_triage_engine import DEFAULT_SKILLS, mail


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.load(backend="onnx")


@pytest.fixture
async def engine(encoder: SentenceEncoder) -> AsyncIterator[TriageEngine]:
    engine = await TriageEngine.load(TriageSettings(), DEFAULT_SKILLS, encoder=encoder)
    async with engine:
        yield engine


def test_a_head_ships_for_each_installable_encoder_and_is_small() -> None:
    for name in ("all-MiniLM-L6-v2", "multilingual-e5-small"):
        path = HEADS_DIR / f"sentiment-{name}.npz"
        head = SentimentHead.read(path)
        assert head.reads_ngrams
        # Seven columns over the embedding and 16,384 n-gram buckets, in float16.
        assert path.stat().st_size < 300_000
        assert set(head.labels) == set(SENTIMENT_LABELS)
        assert 0.0 < head.threshold < 1.0
        assert head.model == name


async def test_the_card_shows_the_mood_of_clear_messages(
    engine: TriageEngine, encoder: SentenceEncoder
) -> None:
    assert load_sentiment_head(encoder) is not None
    thanks = await engine.triage(mail("Thank you so much for your quick and friendly help!"))
    furious, reading = await engine.triage_in_detail(
        mail("I am really angry and disappointed with your service.")
    )

    assert thanks.sentiment in ("gratitude", "positive")
    assert polarity(reading.label) == "negative"
    # Shown only when the head is as sure as it was when right 80% of the time on dev data.
    assert furious.sentiment in ("", reading.label)


async def test_no_mood_is_shown_for_unreadable_text(engine: TriageEngine) -> None:
    triage, reading = await engine.triage_in_detail(mail("\ufffd\ufffd\ufffd Ã¤Ã¶ \ufffd\ufffd"))

    assert triage.sentiment == ""
    assert reading.label in SENTIMENT_LABELS


def test_a_head_is_written_and_read_back(tmp_path: Path, encoder: SentenceEncoder) -> None:
    rng = np.random.default_rng(0)
    head = SentimentHead(
        labels=("negative", "neutral", "positive"),
        weights=rng.normal(size=(384, 3)).astype(np.float32),
        bias=np.zeros(3, np.float32),
        threshold=0.6,
        probes=encoder.encode(["a", "b", "c", "d"]),
        model="all-MiniLM-L6-v2",
        thresholds={"de": 0.6, "en": 0.45},
    )
    path = tmp_path / "sentiment-test.npz"

    head.save(path)
    again = SentimentHead.read(path)

    embeddings = encoder.encode(["What a lovely day", "Where is my parcel?"])
    assert [p.label for p in again.predict(embeddings)] == [
        p.label for p in head.predict(embeddings)
    ]
    assert again.threshold == 0.6
    assert again.labels == head.labels
    # Each language is shown from its own confidence; one the head was not tuned for, from the
    # strictest.
    assert (again.threshold_for("en"), again.threshold_for("de")) == (0.45, 0.6)
    assert again.threshold_for("fr") == 0.6


def test_a_head_over_ngrams_reads_the_same_after_their_weight_changed(
    tmp_path: Path, encoder: SentenceEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    head = SentimentHead(
        labels=("negative", "neutral", "positive"),
        weights=rng.normal(size=(384 + ngrams.DIMENSIONS, 3)).astype(np.float16).astype(np.float32),
        bias=np.zeros(3, np.float32),
        threshold=0.6,
        probes=encoder.encode(["a", "b", "c", "d"]),
        model="all-MiniLM-L6-v2",
    )
    path = tmp_path / "sentiment-test.npz"
    texts = ["Danke, alles super!", "Das ist eine Frechheit.", "Wo bleibt mein Paket?"]
    embeddings = encoder.encode(texts)
    before = head.predict(with_ngrams(embeddings, texts))
    head.save(path)

    # The n-grams now weigh twice as much beside the embedding: the head is rescaled on reading.
    monkeypatch.setattr(ngrams, "WEIGHT", 2 * ngrams.WEIGHT)
    again = SentimentHead.read(path)
    after = again.predict(with_ngrams(embeddings, texts))

    assert again.reads_ngrams
    assert [p.label for p in after] == [p.label for p in before]
    assert [p.confidence for p in after] == pytest.approx([p.confidence for p in before], rel=1e-3)


def test_each_language_weighs_alike_in_training_however_much_data_it_has() -> None:
    weights = language_weights(["en", "en", "en", "de"])
    assert sum(weights[:3]) == pytest.approx(weights[3])
    assert sum(weights) == pytest.approx(4)


def test_a_head_is_not_used_with_an_encoder_it_does_not_fit() -> None:
    def tokenize(texts: list[str]) -> dict[str, list[list[int]]]:
        return {"input_ids": [[1, 2] for _ in texts], "attention_mask": [[1, 1] for _ in texts]}

    def run(feed: Feed) -> Embeddings:
        rows = np.zeros((len(feed["input_ids"]), 384), np.float32)
        rows[:, 0] = 1.0
        return rows

    # Named like the bundled encoder, but it embeds everything in one direction.
    stranger = SentenceEncoder(EncoderInfo("", "test", 384), tokenize, run, 0)

    assert head_path("").name == "sentiment-all-MiniLM-L6-v2.npz"
    assert load_sentiment_head(stranger) is None


def test_a_fine_tuned_encoder_looks_for_its_base_models_head(tmp_path: Path) -> None:
    tuned = tmp_path / "tuned-abc"
    tuned.mkdir()
    (tuned / "switchboard.json").write_text(
        '{"base_model": "/models/multilingual-e5-small", "query_prefix": "query: "}'
    )

    assert head_path(str(tuned)).name == "sentiment-multilingual-e5-small.npz"


def test_emotions_are_mapped_onto_what_support_acts_on(tmp_path: Path) -> None:
    (tmp_path / "go.csv").write_text(
        "text,sentiment,emotions,comment_id\n"
        "Thanks a lot!,positive,gratitude,a\n"
        "This makes me so mad,negative,anger,b\n"
        "Ugh. Again broken.,negative,annoyance;disappointment,c\n"
        "Wait what does this mean?,ambiguous,confusion,d\n"
        "Love it,positive,love,e\n"
        "It is on the table,neutral,neutral,f\n"
        "Great but sad,mixed,joy;sadness,g\n"
        "Thanks a lot!,positive,gratitude,h\n",
        encoding="utf-8",
    )
    goemotions = dataclasses.replace(sentiment_corpora()[0], path="go.csv")

    splits = split_corpora(tmp_path, [goemotions], part=0.0)

    labels = {e.text: e.label for e in splits.train["goemotions_en"]}
    assert labels == {
        "Thanks a lot!": "gratitude",
        "This makes me so mad": "anger",
        "Ugh. Again broken.": "frustration",
        "Wait what does this mean?": "confusion",
        "Love it": "positive",
        "It is on the table": "neutral",
    }


def test_the_shown_threshold_keeps_the_readings_right_often_enough() -> None:
    readings = [
        Prediction("gratitude", 0.95),
        Prediction("anger", 0.9),
        Prediction("positive", 0.8),
        Prediction("neutral", 0.5),
    ]
    truth = ["positive", "negative", "negative", "neutral"]

    assert shown_threshold(readings, truth, precision=1.0) == 0.9
    assert shown_threshold(readings, truth, precision=0.75) == 0.5
    assert shown_threshold([Prediction("anger", 0.9)], ["positive"], precision=0.8) == 1.0


def test_progress_says_how_long_is_left(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    progress = Progress("fine-tuning", 100, "steps", every=5.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="bot.triage.progress")

    now[0] = 2.0
    progress.advance(10)
    now[0] = 60.0
    progress.advance(10)
    now[0] = 300.0
    progress.advance(80)

    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "fine-tuning: 20 of 100 steps (20%) after 1 min 0 s, about 4 min 0 s left",
        "fine-tuning: 100 of 100 steps (100%) after 5 min 0 s, done",
    ]
    assert duration(3725) == "1 h 2 min"


def _write(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")


def small_corpora(folder: Path) -> None:
    """A few rows in each public set's layout (the real ones are tens of thousands)."""
    happy = [f"Thank you so much for the quick help number {n}!" for n in range(12)]
    angry = [f"This is the {n}th time it broke, I am furious and fed up" for n in range(12)]
    plain = [f"The parcel {n} arrives on Monday at the depot" for n in range(12)]
    _write(
        folder / "goemotions_en/train.csv",
        "text,sentiment,emotions,comment_id",
        [f"{t},positive,gratitude,g{i}" for i, t in enumerate(happy)]
        + [f"{t},negative,anger,a{i}" for i, t in enumerate(angry)]
        + [f"{t},neutral,neutral,n{i}" for i, t in enumerate(plain)],
    )
    xed = [f"{t},positive,joy" for t in happy] + [f"{t},neutral,neutral" for t in plain]
    _write(folder / "xed_emotions/en_annotated_train.csv", "text,sentiment,emotions", xed)
    german_happy = [f"Vielen Dank alles hat geklappt Nummer {n}" for n in range(12)]
    german_angry = [f"Zum {n}. Mal kaputt und ich bin stinksauer" for n in range(12)]
    _write(
        folder / "xed_emotions/de_projected_train.csv",
        "text,sentiment,emotions",
        [f"{t},positive,joy" for t in german_happy] + [f"{t},negative,anger" for t in german_angry],
    )
    _write(
        folder / "potts_de/train.csv",
        "text,label,tweet_id,topic,part",
        [f"{t} heute,positive,{i},x,1" for i, t in enumerate(german_happy)]
        + [f"Das Paket {n} liegt im Lager,neutral,{n},x,1" for n in range(12)],
    )
    guhr = [f"{t},negative" for t in german_angry]
    _write(folder / "guhr_emotions_de/train.csv", "text,label", guhr)


def test_train_sentiment_rebuilds_a_head_the_service_can_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], encoder: SentenceEncoder
) -> None:
    data, out, holdouts = tmp_path / "data", tmp_path / "head.npz", tmp_path / "holdouts"
    small_corpora(data)

    places = ("--data", str(data), "--out", str(out), "--holdout-dir", str(holdouts))
    status = main(["triage", "train-sentiment", *places])

    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["head"] == str(out)
    assert summary["model"] == "all-MiniLM-L6-v2"
    assert set(summary["labels"]) == {"gratitude", "anger", "neutral", "positive"}
    assert summary["train_examples"]["guhr_emotions_de"] == 12  # train only: never held out
    assert summary["dev_polarity_accuracy"] > 0.5
    assert set(summary["shown_from"]) == {"de", "en"}
    head = SentimentHead.read(out)
    assert head.labels == tuple(sorted(summary["labels"]))
    assert head.reads_ngrams  # it reads the text's character n-grams besides its embedding
    text = ["Thank you so much, that helped a lot!"]
    readings = head.predict(with_ngrams(encoder.encode(text), text))
    assert polarity(readings[0].label) == "positive"
    assert sorted(p.name for p in holdouts.iterdir()) == [
        "goemotions_en.csv", "potts_de.csv", "xed_de.csv", "xed_en.csv"
    ]  # fmt: skip


def test_train_sentiment_names_the_sets_it_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["triage", "train-sentiment", "--data", str(tmp_path)])

    assert status == 2
    err = capsys.readouterr().err
    assert "goemotions_en/train.csv" in err
    assert "guhr_emotions_de/train.csv" in err
