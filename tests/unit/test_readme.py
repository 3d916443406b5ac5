"""The README's Python example runs as written."""

from __future__ import annotations

import asyncio
import re
import sys
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from longjobs import App, Job, Status
from longjobs.context import Context
from longjobs.worker import Worker

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


async def test_the_readme_python_submission_runs_against_a_real_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "Submit from Python" block, with the README's myjobs module and a worker."""
    myjobs_module = types.ModuleType("myjobs")
    myjobs_module.__dict__.update(readme_module("# myjobs.py"))
    app: App = myjobs_module.app
    app.database_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    monkeypatch.setitem(sys.modules, "myjobs", myjobs_module)
    submit_report = readme_module("# submit_report.py")
    worker = Worker(app, concurrency=2)
    async with app:
        task = asyncio.create_task(worker.run())
        try:
            await submit_report["main"]()
        finally:
            worker.stop()
            await task
        page = await app.list()

    assert [job.status for job in page.data] == [Status.COMPLETED]
    assert page.data[0].priority == 5
    assert page.data[0].metadata == {"requested_by": "docs"}
