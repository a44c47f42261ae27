"""Triage subcommands (``switchboard triage eval``, ``switchboard replay``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the triage subcommands."""
