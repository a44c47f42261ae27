"""Fine-tuning the encoder and the neighbour vote (triage eval --fine-tune --neighbour-vote)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from adapters.cli import main
from bot.triage.classifier import EmbeddingClassifier, NeighbourVote
from bot.triage.encoder import SentenceEncoder
from bot.triage.evaluation import read_examples
from bot.triage.tuning import TuningSettings, tune_encoder, tuned_model_dir

PAYLOADS = Path(__file__).parent / "payloads" / "triage"
TRAIN = PAYLOADS / "tiny_train.csv"
TEST = PAYLOADS / "tiny_test.tsv"
#: Two epochs over twelve examples: enough to move the weights, a few seconds on a CPU.
QUICK = TuningSettings(epochs=2, batch_size=4)


@pytest.fixture(autouse=True)
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tuned encoders go to a cache of the test's own."""
    cache = tmp_path / "model-cache"
    monkeypatch.setenv("SWITCHBOARD_MODEL_CACHE", str(cache))
    return cache


def test_a_tuned_encoder_trains_predicts_and_is_reused(model_cache: Path) -> None:
    train = read_examples(TRAIN)
    test = read_examples(TEST)

    folder = tune_encoder("", train, QUICK)

    assert folder == tuned_model_dir(SentenceEncoder.load(backend="torch").info.model, train, QUICK)
    assert folder.parent == model_cache / "tuned"
    marker = json.loads((folder / "switchboard.json").read_text(encoding="utf-8"))
    assert marker["labels"] == ["account", "billing", "shipping"]
    assert marker["query_prefix"] == ""
    tuned = SentenceEncoder.load(str(folder), backend="torch")
    base = SentenceEncoder.load(backend="torch")
    texts = [e.text for e in train]
    assert not np.allclose(tuned.encode(texts), base.encode(texts), atol=1e-3)
    classifier = EmbeddingClassifier.fit(tuned.encode(texts), [e.label for e in train])
    guessed = [p.label for p in classifier.predict(tuned.encode([e.text for e in test]))]
    assert guessed == [e.label for e in test]
    # The same examples again: the cached folder, untouched.
    stamp = (folder / "switchboard.json").stat().st_mtime_ns
    assert tune_encoder("", list(reversed(train)), QUICK) == folder
    assert (folder / "switchboard.json").stat().st_mtime_ns == stamp


def test_the_head_starts_at_each_labels_mean_embedding() -> None:
    from transformers import AutoModel, AutoTokenizer

    from bot.triage.encoder import default_model_path
    from bot.triage.tuning import _label_centres

    train = read_examples(TRAIN)
    labels = sorted({e.label for e in train})
    data = [(e.text, labels.index(e.label)) for e in train]
    model = default_model_path()

    centres = _label_centres(
        AutoModel.from_pretrained(model), AutoTokenizer.from_pretrained(model), data, len(labels)
    ).numpy()

    embeddings = SentenceEncoder.load(backend="torch").encode([text for text, _ in data])
    for column, label in enumerate(labels):
        mean = embeddings[[label == e.label for e in train]].mean(axis=0)
        assert np.allclose(centres[column], mean / np.linalg.norm(mean), atol=1e-4)


def test_other_examples_get_another_tuned_encoder() -> None:
    train = read_examples(TRAIN)

    assert tuned_model_dir("base", train, QUICK) != tuned_model_dir("base", train[1:], QUICK)
    assert tuned_model_dir("base", train, QUICK) != tuned_model_dir(
        "base", train, TuningSettings(epochs=3, batch_size=4)
    )


def test_one_label_cannot_be_tuned_for() -> None:
    only_billing = [e for e in read_examples(TRAIN) if e.label == "billing"]

    with pytest.raises(ValueError, match="at least two labels"):
        tune_encoder("", only_billing, QUICK)


def test_eval_fine_tunes_on_the_training_file_only(
    capsys: pytest.CaptureFixture[str], model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.triage.evaluation.TUNING", QUICK)
    args = ["triage", "eval", "--train", str(TRAIN), "--test", str(TEST), "--backend", "torch"]

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)

    status = main([*args, "--fine-tune"])
    out, err = capsys.readouterr()
    report = json.loads(out)

    assert status == 0
    assert "epoch 1 of 2 done" in err
    assert "epoch 2 of 2 done" in err
    assert report["accuracy"] == 1.0
    assert report["tuning_seconds"] > 0
    assert Path(str(report["model"])).parent == model_cache / "tuned"


def test_a_neighbour_vote_sides_with_the_nearest_examples() -> None:
    # Two labels: "a" around the x axis, "b" around y, with one "b" example near x.
    rows = np.array([[1, 0.05], [1, -0.05], [0.05, 1], [-0.05, 1], [1, 0.3]], dtype=np.float32)
    embeddings = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    labels = ["a", "a", "b", "b", "b"]
    query = embeddings[4:] * 0.999 + embeddings[:1] * 0.001
    query /= np.linalg.norm(query, axis=1, keepdims=True)

    plain = EmbeddingClassifier.fit(embeddings, labels, c=0.01)
    voting = EmbeddingClassifier.fit(
        embeddings, labels, c=0.01, vote=NeighbourVote(weight=0.9, neighbours=1)
    )

    assert plain.predict(query)[0].label == "a"
    assert voting.predict(query)[0].label == "b"
    assert np.allclose(voting.probabilities(embeddings).sum(axis=1), 1.0, atol=1e-5)


async def test_the_engine_fine_tunes_and_votes_when_the_settings_say_so(
    model_cache: Path,
) -> None:
    from bot.settings import SkillSettings, TriageSettings
    from bot.triage import TriageEngine
    from bot.triage.engine import skill_vote
    from tests.test_triage_engine import mail

    skills = (
        SkillSettings(
            "wholesale",
            "support-b2b",
            examples=(
                "We are a retailer and want to stock your products.",
                "Reseller pricing for our shop chain",
                "Can we sell your goods in our stores?",
            ),
        ),
        SkillSettings(
            "general",
            "support",
            examples=("Where is my parcel?", "I forgot my password", "Your app crashes"),
        ),
    )
    settings = TriageSettings(fine_tune=True, neighbour_vote=True)

    engine = await TriageEngine.load(settings, skills)
    async with engine:
        triage = await engine.triage(mail("Do you offer reseller prices for retailers?"))

    assert Path(engine.encoder.info.model).parent == model_cache / "tuned"
    assert triage.skill == "wholesale"
    # Over a fine-tuned encoder the vote only settles close calls: it weighs less.
    assert skill_vote(settings) == NeighbourVote(weight=0.2)
    assert skill_vote(TriageSettings(neighbour_vote=True)) == NeighbourVote(weight=0.4)
    assert skill_vote(TriageSettings()) is None


def test_an_interrupted_tuning_resumes_from_its_checkpoint(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    train = read_examples(TRAIN)
    target = tuned_model_dir(SentenceEncoder.load(backend="torch").info.model, train, QUICK)
    caplog.set_level(logging.INFO, logger="bot.triage")

    def stop_after_four(step: int) -> None:
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune_encoder("", train, QUICK, checkpoint_seconds=0, on_step=stop_after_four)
    assert not target.exists()
    assert (target.with_name(target.name + ".checkpoint") / "state.pt").is_file()

    steps: list[int] = []
    resumed = tune_encoder("", train, QUICK, checkpoint_seconds=0, on_step=steps.append)

    assert steps == [5, 6]
    assert "resumes from its checkpoint at step 4 of 6" in caplog.text
    assert "6 of 6 steps (100%)" in caplog.text
    assert not target.with_name(target.name + ".checkpoint").exists()
    # The same encoder as a run that was never interrupted.
    monkeypatch.setenv("SWITCHBOARD_MODEL_CACHE", str(model_cache / "other"))
    whole = tune_encoder("", train, QUICK)
    texts = [e.text for e in train]
    assert np.allclose(
        SentenceEncoder.load(str(resumed), backend="torch").encode(texts),
        SentenceEncoder.load(str(whole), backend="torch").encode(texts),
        atol=1e-5,
    )


def test_e5s_embedding_matrix_is_frozen_and_minilms_is_not() -> None:
    from transformers import AutoModel

    from bot.triage.encoder import default_model_path
    from bot.triage.tuning import _freezes_embeddings

    minilm = AutoModel.from_pretrained(default_model_path())

    assert not _freezes_embeddings(minilm, TuningSettings())
    assert _freezes_embeddings(minilm, TuningSettings(freeze_embeddings=True))
