"""The shipped example sets in config/: default skills, and priority and sentiment examples.

config/skills.toml holds a description and German and English examples for each default skill;
config/triage_examples.toml holds the examples the priority and sentiment models learn from.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError
from bot.settings import SkillSettings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
DEFAULT_SKILLS_FILE = CONFIG_DIR / "skills.toml"
TRIAGE_EXAMPLES_FILE = CONFIG_DIR / "triage_examples.toml"


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text (``automated``: automatic mail, in evaluation files)."""

    label: str
    text: str
    automated: bool = False


def default_skills(path: Path = DEFAULT_SKILLS_FILE) -> dict[str, SkillSettings]:
    """The default skills by name (channel left empty: that is the admin's choice)."""
    entries = _read(path).get("skills", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path.name}: skills", "must be a list of [[skills]] tables")
    skills: dict[str, SkillSettings] = {}
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path.name}: skills[{index}].name", "must be a skill name")
        skills[name] = SkillSettings(
            name=name,
            channel="",
            description=str(entry.get("description", "")),
            examples=tuple(str(e) for e in entry.get("examples", [])),
        )
    return skills


def skill_examples(
    skills: Sequence[SkillSettings],
    defaults: Mapping[str, SkillSettings],
    extra: Iterable[tuple[str, str]] = (),
) -> list[Example]:
    """What the skill classifier learns from.

    Each configured skill contributes its description and examples; one without examples borrows
    both from the default skill of the same name. ``extra`` are (skill, text) pairs the team
    taught (reassignments, confirmations); they may name skills added after start-up.
    """
    found: list[Example] = []
    for skill in skills:
        fallback = defaults.get(skill.name)
        examples = skill.examples or (fallback.examples if fallback else ())
        description = skill.description or (fallback.description if fallback else "")
        if description:
            found.append(Example(skill.name, description))
        found.extend(Example(skill.name, text) for text in examples)
    found.extend(Example(skill, text) for skill, text in extra if text.strip())
    return found


def labelled_sets(path: Path = TRIAGE_EXAMPLES_FILE) -> dict[str, list[Example]]:
    """The example sets of triage_examples.toml (``priority``, ``sentiment``) by name."""
    sets: dict[str, list[Example]] = {}
    for name, table in _read(path).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path.name}: {name}", "must be a table of label = [texts]")
        sets[name] = [
            Example(str(label), str(text)) for label, texts in table.items() for text in texts
        ]
    return sets


def _read(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "is missing; it ships with Switchboard in config/") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML: {exc}") from exc
