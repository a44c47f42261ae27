"""Load from a separate process, so that the load and the server under test share no loop."""

from __future__ import annotations

import subprocess
import sys


def seconds_in_child(module: str, *arguments: str) -> float:
    """Run ``python -m module arguments`` and read back the seconds it prints."""
    output = subprocess.run(
        [sys.executable, "-m", module, *arguments], check=True, capture_output=True, text=True
    )
    return float(output.stdout.strip())
