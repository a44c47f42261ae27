"""A linear classifier over sentence embeddings (skill, priority, sentiment).

Multinomial logistic regression (scikit-learn) with balanced class weights, kept as a plain
weight matrix for prediction. It trains in well under a second on the few hundred examples a team
has, its probabilities work as a confidence, and over a frozen encoder it does as well as
anything heavier with few examples.
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
    ) -> None:
        self.labels = tuple(labels)
        self._weights = weights
        self._bias = bias

    @classmethod
    def fit(
        cls, embeddings: Embeddings, labels: Sequence[str], *, c: float = DEFAULT_C
    ) -> EmbeddingClassifier:
        """Train on one embedding row per label (blocking; well under a second for a team)."""
        names = sorted(set(labels))
        if not names:
            raise ValueError("no training examples")
        dims = embeddings.shape[1]
        if len(names) == 1:
            # One label: it is always the answer, with full confidence.
            return cls(names, np.zeros((dims, 1), np.float32), np.zeros(1, np.float32))
        weights, bias = _fit_softmax_regression(embeddings, labels, names, c)
        return cls(names, weights, bias)

    def probabilities(self, embeddings: Embeddings) -> npt.NDArray[np.float32]:
        """One row of label probabilities (in the order of ``labels``) per embedding."""
        logits = embeddings @ self._weights + self._bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float32)

    def predict(self, embeddings: Embeddings) -> list[Prediction]:
        """The most likely label of each embedding."""
        probs = self.probabilities(embeddings)
        best = probs.argmax(axis=1)
        return [Prediction(self.labels[int(i)], float(probs[row, i])) for row, i in enumerate(best)]


def _fit_softmax_regression(
    embeddings: Embeddings, labels: Sequence[str], names: Sequence[str], c: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Weights (dims x labels) and bias of an L2-regularised, class-balanced softmax regression."""
    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    model = LogisticRegression(C=c, max_iter=1000, class_weight="balanced")
    with warnings.catch_warnings():
        # Past a few hundred iterations the predictions no longer change.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(embeddings, list(labels))
    assert [str(n) for n in model.classes_] == list(names)
    weights = np.asarray(model.coef_, dtype=np.float32).T
    bias = np.asarray(model.intercept_, dtype=np.float32)
    if len(names) == 2:
        # scikit-learn keeps one column for two labels; softmax over (-z/2, z/2) is sigmoid(z).
        weights = np.concatenate([-weights / 2, weights / 2], axis=1)
        bias = np.array([-bias[0] / 2, bias[0] / 2], dtype=np.float32)
    return weights, bias
