"""Text blocks: the team's canned answers, each in German and English, with placeholders.

Leads and admins keep them from Slack (``/switchboard blocks ...`` and a modal) or import and
export them as TOML or CSV; every change is audited. A placeholder in braces is filled from the
conversation when a block (or a past reply) is offered as a suggestion; a block that names a
placeholder Switchboard does not know is refused, so agents never see ``{custmer_name}``.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot.errors import ActionRefused
from bot.roles import Actor
from models import AuditEntry, TextBlock

#: Every placeholder, with what it becomes.
PLACEHOLDERS: dict[str, str] = {
    "customer_first_name": "the customer's first name",
    "customer_name": "the customer's full name",
    "customer_email": "the address the customer wrote from",
    "agent_name": "the name the agent's replies go out under",
    "conversation": "the conversation's short id (k7q2ab)",
    "order": "an order number found in the conversation",
    "subject": "the subject of the conversation",
    "skill": "the conversation's skill",
}
LANGUAGES = ("en", "de")
_PLACEHOLDER = re.compile(r"\{([^{}\s]*)\}")
_TITLE_LIMIT = 128
_TEXT_LIMIT = 3000
_CSV_COLUMNS = ("title", "skill", "text_en", "text_de")


class BlockRefused(ActionRefused):
    """A block that cannot be stored as given; ``reason`` says what to change."""


@dataclass(frozen=True, slots=True)
class BlockDraft:
    """A text block as someone wrote it, before it is checked and stored."""

    title: str
    skill: str = ""
    text_en: str = ""
    text_de: str = ""

    def text(self, language: str) -> str:
        """The variant for ``language`` (German for ``de``, English otherwise)."""
        return self.text_de if language == "de" else self.text_en


def unknown_placeholders(text: str) -> list[str]:
    """Placeholders in ``text`` that Switchboard cannot fill."""
    return [name for name in _PLACEHOLDER.findall(text) if name not in PLACEHOLDERS]


def check(draft: BlockDraft) -> BlockDraft:
    """The draft, tidied; raises ``BlockRefused`` with what to fix."""
    title = " ".join(draft.title.split())
    if not title:
        raise BlockRefused("A text block needs a title.")
    if len(title) > _TITLE_LIMIT:
        raise BlockRefused(f"The title is {len(title)} characters; keep it to {_TITLE_LIMIT}.")
    text_en, text_de = draft.text_en.strip(), draft.text_de.strip()
    if not (text_en or text_de):
        raise BlockRefused(f"`{title}` has no text: give it an English or a German text.")
    for language, text in (("English", text_en), ("German", text_de)):
        if len(text) > _TEXT_LIMIT:
            raise BlockRefused(
                f"The {language} text is too long: at most {_TEXT_LIMIT} characters."
            )
        unknown = unknown_placeholders(text)
        if unknown:
            known = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
            raise BlockRefused(
                f"The {language} text of `{title}` has "
                f"{', '.join(f'{{{u}}}' for u in unknown)}, which Switchboard cannot fill. "
                f"Use one of {known}."
            )
    return BlockDraft(title, draft.skill.strip().lower(), text_en, text_de)


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with its placeholders replaced; one without a value stays visible as [what]."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in PLACEHOLDERS:
            return match.group(0)
        value = values.get(name, "")
        return value if value else f"[{PLACEHOLDERS[name]}]"

    return _PLACEHOLDER.sub(replace, text)


def draft_of(block: TextBlock) -> BlockDraft:
    return BlockDraft(block.title, block.skill, block.text_en, block.text_de)


async def find_block(name: str) -> TextBlock:
    """A block by its title (any case) or ``#id``."""
    wanted = name.strip().removeprefix("#")
    block = None
    if wanted.isdigit():
        block = await TextBlock.get_or_none(id=int(wanted))
    if block is None:
        block = await TextBlock.filter(title__iexact=wanted).first()
    if block is None:
        raise BlockRefused(f"There is no text block `{name}`. `blocks list` shows them.")
    return block


async def list_blocks(skill: str = "") -> list[TextBlock]:
    query = TextBlock.all().order_by("skill", "title")
    if skill:
        query = query.filter(skill__in=(skill, ""))
    return list(await query)


async def save_block(actor: Actor, draft: BlockDraft, *, replace: int | None = None) -> str:
    """Add a block, or change block ``replace``; audited. Returns what to tell the actor."""
    draft = check(draft)
    async with in_transaction() as conn:
        clash = await TextBlock.filter(title__iexact=draft.title).using_db(conn).first()
        if clash is not None and clash.id != replace:
            raise BlockRefused(f"A text block called `{clash.title}` exists: pick another title.")
        if replace is None:
            block = await TextBlock.create(
                title=draft.title,
                skill=draft.skill,
                text_en=draft.text_en,
                text_de=draft.text_de,
                updated_by=actor.user_id,
                using_db=conn,
            )
            action, said = "block_add", "added"
        else:
            block = await TextBlock.get(id=replace, using_db=conn)
            block.title, block.skill = draft.title, draft.skill
            block.text_en, block.text_de = draft.text_en, draft.text_de
            block.updated_by = actor.user_id
            await block.save(using_db=conn)
            action, said = "block_edit", "changed"
        await _audit(
            actor, action, f"{actor.label} {said} the text block “{draft.title}”.", block, conn
        )
    return f"Text block `{draft.title}` {said} (#{block.id})."


async def remove_block(actor: Actor, name: str) -> str:
    block = await find_block(name)
    async with in_transaction() as conn:
        await _audit(
            actor,
            "block_remove",
            f"{actor.label} removed the text block “{block.title}”.",
            block,
            conn,
        )
        await block.delete(using_db=conn)
    return f"Text block `{block.title}` removed."


async def _audit(
    actor: Actor, action: str, summary: str, block: TextBlock, conn: BaseDBAsyncClient
) -> None:
    await AuditEntry.create(
        conversation=None,
        actor_id=actor.user_id,
        actor_name=actor.label[:255],
        action=action,
        detail={
            "block": block.id,
            "title": block.title,
            "skill": block.skill,
            "text_en": block.text_en,
            "text_de": block.text_de,
        },
        summary=summary,
        using_db=conn,
    )


def parse_blocks(data: str, file_format: str) -> list[BlockDraft]:
    """Blocks from a TOML (``[[blocks]]`` tables) or CSV (title,skill,text_en,text_de) text."""
    if file_format == "toml":
        try:
            rows = tomllib.loads(data).get("blocks", [])
        except tomllib.TOMLDecodeError as exc:
            raise BlockRefused(f"Not valid TOML: {exc}.") from exc
        if not isinstance(rows, list):
            raise BlockRefused("Write each block as a [[blocks]] table.")
    elif file_format == "csv":
        reader = csv.DictReader(io.StringIO(data))
        missing = [c for c in ("title",) if c not in (reader.fieldnames or [])]
        if missing:
            raise BlockRefused(f"The CSV needs a header row with {', '.join(_CSV_COLUMNS)}.")
        rows = list(reader)
    else:
        raise BlockRefused(f"Blocks are read from .toml or .csv files, not .{file_format}.")
    drafts = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise BlockRefused(f"Block {number} is not a table.")
        unknown = set(row) - set(_CSV_COLUMNS)
        if unknown:
            raise BlockRefused(
                f"Block {number} has {', '.join(sorted(unknown))}; "
                f"a block has {', '.join(_CSV_COLUMNS)}."
            )
        draft = BlockDraft(*(str(row.get(c) or "") for c in _CSV_COLUMNS))
        try:
            drafts.append(check(draft))
        except BlockRefused as exc:
            raise BlockRefused(f"Block {number}: {exc.reason}") from exc
    return drafts


def format_blocks(blocks: Iterable[BlockDraft], file_format: str) -> str:
    """Blocks as TOML or CSV text (what ``parse_blocks`` reads)."""
    if file_format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(_CSV_COLUMNS)
        for b in blocks:
            writer.writerow([b.title, b.skill, b.text_en, b.text_de])
        return out.getvalue()
    parts = []
    for b in blocks:
        lines = ["[[blocks]]", f"title = {_toml_string(b.title)}"]
        if b.skill:
            lines.append(f"skill = {_toml_string(b.skill)}")
        for key, text in (("text_en", b.text_en), ("text_de", b.text_de)):
            if text:
                lines.append(f"{key} = {_toml_string(text)}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    escaped = escaped.replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


async def import_blocks(actor: Actor, drafts: list[BlockDraft]) -> tuple[int, int]:
    """Add new blocks and change those with the same title; returns (added, changed)."""
    added = changed = 0
    for draft in drafts:
        existing = await TextBlock.filter(title__iexact=draft.title).first()
        await save_block(actor, draft, replace=existing.id if existing else None)
        if existing is None:
            added += 1
        else:
            changed += 1
    return added, changed
