"""The effect ledger: JSON lines appended with ``O_APPEND`` and fsynced, one per effect."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LedgerLine = dict[str, Any]


def append_line(path: str | Path, line: LedgerLine) -> None:
    """Append ``line`` durably: one ``write`` (atomic for a short line), then ``fsync``."""
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ledger(path: str | Path) -> list[LedgerLine]:
    """Every complete line of the ledger; a line torn by a SIGKILL mid-write is skipped."""
    lines: list[LedgerLine] = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return lines
    for raw in text.splitlines():
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines
