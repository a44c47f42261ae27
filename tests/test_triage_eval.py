"""``switchboard triage eval`` on small labelled files beside the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.cli import main

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
