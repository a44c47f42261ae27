"""How the customer feels: a light head over the encoder's embeddings, learned from real text.

The head is a softmax regression over the sentence embedding (384 numbers for the shipped
encoders) and the text's hashed character n-grams (``bot/triage/ngrams.py``: the pieces of the
words carry mood in any language, where an English encoder reads German poorly), so reading the
mood costs one matrix product per message on top of the encoding triage does anyway. Its
labels are the ones a support lead acts on: ``gratitude``, ``positive``, ``neutral``,
``confusion``, ``frustration``, ``anger`` and ``negative``; each has a polarity (``polarity``)
for comparing with three-way sentiment data and for the priority rules.

The trained head ships per encoder in ``bot/triage/heads/`` (``sentiment-<model>.npz``: weights,
bias, labels, the confidence threshold tuned on a dev split, and the embeddings of a few probe
texts). ``load_sentiment_head`` finds the head of the encoder's base model and checks that the
encoder still embeds the probes as the head was trained (a fine-tuned encoder may have moved too
far); without a matching head it returns None and the engine falls back to the small example set
in config/triage_examples.toml.

``switchboard triage train-sentiment`` rebuilds a head from labelled public data
(``sentiment_corpora`` says which files, with which licence, and how their labels are mapped).
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.triage import ngrams
from bot.triage.classifier import Prediction, fit_softmax_regression
from bot.triage.encoder import Embeddings, SentenceEncoder, default_model_path
from bot.triage.examples import Example
from bot.triage.ngrams import sparse_with_ngrams, with_ngrams
from bot.triage.progress import encode_with_progress

log = logging.getLogger(__name__)

HEADS_DIR = Path(__file__).with_name("heads")
#: The n-grams' weight beside the embedding in training, chosen on the dev parts (0.5, 1 and 2
#: tried; PotTS and GoEmotions, both encoders: 1 scored best or within 0.2 points of it).
NGRAM_WEIGHT = 1.0
#: The name the bundled encoder's head goes by (its folder is just "model").
BUNDLED_MODEL = "all-MiniLM-L6-v2"

#: The labels the card can show, each with its polarity.
POLARITY = {
    "gratitude": "positive",
    "positive": "positive",
    "neutral": "neutral",
    "confusion": "neutral",
    "frustration": "negative",
    "anger": "negative",
    "negative": "negative",
}
SENTIMENT_LABELS = tuple(POLARITY)
#: A head is used only if the encoder embeds its probe texts at least this close (cosine) to
#: how the head's encoder did; int8 ONNX against float32 torch stays above 0.98.
MIN_PROBE_AGREEMENT = 0.9
PROBES = (
    "Thank you so much, the replacement arrived and works perfectly.",
    "I have been waiting for three weeks and nobody answers, this is unacceptable.",
    "Können Sie mir bitte sagen, wann meine Bestellung geliefert wird?",
    "Ich verstehe die Rechnung nicht, was bedeutet diese Position?",
)


def polarity(label: str) -> str:
    """positive, neutral or negative for any sentiment label (unknown labels: themselves)."""
    return POLARITY.get(label, label)


@dataclass(frozen=True, slots=True)
class SentimentHead:
    """A softmax regression from embeddings to sentiment labels, with its shown-threshold."""

    labels: tuple[str, ...]
    weights: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    #: Below this probability the reading is not shown (in a language without its own).
    threshold: float
    probes: npt.NDArray[np.float32]
    model: str
    #: The threshold of each language the head was tuned for ("de", "en").
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def reads_ngrams(self) -> bool:
        """True if the head reads character n-grams after the embedding (``with_ngrams``)."""
        return bool(self.weights.shape[0] > self.probes.shape[1])

    def threshold_for(self, language: str) -> float:
        """From which probability a reading of a message in ``language`` is shown."""
        return self.thresholds.get(language, self.threshold)

    def predict(self, features: Embeddings) -> list[Prediction]:
        """The most likely label of each message, with its probability.

        ``features`` are ``ngrams.with_ngrams`` rows; a head without n-grams reads only their
        embedding part, so it may also be given plain embeddings.
        """
        logits = features[:, : self.weights.shape[0]] @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return [Prediction(self.labels[int(i)], float(probs[r, i])) for r, i in enumerate(best)]

    def save(self, path: Path) -> None:
        """Write the head as a compressed .npz (float16 weights: a few KB)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "labels": list(self.labels),
            "threshold": self.threshold,
            "thresholds": self.thresholds,
            "model": self.model,
            # The n-grams' weight the head was trained with (0: none), so that a later change
            # of ngrams.WEIGHT rescales the head instead of misreading it.
            "ngram_weight": ngrams.WEIGHT if self.reads_ngrams else 0.0,
        }
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                weights=self.weights.astype(np.float16),
                bias=self.bias.astype(np.float32),
                probes=self.probes.astype(np.float16),
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            )

    @classmethod
    def read(cls, path: Path) -> SentimentHead:
        """A head written by ``save``."""
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            weights = data["weights"].astype(np.float32)
            trained_with = float(meta.get("ngram_weight", 0.0))
            if trained_with:
                weights[-ngrams.DIMENSIONS :] *= trained_with / ngrams.WEIGHT
            return cls(
                labels=tuple(meta["labels"]),
                weights=weights,
                bias=data["bias"].astype(np.float32),
                threshold=float(meta["threshold"]),
                probes=data["probes"].astype(np.float32),
                model=str(meta["model"]),
                thresholds={str(k): float(v) for k, v in meta.get("thresholds", {}).items()},
            )


def base_model_name(model: str) -> str:
    """The name of the model a folder was built from (a fine-tuned folder names its base)."""
    marker = Path(model) / "switchboard.json"
    if marker.is_file():
        base = json.loads(marker.read_text(encoding="utf-8")).get("base_model")
        if base:
            return base_model_name(str(base))
    if not model or Path(model) == Path(default_model_path()):
        return BUNDLED_MODEL
    return Path(model.rstrip("/")).name


def head_path(model: str) -> Path:
    """Where the shipped head for ``model`` (or its base model) is."""
    return HEADS_DIR / f"sentiment-{base_model_name(model)}.npz"


def load_sentiment_head(encoder: SentenceEncoder) -> SentimentHead | None:
    """The shipped head for ``encoder``, or None if none ships or the encoder moved too far."""
    path = head_path(encoder.info.model)
    if not path.is_file():
        log.info("no sentiment head ships for %s; using the example set", encoder.info.model)
        return None
    head = SentimentHead.read(path)
    agreement = float((encoder.encode(PROBES) * head.probes).sum(axis=1).min())
    if agreement < MIN_PROBE_AGREEMENT:
        log.warning(
            "the sentiment head for %s does not fit this encoder (probe agreement %.2f); "
            "using the example set",
            head.model,
            agreement,
        )
        return None
    return head


def fit_sentiment_head(
    encoder: SentenceEncoder,
    train: Sequence[Example],
    train_features: Any,
    *,
    c: float,
    threshold: float,
    sample_weight: Sequence[float] | None = None,
    ngram_weight: float = NGRAM_WEIGHT,
) -> SentimentHead:
    """A head trained on ``train`` (labels from ``SENTIMENT_LABELS``), shown from ``threshold``.

    ``train_features`` are the examples' ``ngrams.sparse_with_ngrams`` rows with the n-grams
    at ``ngram_weight`` (or plain embeddings, for a head without n-grams).
    """
    labels = sorted({e.label for e in train})
    weights, bias = fit_softmax_regression(
        train_features,
        [e.label for e in train],
        labels,
        c,
        balanced=False,
        sample_weight=sample_weight,
    )
    if train_features.shape[1] > encoder.info.dimensions:
        # The engine gives every head the same rows (n-grams at ngrams.WEIGHT).
        weights[-ngrams.DIMENSIONS :] *= ngram_weight / ngrams.WEIGHT
    return SentimentHead(
        labels=tuple(labels),
        weights=weights,
        bias=bias,
        threshold=threshold,
        probes=encoder.encode(PROBES),
        model=base_model_name(encoder.info.model),
    )


def shown_threshold(
    predictions: Sequence[Prediction], truth: Sequence[str], *, precision: float
) -> float:
    """The lowest confidence from which the shown readings' polarity is right ``precision`` of
    the time (on a dev split); 1.0 if none reaches it."""
    pairs = sorted(
        (
            (p.confidence, polarity(p.label) == polarity(t))
            for p, t in zip(predictions, truth, strict=True)
        ),
        reverse=True,
    )
    best = 1.0
    right = 0
    for shown, (confidence, correct) in enumerate(pairs, start=1):
        right += correct
        if right / shown >= precision:
            best = confidence
    return best


# The training data: public sets with licences that allow shipping a model learned from them.


@dataclass(frozen=True, slots=True)
class Corpus:
    """One labelled source: where it is, its language and licence, and how its rows map."""

    name: str
    path: str
    language: str
    licence: str
    label_of: Callable[[dict[str, str]], str | None]
    #: At most this many rows are used (seeded sample), to keep encoding time in bounds.
    limit: int = 0
    #: Rows of this corpus never go into dev or hold-out (near-duplicate templates would leak).
    train_only: bool = False


def _goemotions(row: dict[str, str]) -> str | None:
    emotions = set(row["emotions"].split(";"))
    if "gratitude" in emotions:
        return "gratitude"
    if emotions & {"anger", "disgust"}:
        return "anger"
    if emotions & {"annoyance", "disappointment", "disapproval"}:
        return "frustration"
    if "confusion" in emotions:
        return "confusion"
    return {"positive": "positive", "negative": "negative", "neutral": "neutral"}.get(
        row["sentiment"], "neutral" if row["sentiment"] == "ambiguous" else None
    )


def _xed(row: dict[str, str]) -> str | None:
    sentiment = row["sentiment"]
    if sentiment not in ("positive", "negative", "neutral"):
        return None
    if sentiment == "negative" and set(row["emotions"].split(";")) & {"anger", "disgust"}:
        return "anger"
    return sentiment


def _potts(row: dict[str, str]) -> str | None:
    return row["label"] if row["label"] in ("positive", "negative", "neutral") else None


def _guhr(row: dict[str, str]) -> str | None:
    # Insults and abuse aimed at a service robot: anger; its "neutral" rows are remarks about
    # identity, not neutral requests, so they are left out.
    return {"negative": "anger", "positive": "positive"}.get(row["label"])


def sentiment_corpora() -> tuple[Corpus, ...]:
    """The public sets the shipped heads learn from, relative to the data folder."""
    return (
        Corpus("goemotions_en", "goemotions_en/train.csv", "en", "Apache-2.0", _goemotions),
        Corpus("xed_en", "xed_emotions/en_annotated_train.csv", "en", "CC BY 4.0", _xed, 2000),
        Corpus("potts_de", "potts_de/train.csv", "de", "MIT", _potts),
        Corpus("xed_de", "xed_emotions/de_projected_train.csv", "de", "CC BY 4.0", _xed, 2000),
        Corpus("guhr_emotions_de", "guhr_emotions_de/train.csv", "de", "MIT", _guhr, 0, True),
    )


@dataclass(frozen=True, slots=True)
class Splits:
    """Seeded train, dev and hold-out parts of every corpus, by corpus name."""

    train: dict[str, list[Example]]
    dev: dict[str, list[Example]]
    holdout: dict[str, list[Example]]


def split_corpora(
    data_dir: Path, corpora: Sequence[Corpus], *, seed: int = 0, part: float = 0.15
) -> Splits:
    """Each corpus read, mapped and shuffled with ``seed``; ``part`` of it each for dev and
    hold-out (duplicate texts are kept in one part only)."""
    train: dict[str, list[Example]] = {}
    dev: dict[str, list[Example]] = {}
    holdout: dict[str, list[Example]] = {}
    for corpus in corpora:
        with (data_dir / corpus.path).open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        seen: dict[str, str] = {}
        for row in rows:
            label = corpus.label_of(row)
            text = row["text"].strip()
            if label and text and text not in seen:
                seen[text] = label
        examples = [Example(label, text) for text, label in seen.items()]
        random.Random(seed).shuffle(examples)
        if corpus.limit:
            examples = examples[: corpus.limit]
        cut = 0 if corpus.train_only else round(len(examples) * part)
        holdout[corpus.name] = examples[:cut]
        dev[corpus.name] = examples[cut : 2 * cut]
        train[corpus.name] = examples[2 * cut :]
    return Splits(train, dev, holdout)


def write_examples(path: Path, examples: Sequence[Example]) -> None:
    """A labelled CSV (``text``, ``sentiment``, ``polarity``) that ``triage eval`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "sentiment", "polarity"])
        for example in examples:
            writer.writerow([example.text, example.label, polarity(example.label)])


#: The card shows a reading from the confidence at which readings on the dev split had the
#: right polarity this often, in each language.
SHOWN_PRECISION = 0.8
#: Regularisation of the head, chosen on the dev split (1, 3 and 10 tried).
HEAD_C = 3.0


@dataclass(frozen=True, slots=True)
class TrainedHead:
    """A head ``train_head`` fitted, and what it learned from."""

    head: SentimentHead
    train_examples: dict[str, int]
    dev_examples: int
    #: How often the head had the polarity right on the dev parts (shown or not).
    dev_polarity_accuracy: float
    holdout_files: list[Path]


def language_weights(languages: Sequence[str]) -> list[float]:
    """A weight per example so that each language weighs as much as the others in all.

    English has five times the labelled data German has; unweighted, the head learns English
    moods and reads German worse (chosen on the dev parts with both shipped encoders).
    """
    counts = Counter(languages)
    return [len(languages) / (len(counts) * counts[language]) for language in languages]


def missing_corpora(data_dir: Path) -> list[str]:
    """The files of ``sentiment_corpora`` that ``data_dir`` lacks."""
    return [c.path for c in sentiment_corpora() if not (data_dir / c.path).is_file()]


#: Texts encoded at a time while training: progress is logged between chunks.
ENCODE_CHUNK = 256


def train_head(
    encoder: SentenceEncoder,
    data_dir: Path,
    *,
    embed: Callable[[Sequence[str]], Embeddings] | None = None,
    holdout_dir: Path | None = None,
) -> TrainedHead:
    """A head for ``encoder`` from the corpora in ``data_dir``; writes the hold-out files.

    The head learns from the train parts; its shown-threshold comes from the dev parts. The
    hold-out parts are only written (one CSV per corpus, for ``triage eval --task sentiment``).
    ``embed`` replaces the encoder (a cache of embeddings already computed).
    """
    corpora = sentiment_corpora()
    splits = split_corpora(data_dir, corpora)
    # Each example with its corpus's language.
    train_in = [(e, c.language) for c in corpora for e in splits.train[c.name]]
    dev_in = [(e, c.language) for c in corpora for e in splits.dev[c.name]]
    train = [e for e, _ in train_in]
    dev = [e for e, _ in dev_in]

    def encode(texts: Sequence[str], what: str) -> Embeddings:
        if embed:
            return embed(texts)
        what = f"sentiment: encoding {what}"
        return encode_with_progress(encoder, texts, what, unit="texts", chunk=ENCODE_CHUNK)

    texts = [e.text for e in train]
    head = fit_sentiment_head(
        encoder,
        train,
        sparse_with_ngrams(encode(texts, "training texts"), texts, NGRAM_WEIGHT),
        c=HEAD_C,
        threshold=1.0,
        sample_weight=language_weights([language for _, language in train_in]),
    )
    texts = [e.text for e in dev]
    embedded = encode(texts, "dev texts")
    readings = [
        reading
        for start in range(0, len(texts), ENCODE_CHUNK)
        for reading in head.predict(
            with_ngrams(embedded[start : start + ENCODE_CHUNK], texts[start : start + ENCODE_CHUNK])
        )
    ]
    # Right often enough in each language, not only on average over English-heavy data; a
    # language the head was not tuned for gets the strictest.
    thresholds: dict[str, float] = {}
    for language in sorted({language for _, language in dev_in}):
        read = [(r, e) for r, (e, lang) in zip(readings, dev_in, strict=True) if lang == language]
        found = shown_threshold(
            [r for r, _ in read], [e.label for _, e in read], precision=SHOWN_PRECISION
        )
        thresholds[language] = round(found, 4)
    right = sum(polarity(r.label) == polarity(e.label) for r, e in zip(readings, dev, strict=True))
    written: list[Path] = []
    if holdout_dir is not None:
        for name, part in splits.holdout.items():
            if part:
                write_examples(holdout_dir / f"{name}.csv", part)
                written.append(holdout_dir / f"{name}.csv")
    return TrainedHead(
        head=SentimentHead(
            head.labels,
            head.weights,
            head.bias,
            max(thresholds.values(), default=1.0),
            head.probes,
            head.model,
            thresholds,
        ),
        train_examples={name: len(part) for name, part in splits.train.items()},
        dev_examples=len(dev),
        dev_polarity_accuracy=round(right / len(dev), 4) if dev else 0.0,
        holdout_files=written,
    )
