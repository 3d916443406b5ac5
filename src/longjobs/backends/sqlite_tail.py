"""What other processes changed in a SQLite file, told precisely to this process's followers.

When another process commits, one read on the event loop finds which jobs changed since the last
look (by their commit-ordered change numbers) and, for the jobs followed here whose last read
position it knows, their new events: one query for all of them. Followers then take those events
from their subscriptions instead of each reading the store; jobs first seen, and anything that
cannot be told (a deletion, too many changes at once), are marked for a read of their own.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from longjobs.backends.notify import Notifier, job_key
from longjobs.backends.rows import dumps, event_from_row
from longjobs.backends.sqlite_sql import Q
from longjobs.models import Event, Status

MAX_CHANGES = 10_000
"""More jobs changed by other processes at once: wake everyone instead."""

_TERMINAL = frozenset(s.value for s in Status if s.is_terminal)


@dataclass(slots=True)
class ForeignChanges:
    """Keys of the jobs changed, and the new events of those followed here, by key."""

    keys: list[str]
    events: dict[str, list[Event]] = field(default_factory=dict)


class ForeignTail:
    """This process's view of other processes' commits (one ``changes`` call at a time)."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._seen: tuple[int, int] | None = None  # (feed floor, change head)
        self._known: dict[str, int] = {}  # followed job id -> last sequence number read

    def begin(self, conn: sqlite3.Connection) -> None:
        """Start from the file as it is now (so that the first change is told precisely)."""
        floor, head = conn.execute(Q["change_marks"]).fetchone()
        self._seen = (floor, head)

    def changes(self, conn: sqlite3.Connection) -> ForeignChanges | None:
        """What changed since the last call, or None when that cannot be told (a job was
        deleted, far too many changed, or this is the first look)."""
        floor, head = conn.execute(Q["change_marks"]).fetchone()
        seen, self._seen = self._seen, (floor, head)
        if seen is None or floor != seen[0]:
            self._known.clear()
            return None
        if not self._notifier.follows_jobs or head == seen[1]:
            return ForeignChanges([])
        rows = conn.execute(Q["changed_since"], (seen[1], head, MAX_CHANGES + 1)).fetchall()
        if len(rows) > MAX_CHANGES:
            self._known.clear()
            return None
        keys, wanted = [], []
        for job_id, last_seq, status in rows:
            key = job_key(job_id)
            keys.append(key)
            if not self._notifier.subscribed(key) or status in _TERMINAL:
                self._known.pop(job_id, None)
                continue
            known = self._known.get(job_id)
            self._known[job_id] = last_seq
            if known is not None and known < last_seq:
                wanted.append((job_id, known, last_seq))
        changes = ForeignChanges(keys)
        if wanted:
            for row in conn.execute(Q["events_between"], (dumps(wanted),)):
                changes.events.setdefault(job_key(row["id"]), []).append(
                    event_from_row(row["id"], row)
                )
        return changes
