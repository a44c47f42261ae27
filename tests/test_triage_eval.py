"""``switchboard triage eval`` on small labelled files beside the tests."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from adapters.cli import main
from bot.triage.evaluation import read_examples

PAYLOADS = Path(__file__).parent / "payloads" / "triage"
TRAIN = str(PAYLOADS / "tiny_train.csv")
TEST = str(PAYLOADS / "tiny_test.tsv")


def run_eval(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    status = main(["triage", "eval", *args])
    out = capsys.readouterr().out
    assert status == 0
    report: dict[str, object] = json.loads(out)
    return report


def test_eval_trains_on_a_csv_and_scores_a_tsv(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_eval(capsys, "--train", TRAIN, "--test", TEST)

    assert report["n_train"] == 12
    assert report["n_test"] == 6
    assert report["accuracy"] == 1.0
    assert report["macro_f1"] == 1.0
    assert report["per_label_f1"] == {"account": 1.0, "billing": 1.0, "shipping": 1.0}
    assert isinstance(report["messages_per_second"], float)
    assert report["messages_per_second"] > 0


def test_eval_samples_shots_and_holds_out_with_a_seed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ("--train", TRAIN, "--holdout", "0.25", "--shots", "2", "--seed", "7")
    first = run_eval(capsys, *args, "--backend", "torch")
    second = run_eval(capsys, *args, "--backend", "torch")

    assert first["n_train"] == 6
    assert first["n_test"] == 3
    assert first["backend"] == "torch"
    assert first["accuracy"] == second["accuracy"]
    assert first["shots"] == 2
    assert first["seed"] == 7


def test_eval_names_a_missing_column(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["triage", "eval", "--train", TRAIN, "--test", TEST, "--label-col", "intent"])

    assert status == 2
    assert "--label-col: 'intent' is not a column" in capsys.readouterr().err


def test_eval_reads_files_without_a_header(capsys: pytest.CaptureFixture[str]) -> None:
    no_header = str(PAYLOADS / "no_header.tsv")
    args = ("--train", no_header, "--test", no_header, "--no-header")

    report = run_eval(capsys, *args, "--text-col", "0", "--label-col", "1", "--backend", "torch")

    assert report["n_train"] == 2
    assert report["accuracy"] == 1.0


@pytest.fixture(autouse=True)
def _root_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """eval sends its progress lines to stderr through the root logger: restore it after."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)


def test_eval_scores_priority_through_the_service_and_lists_severe_misses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sample = tmp_path / "priority.tsv"
    sample.write_text(
        "text\tpriority\tautomated\n"
        "Out of office until Monday. For URGENT matters call the front desk.\tlow\t1\n"
        "Could you tell me the status of my return?\tnormal\t0\n",
        encoding="utf-8",
    )

    status = main(["triage", "eval", "--task", "priority", "--test", str(sample)])
    out, err = capsys.readouterr()
    report = json.loads(out)

    assert status == 0
    assert report["task"] == "priority"
    assert report["n_test"] == 2
    # Marked automatic: low, whatever its words say.
    assert report["confusion"]["low"] == {"low": 1}
    assert set(report["confusion"]) == {"low", "normal"}
    assert report["severe_misses"] == []
    assert "scoring priority: 2 of 2 messages (100%)" in err


def test_eval_scores_sentiment_by_polarity(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sample = tmp_path / "sentiment.csv"
    sample.write_text(
        "text,polarity\n"
        "Thank you so much for your quick and friendly help!,positive\n"
        "Where is my parcel?,neutral\n",
        encoding="utf-8",
    )

    report = run_eval(
        capsys, "--task", "sentiment", "--test", str(sample), "--label-col", "polarity"
    )

    assert report["task"] == "sentiment"
    per_label = report["per_label_f1"]
    confusion = report["confusion"]
    assert isinstance(per_label, dict)
    assert isinstance(confusion, dict)
    assert set(per_label) <= {"positive", "neutral", "negative"}
    assert confusion["positive"] == {"positive": 1}
    assert isinstance(report["shown_share"], float)
    assert report["majority_accuracy"] == 0.5


def test_eval_of_the_shipped_models_takes_no_training_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["triage", "eval", "--task", "sentiment", "--train", TRAIN, "--test", TEST])

    assert status == 2
    assert "leave out --train" in capsys.readouterr().err


def test_zero_shots_are_refused_not_read_as_all(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["triage", "eval", "--train", TRAIN, "--test", TEST, "--shots", "0"])

    assert exit_.value.code == 2
    assert "--shots: must be 1 or more, not 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name",
    [
        "priority_eval.tsv",
        "priority_holdout.tsv",
        "priority_holdout2.tsv",
        "priority_holdout3.tsv",
        "priority_holdout4.tsv",
        "priority_holdout5.tsv",
        "priority_holdout6.tsv",
        "priority_holdout7.tsv",
        "priority_holdout8.tsv",
    ],
)
def test_the_priority_sets_read_whole_with_valid_labels(name: str) -> None:
    path = Path(__file__).parent / "payloads" / "triage" / name
    lines = path.read_text(encoding="utf-8").splitlines()
    examples = read_examples(path, label_col="priority")

    assert len(examples) == len(lines) - 1 >= 100  # every row read, none dropped
    assert {e.label for e in examples} == {"urgent", "high", "normal", "low"}
    assert all(e.label == "low" for e in examples if e.automated)
    languages = [line.split("\t")[3] for line in lines[1:]]
    assert set(languages) - {""} == {"en", "de"}  # "": the undecodable rows of the eval set
    assert min(languages.count("en"), languages.count("de")) >= 50
