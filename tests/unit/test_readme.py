"""The README's Python example runs as written."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from longjobs import Job, Status
from longjobs.context import Context

README = Path(__file__).parents[2] / "README.md"


def readme_module(first_line: str) -> dict[str, Any]:
    """Run the README's ```python block that starts with ``first_line``; return its globals."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    [source] = [block for block in blocks if block.startswith(first_line)]
    namespace: dict[str, Any] = {"__name__": "myjobs"}
    exec(compile(source, str(README), "exec"), namespace)
    return namespace


def context(checkpoint: Any = None) -> Context:
    job = Job(
        id="job_readme",
        tenant="default",
        kind="write_report",
        status=Status.RUNNING,
        attempt=1 if checkpoint is None else 2,
        checkpoint=checkpoint,
        created_at=datetime.now(UTC),
    )
    return Context(job)


async def test_the_readme_job_writes_every_section() -> None:
    myjobs = readme_module("# myjobs.py")
    kind = myjobs["app"].kind("write_report")
    assert kind.validate_input({"name": "tides"}) == {"name": "tides", "sections": 3}
    ctx = context()

    report = await myjobs["write_report"](ctx, myjobs["Topic"](name="tides"))

    expected = [f"Section {n} about tides." for n in (1, 2, 3)]
    assert report.sections == expected
    update = ctx.take_update()
    assert update is not None
    assert (update.progress, update.stage) == (1.0, "done")
    assert update.checkpoint == {"sections": expected}
    assert [data for kind, data in update.events if kind == "output"] == [
        {"delta": "".join(f"{section}\n" for section in expected)}
    ]


async def test_the_readme_job_resumes_from_its_checkpoint() -> None:
    myjobs = readme_module("# myjobs.py")
    ctx = context(checkpoint={"sections": ["Saved before a crash."]})

    report = await myjobs["write_report"](ctx, myjobs["Topic"](name="tides"))

    assert report.sections == [
        "Saved before a crash.",
        "Section 2 about tides.",
        "Section 3 about tides.",
    ]
