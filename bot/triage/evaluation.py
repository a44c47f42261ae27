"""How well triage would do on a team's own data (``switchboard triage eval --task ...``).

``skill``: the classifier is trained exactly as the engine trains it (same encoder, same
``EmbeddingClassifier``) on one labelled file and scored on another, or on a seeded, stratified
hold-out of the first. With fine-tuning, the encoder is first tuned on the training examples only
(``bot.triage.tuning``) and then served like any other model, int8 ONNX export included.

``sentiment`` and ``priority``: every labelled message goes through ``TriageEngine.triage``, the
service's own path (shipped heads, rules and all), and the answer is scored. A sentiment file
labelled only positive, neutral and negative is scored by the polarity of each reading.

Every report has accuracy, macro-F1, per-label F1 and the confusion matrix (true label, then
predicted label, then count), and the accuracy of always answering the most common label.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import ConfigError
from bot.shapes import ChannelKind, InboundMessage, Priority, Triage
from bot.triage.classifier import EmbeddingClassifier, NeighbourVote, Prediction
from bot.triage.encoder import Backend, Embeddings, SentenceEncoder
from bot.triage.examples import Example
from bot.triage.progress import Progress, encode_with_progress
from bot.triage.sentiment import polarity
from bot.triage.tuning import TuningSettings, tune_encoder

if TYPE_CHECKING:
    from bot.triage.engine import TriageEngine

#: Messages scored between two looks at the clock for the progress line.
PROGRESS_CHUNK = 64

#: How ``--fine-tune`` tunes the encoder: the defaults the engine would use.
TUNING = TuningSettings()


@dataclass(frozen=True, slots=True)
class EvalReport:
    accuracy: float
    macro_f1: float
    per_label_f1: dict[str, float]
    confusion: dict[str, dict[str, int]]
    majority_accuracy: float
    messages_per_second: float
    n_train: int
    n_test: int
    model: str
    backend: str
    tuning_seconds: float
    #: Sentiment only: how often the card shows the reading, and how often it is right then.
    shown_share: float | None = None
    shown_accuracy: float | None = None


def read_examples(
    path: Path,
    text_col: str = "text",
    label_col: str = "category",
    *,
    header: bool = True,
    automated_col: str = "automated",
) -> list[Example]:
    """Labelled texts from a CSV or TSV file (tab-separated if the first line has a tab).

    Without a header, ``text_col`` and ``label_col`` are 0-based column numbers. A column named
    ``automated_col`` (if the file has one) marks automatic mail with 1, yes or true.
    """
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            first = handle.readline()
            handle.seek(0)
            if "\t" in first:
                # TSV files in the wild leave quotes in texts unescaped.
                rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
            else:
                rows = list(csv.reader(handle))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror or exc}") from exc
    if not rows:
        raise ConfigError(str(path), "is empty")
    if header:
        names = rows.pop(0)
        columns = []
        for wanted, option in ((text_col, "--text-col"), (label_col, "--label-col")):
            if wanted not in names:
                raise ConfigError(
                    option, f"{wanted!r} is not a column of {path} (columns: {', '.join(names)})"
                )
            columns.append(names.index(wanted))
        text_at, label_at = columns
        flag_at = names.index(automated_col) if automated_col in names else None
    else:
        flag_at = None
        try:
            text_at, label_at = int(text_col), int(label_col)
        except ValueError as exc:
            raise ConfigError(
                "--text-col", "must be a column number (0, 1, ...) with --no-header"
            ) from exc
    width = max(text_at, label_at) + 1
    examples = [
        Example(
            label=row[label_at].strip(),
            text=row[text_at].strip(),
            automated=flag_at is not None
            and len(row) > flag_at
            and row[flag_at].strip().lower() in ("1", "yes", "true"),
        )
        for row in rows
        if len(row) >= width and row[text_at].strip() and row[label_at].strip()
    ]
    if not examples:
        raise ConfigError(str(path), "has no rows with both a text and a label")
    return examples


def _by_label(examples: Sequence[Example]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        groups[example.label].append(example)
    return dict(sorted(groups.items()))


def sample_shots(examples: Sequence[Example], shots: int, seed: int) -> list[Example]:
    """``shots`` examples of each label (all of a label that has fewer), drawn with ``seed``."""
    rng = random.Random(seed)
    picked: list[Example] = []
    for group in _by_label(examples).values():
        picked.extend(rng.sample(group, min(shots, len(group))))
    return picked


def split_holdout(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """(train, test): ``fraction`` of each label held out for testing, drawn with ``seed``."""
    rng = random.Random(seed)
    train: list[Example] = []
    test: list[Example] = []
    for group in _by_label(examples).values():
        shuffled = list(group)
        rng.shuffle(shuffled)
        cut = round(len(shuffled) * fraction) if len(shuffled) > 1 else 0
        test.extend(shuffled[:cut])
        train.extend(shuffled[cut:])
    return train, test


def load_encoder(
    model: str, backend: Backend, train: Sequence[Example], *, fine_tune: bool
) -> tuple[SentenceEncoder, float]:
    """The encoder to evaluate (tuned on ``train`` if asked) and the seconds tuning took.

    The seconds cover training and the ONNX export; they are near 0 when the tuned encoder for
    the same examples is already in the model cache.
    """
    if not fine_tune:
        return SentenceEncoder.load(model, backend=backend), 0.0
    started = time.perf_counter()
    encoder = SentenceEncoder.load(str(tune_encoder(model, train, TUNING)), backend=backend)
    return encoder, round(time.perf_counter() - started, 1)


def evaluate(
    encoder: SentenceEncoder,
    train: Sequence[Example],
    test: Sequence[Example],
    *,
    tuning_seconds: float = 0.0,
    vote: NeighbourVote | None = None,
) -> EvalReport:
    """Train on ``train`` and score on ``test``; the speed covers encoding and classifying."""
    classifier = EmbeddingClassifier.fit(
        _encode(encoder, [e.text for e in train], "encoding the training examples"),
        [e.label for e in train],
        vote=vote,
    )
    started = time.perf_counter()
    embeddings = _encode(encoder, [e.text for e in test], "scoring")
    predictions = classifier.predict(embeddings)
    seconds = time.perf_counter() - started
    return score(
        [e.label for e in test],
        [p.label for p in predictions],
        seconds=seconds,
        n_train=len(train),
        model=encoder.info.model,
        backend=encoder.info.backend,
        tuning_seconds=tuning_seconds,
    )


def _encode(encoder: SentenceEncoder, texts: Sequence[str], what: str) -> Embeddings:
    return encode_with_progress(encoder, texts, what, unit="messages", chunk=PROGRESS_CHUNK)


def score(
    truth: Sequence[str],
    guessed: Sequence[str],
    *,
    seconds: float,
    n_train: int,
    model: str,
    backend: str,
    tuning_seconds: float = 0.0,
) -> EvalReport:
    """The report on ``guessed`` against ``truth``; ``seconds`` is how long guessing took."""
    per_label = f1_by_label(truth, guessed)
    most_common = max(Counter(truth).values())
    return EvalReport(
        accuracy=round(sum(t == g for t, g in zip(truth, guessed, strict=True)) / len(truth), 4),
        macro_f1=round(sum(per_label.values()) / len(per_label), 4),
        per_label_f1={label: round(f1, 4) for label, f1 in per_label.items()},
        confusion=confusion_matrix(truth, guessed),
        majority_accuracy=round(most_common / len(truth), 4),
        messages_per_second=round(len(truth) / seconds, 1) if seconds > 0 else 0.0,
        n_train=n_train,
        n_test=len(truth),
        model=model,
        backend=backend,
        tuning_seconds=tuning_seconds,
    )


def confusion_matrix(truth: Sequence[str], guessed: Sequence[str]) -> dict[str, dict[str, int]]:
    """For each true label, how often each label was guessed (labels that never were: left out)."""
    matrix: dict[str, dict[str, int]] = {}
    for label in sorted(set(truth)):
        row = Counter(g for t, g in zip(truth, guessed, strict=True) if t == label)
        matrix[label] = dict(sorted(row.items()))
    return matrix


def f1_by_label(truth: Sequence[str], guessed: Sequence[str]) -> dict[str, float]:
    """F1 of every label that occurs in ``truth`` or ``guessed``."""
    labels = sorted(set(truth) | set(guessed))
    scores: dict[str, float] = {}
    for label in labels:
        hits = sum(t == g == label for t, g in zip(truth, guessed, strict=True))
        predicted = sum(g == label for g in guessed)
        actual = sum(t == label for t in truth)
        scores[label] = 2 * hits / (predicted + actual) if predicted + actual else 0.0
    return scores


def _messages(examples: Sequence[Example]) -> list[InboundMessage]:
    """Each example as the e-mail a customer would send (its text, no subject)."""
    now = datetime.now(UTC)
    return [
        InboundMessage(
            channel=ChannelKind.EMAIL,
            external_id=f"eval-{n}",
            sender_address="customer@example.com",
            sender_name="",
            subject="",
            text=e.text,
            full_text=e.text,
            received_at=now,
            is_automated=e.automated,
            automated_reason="marked automatic in the evaluation file" if e.automated else "",
        )
        for n, e in enumerate(examples)
    ]


async def evaluate_engine(
    engine: TriageEngine, test: Sequence[Example], task: str
) -> tuple[EvalReport, list[dict[str, str]]]:
    """Score the engine's ``task`` (sentiment or priority) on ``test``, message by message.

    Returns the report and the misses worth reading: for priority, the severe ones (a pressing
    message read as normal or low, a low one read as high or urgent); for sentiment, none.
    Sentiment is scored on the head's reading of every message, shown or not; the report's
    ``shown_share`` and ``shown_accuracy`` say how often the card shows it and how often it is
    right then. A file labelled only positive, neutral and negative is scored by polarity.
    """
    messages = _messages(test)
    progress = Progress(f"scoring {task}", len(messages), "messages")
    results: list[tuple[Triage, Prediction]] = []
    started = time.perf_counter()
    for start in range(0, len(messages), PROGRESS_CHUNK):
        chunk = messages[start : start + PROGRESS_CHUNK]
        results.extend(await asyncio.gather(*(engine.triage_in_detail(m) for m in chunk)))
        progress.advance(len(chunk))
    seconds = time.perf_counter() - started
    truth = [e.label for e in test]
    info = engine.encoder.info
    if task == "priority":
        guessed = [t.priority.value for t, _ in results]
        report = score(
            truth, guessed, seconds=seconds, n_train=0, model=info.model, backend=info.backend
        )
        misses = [
            {
                "text": e.text,
                "expected": e.label,
                "got": t.priority.value,
                "reason": t.priority_reason,
            }
            for e, (t, _) in zip(test, results, strict=True)
            if severe_miss(e.label, t.priority.value)
        ]
        return report, misses
    by_polarity = set(truth) <= {"positive", "neutral", "negative"}
    readings = [polarity(r.label) if by_polarity else r.label for _, r in results]
    shown = [(t.sentiment, e.label) for (t, _), e in zip(results, test, strict=True) if t.sentiment]
    right = sum((polarity(g) if by_polarity else g) == e for g, e in shown)
    report = score(
        truth, readings, seconds=seconds, n_train=0, model=info.model, backend=info.backend
    )
    return dataclasses.replace(
        report,
        shown_share=round(len(shown) / len(test), 4),
        shown_accuracy=round(right / len(shown), 4) if shown else 0.0,
    ), []


_PRESSING = {Priority.HIGH.value, Priority.URGENT.value}


def severe_miss(expected: str, got: str) -> bool:
    """A pressing message read as normal or low, or a low one read as high or urgent."""
    if expected in _PRESSING:
        return got not in _PRESSING
    return expected == Priority.LOW.value and got in _PRESSING
