"""The triage engine: skill, priority, language and sentiment for every inbound message.

``TriageEngine.load`` loads the encoder once (in a worker thread) and trains the classifiers from
the configured skills, the shipped defaults and what the team taught. ``triage`` satisfies
``bot.ports.Classifier``: concurrent calls are collected into one batch, and the batch runs in a
worker thread, so the event loop never waits for the model. ``learn`` records a labelled example
and retrains in the background once no new example has come for ``retrain_delay`` seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
import numpy.typing as npt

from bot.errors import ConfigError
from bot.settings import SkillSettings, TriageSettings
from bot.shapes import TRIAGE_SKILL, InboundMessage, Priority, Triage
from bot.triage import ngrams
from bot.triage.classifier import DEFAULT_C, EmbeddingClassifier, NeighbourVote, Prediction
from bot.triage.encoder import Backend, Embeddings, SentenceEncoder
from bot.triage.examples import (
    TRIAGE_EXAMPLES_FILE,
    Example,
    default_skills,
    labelled_sets,
    skill_examples,
)
from bot.triage.language import LanguageDetector
from bot.triage.ngrams import sparse_with_ngrams, with_ngrams
from bot.triage.priority import (
    LOW_CONCERNS,
    ROUTINE_CONCERN,
    PriorityRules,
    PrioritySignals,
    decide_priority,
    readable,
)
from bot.triage.sentiment import SENTIMENT_LABELS, SentimentHead, load_sentiment_head
from bot.triage.tuning import tune_encoder

log = logging.getLogger(__name__)

#: Weak regularisation for the concern heads: with 20 examples per concern, 5-fold
#: cross-validation on the examples (never on the evaluation set) ranked pressing messages best
#: at 100 (AUC 0.99 with multilingual-e5-small, 0.98 at 10); kept at 44 examples per concern.
CONCERN_C = 100.0
#: The group of every pressing concern in the first of the two concern heads.
PRESSING = "pressing"
#: The example set's sentiment (used only when no trained head fits the encoder) is shown
#: from this confidence on.
EXAMPLE_SENTIMENT_THRESHOLD = 0.6

#: Subject and text are cut here before encoding (the encoder sees at most 256 tokens anyway).
MAX_CHARS = 4000


@dataclass(frozen=True, slots=True)
class _Reading:
    """What the model read in one message, before the rules."""

    skill: Prediction
    priority: Prediction
    sentiment: Prediction
    language: str
    concerns: tuple[tuple[str, float], ...]
    vector: bytes = b""


@dataclass(frozen=True, slots=True)
class _Models:
    skill: EmbeddingClassifier
    priority: EmbeddingClassifier
    #: Pressing, a plain request, nothing to do or an automatic reply (balanced: each is as
    #: likely before the text is read, however many pressing concerns there are).
    pressing: EmbeddingClassifier
    #: Which pressing concern, given that the message is pressing.
    concern: EmbeddingClassifier
    sentiment: SentimentHead | EmbeddingClassifier
    #: The example set's sentiment is shown from this confidence on (a head has its own).
    sentiment_threshold: float


@dataclass(slots=True)
class _Job:
    text: str
    future: asyncio.Future[_Reading]


@dataclass(slots=True)
class EngineStats:
    """Counters for logs, metrics and tests."""

    messages: int = 0
    batches: int = 0
    largest_batch: int = 0
    retrains: int = 0
    examples: int = 0
    last_retrain_seconds: float = 0.0
    skills: tuple[str, ...] = field(default_factory=tuple)


def _check_labels(sets: dict[str, list[Example]], name: str, allowed: set[str] | None) -> None:
    """``name`` has examples, labelled only with ``allowed`` (None: concerns, which need the
    routine and low ones besides at least one pressing concern)."""
    found = {e.label for e in sets.get(name, [])}
    if allowed is None:
        needed = {ROUTINE_CONCERN, *LOW_CONCERNS}
        if needed <= found and found - needed:
            return
        raise ConfigError(
            f"{TRIAGE_EXAMPLES_FILE.name}: [{name}]",
            f"needs examples of {', '.join(sorted(needed))} and of pressing concerns",
        )
    if not found or not found <= allowed:
        raise ConfigError(
            f"{TRIAGE_EXAMPLES_FILE.name}: [{name}]",
            f"needs examples labelled only with {', '.join(sorted(allowed))}",
        )


def _grouped(example: Example) -> Example:
    """A pressing concern's example as one of "pressing"; the others as they are."""
    if example.label == ROUTINE_CONCERN or example.label in LOW_CONCERNS:
        return example
    return Example(PRESSING, example.text)


def message_text(message: InboundMessage) -> str:
    """The text triage reads: the subject, then what the customer wrote."""
    return f"{message.subject.strip()}\n{message.text.strip()}".strip()[:MAX_CHARS]


#: Embeddings of training texts, per loaded encoder: rebuilding an engine on the same encoder
#: (a configuration reload, the tests) encodes nothing twice.
_TRAINING_EMBEDDINGS: weakref.WeakKeyDictionary[
    SentenceEncoder, dict[str, npt.NDArray[np.float32]]
] = weakref.WeakKeyDictionary()


def skill_vote(settings: TriageSettings) -> NeighbourVote | None:
    """The nearest examples' vote for the skill classifier, if the settings ask for it."""
    return NeighbourVote.over(fine_tuned=settings.fine_tune) if settings.neighbour_vote else None


class _Trainer:
    """Fits the classifiers (blocking) and remembers embeddings of texts it has seen."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        self.encoder = encoder
        self._cache = _TRAINING_EMBEDDINGS.setdefault(encoder, {})

    def embed(self, texts: Sequence[str]) -> Embeddings:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, row in zip(missing, self.encoder.encode(missing), strict=True):
                self._cache[text] = row
        if not texts:
            return np.zeros((0, self.encoder.info.dimensions), np.float32)
        return np.stack([self._cache[t] for t in texts]).astype(np.float32)

    def fit(
        self, examples: Sequence[Example], vote: NeighbourVote | None = None, c: float = DEFAULT_C
    ) -> EmbeddingClassifier:
        embeddings = self.embed([e.text for e in examples])
        return EmbeddingClassifier.fit(embeddings, [e.label for e in examples], vote=vote, c=c)

    def fit_with_ngrams(self, examples: Sequence[Example], c: float) -> EmbeddingClassifier:
        """A head over the embedding and the text's character n-grams (concerns, sentiment)."""
        texts = [e.text for e in examples]
        # Sparse: a dense copy of hundreds of rows of 16,384 n-gram columns would cost the
        # service a hundred MB of memory at every start.
        features = sparse_with_ngrams(self.embed(texts), texts, ngrams.WEIGHT)
        return EmbeddingClassifier.fit(features, [e.label for e in examples], c=c)


class TriageEngine:
    """Tags messages with skill, priority, language and sentiment; learns from the team."""

    def __init__(
        self,
        settings: TriageSettings,
        trainer: _Trainer,
        models: _Models,
        examples: list[Example],
        languages: LanguageDetector,
        *,
        rules: PriorityRules,
        retrain_delay: float,
        batch_window: float,
        max_batch: int,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.stats = EngineStats(examples=len(examples), skills=models.skill.labels)
        self._trainer = trainer
        self._models = models
        self._examples = examples
        self._languages = languages
        self._retrain_delay = retrain_delay
        self._batch_window = batch_window
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._in_flight: list[_Job] = []
        self._dirty = asyncio.Event()
        self._settled = asyncio.Event()
        self._settled.set()
        self._closed = False
        self._tasks = [
            asyncio.create_task(self._run_batches(), name="triage-batches"),
            asyncio.create_task(self._retrain_when_taught(), name="triage-retrain"),
        ]

    @classmethod
    async def load(
        cls,
        settings: TriageSettings,
        skills: Sequence[SkillSettings],
        *,
        extra_examples: Sequence[tuple[str, str]] = (),
        rules: PriorityRules | None = None,
        encoder: SentenceEncoder | None = None,
        backend: Backend = "auto",
        retrain_delay: float = 5.0,
        batch_window: float = 0.002,
        max_batch: int = 256,
    ) -> TriageEngine:
        """Load the encoder and train from the skills, the defaults and ``extra_examples``.

        ``encoder`` reuses one that is already loaded (tests, benchmarks); otherwise
        ``settings.model`` is loaded with ``backend``. ``rules`` default to the configured
        ``settings.priority``.
        """
        examples = skill_examples(skills, default_skills(), extra_examples)
        if not examples:
            raise ValueError("no skill has a description or examples to learn from")

        def build() -> tuple[_Trainer, _Models, LanguageDetector]:
            started = time.perf_counter()
            model = settings.model
            if encoder is None and settings.fine_tune:
                log.info(
                    "fine-tuning the encoder on %d skill examples (minutes on a CPU; cached "
                    "until the examples change)",
                    len(examples),
                )
                model = str(tune_encoder(settings.model, examples))
            trainer = _Trainer(
                encoder
                or SentenceEncoder.load(model, backend=backend, threads=settings.encoder_threads)
            )
            sets = labelled_sets()
            _check_labels(sets, "priority", {p.value for p in Priority})
            _check_labels(sets, "sentiment", set(SENTIMENT_LABELS))
            _check_labels(sets, "concern", None)
            head = load_sentiment_head(trainer.encoder)
            models = _Models(
                skill=trainer.fit(examples, skill_vote(settings)),
                priority=trainer.fit(sets["priority"]),
                pressing=trainer.fit_with_ngrams([_grouped(e) for e in sets["concern"]], CONCERN_C),
                concern=trainer.fit_with_ngrams(
                    [e for e in sets["concern"] if _grouped(e) != e], CONCERN_C
                ),
                sentiment=head or trainer.fit_with_ngrams(sets["sentiment"], DEFAULT_C),
                sentiment_threshold=head.threshold if head else EXAMPLE_SENTIMENT_THRESHOLD,
            )
            languages = LanguageDetector()
            log.info(
                "triage ready: %s (%s), %d examples for %d skills in %.1f s",
                trainer.encoder.info.model,
                trainer.encoder.info.backend,
                len(examples),
                len(models.skill.labels),
                time.perf_counter() - started,
            )
            return trainer, models, languages

        trainer, models, languages = await asyncio.to_thread(build)
        return cls(
            settings,
            trainer,
            models,
            examples,
            languages,
            rules=rules or settings.priority,
            retrain_delay=retrain_delay,
            batch_window=batch_window,
            max_batch=max_batch,
        )

    @property
    def encoder(self) -> SentenceEncoder:
        return self._trainer.encoder

    @property
    def skills(self) -> tuple[str, ...]:
        """The skills the classifier currently knows."""
        return self._models.skill.labels

    async def triage(
        self, message: InboundMessage, *, follow_ups: int = 0, waiting_hours: float = 0.0
    ) -> Triage:
        """Tag ``message``; ``follow_ups`` and ``waiting_hours`` describe its conversation."""
        triage, _ = await self.triage_in_detail(
            message, follow_ups=follow_ups, waiting_hours=waiting_hours
        )
        return triage

    async def triage_in_detail(
        self, message: InboundMessage, *, follow_ups: int = 0, waiting_hours: float = 0.0
    ) -> tuple[Triage, Prediction]:
        """``triage``, and the sentiment reading even where the card does not show it."""
        text = message_text(message)
        reading = await self._read(text)
        legible = readable(text)
        priority, reason = decide_priority(
            PrioritySignals(
                text=text,
                sender_address=message.sender_address,
                model_priority=Priority(reading.priority.label),
                model_confidence=reading.priority.confidence,
                sentiment=reading.sentiment.label,
                sentiment_confidence=reading.sentiment.confidence,
                follow_ups=follow_ups,
                waiting_hours=waiting_hours,
                concerns=reading.concerns,
                automated=message.is_automated,
                readable=legible,
            ),
            self.rules,
        )
        confident = reading.skill.confidence >= self.settings.min_confidence
        sentiment = self._models.sentiment
        threshold = (
            sentiment.threshold_for(reading.language)
            if isinstance(sentiment, SentimentHead)
            else self._models.sentiment_threshold
        )
        shown = legible and reading.sentiment.confidence >= threshold
        triage = Triage(
            skill=reading.skill.label if confident else TRIAGE_SKILL,
            confidence=round(reading.skill.confidence, 4),
            priority=priority,
            priority_reason=reason,
            language=reading.language,
            sentiment=reading.sentiment.label if shown else "",
            vector=reading.vector,
        )
        return triage, reading.sentiment

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        """The encoder's vectors of ``texts`` (float32 bytes), as triage computes them."""
        if self._closed:
            raise RuntimeError("the triage engine is closed")
        rows = await asyncio.to_thread(self.encoder.encode, [t[:MAX_CHARS] for t in texts])
        return [row.astype(np.float32).tobytes() for row in rows]

    async def learn(self, skill: str, text: str) -> None:
        """Remember that ``text`` belongs to ``skill``; the classifier is retrained soon."""
        if self._closed:
            raise RuntimeError("the triage engine is closed")
        if skill == TRIAGE_SKILL:
            raise ValueError(f"{TRIAGE_SKILL!r} is where unsure messages go, not a skill to learn")
        example = Example(skill, text[:MAX_CHARS])
        if not text.strip() or example in self._examples:
            # Replicas share what each learned (bot/learning.py): repeats change nothing.
            return
        self._examples.append(example)
        self._settled.clear()
        self._dirty.set()

    async def settled(self) -> None:
        """Wait until every example taught so far is in the classifier."""
        await self._settled.wait()

    async def aclose(self) -> None:
        """Stop the batch and retrain tasks; waiting callers get ``RuntimeError``."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        waiting = list(self._in_flight)
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for job in waiting:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the triage engine is closed"))
        self._settled.set()

    async def __aenter__(self) -> TriageEngine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _read(self, text: str) -> _Reading:
        if self._closed:
            raise RuntimeError("the triage engine is closed")
        future: asyncio.Future[_Reading] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(text, future))
        return await future

    async def _run_batches(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # A short window for callers that are just about to arrive; then whatever queued up
            # joins this batch. (No wait_for around get(): on Python 3.11 a timeout that races
            # with get() can drop the item, and its caller would wait for ever.)
            if self._queue.empty():
                await asyncio.sleep(self._batch_window)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [job for job in batch if not job.future.done()]
            if not batch:
                continue
            self._in_flight = batch
            try:
                readings = await asyncio.to_thread(self._read_batch, [j.text for j in batch])
            except Exception as exc:
                log.exception("triage batch of %d messages failed", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.messages += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            for job, reading in zip(batch, readings, strict=True):
                if not job.future.done():
                    job.future.set_result(reading)

    def _read_batch(self, texts: list[str]) -> list[_Reading]:
        """Encode and classify a batch (blocking; runs in a worker thread)."""
        models = self._models
        embeddings = self.encoder.encode(texts)
        features = with_ngrams(embeddings, texts)
        skills = models.skill.predict(embeddings)
        priorities = models.priority.predict(embeddings)
        sentiments = models.sentiment.predict(features)
        groups = models.pressing.probabilities(features)
        pressing = groups[:, models.pressing.labels.index(PRESSING)]
        # One distribution over every concern: P(pressing) shared out by the concern head.
        joint = np.concatenate(
            [models.concern.probabilities(features) * pressing[:, None], groups], axis=1
        )
        labels = models.concern.labels + models.pressing.labels
        keep = [i for i, label in enumerate(labels) if label != PRESSING]
        return [
            _Reading(
                skill,
                priority,
                sentiment,
                self._languages.detect(text),
                tuple((labels[i], float(row[i])) for i in keep),
                vector.tobytes(),
            )
            for text, skill, priority, sentiment, row, vector in zip(
                texts,
                skills,
                priorities,
                sentiments,
                joint,
                embeddings.astype(np.float32),
                strict=True,
            )
        ]

    async def _retrain_when_taught(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            first = loop.time()
            # Debounce: a lead moving ten conversations in a row causes one retrain, not ten;
            # a steady stream still retrains at least every ten delays.
            while loop.time() - first < self._retrain_delay * 10:
                self._dirty.clear()
                try:
                    await asyncio.wait_for(self._dirty.wait(), self._retrain_delay)
                except TimeoutError:
                    break
            self._dirty.clear()
            examples = list(self._examples)
            started = time.perf_counter()
            try:
                skill = await asyncio.to_thread(
                    self._trainer.fit, examples, skill_vote(self.settings)
                )
            except Exception:
                log.exception("retraining triage on %d examples failed", len(examples))
            else:
                self._models = dataclasses.replace(self._models, skill=skill)
                self.stats.retrains += 1
                self.stats.examples = len(examples)
                self.stats.skills = skill.labels
                self.stats.last_retrain_seconds = time.perf_counter() - started
                log.info(
                    "triage retrained on %d examples in %.2f s",
                    len(examples),
                    self.stats.last_retrain_seconds,
                )
            if not self._dirty.is_set():
                self._settled.set()
