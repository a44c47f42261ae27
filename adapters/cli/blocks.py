"""``switchboard blocks import|export FILE``: the team's text blocks as TOML or CSV."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path

from bot.blocks import (
    BlockRefused,
    draft_of,
    format_blocks,
    import_blocks,
    list_blocks,
    parse_blocks,
)
from bot.database import open_database
from bot.roles import Actor
from bot.settings import config_path, load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``switchboard blocks ...``."""
    blocks = subparsers.add_parser("blocks", help="import or export the team's text blocks")
    commands = blocks.add_subparsers(dest="blocks_command", required=True, metavar="COMMAND")
    do_import = commands.add_parser(
        "import",
        help="add the blocks of a .toml or .csv file (a block with the same title is changed)",
        description=(
            "TOML: [[blocks]] tables with title, skill (optional), text_en, text_de. CSV: a "
            "header row title,skill,text_en,text_de. Every block is checked first (unknown "
            "placeholders are refused) and nothing is stored if one is wrong; each change is "
            "audited."
        ),
    )
    do_import.add_argument("file", type=Path)
    do_import.set_defaults(func=_import)
    do_export = commands.add_parser("export", help="write every block to a .toml or .csv file")
    do_export.add_argument("file", type=Path)
    do_export.set_defaults(func=_export)


def _format_of(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def _import(args: argparse.Namespace) -> int:
    settings = load_settings(config_path(args.config))
    path: Path = args.file
    try:
        drafts = parse_blocks(path.read_text(encoding="utf-8"), _format_of(path))
    except OSError as exc:
        print(f"switchboard: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    except BlockRefused as exc:
        print(f"switchboard: {path}: {exc.reason} Nothing was imported.", file=sys.stderr)
        return 2

    async def run() -> tuple[int, int]:
        async with open_database(settings.database_url):
            actor = Actor(f"cli:{getpass.getuser()}"[:64], f"{getpass.getuser()} (command line)")
            return await import_blocks(actor, drafts)

    added, changed = asyncio.run(run())
    print(f"{added} text blocks added, {changed} changed, from {path}.")
    return 0


def _export(args: argparse.Namespace) -> int:
    settings = load_settings(config_path(args.config))
    path: Path = args.file
    if _format_of(path) not in ("toml", "csv"):
        print("switchboard: export to a .toml or .csv file.", file=sys.stderr)
        return 2

    async def run() -> str:
        async with open_database(settings.database_url):
            blocks = [draft_of(b) for b in await list_blocks()]
        return format_blocks(blocks, _format_of(path))

    text = asyncio.run(run())
    path.write_text(text, encoding="utf-8")
    print(f"Text blocks written to {path}.")
    return 0
