"""A linear classifier over sentence embeddings (skill, priority, sentiment).

Multinomial logistic regression (scikit-learn) with balanced class weights, kept as a plain
weight matrix for prediction. It trains in well under a second on the few hundred examples a team
has, its probabilities work as a confidence, and over a frozen encoder it does as well as
anything heavier with few examples.

A vote of the nearest training examples (``NeighbourVote``) blended into the probabilities
catches fine distinctions a linear boundary misses, where the nearest examples can be trusted:
with thousands of examples, or over an encoder fine-tuned on the examples, which pulls each
label's examples together. Over a frozen encoder with ten examples per label it hurts, so it is
off by default; ``triage eval --neighbour-vote`` shows what it does on a team's own data.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bot.triage.encoder import Embeddings

#: Inverse regularisation strength; chosen on a held-out part of Banking77 (10-shot and full).
DEFAULT_C = 10.0


@dataclass(frozen=True, slots=True)
class NeighbourVote:
    """``weight`` of a vote of the ``neighbours`` most similar training examples.

    Each neighbour votes ``exp((cosine - 1) / temperature)`` for its label; the votes are
    normalised and blended as ``(1 - weight) * regression + weight * vote``.
    """

    weight: float = 0.4
    neighbours: int = 5
    temperature: float = 0.05

    @classmethod
    def over(cls, *, fine_tuned: bool) -> NeighbourVote:
        """The vote for an encoder: lighter over a fine-tuned one.

        Fine-tuning already makes the regression sharp, so there the vote only settles close
        calls: weight 0.2 did best on dev splits of Banking77 (ten per label: +0.5 points over
        0.4; all data: the same) and German MASSIVE (0.2 changed nothing there, 0.4 cost 1.4
        points). Over a frozen encoder, 0.4 did best with thousands of examples.
        """
        return cls(weight=0.2) if fine_tuned else cls()


@dataclass(frozen=True, slots=True)
class _Memory:
    """The training embeddings and their label columns, for the vote."""

    embeddings: npt.NDArray[np.float32]
    columns: npt.NDArray[np.int64]
    vote: NeighbourVote


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    confidence: float


class EmbeddingClassifier:
    """Predicts one of ``labels`` for an embedding, with the probability as confidence."""

    def __init__(
        self,
        labels: Sequence[str],
        weights: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32],
        memory: _Memory | None = None,
    ) -> None:
        self.labels = tuple(labels)
        self._weights = weights
        self._bias = bias
        self._memory = memory

    @classmethod
    def fit(
        cls,
        embeddings: Embeddings,
        labels: Sequence[str],
        *,
        c: float = DEFAULT_C,
        vote: NeighbourVote | None = None,
    ) -> EmbeddingClassifier:
        """Train on one embedding row per label (blocking; well under a second for a team)."""
        names = sorted(set(labels))
        if not names:
            raise ValueError("no training examples")
        dims = embeddings.shape[1]
        if len(names) == 1:
            # One label: it is always the answer, with full confidence.
            return cls(names, np.zeros((dims, 1), np.float32), np.zeros(1, np.float32))
        weights, bias = fit_softmax_regression(embeddings, labels, names, c)
        memory = None
        if vote is not None and vote.weight > 0:
            column = {name: i for i, name in enumerate(names)}
            columns = np.array([column[label] for label in labels], dtype=np.int64)
            memory = _Memory(np.array(embeddings, dtype=np.float32), columns, vote)
        return cls(names, weights, bias, memory)

    def probabilities(self, embeddings: Embeddings) -> npt.NDArray[np.float32]:
        """One row of label probabilities (in the order of ``labels``) per embedding."""
        logits = embeddings @ self._weights + self._bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probs = exp / exp.sum(axis=1, keepdims=True)
        if self._memory is not None:
            weight = self._memory.vote.weight
            probs = (1 - weight) * probs + weight * self._vote(embeddings, self._memory)
        return np.asarray(probs, dtype=np.float32)

    def _vote(self, embeddings: Embeddings, memory: _Memory) -> npt.NDArray[np.float32]:
        """Each row: the normalised votes of the nearest training examples per label."""
        similarity = embeddings @ memory.embeddings.T
        count = min(memory.vote.neighbours, similarity.shape[1])
        nearest = np.argpartition(-similarity, count - 1, axis=1)[:, :count]
        # Embeddings are normalised, so cosine - 1 <= 0 and exp never overflows.
        strength = np.exp(
            (np.take_along_axis(similarity, nearest, axis=1) - 1) / memory.vote.temperature
        )
        votes = np.zeros((len(embeddings), len(self.labels)), dtype=np.float32)
        rows = np.repeat(np.arange(len(embeddings)), count)
        np.add.at(votes, (rows, memory.columns[nearest].reshape(-1)), strength.reshape(-1))
        return np.asarray(votes / votes.sum(axis=1, keepdims=True), dtype=np.float32)

    def predict(self, embeddings: Embeddings) -> list[Prediction]:
        """The most likely label of each embedding."""
        probs = self.probabilities(embeddings)
        best = probs.argmax(axis=1)
        return [Prediction(self.labels[int(i)], float(probs[row, i])) for row, i in enumerate(best)]


def fit_softmax_regression(
    embeddings: Embeddings,
    labels: Sequence[str],
    names: Sequence[str],
    c: float,
    *,
    balanced: bool = True,
    sample_weight: Sequence[float] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Weights (dims x labels) and bias of an L2-regularised softmax regression.

    ``balanced`` weighs each label alike however many examples it has (skills); without it the
    labels keep their share of the data (sentiment, where most messages are neutral).
    ``sample_weight`` weighs each example (sentiment: each language alike).
    """
    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    model = LogisticRegression(C=c, max_iter=1000, class_weight="balanced" if balanced else None)
    with warnings.catch_warnings():
        # Past a few hundred iterations the predictions no longer change.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(embeddings, list(labels), sample_weight=sample_weight)
    assert [str(n) for n in model.classes_] == list(names)
    weights = np.asarray(model.coef_, dtype=np.float32).T
    bias = np.asarray(model.intercept_, dtype=np.float32)
    if len(names) == 2:
        # scikit-learn keeps one column for two labels; softmax over (-z/2, z/2) is sigmoid(z).
        weights = np.concatenate([-weights / 2, weights / 2], axis=1)
        bias = np.array([-bias[0] / 2, bias[0] / 2], dtype=np.float32)
    return weights, bias
