"""How well the skill classifier would do on a team's own data (``switchboard triage eval``).

The classifier is trained exactly as the engine trains it (same encoder, same
``EmbeddingClassifier``) on one labelled file and scored on another, or on a seeded, stratified
hold-out of the first. With fine-tuning, the encoder is first tuned on the training examples only
(``bot.triage.tuning``) and then served like any other model, int8 ONNX export included.
"""

from __future__ import annotations

import csv
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError
from bot.triage.classifier import EmbeddingClassifier, NeighbourVote
from bot.triage.encoder import Backend, SentenceEncoder
from bot.triage.examples import Example
from bot.triage.tuning import TuningSettings, tune_encoder

#: How ``--fine-tune`` tunes the encoder: the defaults the engine would use.
TUNING = TuningSettings()


@dataclass(frozen=True, slots=True)
class EvalReport:
    accuracy: float
    macro_f1: float
    per_label_f1: dict[str, float]
    messages_per_second: float
    n_train: int
    n_test: int
    model: str
    backend: str
    tuning_seconds: float


def read_examples(
    path: Path, text_col: str = "text", label_col: str = "category", *, header: bool = True
) -> list[Example]:
    """Labelled texts from a CSV or TSV file (tab-separated if the first line has a tab).

    Without a header, ``text_col`` and ``label_col`` are 0-based column numbers.
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
    else:
        try:
            text_at, label_at = int(text_col), int(label_col)
        except ValueError as exc:
            raise ConfigError(
                "--text-col", "must be a column number (0, 1, ...) with --no-header"
            ) from exc
    width = max(text_at, label_at) + 1
    examples = [
        Example(label=row[label_at].strip(), text=row[text_at].strip())
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
        encoder.encode([e.text for e in train]), [e.label for e in train], vote=vote
    )
    started = time.perf_counter()
    predictions = classifier.predict(encoder.encode([e.text for e in test]))
    seconds = time.perf_counter() - started
    truth = [e.label for e in test]
    guessed = [p.label for p in predictions]
    per_label = f1_by_label(truth, guessed)
    return EvalReport(
        accuracy=round(sum(t == g for t, g in zip(truth, guessed, strict=True)) / len(truth), 4),
        macro_f1=round(sum(per_label.values()) / len(per_label), 4),
        per_label_f1={label: round(f1, 4) for label, f1 in per_label.items()},
        messages_per_second=round(len(test) / seconds, 1) if seconds > 0 else 0.0,
        n_train=len(train),
        n_test=len(test),
        model=encoder.info.model,
        backend=encoder.info.backend,
        tuning_seconds=tuning_seconds,
    )


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
