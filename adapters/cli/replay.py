"""``switchboard replay PATH... [--json]``: stored mail through parsing, threading and triage.

Each PATH is an .eml file, an mbox file, a Maildir, or a folder searched for those (``*.eml``,
``*.mbox`` and Maildirs; other files are skipped and counted). Messages are replayed in the
order they are read: PATHs as given, files by name, an mbox from top to bottom, a Maildir by
delivery time. Every message gets one line on stdout (aligned columns, or one JSON object with
``--json``): its conversation, skill, priority, language and confidence, or its error; a broken
message never stops the run. Progress goes to stderr. The exit status is 1 when any message
failed.

Nothing is posted and no database of the service is touched: messages go into a throw-away
SQLite database in a temporary folder, so a follow-up threads to its conversation across the
replay. The settings file (``--config``, ``$SWITCHBOARD_CONFIG`` or ./switchboard.toml) gives
the skills, the model, the priority rules, threading and the support address; its secrets are
neither needed nor read. Without a settings file the shipped skills and the defaults are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mailbox
import os
import re
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TextIO

from adapters.email.parse import parse_email
from bot.database import open_database
from bot.errors import IntakeError
from bot.logs import configure_logging
from bot.replay import Replay, Replayed
from bot.settings import Settings, config_path, load_settings
from bot.shapes import InboundMessage
from bot.triage.encoder import SentenceEncoder

#: Messages stored, threaded and triaged together (the triage engine reads them in one batch).
BATCH = 64
PROGRESS_EVERY = 100
_MAX_FILE_COLUMN = 100
_MAILDIR_PARTS = ("cur", "new", "tmp")
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
# Stand-ins for the secrets the settings ask for: a replay reaches no outside system.
_STAND_IN_SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-replay",
    "SLACK_SIGNING_SECRET": "replay",
    "SLACK_APP_TOKEN": "xapp-replay",
    "SMTP_RELAY_PASSWORD": "replay",
    "TELEGRAM_BOT_TOKEN": "0:replay-replay-replay-replay",
    "TELEGRAM_WEBHOOK_SECRET": "replay-replay-replay",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the replay subcommand."""
    replay = subparsers.add_parser(
        "replay",
        help="run stored mail through parsing, threading and triage (nothing is posted)",
        description=(
            "Run stored mail (.eml files, mbox files, Maildir folders, or folders holding them) "
            "through parsing, threading and triage without posting anything, and print one line "
            "per message: file, conversation, skill, priority, language, confidence, or the "
            "error for that message. Uses the settings file if there is one (its secrets are "
            "not needed), otherwise the shipped skills and defaults."
        ),
    )
    replay.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="mail to replay")
    replay.add_argument("--json", action="store_true", help="one JSON object per line")
    replay.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    settings, origin = replay_settings(args.config)
    configure_logging("WARNING", "text")
    print(f"switchboard replay: settings from {origin}", file=sys.stderr)
    errors = asyncio.run(replay(args.paths, settings, json_lines=args.json))
    return 1 if errors else 0


def replay_settings(explicit: str | None) -> tuple[Settings, str]:
    """The settings to replay with, and where they came from (said on stderr)."""
    path = config_path(explicit)
    if explicit is None and "SWITCHBOARD_CONFIG" not in os.environ and not path.is_file():
        from bot.triage.examples import default_skills

        skills = tuple(replace(s, channel=s.name) for s in default_skills().values())
        return Settings(skills=skills), "the defaults (no settings file; shipped skills)"
    env = dict(_STAND_IN_SECRETS)
    for name in _webhook_secret_names(path):
        env[name] = "replay-replay-replay"
    return load_settings(path, env), str(path)


def _webhook_secret_names(path: Path) -> list[str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []  # load_settings says what is wrong with the file
    entries = data.get("webhooks", [])
    return [
        str(e["secret_env"])
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, dict) and isinstance(e.get("secret_env"), str) and e["secret_env"]
    ]


@dataclass(frozen=True, slots=True)
class MailSource:
    """One stored message to replay: where it is, and how to read it.

    ``read`` returns the raw message and when the mailbox says it arrived (used when the
    message has no readable Date header); it raises ``ValueError`` for something that is not
    a message and ``OSError`` when it cannot be read. ``problem`` is set for a path that holds
    no message at all.
    """

    label: str
    read: Callable[[], tuple[bytes, datetime]] | None = None
    problem: str = ""


@dataclass(slots=True)
class FoundMail:
    """The messages under the replayed paths, in replay order, and the files skipped."""

    sources: list[MailSource] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    mailboxes: list[mailbox.mbox] = field(default_factory=list)


@contextmanager
def open_mail(paths: Sequence[Path]) -> Iterator[FoundMail]:
    """Every message under ``paths``; the mbox files stay open until the block ends."""
    found = FoundMail()
    try:
        for path in paths:
            if path.is_dir():
                _walk(path, found)
            elif path.is_file():
                _add_file(path, found)
            else:
                found.sources.append(MailSource(str(path), problem="no such file or folder"))
        yield found
    finally:
        for box in found.mailboxes:
            box.close()


def _walk(folder: Path, found: FoundMail) -> None:
    maildir = _is_maildir(folder)
    try:
        if maildir:
            _add_maildir(folder, found)
        children = sorted(folder.iterdir())
    except OSError as exc:
        found.sources.append(MailSource(str(folder), problem=f"cannot read the folder: {exc}"))
        return
    for child in children:
        if child.is_dir():
            if not (maildir and child.name in _MAILDIR_PARTS):
                _walk(child, found)  # Maildir++ subfolders (.Sent, ...) are Maildirs too
        elif child.suffix.lower() in (".eml", ".mbox"):
            _add_file(child, found)
        elif not maildir:  # a Maildir's own files (dovecot-uidlist, ...) are not mail
            found.skipped.append(child)


def _is_maildir(folder: Path) -> bool:
    return all((folder / part).is_dir() for part in ("cur", "new"))


def _modified(path: Path) -> datetime:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return datetime.now(UTC)


def _add_file(path: Path, found: FoundMail) -> None:
    """An .eml file, or an mbox (by its name, or a first line starting with "From ")."""
    try:
        with path.open("rb") as file:
            start = file.read(5)
    except OSError as exc:
        found.sources.append(MailSource(str(path), problem=f"cannot read the file: {exc}"))
        return
    if path.suffix.lower() != ".mbox" and start != b"From ":
        found.sources.append(
            MailSource(str(path), lambda: (_message_bytes(path.read_bytes()), _modified(path)))
        )
        return
    try:
        box = mailbox.mbox(path, factory=None, create=False)
    except OSError as exc:
        found.sources.append(MailSource(str(path), problem=f"cannot read the mbox: {exc}"))
        return
    found.mailboxes.append(box)
    try:
        keys = list(box.keys())
    except (OSError, mailbox.Error) as exc:
        found.sources.append(MailSource(str(path), problem=f"cannot read the mbox: {exc}"))
        return
    if not keys:
        found.sources.append(MailSource(str(path), problem="no messages in this mbox"))
    arrived = _modified(path)
    for number, key in enumerate(keys, start=1):
        found.sources.append(MailSource(f"{path}:{number}", _reader(box, key, arrived)))


def _add_maildir(folder: Path, found: FoundMail) -> None:
    box = mailbox.Maildir(folder, factory=None, create=False)
    for key in sorted(box.keys(), key=lambda k: (_delivered(k), k)):
        arrived = datetime.fromtimestamp(_delivered(key), UTC)
        found.sources.append(MailSource(f"{folder}:{key}", _reader(box, key, arrived)))


_MAILDIR_NAME = re.compile(r"^(\d+)(?:\.M(\d+))?")


def _delivered(key: str) -> float:
    """When a Maildir message was delivered: its name starts with the seconds (and M+micro)."""
    found = _MAILDIR_NAME.match(key)
    if found is None:
        return 0.0
    return int(found.group(1)) + int(found.group(2) or 0) / 1_000_000


def _reader(
    box: mailbox.Mailbox[Any], key: str, arrived: datetime
) -> Callable[[], tuple[bytes, datetime]]:
    def read() -> tuple[bytes, datetime]:
        try:
            raw = box.get_bytes(key)
        except KeyError as exc:
            raise OSError(f"the message is gone from the mailbox ({key})") from exc
        return _message_bytes(raw), arrived

    return read


def _message_bytes(raw: bytes) -> bytes:
    """``raw`` if it is an e-mail message; ``ValueError`` saying why it is not."""
    if not raw.strip():
        raise ValueError("empty: there is no message in it")
    first_line = raw.lstrip(b"\r\n").split(b"\n", 1)[0]
    if not _HEADER_LINE.match(first_line):
        raise ValueError("not an e-mail message: it does not start with header fields")
    return raw


def sent_at(raw: bytes, fallback: datetime) -> datetime:
    """When the message says it was sent (its Date header), else ``fallback``."""
    try:
        date = BytesHeaderParser().parsebytes(raw).get("Date")
        sent = parsedate_to_datetime(str(date)) if date else None
    except (TypeError, ValueError, IndexError):
        sent = None
    if sent is None:
        return fallback
    return sent if sent.tzinfo is not None else sent.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Columns:
    """Widths of the human-readable lines."""

    file: int
    conversation: int
    skill: int

    def header(self) -> str:
        return self.row("FILE", "CONV", "SKILL", "PRIORITY", "LANG", "CONF", "REASON")

    def row(self, *cells: str) -> str:
        file, conversation, skill, priority, language, confidence, rest = cells
        return (
            f"{file:<{self.file}}  {conversation:<{self.conversation}}  {skill:<{self.skill}}  "
            f"{priority:<8}  {language:<4}  {confidence:<4}  {rest}"
        ).rstrip()

    def problem(self, file: str, text: str) -> str:
        return f"{file:<{self.file}}  {text}"


def _human(label: str, replayed: Replayed, columns: _Columns) -> str:
    if replayed.error:
        return columns.problem(label, f"error: {replayed.error}")
    conversation = f"#{replayed.conversation}"
    if replayed.duplicate or replayed.triage is None:
        return columns.problem(
            label,
            f"{conversation:<{columns.conversation}}  duplicate of an earlier message (same "
            "Message-ID): stored and shown once, not triaged again",
        )
    t = replayed.triage
    return columns.row(
        label,
        conversation,
        t.skill,
        t.priority.value,
        t.language or "?",
        f"{t.confidence:.2f}",
        t.priority_reason,
    )


def _json(label: str, replayed: Replayed) -> str:
    t = replayed.triage
    line = {
        "file": label,
        "conversation": replayed.conversation or None,
        "skill": t.skill if t else None,
        "priority": t.priority.value if t else None,
        "priority_reason": t.priority_reason if t else None,
        "language": t.language if t else None,
        "sentiment": t.sentiment if t else None,
        "confidence": t.confidence if t else None,
        "duplicate": replayed.duplicate,
        "error": replayed.error or None,
    }
    return json.dumps(line, ensure_ascii=False)


async def replay(
    paths: Sequence[Path],
    settings: Settings,
    *,
    json_lines: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    encoder: SentenceEncoder | None = None,
    database_url: str = "",
    progress_every: int = PROGRESS_EVERY,
) -> int:
    """Replay the mail under ``paths`` and print a line for each message; returns the errors.

    ``database_url`` names an empty database to use instead of a temporary SQLite file;
    ``encoder`` reuses a loaded encoder instead of loading ``settings.triage.model``.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    with open_mail(paths) as found:
        if found.skipped:
            print(
                f"skipped {len(found.skipped)} files that are not .eml or .mbox "
                f"(like {found.skipped[0]})",
                file=err,
            )
        sources = found.sources
        columns = _Columns(
            file=min(max((len(s.label) for s in sources), default=4), _MAX_FILE_COLUMN),
            conversation=max(len(f"#{len(sources)}"), 4),
            skill=max(len(name) for name in [*(s.name for s in settings.skills), "triage"]),
        )
        if not json_lines:
            print(columns.header(), file=out)

        def show(label: str, replayed: Replayed) -> None:
            line = _json(label, replayed) if json_lines else _human(label, replayed, columns)
            print(line, file=out, flush=True)

        return await _replay_sources(
            sources,
            settings,
            show,
            err,
            encoder=encoder,
            database_url=database_url,
            progress_every=progress_every,
        )


async def _replay_sources(
    sources: Sequence[MailSource],
    settings: Settings,
    show: Callable[[str, Replayed], None],
    err: TextIO,
    *,
    encoder: SentenceEncoder | None,
    database_url: str,
    progress_every: int,
) -> int:
    from bot.triage import TriageEngine

    started = time.perf_counter()
    print(f"loading the triage model ({settings.triage.model or 'bundled'})...", file=err)
    conversations: set[int] = set()
    errors = done = 0
    with tempfile.TemporaryDirectory(prefix="switchboard-replay-") as folder:
        # Nothing in the throw-away database has to survive a crash: no waiting for the disk.
        url = database_url or f"sqlite://{Path(folder) / 'replay.sqlite3'}?synchronous=OFF"
        async with (
            open_database(url),
            await TriageEngine.load(settings.triage, settings.skills, encoder=encoder) as engine,
        ):
            print(
                f"model ready in {time.perf_counter() - started:.1f} s; "
                f"replaying {len(sources)} messages",
                file=err,
            )
            replayer = Replay(engine, settings.threading)
            for start in range(0, len(sources), BATCH):
                batch = sources[start : start + BATCH]
                results = await _replay_batch(batch, settings, replayer)
                for source, replayed in zip(batch, results, strict=True):
                    show(source.label, replayed)
                    errors += bool(replayed.error)
                    if replayed.conversation:
                        conversations.add(replayed.conversation)
                before, done = done, done + len(batch)
                if done // progress_every > before // progress_every:
                    print(f"{done}/{len(sources)} messages, {errors} errors", file=err)
    print(
        f"replayed {len(sources)} messages: {len(conversations)} conversations, {errors} errors "
        f"in {time.perf_counter() - started:.1f} s",
        file=err,
    )
    return errors


async def _replay_batch(
    batch: Sequence[MailSource], settings: Settings, replayer: Replay
) -> list[Replayed]:
    """Read and parse the batch, then replay the messages that could be read."""
    answers: list[Replayed | None] = []
    messages: list[InboundMessage] = []
    for source in batch:
        if source.read is None:
            answers.append(Replayed(error=source.problem))
            continue
        try:
            raw, arrived = source.read()
        except (OSError, ValueError) as exc:
            answers.append(Replayed(error=str(exc)))
            continue
        try:
            parsed = parse_email(
                raw, received_at=sent_at(raw, arrived), own_domain=settings.email.domain
            )
        except IntakeError as exc:
            answers.append(Replayed(error=f"refused, as the SMTP endpoint would: {exc.reason}"))
            continue
        except Exception as exc:  # the parser means not to raise; one mail must not stop all
            answers.append(Replayed(error=f"not parsed: {type(exc).__name__}: {exc}"))
            continue
        messages.append(parsed)
        answers.append(None)
    replayed = iter(await replayer.run(messages) if messages else [])
    return [answer or next(replayed) for answer in answers]
