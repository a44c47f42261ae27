"""Text blocks: placeholders, the TOML and CSV files of ``switchboard blocks``, and anonymising
a past reply before it is offered again."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from adapters.cli import main
from adapters.hnsw_index import HnswIndex
from bot.blocks import PLACEHOLDERS, BlockDraft, BlockRefused, check, fill
from bot.database import open_database
from bot.suggest_eval import Row, evaluate_suggestions, split
from bot.suggestions import anonymise, find_order
from models import AuditEntry, TextBlock
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, toml_for
from tests.wordvectors import WordVectorClassifier

BLOCKS_TOML = '''
[[blocks]]
title = "Refund"
text_en = "Hello {customer_first_name}, your refund for order {order} is on its way."
text_de = "Hallo {customer_first_name}, Ihre Erstattung für {order} ist unterwegs."

[[blocks]]
title = "Password reset"
skill = "technical"
text_en = """Hi {customer_first_name},

use "Forgot password" on the login page.
{agent_name}"""
'''


async def run_cli(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str
) -> int:
    async with open_database(database_url):
        pass
    config = tmp_path / "switchboard.toml"
    config.write_text(toml_for())
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("DATABASE_URL", database_url)
    return await asyncio.to_thread(main, ["--config", str(config), "blocks", *args])


async def test_blocks_go_in_and_out_as_toml_and_csv_unchanged(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "blocks.toml"
    source.write_text(BLOCKS_TOML, encoding="utf-8")
    assert await run_cli(database_url, tmp_path, monkeypatch, "import", str(source)) == 0
    assert "2 text blocks added, 0 changed" in capsys.readouterr().out

    for name in ("out.csv", "out.toml"):
        out = tmp_path / name
        assert await run_cli(database_url, tmp_path, monkeypatch, "export", str(out)) == 0
        assert await run_cli(database_url, tmp_path, monkeypatch, "import", str(out)) == 0
        assert "0 text blocks added, 2 changed" in capsys.readouterr().out

    async with open_database(database_url, migrate_first=False):
        blocks = {b.title: b for b in await TextBlock.all()}
        assert blocks["Password reset"].text_en == (
            'Hi {customer_first_name},\n\nuse "Forgot password" on the login page.\n{agent_name}'
        )
        assert blocks["Password reset"].skill == "technical"
        assert blocks["Refund"].text_de.startswith("Hallo {customer_first_name}, Ihre")
        assert await AuditEntry.filter(action="block_add").count() == 2
        assert await AuditEntry.filter(action="block_edit").count() == 4


async def test_a_file_with_an_unknown_placeholder_imports_nothing(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "blocks.csv"
    source.write_text(
        "title,skill,text_en,text_de\nFine,,Hello {customer_name},\nBad,,Hi {first_name},\n",
        encoding="utf-8",
    )
    assert await run_cli(database_url, tmp_path, monkeypatch, "import", str(source)) == 2
    error = capsys.readouterr().err
    assert "Block 2: The English text of `Bad` has {first_name}" in error
    assert "Nothing was imported" in error
    async with open_database(database_url, migrate_first=False):
        assert await TextBlock.all().count() == 0


def test_placeholders_are_filled_and_a_missing_value_stays_visible() -> None:
    text = "Hi {customer_first_name}, order {order} ({conversation}). {agent_name}"
    values = {"customer_first_name": "Anna", "conversation": "k7q2ab", "agent_name": "Lena"}
    filled = fill(text, values)
    assert filled == f"Hi Anna, order [{PLACEHOLDERS['order']}] (k7q2ab). Lena"
    with pytest.raises(BlockRefused, match="cannot fill"):
        check(BlockDraft("x", text_en="{unknown}"))
    with pytest.raises(BlockRefused, match="has no text"):
        check(BlockDraft("x"))


def test_a_past_reply_loses_the_customers_data() -> None:
    reply = (
        "Hallo Frau Weber,\n\ndie Bestellung 4711-22 ist storniert. Bei Fragen: +49 30 1234567 "
        "oder maria.weber@example.de, IBAN DE89 3704 0044 0532 0130 00.\n\nViele Grüße\nTom"
    )
    out = anonymise(reply, customer_name="Maria Weber", agent_name="Tom Tester")
    assert out == (
        "Hallo {customer_name},\n\ndie Bestellung {order} ist storniert. Bei Fragen: "
        "[phone number] oder {customer_email}, IBAN [IBAN].\n\nViele Grüße\n{agent_name}"
    )
    assert find_order(["Where is order #88123?", "And my Bestellung: AB-1234?"]) == "AB-1234"
    assert find_order(["no number here"]) == ""


# The evaluation keeps its history in a SQLite file of its own: tortoise cannot switch dialect
# in one process, so the PostgreSQL run leaves it to the SQLite one.
@pytest.mark.skipif(
    os.environ.get("SWITCHBOARD_TEST_DB") == "postgres",
    reason="suggest eval uses SQLite; it runs in the SQLite process",
)
async def test_suggest_eval_counts_a_hit_when_the_answered_message_has_the_label() -> None:
    history = [
        Row("my card was declined at the shop", "card_declined", "Sorry, we will check it."),
        Row("card declined again when paying", "card_declined", "We are on it."),
        Row("how do I change my address", "change_address", "Go to settings."),
        Row("where can I update my home address", "change_address", "Settings, then profile."),
    ]
    test = [
        Row("the shop declined my card", "card_declined"),
        Row("update my address please", "change_address"),
        Row("completely unrelated words here", "card_declined"),
    ]
    report = await evaluate_suggestions(history, test, WordVectorClassifier("x"), HnswIndex)
    assert report["hit@1"] == round(2 / 3, 4)
    assert report["hit@3"] == round(2 / 3, 4)
    assert report["with_a_suggestion"] == round(2 / 3, 4)
    assert split(history, 0.5, seed=1)[1] == split(history, 0.5, seed=1)[1]
    assert len(split(history, 0.5, seed=1)[1]) == 2
