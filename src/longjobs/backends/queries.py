"""Named SQL queries kept in ``sql/*.sql`` files: ``-- name: x`` starts the query ``x``."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_queries(dialect: str) -> dict[str, str]:
    """The queries of ``sql/<dialect>.sql`` by name."""
    text = resources.files("longjobs.backends").joinpath(f"sql/{dialect}.sql").read_text()
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("-- name:"):
            if name is not None:
                queries[name] = "\n".join(lines).strip()
            name, lines = line.removeprefix("-- name:").strip(), []
        elif name is not None and not line.startswith("--"):
            lines.append(line)
    if name is not None:
        queries[name] = "\n".join(lines).strip()
    return queries
